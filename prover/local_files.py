"""Node-local files: names taken from the ledger, and secrets written owner-only."""
from __future__ import annotations

import os
import re
from pathlib import Path

from prover.errors import ProverError

SECRET_MODE = 0o600
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class UnsafeIdError(ProverError):
    """An id from the ledger that cannot name a file or directory."""


def safe_id(text: str, what: str) -> str:
    """`text` if it can name a directory (ids from the ledger are untrusted); raises UnsafeIdError."""
    if not isinstance(text, str) or not _SAFE_ID.fullmatch(text) or text in (".", ".."):
        raise UnsafeIdError(f"{what} {text!r} is not a safe identifier")
    return text


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to a new file readable by its owner only (mode 0600 whatever the umask)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, SECRET_MODE)
    try:
        os.fchmod(fd, SECRET_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --- one `prover serve` per data directory ---------------------------------------------
SERVE_LOCK_FILE = "serve.lock"


class DataDirLocked(ProverError):
    """Another process (a second `prover serve`) holds the data directory's lock."""


class DataDirLock:
    """An exclusive fcntl.flock on DATA/serve.lock holding the owner's pid; released by `release()` or at exit.

    The kernel drops the lock when the process dies, so a crash never leaves a stale lock;
    the file itself stays (unlinking it would race with a process about to lock it).
    """

    def __init__(self, data_dir: str | os.PathLike[str], name: str = SERVE_LOCK_FILE) -> None:
        import fcntl

        self.path = Path(data_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), SECRET_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(f"{data_dir} is in use by another `prover serve` (pid {holder}, lock {self.path}); "
                                f"one serve per data directory") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "DataDirLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
