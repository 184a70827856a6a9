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
