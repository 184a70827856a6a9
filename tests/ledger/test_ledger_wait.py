"""`Ledger.wait_for_new`, the one waiting primitive of subscriptions and daemons: it wakes on another
handle's append, honours a stop event promptly and times out; `Subscription.wait` wakes on any growth."""
from __future__ import annotations

import threading
import time

from ledger import entries as E
from ledger.log import Ledger

from .conftest import ident, step


def _in_thread(fn):
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(value=fn(), t=time.monotonic()))
    t.start()
    return t, out


def test_wait_wakes_on_another_handles_append(ledger):
    n = ledger.size()
    other = Ledger.open(ledger.url)
    t, out = _in_thread(lambda: ledger.wait_for_new(n, 20))
    time.sleep(1.5)  # long enough for SQLite's poll to back off
    t0 = time.monotonic()
    other.append(step("alice", 1))
    t.join(20)
    assert out["value"] == n + 1 and out["t"] - t0 < 3
    other.close()


def test_wait_honours_stop_and_timeout(ledger):
    n = ledger.size()
    stop = threading.Event()
    t, out = _in_thread(lambda: ledger.wait_for_new(n, 30, stop))
    time.sleep(0.5)
    t0 = time.monotonic()
    stop.set()
    t.join(5)
    assert out["value"] == n and out["t"] - t0 < 1.0
    t0 = time.monotonic()
    assert ledger.wait_for_new(n, 0.3) == n and 0.25 <= time.monotonic() - t0 < 2
    assert ledger.wait_for_new(n - 1, 30) == n  # already past: returns at once


def test_subscription_wait_wakes_on_any_growth_and_drains(ledger):
    sub = ledger.subscribe(kind=E.STEP_COMMIT)
    assert sub.drain() == [] and not sub.wait(0.2)
    ledger.append(E.make_entry(ident("bob"), E.VERDICT,
                               {"job_id": "j", "outcome": "pass", "accused": [], "reason": ""}))
    assert sub.wait(5)  # a verdict is not a step.commit, but the log grew
    assert sub.drain() == [] and not sub.wait(0.1)
    ledger.append_many([step("alice", i) for i in range(3)])
    assert [e.body["first_step"] for e in sub.drain()] == [0, 1, 2]
    sub.close()

