"""Pinned log keys: the logs an auditor trusts, as ssh's known_hosts (specs/audit.md section 7).

A text file, one log per line: `<origin> <hex BLS public key>`. `verify audit` pins the key of a
ledger it has not seen before (trust on first use) and refuses a ledger whose key differs from
the pinned one; `verify evidence` checks a bundle only against a given or pinned key. The file is
`$SHARDPROOF_KNOWN_LOGS`, else `~/.config/shardproof/known_logs`.
"""
from __future__ import annotations

import os
from pathlib import Path


class KnownLogsError(Exception):
    """The known-logs file is unreadable, or a log's key differs from the pinned one."""


def known_logs_path() -> Path:
    env = os.environ.get("SHARDPROOF_KNOWN_LOGS")
    return Path(env) if env else Path.home() / ".config" / "shardproof" / "known_logs"


def read_known(path: Path | None = None) -> dict[str, bytes]:
    """origin -> pinned log key; an absent file is empty. Raises KnownLogsError on a malformed file."""
    path = path or known_logs_path()
    if not path.exists():
        return {}
    out: dict[str, bytes] = {}
    try:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            origin, _, key = line.rpartition(" ")
            if not origin:
                raise ValueError(f"line {n}: expected '<origin> <hex key>'")
            out[origin.strip()] = bytes.fromhex(key)
    except (OSError, ValueError) as exc:
        raise KnownLogsError(f"{path}: {exc}") from None
    return out


def pinned_key(origin: str, path: Path | None = None) -> bytes | None:
    """The pinned key of `origin`, or None."""
    return read_known(path).get(origin)


def pin(origin: str, key: bytes, path: Path | None = None) -> tuple[bytes, bool]:
    """The key to trust for `origin`: the pinned one if it equals `key`; `key` itself, pinned now, if the
    origin is new (returns (key, True)). Raises KnownLogsError if a different key is pinned."""
    path = path or known_logs_path()
    known = read_known(path)
    if origin in known:
        if known[origin] != bytes(key):
            raise KnownLogsError(f"the log {origin!r} presents key {bytes(key).hex()[:16]}..., but "
                                 f"{known[origin].hex()[:16]}... is pinned in {path}")
        return known[origin], False
    if any(c.isspace() for c in origin) or not origin:
        raise KnownLogsError(f"cannot pin a log origin with white space: {origin!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"{origin} {bytes(key).hex()}\n")
    except OSError as exc:
        raise KnownLogsError(f"cannot record the log key in {path}: {exc}") from None
    return bytes(key), True
