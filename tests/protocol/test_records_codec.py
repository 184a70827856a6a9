"""The one step-record codec (protocol.opening): openings without spill offsets, a node's state with them."""
import pytest
import torch

from mpc_core import Session, SharedTensor
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.prg import master_from_int
from mpc_core.transcript import Transcript
from protocol.opening import decode_records, encode_records


def _records(tmp_path):
    s = Session.in_process(2, master_from_int(3), transcript_dir=str(tmp_path))
    x = SharedTensor.from_plain(s, torch.arange(6, dtype=torch.float64).reshape(2, 3))
    (x @ SharedTensor.from_plain(s, torch.ones(3, 3, dtype=torch.float64))).gelu()
    return s.transcripts[0]


def test_records_round_trip_with_and_without_offsets(tmp_path):
    t = _records(tmp_path)
    recs = list(t.records)
    plain = decode_records(decode_cbor(canonical_cbor(encode_records(recs))))
    assert [r.body() for r in plain] == [r.body() for r in recs]
    assert all(not r.offsets for r in plain)
    kept = decode_records(decode_cbor(canonical_cbor(encode_records(recs, with_offsets=True))), with_offsets=True)
    assert [(r.body(), r.offsets) for r in kept] == [(r.body(), r.offsets) for r in recs]
    t.close()
    again = Transcript.reopen(0, tmp_path, kept)
    try:
        assert again.chain_digest() == t.chain_digest()
        assert set(again.load(recs[-1].index)) == set(recs[-1].digests)
    finally:
        again.close()


def test_an_opening_never_carries_offsets(tmp_path):
    recs = list(_records(tmp_path).records)
    with pytest.raises(ValueError):
        decode_records(encode_records(recs, with_offsets=True))
