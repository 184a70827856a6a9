"""Blobs are stored compressed where it pays; reads, digests and the integrity check see the original bytes."""
from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from ledger import entries as E
from ledger import storage
from ledger.blobs import CODEC_ZLIB, BlobCodecError, blob_digest, pack_blob, unpack_blob
from ledger.errors import BlobCorrupted

from .conftest import ident


def _row(ledger, d: bytes) -> tuple[int, bytes]:
    return ledger.store.get_blob(d)


def _opening(ledger, d: bytes, party: int = 0) -> int:
    return ledger.append(E.make_entry(ident("alice"), E.OPENING, {"job_id": "j", "node": "alice", "party": party,
                                                                   "challenge": 1, "data": d}))


def test_codec_round_trip_and_refusals():
    text_like = b"opening bytes " * 5000
    packed = pack_blob(text_like)
    assert packed[:1] == CODEC_ZLIB and len(packed) < len(text_like) // 10
    assert unpack_blob(len(text_like), packed) == text_like
    rand = os.urandom(300_000)
    assert pack_blob(rand) == rand and unpack_blob(len(rand), rand) == rand  # random bytes: stored as they are
    assert pack_blob(b"tiny") == b"tiny"
    for size, stored in ((len(text_like) + 1, packed), (len(text_like) - 1, packed), (100, b"\x02" + b"x" * 10),
                         (100, CODEC_ZLIB + b"not zlib"), (5, b"longer than five")):
        with pytest.raises(BlobCodecError):
            unpack_blob(size, stored)
    bomb = CODEC_ZLIB + __import__("zlib").compress(b"\0" * 10_000_000)
    with pytest.raises(BlobCodecError):  # inflates no further than the recorded size
        unpack_blob(1000, bomb)


def test_compressed_blobs_read_back_and_pass_the_check(ledger):
    data = b"public openings " * 20_000
    d = ledger.put_blob(data)
    assert d == blob_digest(data)  # the key is the digest of the original bytes
    size, stored = _row(ledger, d)
    assert size == len(data) and len(stored) < len(data) // 10
    assert ledger.get_blob(d) == data
    rand = os.urandom(200_000)
    r = ledger.put_blob(rand)
    assert _row(ledger, r) == (len(rand), rand) and ledger.get_blob(r) == rand
    _opening(ledger, d)
    _opening(ledger, r, party=1)
    ledger.checkpoint()
    rep = ledger.check()
    assert rep.ok and rep.blobs == 2, rep.findings


def test_uncompressed_rows_written_before_compression_still_read(ledger):
    data = b"an old opening " * 10_000
    d = blob_digest(data)
    ledger.store.put_blobs([(d, len(data), data)])  # as every blob was stored before compression
    assert ledger.get_blob(d) == data
    _opening(ledger, d)
    assert ledger.check().ok


def test_tampered_compressed_blob_is_refused_on_read_and_by_the_check(ledger):
    data = b"public openings " * 20_000
    d = ledger.put_blob(data)
    _opening(ledger, d)
    size, stored = _row(ledger, d)
    evil = pack_blob(data.replace(b"public", b"PUBLIC", 1))
    with ledger.engine.begin() as c:
        for sql in storage.drop_trigger_sql(ledger.backend, "blobs"):
            c.execute(text(sql))
        c.execute(storage.blobs.update().where(storage.blobs.c.digest == d).values(data=evil))
    with pytest.raises(BlobCorrupted):
        ledger.get_blob(d)
    rep = ledger.check()
    assert not rep.ok and any("do not match its digest" in f.reason for f in rep.findings)
    with ledger.engine.begin() as c:
        c.execute(storage.blobs.update().where(storage.blobs.c.digest == d).values(data=stored[:-7]))
    with pytest.raises(BlobCorrupted):
        ledger.get_blob(d)
    assert any("do not decode" in f.reason for f in ledger.check().findings)
