"""Entry encoding, schemas, signatures and bad input (pure, no database)."""
from __future__ import annotations

import cbor2
import pytest

from ledger import entries as E
from ledger.errors import (
    BadSignature,
    EntryTooLarge,
    LedgerError,
    MalformedEntry,
    SchemaError,
    UnknownKind,
    UnsupportedVersion,
)
from mpc_core.encoding import canonical_cbor

from .conftest import ident

A = ident("alice")
D32 = b"\x07" * 32

BODIES = {
    E.MODEL: {"model_id": "gpt2-tiny", "manifest": D32, "n_shares": 3, "commitments": D32},
    E.JOB_OPEN: {"job_id": "j", "model_id": "m", "n_parties": 3, "replicas": 1, "stages": 1, "dealer": "dealer"},
    E.JOB_ASSIGN: {"job_id": "j", "assignments": [{"node": "alice", "party": 0, "replica": 0, "stage": 0}]},
    E.DEALER_COMMIT: {"job_id": "j", "seeds": [{"party": 0, "commitment": D32}], "beacon": D32},
    E.STEP_COMMIT: {"job_id": "j", "node": "alice", "party": 0, "first_step": 0, "count": 10, "root": D32},
    E.JOB_ROOT: {"job_id": "j", "node": "alice", "party": 0, "replica": 0, "root": D32, "n_steps": 10, "bls_sig": b"\x01" * 96,
                 "views_root": D32, "opened_root": D32, "beacon": D32, "receipts": [[1, 3, D32, b"\x02" * 64]],
                 "disputes": [2], "corrections": D32},
    E.REVEAL: {"job_id": "j", "party": 1, "value": D32},
    E.RELEASE: {"job_id": "j", "challenge": 9, "data": D32},
    E.CHALLENGE: {"job_id": "j", "checkpoint_size": 5, "checkpoint_root": D32, "seed": D32, "parties": [0, 1]},
    E.OPENING: {"job_id": "j", "node": "alice", "party": 0, "challenge": 4, "data": D32},
    E.VERDICT: {"job_id": "j", "outcome": "fail", "accused": ["bob"], "reason": "freivalds", "evidence": [D32]},
}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_roundtrip_every_kind(kind):
    e = E.make_entry(A, kind, BODIES[kind], time=1)
    data = e.encode()
    back = E.decode_entry(data)
    assert back == e and back.encode() == data
    assert back.verify_sig(A.ed25519_pub)
    assert not back.verify_sig(ident("bob").ed25519_pub)


def test_registration_roundtrip_and_blob_refs():
    r = E.registration(A, roles=("node", "dealer"), endpoint="10.0.0.1:29500", x25519=b"\x02" * 32)
    assert E.decode_entry(r.encode()) == r
    v = E.make_entry(A, E.VERDICT, BODIES[E.VERDICT])
    assert v.blob_refs() == [D32]
    assert E.make_entry(A, E.OPENING, BODIES[E.OPENING]).blob_refs() == [D32]


def test_signature_covers_every_field():
    e = E.make_entry(A, E.STEP_COMMIT, BODIES[E.STEP_COMMIT], time=5)
    for changed in (
        E.Entry(e.kind, e.author, 6, e.body, e.sig),
        E.Entry(e.kind, e.author, e.time, {**e.body, "count": 11}, e.sig),
        E.Entry(e.kind, "bob", e.time, e.body, e.sig),
    ):
        assert not changed.verify_sig(A.ed25519_pub)


def good() -> bytes:
    return E.make_entry(A, E.STEP_COMMIT, BODIES[E.STEP_COMMIT], time=5).encode()


def obj() -> dict:
    return cbor2.loads(good())


@pytest.mark.parametrize(
    "data, err",
    [
        (lambda: good()[:-5], MalformedEntry),  # truncated
        (lambda: b"\xff\x00garbage", MalformedEntry),
        (lambda: good() + b"\x00", MalformedEntry),  # trailing bytes
        (lambda: cbor2.dumps(obj(), canonical=False).replace(b"", b"") if False else _noncanonical(), MalformedEntry),
        (lambda: canonical_cbor([1, 2]), MalformedEntry),
        (lambda: canonical_cbor({**obj(), "kind": "no.such.kind"}), UnknownKind),
        (lambda: canonical_cbor({**obj(), "v": 2}), UnsupportedVersion),
        (lambda: canonical_cbor({k: v for k, v in obj().items() if k != "sig"}), BadSignature),
        (lambda: canonical_cbor({**obj(), "sig": b"\x00" * 10}), BadSignature),
        (lambda: canonical_cbor({**obj(), "extra": 1}), MalformedEntry),
        (lambda: canonical_cbor({**obj(), "body": {**obj()["body"], "count": "ten"}}), SchemaError),
        (lambda: canonical_cbor({**obj(), "body": {**obj()["body"], "surprise": 1}}), SchemaError),
        (lambda: canonical_cbor({**obj(), "body": {k: v for k, v in obj()["body"].items() if k != "root"}}), SchemaError),
        (lambda: canonical_cbor({**obj(), "time": -1}), SchemaError),
        (lambda: cbor2.dumps({**obj(), "time": 1.5}, canonical=True), MalformedEntry),  # floats refused
        (lambda: b"\x00" * (E.MAX_ENTRY_BYTES + 1), EntryTooLarge),
        (lambda: "not bytes", MalformedEntry),
    ],
)
def test_bad_input_raises_typed_error(data, err):
    with pytest.raises(err) as ei:
        E.decode_entry(data())
    assert isinstance(ei.value, LedgerError)


def _noncanonical() -> bytes:
    # same map, keys in non-canonical (insertion) order
    o = obj()
    return cbor2.dumps(dict(reversed(list(o.items()))))


def test_make_entry_refuses_floats_oversize_and_wrong_author():
    with pytest.raises(MalformedEntry):
        E.make_entry(A, E.VERDICT, {**BODIES[E.VERDICT], "meta": {"p": 0.5}})
    with pytest.raises(EntryTooLarge):
        E.make_entry(A, E.VERDICT, {**BODIES[E.VERDICT], "meta": {"blob": b"x" * (E.MAX_ENTRY_BYTES + 1)}})
    with pytest.raises(SchemaError):
        E.make_entry(A, E.REGISTER, {"node_id": "bob", "roles": ["node"], "ed25519": b"\x00" * 32, "bls": b"\x00" * 48, "bls_pop": b"\x00" * 96})
    with pytest.raises(SchemaError):
        E.make_entry(A, E.VERDICT, {**BODIES[E.VERDICT], "outcome": "maybe"})


def test_job_roots_aggregate_in_one_check():
    nodes = [ident("alice"), ident("bob")]
    es = []
    for p, who in enumerate(nodes):
        root = bytes([p]) * 32
        sig = who.bls_sign(E.job_root_message("j", who.node_id, p, 0, root, 10))
        es.append(E.make_entry(who, E.JOB_ROOT, {"job_id": "j", "node": who.node_id, "party": p, "replica": 0, "root": root, "n_steps": 10, "bls_sig": sig, "views_root": D32, "opened_root": D32, "beacon": D32}))
    keys = {w.node_id: w.bls_pub for w in nodes}
    assert E.job_roots_aggregate_ok(es, keys)
    forged = E.make_entry(nodes[1], E.JOB_ROOT, {**es[1].body, "root": b"\x09" * 32})
    assert not E.job_roots_aggregate_ok([es[0], forged], keys)
    assert not E.job_roots_aggregate_ok([], keys)
