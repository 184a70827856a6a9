"""The Ledger API on SQLite and PostgreSQL: appends, reads, proofs, bad input, triggers, migrations, blobs."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from ledger import entries as E
from ledger import merkle, storage
from ledger.errors import (
    BadSignature,
    BlobCorrupted,
    BlobMismatch,
    BlobNotFound,
    DuplicateEntry,
    DuplicateRegistration,
    EntryTooLarge,
    LedgerConfigMismatch,
    MalformedEntry,
    ProofError,
    SchemaVersionError,
    UnknownAuthor,
    UnknownKind,
    UnsupportedVersion,
)
from ledger.log import Ledger
from mpc_core.encoding import canonical_cbor

from .conftest import LOG, ORIGIN, ident, step


def test_append_read_and_index_by_job_kind_node(ledger):
    assert ledger.size() == 3 and ledger.get(0).kind == E.REGISTER and ledger.get(0).author == "log"
    idx = ledger.append_many([step("alice", i, job="j1") for i in range(5)] + [step("bob", i, job="j2") for i in range(3)])
    assert idx == list(range(3, 11))
    assert [e.index for e in ledger.by_job("j1")] == list(range(3, 8))
    assert [e.body["first_step"] for e in ledger.by_job("j2", kind=E.STEP_COMMIT)] == [0, 1, 2]
    assert len(ledger.by_kind(E.REGISTER)) == 3
    assert [e.index for e in ledger.by_node("bob")] == [2, 8, 9, 10]
    assert [e.index for e in ledger.read(4, 6)] == [4, 5]
    assert ledger.query(author="alice", limit=2)[1].index == 3


def test_stored_proofs_match_pure_functions(ledger):
    ledger.append_many([step("alice", i) for i in range(70)])
    data = [e.data for e in ledger.read()]
    n = len(data)
    assert ledger.root() == merkle.root_hash(data)
    for size in (1, 2, 3, 7, 8, 9, 33, 64, n):
        root = ledger.root(size)
        assert root == merkle.root_hash(data[:size])
        for i in sorted({0, size // 2, size - 1}):
            p = ledger.inclusion_proof(i, size)
            assert p == merkle.inclusion_proof(data[:size], i)
            assert merkle.verify_inclusion(data[i], i, size, p, root)
        for m in sorted({1, size // 3 or 1, size}):
            p = ledger.consistency_proof(m, size)
            assert p == merkle.consistency_proof(data[:size], m)
            assert merkle.verify_consistency(m, size, ledger.root(m), root, p)
    with pytest.raises(ProofError):
        ledger.inclusion_proof(n)
    with pytest.raises(ProofError):
        ledger.consistency_proof(5, n + 1)


def _refused(led: Ledger, item, err) -> None:
    before = led.tree_head()
    with pytest.raises(err):
        led.append(item)
    assert led.tree_head() == before  # nothing written
    led.read()  # still readable
    assert led.get(before[0] - 1).index == before[0] - 1


def test_bad_inputs_refused_nothing_written(ledger):
    good = step("alice", 1)
    o = {**good.unsigned_obj(), "sig": good.sig}
    cases = [
        (good.encode()[:-3], MalformedEntry),
        (b"\x00garbage", MalformedEntry),
        (canonical_cbor({**o, "kind": "nope"}), UnknownKind),
        (canonical_cbor({**o, "v": 99}), UnsupportedVersion),
        (canonical_cbor({k: v for k, v in o.items() if k != "sig"}), BadSignature),
        (canonical_cbor({**o, "sig": b"\x01" * 64}), BadSignature),
        (canonical_cbor({**o, "body": {**o["body"], "count": 2}}), BadSignature),  # body changed after signing
        (step("mallory", 1), UnknownAuthor),  # never registered
        (b"\xa0" * (E.MAX_ENTRY_BYTES + 1), EntryTooLarge),
        (E.make_entry(ident("alice"), E.OPENING, {"job_id": "j", "node": "alice", "party": 0, "challenge": 1, "data": b"\x09" * 32}), BlobNotFound),
        (E.registration(ident("alice")), DuplicateRegistration),
        (E.make_entry(ident("alice"), E.CHECKPOINT, {"checkpoint": {"bogus": 1}}), LedgerErrorAny),
    ]
    for item, err in cases:
        _refused(ledger, item, err)
    # a forged registration: body keys of alice, signed by eve
    eve = ident("eve")
    forged = E.Entry(E.REGISTER, "eve", 1, {**E.registration(eve).body, "ed25519": ident("alice").ed25519_pub}, b"\x00" * 64).signed(eve)
    _refused(ledger, forged, BadSignature)
    # a stolen BLS key without its proof of possession
    stolen = E.make_entry(eve, E.REGISTER, {**E.registration(eve).body, "bls": ident("alice").bls_pub})
    _refused(ledger, stolen, BadSignature)


from ledger.errors import LedgerError as LedgerErrorAny  # noqa: E402


def test_batch_is_all_or_nothing_and_duplicates_refused(ledger):
    n = ledger.size()
    with pytest.raises(UnknownAuthor):
        ledger.append_many([step("alice", 1), step("alice", 2), step("mallory", 3)])
    assert ledger.size() == n
    ledger.append(step("alice", 1))
    _refused(ledger, step("alice", 1), DuplicateEntry)  # replay of the same signed entry
    with pytest.raises(DuplicateEntry):
        ledger.append_many([step("alice", 7), step("alice", 7)])
    assert ledger.size() == n + 1


def test_register_and_use_in_one_batch(ledger):
    carol = ident("carol")
    idx = ledger.append_many([E.registration(carol), step("carol", 0)])
    assert ledger.registration("carol").index == idx[0]
    assert ledger.get(idx[1]).author == "carol"


def test_blobs_content_addressed_and_checked(ledger):
    data = b"opening bytes " * 1000
    d = ledger.put_blob(data)
    assert d == merkle.hasher("blake3")(data) and ledger.get_blob(d) == data
    assert ledger.put_blob(data) == d  # idempotent
    with pytest.raises(BlobMismatch):
        ledger.put_blob(b"other", digest=d)
    with pytest.raises(BlobNotFound):
        ledger.get_blob(b"\x00" * 32)
    i = ledger.append(E.make_entry(ident("alice"), E.OPENING, {"job_id": "j", "node": "alice", "party": 0, "challenge": 1, "data": d}))
    assert ledger.get(i).entry.blob_refs() == [d]
    # corrupt the stored bytes behind the API's back: reads refuse them
    with ledger.engine.begin() as c:
        for sql in storage.drop_trigger_sql(ledger.backend, "blobs"):
            c.execute(text(sql))
        c.execute(storage.blobs.update().where(storage.blobs.c.digest == d).values(data=b"evil"))
    with pytest.raises(BlobCorrupted):
        ledger.get_blob(d)


@pytest.mark.parametrize("table", ["entries", "blobs", "tree_nodes", "checkpoints"])
def test_triggers_reject_update_and_delete(ledger, table):
    ledger.put_blob(b"b")
    ledger.checkpoint(log_entry=False)
    col = {"entries": "kind", "blobs": "size", "tree_nodes": "nid", "checkpoints": "size"}[table]
    for sql in (f"UPDATE {table} SET {col} = {col}", f"DELETE FROM {table}"):
        with pytest.raises(Exception, match="append-only"):
            with ledger.engine.begin() as c:
                c.execute(text(sql))
    if ledger.backend == "postgresql":
        with pytest.raises(Exception, match="append-only"):
            with ledger.engine.begin() as c:
                c.execute(text(f"TRUNCATE {table}"))
    assert ledger.check().ok


def test_migrations_versioned_and_reopen(ledger_url):
    led = Ledger.open(ledger_url, origin=ORIGIN, log_identity=LOG)
    with led.engine.connect() as c:
        assert storage.schema_version(c) == storage.SCHEMA_VERSION
        rows = c.execute(text("SELECT version, name FROM schema_migrations")).all()
    assert [r[0] for r in rows] == [m[0] for m in storage.MIGRATIONS]
    led.close()
    again = Ledger.open(ledger_url)  # idempotent: no second log registration, same config
    assert again.size() == 1 and again.origin == ORIGIN and again.log_key == LOG.bls_pub
    with pytest.raises(LedgerConfigMismatch):
        Ledger.open(ledger_url, origin="other")
    with pytest.raises(LedgerConfigMismatch):
        Ledger.open(ledger_url, hash_name="sha256")
    with again.engine.begin() as c:
        c.execute(storage.schema_migrations.insert().values(version=storage.SCHEMA_VERSION + 1, name="future"))
    again.close()
    with pytest.raises(SchemaVersionError):
        Ledger.open(ledger_url)


def test_sha256_ledger_reproduces_pure_root(ledger_url):
    led = Ledger.open(ledger_url, origin="sha", hash_name="sha256", log_identity=LOG)
    led.append(E.registration(ident("alice")))
    led.append_many([step("alice", i) for i in range(9)])
    data = [e.data for e in led.read()]
    assert led.root() == merkle.root_hash(data, "sha256")
    assert merkle.verify_inclusion(data[4], 4, len(data), led.inclusion_proof(4), led.root(), "sha256")
    led.close()
