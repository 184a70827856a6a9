"""The model owner online: per-job commitments to the refreshed weight shares (protocol.weight_refresh).

For every `job.open` of a model it published (and still holds the publication of), the
owner computes each party's refreshed share W_i^t and posts `model.refresh`: the salted
commitments of every tensor of every party, as a canonical-CBOR blob. Nodes wait for it
before a job of a refreshable model, and the auditor checks openings against it.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ledger import Ledger
from ledger import entries as E
from ledger.subscribe import Subscription
from mpc_core.encoding import canonical_cbor
from prover.keys import NodeKeys
from prover.ledger_view import next_wake
from models.publish import commit_tensor, load_party_share, read_manifest
from protocol.errors import JobError
from protocol.job_view import read_job_from_ledger
from protocol.weight_refresh import job_salts, read_keys, refreshed

log = logging.getLogger("shardproof.owner")


def refresh_table(published_dir: str | os.PathLike, job_id: str) -> dict[str, list[bytes]]:
    """{tensor name: [commitment of party i's refreshed share for `job_id`]} from the whole publication."""
    d = Path(published_dir)
    manifest = read_manifest(d)
    n = manifest["n_parties"]
    table: dict[str, list[bytes]] = {name: [b""] * n for name in manifest["tensors"]}
    for p in range(n):
        keys = read_keys(d / f"party{p}", p, n)
        share = refreshed(load_party_share(d, p, manifest), keys, job_id)
        salts = job_salts(keys, job_id, share)
        for name, t in share.items():
            table[name][p] = commit_tensor(name, t, salts[name], manifest["frac_bits"])
    return table


def post_refresh(led: Ledger, owner: NodeKeys, published_dir: str | os.PathLike, job_id: str) -> int:
    """Post `model.refresh` for `job_id`; returns its ledger index."""
    manifest = read_manifest(published_dir)
    blob = led.put_blob(canonical_cbor(refresh_table(published_dir, job_id)))
    return led.append(E.make_entry(owner.identity, E.REFRESH, {
        "job_id": job_id, "model_id": manifest["model_id"], "commitments": blob}))


def job_refresh(led: Ledger, job_id: str, model_id: str):
    """The job's counted `model.refresh` (by the model's publisher: protocol.job_view), or None."""
    try:
        view = read_job_from_ledger(led, job_id)
    except JobError:
        return None
    return view.refresh if view.open.body.model_id == model_id else None


class OwnerService:
    """Posts `model.refresh` for every new job of the models in `published` (model id -> publication dir)."""

    def __init__(self, led: Ledger, keys: NodeKeys, published: dict[str, str | os.PathLike], poll_s: float = 0.1):
        self.led, self.keys, self.published, self.poll_s = led, keys, published, poll_s  # shared: later publications count
        self._cursor = 0

    def poll_once(self) -> int:
        """Post the refreshes that are due; returns how many were posted."""
        posted = 0
        for le in self._feed().drain():
            self._cursor = le.index + 1
            b = le.entry.body
            if b["model_id"] not in self.published or job_refresh(self.led, b["job_id"], b["model_id"]) is not None:
                continue
            try:
                post_refresh(self.led, self.keys, self.published[b["model_id"]], b["job_id"])
                posted += 1
            except Exception as exc:  # one bad job must not stop the owner
                log.error("job %r: no refresh: %s: %s", b["job_id"], type(exc).__name__, exc)
        return posted

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set, re-scanning only when the ledger grew (no timers)."""
        while not stop.is_set():
            if not self.poll_once():
                self._feed().wait(next_wake((), self.poll_s), stop)

    def _feed(self) -> Subscription:
        """The job.open entries from `_cursor` on (created once; `wait` wakes on any growth of the ledger)."""
        if getattr(self, "_sub", None) is None:
            self._sub = self.led.subscribe(start=self._cursor, kind=E.JOB_OPEN)
        return self._sub
