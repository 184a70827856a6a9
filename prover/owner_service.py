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
from mpc_core.encoding import canonical_cbor, decode_cbor
from prover.keys import NodeKeys
from models.publish import commit_tensor, load_party_share, read_manifest
from protocol.weight_refresh import RefreshError, job_salts, read_keys, refreshed

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


def refreshed_manifest(manifest: dict, refresh_blob: bytes) -> dict:
    """A copy of `manifest` whose per-party commitments are the job's refreshed ones (for the weight check)."""
    table = decode_cbor(refresh_blob)
    if not isinstance(table, dict) or set(table) != set(manifest["tensors"]):
        raise RefreshError("the refresh commitments do not name the manifest's tensors")
    out = dict(manifest)
    out["tensors"] = {}
    for name, meta in manifest["tensors"].items():
        row = table[name]
        if not isinstance(row, list) or len(row) != manifest["n_parties"]:
            raise RefreshError(f"refresh commitments of {name} are malformed")
        out["tensors"][name] = {**meta, "commitments": [bytes(c).hex() for c in row]}
    return out


def job_refresh(led: Ledger, job_id: str, model_id: str):
    """The job's `model.refresh` entry by the model's first publisher, or None."""
    pubs = [e for e in led.query(kind=E.MODEL) if e.entry.body["model_id"] == model_id]
    if not pubs:
        return None
    owner = pubs[0].entry.author
    found = [e for e in led.by_job(job_id, kind=E.REFRESH)
             if e.entry.author == owner and e.entry.body["model_id"] == model_id]
    return found[0] if found else None


class OwnerService:
    """Posts `model.refresh` for every new job of the models in `published` (model id -> publication dir)."""

    def __init__(self, led: Ledger, keys: NodeKeys, published: dict[str, str | os.PathLike], poll_s: float = 0.1):
        self.led, self.keys, self.published, self.poll_s = led, keys, published, poll_s  # shared: later publications count
        self._cursor = 0

    def poll_once(self) -> int:
        """Post the refreshes that are due; returns how many were posted."""
        posted = 0
        for le in self.led.query(kind=E.JOB_OPEN, start=self._cursor):
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
        while not stop.is_set():
            if not self.poll_once():
                stop.wait(self.poll_s)
