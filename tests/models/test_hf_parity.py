"""Parity with transformers.GPT2LMHeadModel: its checkpoints load to the same logits, and it loads ours."""
from __future__ import annotations

import inspect
import re

import pytest
import torch

from models import GPTConfig, load_checkpoint, random_model, save_hf_checkpoint

transformers = pytest.importorskip("transformers")


def _hf_model(config: GPTConfig, seed: int):
    """A transformers GPT2LMHeadModel with every parameter drawn from a seeded local generator."""
    hf_cfg = transformers.GPT2Config(
        n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd, vocab_size=config.vocab_size,
        n_positions=config.block_size, layer_norm_epsilon=config.layer_norm_epsilon,
        attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0,
    )
    with torch.random.fork_rng():  # transformers' own init uses the global RNG; keep it from leaking
        m = transformers.GPT2LMHeadModel(hf_cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, p in m.named_parameters():
            base = 1.0 if re.search(r"ln_(1|2|f)\.weight$", _name) else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    return m


@pytest.fixture(scope="module")
def hf_config() -> GPTConfig:
    return GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=101, block_size=32, layer_norm_epsilon=1e-5)


def _hf_logits(m, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return m.to(dtype)(idx).logits


def test_transformers_save_pretrained_safetensors_matches(tmp_path, hf_config, make_ids):
    hf = _hf_model(hf_config, seed=1)
    hf.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    idx = make_ids((2, 32), hf_config.vocab_size, seed=4)
    ours64 = load_checkpoint(tmp_path / "hf", dtype=torch.float64)
    torch.testing.assert_close(ours64(idx), _hf_logits(hf, idx, torch.float64), rtol=0, atol=1e-10)
    ours32 = load_checkpoint(tmp_path / "hf", dtype=torch.float32)
    torch.testing.assert_close(ours32(idx), _hf_logits(hf, idx, torch.float32), rtol=0, atol=2e-5)


def test_transformers_pytorch_model_bin_matches(tmp_path, hf_config, make_ids):
    hf = _hf_model(hf_config, seed=2)
    d = tmp_path / "hf"
    if "safe_serialization" in inspect.signature(hf.save_pretrained).parameters:  # transformers 4.x
        hf.save_pretrained(d, safe_serialization=False)
    else:  # 5.x writes safetensors only; write the .bin as 4.x did: torch.save of the state dict
        hf.save_pretrained(d)
        (d / "model.safetensors").unlink()
        torch.save(hf.state_dict(), str(d / "pytorch_model.bin"))
    assert (d / "pytorch_model.bin").is_file() and not (d / "model.safetensors").exists()
    idx = make_ids((1, 25), hf_config.vocab_size, seed=5)
    ours = load_checkpoint(d, dtype=torch.float64)
    torch.testing.assert_close(ours(idx), _hf_logits(hf, idx, torch.float64), rtol=0, atol=1e-10)


def test_transformers_loads_our_checkpoint(tmp_path, hf_config, make_ids):
    ours = random_model(hf_config, seed=9).double()
    save_hf_checkpoint(ours, tmp_path / "ck")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ck").eval()
    idx = make_ids((2, 30), hf_config.vocab_size, seed=6)
    torch.testing.assert_close(_hf_logits(hf, idx, torch.float64), ours(idx), rtol=0, atol=1e-10)


def test_kv_cache_greedy_matches_transformers_generate(tmp_path, hf_config, make_ids):
    hf = _hf_model(hf_config, seed=3).double()
    hf.save_pretrained(tmp_path / "hf")
    ours = load_checkpoint(tmp_path / "hf", dtype=torch.float64)
    idx = make_ids((1, 6), hf_config.vocab_size, seed=7)
    with torch.no_grad():
        want = hf.generate(idx, max_new_tokens=12, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(idx))
    assert torch.equal(ours.generate(idx, 12, temperature=0), want)


