"""Subscriptions for the control plane: a daemon watches the ledger for new entries.

Waiting is `Ledger.wait_for_new` (the store's primitive: LISTEN/NOTIFY on
PostgreSQL, a cheap backed-off `PRAGMA data_version` poll on SQLite), so an
idle subscriber costs next to nothing and wakes when, and only when, the log
grew (or its timeout or stop event fires).
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from ledger.log import Ledger, LoggedEntry

BATCH = 1000


class Subscription:
    """New entries from a cursor, filtered like `Ledger.query`.

    `poll(timeout, stop)` returns the next batch (waiting up to `timeout` for
    one); `wait(timeout, stop)` waits for the log to grow past what was last
    read, whatever the filter; `close()` ends iteration. `cursor` is the next
    index to read; `seen_size` the log size at the last read.
    """

    def __init__(self, ledger: "Ledger", start: int, poll_interval: float, filters: dict[str, Any]) -> None:
        self.ledger = ledger
        self.cursor = start
        self.seen_size = start
        self.poll_interval = poll_interval  # the slice of `__iter__`'s waits
        self.filters = filters
        self.closed = False

    def _fetch(self) -> list["LoggedEntry"]:
        size = self.ledger.size()  # read first: entries committed later are seen next time
        batch = self.ledger.query(start=self.cursor, stop=size, limit=BATCH, **self.filters)
        if len(batch) == BATCH:
            self.cursor = batch[-1].index + 1
        else:  # advance past filtered-out entries too
            self.cursor = max(self.cursor, size)
        self.seen_size = max(self.seen_size, size)
        return batch

    def wait(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until the log has grown past `seen_size` (True), or `timeout` passes or `stop` is set."""
        if self.closed:
            return False
        return self.ledger.wait_for_new(self.seen_size, timeout, stop) > self.seen_size

    def poll(self, timeout: float = 0.0, stop: threading.Event | None = None) -> list["LoggedEntry"]:
        """New matching entries since the last call; waits up to `timeout` seconds for some."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._fetch()
            left = deadline - time.monotonic()
            if got or left <= 0 or self.closed or (stop is not None and stop.is_set()):
                return got
            self.wait(left, stop)

    def drain(self) -> list["LoggedEntry"]:
        """Every matching entry committed since the last read, without waiting."""
        out: list["LoggedEntry"] = []
        while True:
            cursor = self.cursor
            out += self._fetch()
            if self.cursor == cursor or self.cursor >= self.seen_size:
                return out

    def __iter__(self) -> Iterator["LoggedEntry"]:
        while not self.closed:
            yield from self.poll(self.poll_interval)

    def close(self) -> None:
        """Stop iterating (the store's waiting connections are released with the ledger)."""
        self.closed = True

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
