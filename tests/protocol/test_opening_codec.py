"""The split opening (protocol.opening): the party's own blob and the public-values blob round-trip; every
party of one session posts the same public blob; the inline form before the split still decodes; an opening
with both forms, neither, or a public blob that does not decode is refused (an exception the auditor turns into a verdict)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_core import Session, SharedTensor
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.errors import EncodingError
from mpc_core.prg import master_from_int
from mpc_core.transcript import StepRecord
from protocol.opening import OpeningBlobs, decode_opening, decode_public, enc_tensor, encode_opening, encode_public


def _session(tmp_path, parties: int = 3):
    s = Session.in_process(parties, master_from_int(3), transcript_dir=str(tmp_path))
    x = SharedTensor.from_plain(s, torch.arange(6, dtype=torch.float64).reshape(2, 3))
    (x @ SharedTensor.from_plain(s, torch.ones(3, 3, dtype=torch.float64))).gelu()
    return s


def _same(a: dict, b: dict) -> bool:
    """Two decoded openings hold the same records, salts, values and tensors."""
    def tensors_eq(x, y) -> bool:
        return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)

    return ([r.body() for r in a["records"]] == [r.body() for r in b["records"]] and a["salts"] == b["salts"]
            and a["public"].keys() == b["public"].keys()
            and all(a["public"][k].keys() == b["public"][k].keys()
                    and all(tensors_eq(a["public"][k][n], b["public"][k][n]) for n in a["public"][k])
                    for k in a["public"])
            and a["outs"].keys() == b["outs"].keys() and all(tensors_eq(a["outs"][k], b["outs"][k]) for k in a["outs"])
            and a["weights"].keys() == b["weights"].keys()
            and all(tensors_eq(a["weights"][k], b["weights"][k]) for k in a["weights"])
            and len(a["tokens"]) == len(b["tokens"]) and all(map(tensors_eq, a["tokens"], b["tokens"]))
            and a["weight_salts"] == b["weight_salts"])


def test_every_party_of_a_session_posts_the_same_public_blob_and_its_own_blob_round_trips(tmp_path):
    s = _session(tmp_path)
    weights = {"w": torch.arange(4, dtype=torch.int64).reshape(2, 2)}
    tokens = [torch.ones(2, 5, dtype=torch.int64)]
    blobs = [encode_opening(list(t.records), [bytes([p]) * 16] * len(t.records), t.load, weights, tokens,
                            {"w": b"s" * 16}) for p, t in sorted(s.transcripts.items())]
    assert all(isinstance(b, OpeningBlobs) and b.public is not None for b in blobs)
    assert len({b.public for b in blobs}) == 1  # one public blob per job: stored once
    assert len({b.data for b in blobs}) == len(blobs)  # each party's own blob differs
    assert decode_public(decode_cbor(blobs[0].public))  # the session opened values
    for b, (_, t) in zip(blobs, sorted(s.transcripts.items())):
        assert b"public" not in decode_cbor(b.data)
        op = decode_opening(b.data, b.public)
        assert [r.body() for r in op["records"]] == [r.body() for r in t.records]
        for k, named in op["public"].items():
            assert all(torch.equal(v, t.load(k)[n]) for n, v in named.items())
        assert all(torch.equal(v, t.load(k)["out"]) for k, v in op["outs"].items())
        assert torch.equal(op["weights"]["w"], weights["w"]) and op["weight_salts"] == {"w": b"s" * 16}
        # the inline form (before the split) decodes to the same opening
        inline = canonical_cbor({**decode_cbor(b.data), "public": decode_cbor(b.public)})
        assert _same(decode_opening(inline), op)


def test_an_opening_with_both_forms_or_neither_or_a_bad_public_blob_is_refused(tmp_path):
    s = _session(tmp_path, 2)
    t = s.transcripts[0]
    b = encode_opening(list(t.records), [b"x" * 16] * len(t.records), t.load, {}, [])
    inline = canonical_cbor({**decode_cbor(b.data), "public": decode_cbor(b.public)})
    with pytest.raises(ValueError):  # both: the values inline and a referenced blob
        decode_opening(inline, b.public)
    with pytest.raises(KeyError):  # neither
        decode_opening(b.data)
    for bad in (canonical_cbor([1, 2]), canonical_cbor({1: {"opened.x": [[2], b"\x00" * 3]}}), b"\xff"):
        with pytest.raises((ValueError, TypeError, KeyError, EncodingError)):
            decode_opening(b.data, bad)


_names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=6)


@st.composite
def _tensor(draw) -> torch.Tensor:
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    n = 1
    for d in shape:
        n *= d
    vals = draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=n, max_size=n))
    return torch.tensor(vals, dtype=torch.int64).reshape(shape)


@st.composite
def _transcript(draw):
    """Step records with tensors: matmul steps with an output, others with opened values, as a transcript has."""
    records, data = [], {}
    for index in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["beaver_matmul", "fixed_matmul", "trunc", "b2a"]))
        tensors = {"out": draw(_tensor())} if "matmul" in kind else {}
        tensors.update({f"opened.{n}": draw(_tensor()) for n in draw(st.lists(_names, max_size=2, unique=True))})
        records.append(StepRecord(index, kind, "s", {n: list(v.shape) for n, v in tensors.items()},
                                  {n: bytes(32) for n in tensors}))
        data[index] = tensors
    return records, data


@settings(max_examples=60, deadline=None)
@given(_transcript(), st.dictionaries(_names, _tensor(), max_size=3), st.lists(_tensor(), max_size=2))
def test_split_opening_round_trips(transcript, weights, tokens):
    records, data = transcript
    salts = [bytes([i]) * 16 for i in range(len(records))]
    b = encode_opening(records, salts, data.__getitem__, weights, tokens, {n: b"k" * 16 for n in weights})
    op = decode_opening(b.data, b.public)
    want_public = {k: {n: v for n, v in d.items() if n.startswith("opened.")} for k, d in data.items()}
    want_public = {k: d for k, d in want_public.items() if d}
    assert op["public"].keys() == want_public.keys()
    assert all(torch.equal(op["public"][k][n], want_public[k][n]) for k in want_public for n in want_public[k])
    assert all(torch.equal(op["outs"][k], data[k]["out"]) for k in op["outs"])
    assert set(op["outs"]) == {r.index for r in records if "matmul" in r.kind}
    assert [r.body() for r in op["records"]] == [r.body() for r in records] and op["salts"] == salts
    assert all(torch.equal(op["weights"][n], w) for n, w in weights.items()) and len(op["tokens"]) == len(tokens)
    # the public blob is exactly the public values' codec: what two agreeing parties post is one blob
    assert b.public == encode_public({k: {n: enc_tensor(v) for n, v in d.items()} for k, d in want_public.items()})
