"""What a node or dealer reads from the ledger before acting: the sealing checkpoint and the derived challenge."""
from __future__ import annotations

import time

from ledger import Ledger
from ledger import entries as E


def first_sealing_checkpoint(led: Ledger, job_id: str):
    """The first valid signed checkpoint that covers every job root of `job_id` (None if none yet)."""
    roots = led.by_job(job_id, kind=E.JOB_ROOT)
    need = max((e.index for e in roots), default=-1) + 1
    scp = next((c for c in led.checkpoints() if c.size >= need), None)
    if scp is None or not scp.verify(led.log_key):
        return None
    return scp


def challenge_is_derived(led: Ledger, job_id: str, body: dict, n_parties: int) -> bool:
    """Does a challenge body follow from the first sealing checkpoint (specs/audit.md section 2)?"""
    from verifier.ledger_audit import challenge_seed

    scp = first_sealing_checkpoint(led, job_id)
    if scp is None:
        return False
    roots = sorted(led.by_job(job_id, kind=E.JOB_ROOT), key=lambda e: e.entry.body["party"])
    seed = challenge_seed(job_id, scp.size, scp.root, [e.entry.body["root"] for e in roots])
    closed = int.from_bytes(seed[:8], "little") % n_parties
    return (bytes(body.get("seed", b"")) == seed and body.get("checkpoint_size") == scp.size
            and list(body.get("parties", [])) == [p for p in range(n_parties) if p != closed])


def wait_for(predicate, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Poll `predicate()` until it is true or `timeout_s` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
