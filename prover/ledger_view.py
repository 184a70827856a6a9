"""How daemons and clients wait on the ledger (the job's entries are read through protocol.job_view)."""
from __future__ import annotations

import time
from typing import Callable, Iterable

from ledger.keys import ed25519_verify
from protocol.job_view import job_failed, read_job_from_ledger
from prover.keys import lookup_peer


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


def standby_check(led, job_id: str, party: int) -> Callable[[str, bytes, bytes], bool]:
    """The check a peer, the client or the dealer applies to a REJOIN hello for share index `party`
    (mpc_core.mesh.accept_rejoin): the node is the standby the counted job.resume of that index names,
    and the signature verifies under its registered Ed25519 key (specs/node-daemon.md section 8)."""
    def check(node: str, statement: bytes, sig: bytes) -> bool:
        rs = read_job_from_ledger(led, job_id).resumes.get(party)
        peer = lookup_peer(led, node) if rs is not None and rs.body.standby == node else None
        return peer is not None and ed25519_verify(peer.ed25519, statement, sig)
    return check


def job_closed(led, job_id: str) -> Callable[[], str]:
    """Why to stop holding for a standby: the opener's job.fail reason, or "" while the job is open."""
    def why() -> str:
        jf = job_failed(led, job_id)
        return f"the job's opener closed it: {jf.reason}" if jf is not None else ""
    return why
