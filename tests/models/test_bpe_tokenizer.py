"""Byte-level BPE tokenizer: exact round trips on any text, deterministic training, file checks."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prover.errors import TokenizerError
from models.errors import ModelsError
from models import ByteBPETokenizer

SAMPLE = (
    "And God said, Let there be light: and there was light. And God saw the light, that it was good: "
    "and God divided the light from the darkness. And the evening and the morning were the first day.\n"
) * 8 + "In 1611, 40 translators wrote: 'the LORD's house' -- it's theirs, they'd say; we'll see.\n"

TOK = ByteBPETokenizer.train(SAMPLE, 400)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_text(text):
    ids = TOK.encode(text)
    assert all(0 <= i < TOK.vocab_size for i in ids)
    assert TOK.decode(ids) == text
    assert TOK.decode_bytes(ids) == text.encode("utf-8")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
def test_round_trip_unseen_characters_and_streaming(text):
    ids = TOK.encode(text)
    dec = TOK.stream_decoder()
    assert "".join(dec.push([i]) for i in ids) + dec.flush() == text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["light", " light", "\n", "é", "🙂", "  ", "'s", "1611", "!?"]), max_size=30))
def test_round_trip_mixed_pieces(pieces):
    text = "".join(pieces)
    assert TOK.decode(TOK.encode(text)) == text


def test_training_compresses_and_is_deterministic():
    assert 300 < TOK.vocab_size <= 400  # training stops early once no pair repeats
    ids = TOK.encode(SAMPLE)
    assert len(ids) < len(SAMPLE.encode()) / 2.5
    again = ByteBPETokenizer.train(SAMPLE, 400)
    assert again.merges == TOK.merges
    assert again.encode(SAMPLE) == ids


def test_training_stops_when_no_pair_repeats():
    tok = ByteBPETokenizer.train("abcd", 300)
    assert tok.vocab_size == 256  # no pair occurs twice, so no merge is learned
    assert tok.encode("abcd") == list(b"abcd")


def test_merges_do_not_cross_chunks():
    tok = ByteBPETokenizer.train("ab ab ab ab ab", 260)
    # "b" + " " never merges: a space starts the next chunk
    assert all(tok.decode_bytes([256 + i]).find(b"b ") < 0 for i in range(len(tok.merges)))


def test_save_load_round_trip(tmp_path):
    TOK.save(tmp_path / "t.json")
    loaded = ByteBPETokenizer.load(tmp_path / "t.json")
    assert loaded.merges == TOK.merges and loaded.pattern == TOK.pattern
    assert loaded.encode(SAMPLE) == TOK.encode(SAMPLE)


def test_decode_of_partial_utf8_replaces_instead_of_raising():
    ids = TOK.encode("é")  # two bytes, ids 0xC3 0xA9 (no merge learned for them)
    assert TOK.decode(ids[:1]) == "\ufffd"


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.update(format="gpt2"), "not a"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.update(merges=[[1, 999]]), "not yet defined"),
        (lambda d: d.update(merges=[[1, 2], [1, 2]], vocab_size=258), "duplicate"),
        (lambda d: d.update(merges=[[1, "x"]]), "pair of ints"),
        (lambda d: d.update(vocab_size=5), "vocab_size"),
        (lambda d: d.update(pattern="("), "pattern"),
    ],
)
def test_bad_tokenizer_files(tmp_path, mutate, match):
    d = TOK.to_dict()
    mutate(d)
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.raises(TokenizerError, match=match):
        ByteBPETokenizer.load(tmp_path / "t.json")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        ByteBPETokenizer.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TokenizerError, match="cannot read"):
        ByteBPETokenizer.load(tmp_path / "bad.json")


def test_bad_arguments():
    with pytest.raises(TokenizerError):
        TOK.decode([TOK.vocab_size])
    with pytest.raises(TokenizerError):
        TOK.decode([-1])
    with pytest.raises(TokenizerError):
        TOK.encode("lone surrogate \ud800")
    with pytest.raises(TokenizerError):
        TOK.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TokenizerError):
        ByteBPETokenizer.train("abc", 100)
    assert issubclass(TokenizerError, ModelsError)  # the models layer's own tree (models/errors.py)
