"""How daemons and clients wait on the ledger (the job's entries are read through protocol.job_view)."""
from __future__ import annotations

import time
from typing import Iterable



IDLE_RESCAN_S = 30.0  # a daemon with nothing pending still re-scans this often (belt and braces)


def next_wake(deadlines: Iterable[float], floor: float, idle_s: float = IDLE_RESCAN_S) -> float:
    """Seconds a daemon may wait for new ledger entries before one of its timers (monotonic `deadlines`)
    is due: at least `floor`, at most `idle_s`."""
    due = min(deadlines, default=time.monotonic() + idle_s) - time.monotonic()
    return max(floor, min(idle_s, due))


def wait_for(predicate, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll `predicate()` until it is true or `timeout_s` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
