"""Checkpoints, witnesses, conflicts kept as evidence, evidence bundles and subscriptions."""
from __future__ import annotations

import threading
import time

import pytest

from ledger import entries as E
from ledger.checkpoints import Checkpoint, Witness, add_cosignature, sign_checkpoint
from ledger.errors import (
    BadCheckpointSignature,
    CheckpointOutOfOrder,
    EvidenceError,
    InconsistentCheckpoint,
    NoLogKey,
)
from ledger.evidence import verify_bundle
from ledger.log import Ledger
from mpc_core.encoding import canonical_cbor, decode_cbor

from .conftest import LOG, ORIGIN, ident, step


def test_checkpoint_signed_logged_and_cosigned(ledger):
    ledger.append_many([step("alice", i) for i in range(10)])
    scp = ledger.checkpoint()
    assert scp.size == 13 and ledger.size() == 14  # the checkpoint entry sits at index 13
    assert ledger.get(13).kind == E.CHECKPOINT
    assert scp.verify(LOG.bls_pub) and scp.root == ledger.root(13)
    # a witness checks consistency from what it saw before, then cosigns; signatures aggregate
    w = Witness(ident("witness1"), LOG.bls_pub, ORIGIN)
    sig1 = w.cosign(scp, [])
    co = add_cosignature(scp, ident("witness1").bls_pub, sig1)
    assert co.verify(LOG.bls_pub, witnesses=[ident("witness1").bls_pub], quorum=1)
    assert not co.verify(ident("alice").bls_pub)
    assert ledger.add_checkpoint(co) == co  # same head, more signers: accepted
    ledger.append_many([step("alice", i) for i in range(10, 15)])
    scp2 = ledger.checkpoint(log_entry=False)
    w.cosign(scp2, ledger.consistency_proof(scp.size, scp2.size))
    with pytest.raises(CheckpointOutOfOrder):
        ledger.add_checkpoint(co)  # older than the latest accepted
    with pytest.raises(CheckpointOutOfOrder):
        ledger.add_checkpoint(sign_checkpoint(Checkpoint(ORIGIN, 5, ledger.root(5)), LOG))
    assert ledger.check().ok


def test_witness_refuses_inconsistent_and_out_of_order(ledger):
    ledger.append_many([step("alice", i) for i in range(6)])
    scp = ledger.checkpoint(log_entry=False)
    w = Witness(ident("witness1"), LOG.bls_pub, ORIGIN)
    w.cosign(scp, [])
    fork = sign_checkpoint(Checkpoint(ORIGIN, scp.size + 2, b"\x05" * 32), LOG)
    with pytest.raises(InconsistentCheckpoint):
        w.cosign(fork, [b"\x00" * 32])
    old = sign_checkpoint(Checkpoint(ORIGIN, 2, ledger.root(2)), LOG)
    with pytest.raises(CheckpointOutOfOrder):
        w.cosign(old, [])
    forged = sign_checkpoint(Checkpoint(ORIGIN, scp.size, scp.root), ident("alice"))
    with pytest.raises(BadCheckpointSignature):
        w.cosign(forged, [])


def test_conflicting_checkpoints_refused_and_kept(ledger):
    ledger.append_many([step("alice", i) for i in range(4)])
    good = ledger.checkpoint(log_entry=False)
    before = ledger.tree_head()
    evil = sign_checkpoint(Checkpoint(ORIGIN, good.size, b"\x66" * 32), LOG)  # log key signed a second root
    with pytest.raises(InconsistentCheckpoint):
        ledger.add_checkpoint(evil)
    (a, b, reason), = ledger.conflicts()
    assert a == evil and b == good and "root" in reason
    with pytest.raises(BadCheckpointSignature):
        ledger.add_checkpoint(sign_checkpoint(Checkpoint(ORIGIN, 3, ledger.root(3)), ident("alice")))
    ahead = sign_checkpoint(Checkpoint(ORIGIN, 999, b"\x01" * 32), LOG)
    with pytest.raises(InconsistentCheckpoint):
        ledger.add_checkpoint(ahead)
    assert len(ledger.conflicts()) == 2
    assert ledger.tree_head() == before and len(ledger.checkpoints()) == 1
    # a checkpoint entry that does not match the log is refused at append time
    bad_entry = E.make_entry(LOG, E.CHECKPOINT, {"checkpoint": evil.to_obj()})
    with pytest.raises(InconsistentCheckpoint):
        ledger.append(bad_entry)
    assert ledger.tree_head() == before


