"""Transcripts: deterministic across runs, spill to disk, detect tampering on load."""
import pytest
import torch

from mpc_core import Session, SharedTensor
from mpc_core.errors import TranscriptError
from mpc_core.prg import master_from_int


def _program(s):
    g = torch.Generator().manual_seed(0)
    x = SharedTensor.from_plain(s, torch.randn(3, 8, generator=g, dtype=torch.float64))
    w = SharedTensor.from_plain(s, torch.randn(8, 8, generator=g, dtype=torch.float64))
    h = (x @ w.mask("w")).gelu()
    return h.softmax(-1).layer_norm()


def _run(tmp=None, seed=1):
    s = Session.in_process(3, master_from_int(seed), transcript_dir=tmp)
    _program(s)
    return s


def test_transcripts_are_identical_across_runs(tmp_path):
    a, b = _run(seed=1), _run(tmp_path, seed=1)
    for p in range(3):
        assert a.transcripts[p].digests() == b.transcripts[p].digests()
        assert a.transcripts[p].chain_digest() == b.transcripts[p].chain_digest()
    assert [r.index for r in a.transcripts[0].records] == list(range(len(a.transcripts[0].records)))
    kinds = {r.kind for r in a.transcripts[0].records}
    assert {"mask_weight", "fixed_matmul", "trunc", "beaver_mul", "lookup_open"} <= kinds


def test_parties_have_different_transcripts_and_a_different_seed_changes_them():
    a, c = _run(seed=1), _run(seed=2)
    assert a.transcripts[0].chain_digest() != a.transcripts[1].chain_digest()
    assert a.transcripts[0].chain_digest() != c.transcripts[0].chain_digest()


def test_spilled_steps_load_back_and_match_their_digests(tmp_path):
    s = _run(tmp_path)
    t = s.transcripts[1]
    rec = t.records[5]
    data = t.load(rec.index)
    assert set(data) == set(rec.digests)
    # Public openings are the same for every party.
    opened = [k for k in data if k.startswith("opened.")]
    for k in opened:
        assert torch.equal(s.transcripts[0].load(rec.index)[k], data[k])


def test_tampered_spill_file_is_detected(tmp_path):
    s = _run(tmp_path)
    t = s.transcripts[0]
    rec = t.records[3]
    off = min(rec.offsets.values())
    t._file.flush()
    with open(t.path, "r+b") as fh:
        fh.seek(off)
        b = fh.read(1)
        fh.seek(off)
        fh.write(bytes([b[0] ^ 1]))
    with pytest.raises(TranscriptError, match="does not match its digest"):
        t.load(rec.index)
    with pytest.raises(TranscriptError, match="no step"):
        t.load(10**9)


def test_digest_only_transcripts_refuse_to_load():
    s = _run()
    with pytest.raises(TranscriptError, match="digests only"):
        s.transcripts[0].load(0)


def test_load_follows_appends_and_a_reassigned_record_list(tmp_path):
    s = _run(tmp_path)
    t = s.transcripts[2]
    recs = list(t.records)
    assert set(t.load(recs[4].index)) == set(recs[4].digests)
    t.records = recs[:6]  # a caller may still reassign the list
    assert set(t.load(recs[5].index)) == set(recs[5].digests)
    with pytest.raises(TranscriptError, match="no step"):
        t.load(recs[6].index)
    t.records = list(reversed(recs))
    assert set(t.load(recs[6].index)) == set(recs[6].digests)
    t.records.append(recs[0])  # an in-place append is seen too
    assert set(t.load(recs[0].index)) == set(recs[0].digests)


def test_reopen_reads_back_a_finished_transcript(tmp_path):
    from mpc_core.transcript import Transcript

    s = _run(tmp_path)
    t = s.transcripts[1]
    recs = list(t.records)
    t.close()
    again = Transcript.reopen(1, tmp_path, recs)
    try:
        assert again.digests() == [r.digest() for r in recs]
        assert again.chain_digest() == t.chain_digest()
        for r in (recs[0], recs[len(recs) // 2], recs[-1]):
            assert set(again.load(r.index)) == set(r.digests)
        with pytest.raises(TranscriptError, match="no step"):
            again.load(recs[-1].index + 1)
    finally:
        again.close()
    with pytest.raises(TranscriptError, match="after"):
        Transcript.reopen(1, tmp_path, [recs[1], recs[0]])


def test_canonical_cbor_rejects_with_the_same_errors():
    from mpc_core.encoding import EncodingError, _check, canonical_cbor

    class Sub(int):
        pass

    good = [1, b"x", "s", True, None, [1, [2, (3,)]], {"a": [1, {2: b""}]}, Sub(3), {Sub(1): 2}]
    for obj in good:
        assert canonical_cbor(obj)
    bad = [1.5, [1, [2, 0.5]], {"a": {"b": [1, 2.0]}}, {(1,): 2}, {"k": object()}, [b"", {1: {1.0: 2}}], object()]
    for obj in bad:
        with pytest.raises(EncodingError) as got:
            canonical_cbor(obj)
        with pytest.raises(EncodingError) as ref:
            _check(obj, "")
        assert str(got.value) == str(ref.value)
