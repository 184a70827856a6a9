"""Subscriptions for the control plane: a node watches the ledger for new entries.

SQLite: polling. PostgreSQL: LISTEN on the channel every append NOTIFYs in
its transaction (so a wake-up always sees the committed rows), with a poll
as a safety net for lost notifications.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

from sqlalchemy.engine import make_url

from ledger import storage

if TYPE_CHECKING:
    from ledger.log import Ledger, LoggedEntry


class Subscription:
    """Iterates new entries from a cursor; `poll(timeout)` returns a batch, `close()` stops iteration."""

    def __init__(self, ledger: "Ledger", start: int, poll_interval: float, filters: dict[str, Any]) -> None:
        self.ledger = ledger
        self.cursor = start
        self.poll_interval = poll_interval
        self.filters = filters
        self.closed = False
        self._pg: Any = None
        if ledger.backend == "postgresql":
            import psycopg

            u = make_url(ledger.url).set(drivername="postgresql")
            self._pg = psycopg.connect(u.render_as_string(hide_password=False), autocommit=True)
            self._pg.execute(f"LISTEN {storage.NOTIFY_CHANNEL}")

    def _fetch(self) -> list["LoggedEntry"]:
        size = self.ledger.size()  # read first: entries committed later are seen next time
        batch = self.ledger.query(start=self.cursor, stop=size, limit=1000, **self.filters)
        if len(batch) == 1000:
            self.cursor = batch[-1].index + 1
        else:  # advance past filtered-out entries too
            self.cursor = max(self.cursor, size)
        return batch

    def _wait(self, timeout: float) -> None:
        if self._pg is not None:
            for _ in self._pg.notifies(timeout=timeout, stop_after=1):
                break
        else:
            time.sleep(timeout)

    def poll(self, timeout: float = 0.0) -> list["LoggedEntry"]:
        """New entries since the last call; waits up to `timeout` seconds for some."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._fetch()
            left = deadline - time.monotonic()
            if got or left <= 0 or self.closed:
                return got
            self._wait(min(left, self.poll_interval))

    def __iter__(self) -> Iterator["LoggedEntry"]:
        while not self.closed:
            yield from self.poll(self.poll_interval)

    def close(self) -> None:
        """Stop iterating and release the LISTEN connection."""
        self.closed = True
        if self._pg is not None:
            try:
                self._pg.close()
            finally:
                self._pg = None

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