def test_checkpoint_needs_log_identity(ledger_url):
    Ledger.open(ledger_url, origin=ORIGIN, log_identity=LOG).close()
    reader = Ledger.open(ledger_url)
    with pytest.raises(NoLogKey):
        reader.checkpoint()
    with pytest.raises(EvidenceError):
        reader.export_evidence(0)
    reader.close()


def test_evidence_bundle_verifies_offline_and_detects_tampering(ledger):
    blob = b"opened view of party 1" * 50
    d = ledger.put_blob(blob)
    ledger.append_many([step("bob", i) for i in range(5)])
    i = ledger.append(E.make_entry(ident("bob"), E.OPENING, {"job_id": "job-1", "node": "bob", "party": 1, "challenge": 3, "data": d}))
    bundle = ledger.export_evidence([4, i])
    rep = verify_bundle(bundle, LOG.bls_pub)
    assert rep.ok, rep.reasons
    assert [x[0] for x in rep.entries] == [4, i] and rep.blobs == {d: blob} and rep.log_key_pinned
    assert verify_bundle(bundle).ok  # unpinned: still self-consistent
    assert not verify_bundle(bundle, ident("alice").bls_pub).ok  # wrong log key
    obj = decode_cbor(bundle)

    def mutated(**kw) -> bytes:
        return canonical_cbor({**obj, **kw})

    e0 = obj["entries"][0]
    bad_bundles = [
        bundle[:-10],
        b"garbage",
        mutated(blobs=[blob + b"!"]),
        mutated(entries=[{**e0, "index": e0["index"] + 1}]),
        mutated(entries=[{**e0, "proof": e0["proof"][:-1]}]),
        mutated(entries=[{**e0, "data": step("bob", 99).encode()}]),
        mutated(registrations=[]),
        mutated(checkpoint={**obj["checkpoint"], "sig": b"\x00" * 96}),
        mutated(checkpoint={**obj["checkpoint"], "checkpoint": {**obj["checkpoint"]["checkpoint"], "size": 99}}),
        mutated(v=2),
    ]
    for b in bad_bundles:
        r = verify_bundle(b, LOG.bls_pub)
        assert not r.ok and r.reasons
    # A bundle may leave a referenced blob out (a one-step proof stands in for an opening): the ledger
    # checks still hold, the blob is reported missing, and a checker that needs it cannot decide.
    r = verify_bundle(mutated(blobs=[]), LOG.bls_pub)
    assert r.ok and r.missing_blobs == {d} and r.blobs == {}
    assert not verify_bundle(mutated(proofs="not a list"), LOG.bls_pub).ok


def test_subscription_sees_new_entries(ledger):
    sub = ledger.subscribe(kind=E.STEP_COMMIT)
    assert sub.poll() == []
    writer = Ledger.open(ledger.url)  # another handle, as another process would

    def later():
        time.sleep(0.3)
        writer.append_many([step("alice", i) for i in range(3)])

    t = threading.Thread(target=later)
    t.start()
    t0 = time.monotonic()
    got = sub.poll(timeout=10)
    t.join()
    got += sub.poll(timeout=0.5) if len(got) < 3 else []
    assert [e.body["first_step"] for e in got] == [0, 1, 2]
    assert time.monotonic() - t0 < 5
    ledger.append(step("bob", 0, job="j2"))
    ledger.append(E.make_entry(ident("bob"), E.VERDICT, {"job_id": "j2", "outcome": "pass", "accused": [], "reason": ""}))
    assert [e.author for e in sub.poll(timeout=2)] == ["bob"]
    sub.close()
    writer.close()
