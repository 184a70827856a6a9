"""The last checkpoint this auditor saw of each log, as a log monitor keeps it (specs/browse.md).

A small JSON file, `{origin: {"size": N, "root": hex}}`: `$SHARDPROOF_MONITOR_STATE`, else
`~/.config/shardproof/monitor_state.json`. `verify browse` compares the log it reads with the
head saved here (the log must still hold the same first `size` entries) and saves a newer head
only when the log verifies and is consistent with the saved one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class MonitorStateError(Exception):
    """The state file cannot be read or written, or holds something else than heads."""


def monitor_state_path() -> Path:
    env = os.environ.get("SHARDPROOF_MONITOR_STATE")
    return Path(env) if env else Path.home() / ".config" / "shardproof" / "monitor_state.json"


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MonitorStateError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise MonitorStateError(f"{path}: expected a JSON object")
    return data


def last_seen(origin: str, path: Path | None = None) -> tuple[int, bytes] | None:
    """(size, root) of the head last saved for `origin`, or None."""
    path = path or monitor_state_path()
    head = _read(path).get(origin)
    if head is None:
        return None
    try:
        size, root = head["size"], bytes.fromhex(head["root"])
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or len(root) != 32:
            raise ValueError("bad head")
    except (KeyError, TypeError, ValueError) as exc:
        raise MonitorStateError(f"{path}: the head of {origin!r} is malformed: {exc}") from None
    return size, root


def save_seen(origin: str, size: int, root: bytes, path: Path | None = None) -> None:
    """Record (size, root) as the head last seen of `origin` (written to a temporary file, then renamed)."""
    path = path or monitor_state_path()
    data = _read(path)
    data[origin] = {"size": int(size), "root": bytes(root).hex()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise MonitorStateError(f"cannot write {path}: {exc}") from None
