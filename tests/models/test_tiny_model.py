"""The tiny GPT shipped in models/data/tiny: loads, is small, predicts held-out text, is deterministic."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from models import TINY_MODEL_DIR, load_checkpoint, load_model_and_tokenizer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (TINY_MODEL_DIR / "model.safetensors").is_file(), reason="shipped tiny model not trained yet"
)


def _trainer():
    spec = importlib.util.spec_from_file_location("train_tiny_gpt", ROOT / "tools" / "train_tiny_gpt.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny():
    return load_model_and_tokenizer(TINY_MODEL_DIR)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return (TINY_MODEL_DIR / "prompts.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def held_out():
    t = _trainer()
    _train, val, held = t.split(t.read_chapters(t.CORPUS))
    return val, held


def test_shipped_files_are_small_and_complete():
    names = {p.name for p in TINY_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "prompts.txt", "SOURCE.md"} <= names
    total = sum(p.stat().st_size for p in TINY_MODEL_DIR.iterdir())
    assert total < 5 * 2**20


def test_config_matches_training_record(tiny):
    model, tok = tiny
    record = json.loads((TINY_MODEL_DIR / "training.json").read_text())
    assert model.config.to_dict() == record["config"]
    assert model.num_params() == record["parameters"]
    assert tok.vocab_size == model.config.vocab_size


def test_prompts_come_from_held_out_chapters(prompts, held_out):
    _val, held = held_out
    assert len(prompts) == 20 and len(set(prompts)) == 20
    openings = {v for chapter in held for v in chapter}
    for p in prompts:
        assert p and any(v.startswith(p) for v in openings), p


def test_held_out_loss_is_far_below_chance(tiny, held_out):
    model, tok = tiny
    val, _held = held_out
    ids = torch.tensor(tok.encode(val)[: 8 * model.config.block_size + 1])
    x = ids[:-1].view(8, -1)  # (8, block_size)
    y = ids[1:].view(8, -1)
    with torch.no_grad():
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    assert loss < 0.5 * math.log(model.config.vocab_size)  # chance is ln(512) = 6.24 nats
    record = json.loads((TINY_MODEL_DIR / "training.json").read_text())
    assert abs(loss - record["history"][-1]["val_loss"]) < 0.3


def test_greedy_sample_is_deterministic(tiny, prompts):
    model, tok = tiny
    idx = torch.tensor([tok.encode(prompts[0])])
    a = model.generate(idx, 24, temperature=0)
    b = model.generate(idx, 24, temperature=0)
    assert torch.equal(a, b)
    reloaded = load_checkpoint(TINY_MODEL_DIR)
    assert torch.equal(reloaded.generate(idx, 24, temperature=0), a)
    assert tok.decode(a[0].tolist()).startswith(prompts[0])


def test_float64_kv_cache_matches_full_forward_on_real_weights(prompts):
    model, tok = load_model_and_tokenizer(TINY_MODEL_DIR, dtype=torch.float64)
    seq = model.generate(torch.tensor([tok.encode(prompts[5])]), 20, temperature=0)
    full = model(seq)
    logits, past = model(seq[:, :4], use_cache=True)
    parts = [logits]
    for t in range(4, seq.size(1)):
        logits, past = model(seq[:, t : t + 1], past_kv=past, use_cache=True)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-10)


def test_sampled_continuation_follows_the_seed(tiny, prompts):
    model, tok = tiny
    idx = torch.tensor([tok.encode(prompts[1])])
    a = model.generate(idx, 20, temperature=0.8, top_k=40, seed=5)
    assert torch.equal(a, model.generate(idx, 20, temperature=0.8, top_k=40, seed=5))
    assert not torch.equal(a, model.generate(idx, 20, temperature=0.8, top_k=40, seed=6))
