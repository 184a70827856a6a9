"""The plaintext reference GPT: KV cache, generation, sampling, numerics, input checks."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from prover.errors import ModelError
from models import GPT, GPTConfig, random_model, sample_next_token
from models.gpt import gelu_tanh


def test_kv_cache_decode_equals_full_forward(small_model, make_ids):
    idx = make_ids((3, 20), small_model.config.vocab_size, seed=1)
    full = small_model(idx)  # (3, 20, V)
    for prefix in (1, 7, 19):
        logits, past = small_model(idx[:, :prefix], use_cache=True)
        steps = [logits]
        for t in range(prefix, idx.size(1)):
            logits, past = small_model(idx[:, t : t + 1], past_kv=past, use_cache=True)
            steps.append(logits)
        assert past[0][0].shape == (3, small_model.config.n_head, 20, small_model.config.head_size)
        got = torch.cat(steps, dim=1)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, full, rtol=0, atol=1e-12)


def test_kv_cache_chunked_prefill_equals_full_forward(small_model, make_ids):
    idx = make_ids((2, 18), small_model.config.vocab_size, seed=2)
    full = small_model(idx)
    a, past = small_model(idx[:, :5], use_cache=True)
    b, past = small_model(idx[:, 5:13], past_kv=past, use_cache=True)
    c, _ = small_model(idx[:, 13:], past_kv=past, use_cache=True)
    torch.testing.assert_close(torch.cat([a, b, c], dim=1), full, rtol=0, atol=1e-12)


def test_causality_future_tokens_do_not_change_past_logits(small_model, make_ids):
    idx = make_ids((1, 12), small_model.config.vocab_size, seed=3)
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % small_model.config.vocab_size
    a, b = small_model(idx), small_model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def _naive_greedy(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy decoding without a cache, cropping to block_size as nanoGPT does."""
    seq = idx
    for _ in range(n):
        logits = model(seq[:, -model.config.block_size :])
        seq = torch.cat([seq, logits[:, -1, :].argmax(dim=-1, keepdim=True)], dim=1)
    return seq


@pytest.mark.parametrize("prompt_len,new", [(3, 10), (20, 12)])  # the second one slides past block_size (24)
def test_generate_greedy_equals_uncached_greedy(small_model, make_ids, prompt_len, new):
    idx = make_ids((2, prompt_len), small_model.config.vocab_size, seed=4)
    got = small_model.generate(idx, new, temperature=0)
    assert got.shape == (2, prompt_len + new)
    assert torch.equal(got, _naive_greedy(small_model, idx, new))


def test_sampling_is_seeded_and_leaves_global_rng_alone(small_model, make_ids):
    idx = make_ids((1, 4), small_model.config.vocab_size, seed=5)
    before = torch.get_rng_state()
    a = small_model.generate(idx, 16, temperature=1.0, top_k=None, seed=11)
    b = small_model.generate(idx, 16, temperature=1.0, top_k=None, seed=11)
    c = small_model.generate(idx, 16, temperature=1.0, top_k=None, seed=12)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_top_k_one_is_greedy(small_model, make_ids):
    idx = make_ids((2, 5), small_model.config.vocab_size, seed=6)
    assert torch.equal(
        small_model.generate(idx, 8, temperature=0.7, top_k=1, seed=3),
        small_model.generate(idx, 8, temperature=0),
    )


def test_top_k_restricts_the_support():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    seen = {int(sample_next_token(logits, 5.0, 2, g)) for _ in range(200)}
    assert seen == {1, 2}


def test_greedy_breaks_ties_to_the_lowest_id():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    assert int(sample_next_token(logits, 0, None, None)) == 1


def test_gelu_is_gpt2_tanh_form():
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"), rtol=0, atol=1e-15)
    # and differs from the erf GeLU, so the test would notice a swap
    assert (gelu_tanh(x) - F.gelu(x)).abs().max() > 1e-5


def test_layernorm_eps_comes_from_config():
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=11, block_size=4, layer_norm_epsilon=1e-3)
    m = GPT(cfg)
    eps = {mod.eps for mod in m.modules() if isinstance(mod, torch.nn.LayerNorm)}
    assert eps == {1e-3}


def test_parameter_names_and_shapes_follow_gpt2(small_config):
    sd = GPT(small_config).state_dict()
    C, V = small_config.n_embd, small_config.vocab_size
    assert sd["transformer.wte.weight"].shape == (V, C)
    assert sd["transformer.wpe.weight"].shape == (small_config.block_size, C)
    assert sd["transformer.h.1.attn.c_attn.weight"].shape == (3 * C, C)  # Linear: (out, in)
    assert sd["transformer.h.1.attn.c_proj.weight"].shape == (C, C)
    assert sd["transformer.h.1.mlp.c_fc.weight"].shape == (4 * C, C)
    assert sd["transformer.h.1.mlp.c_proj.weight"].shape == (C, 4 * C)
    assert sd["transformer.ln_f.bias"].shape == (C,)
    m = GPT(small_config)
    assert m.lm_head.weight is m.transformer.wte.weight


def test_construction_and_random_init_do_not_touch_global_rng(small_config):
    before = torch.get_rng_state()
    a = random_model(small_config, seed=3)
    GPT(small_config)
    assert torch.equal(torch.get_rng_state(), before)
    b = random_model(small_config, seed=3)
    c = random_model(small_config, seed=4)
    for (k, x), (_, y), (_, z) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(x, y), k
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)


def test_random_init_follows_gpt2_scales():
    cfg = GPTConfig(n_layer=8, n_head=4, n_embd=128, vocab_size=1000, block_size=64)
    m = random_model(cfg, seed=0)
    assert abs(m.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.001
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in m.transformer.h])
    assert abs(proj.std().item() - 0.02 / math.sqrt(2 * cfg.n_layer)) < 0.0005
    assert torch.equal(m.transformer.h[0].attn.c_attn.bias, torch.zeros(3 * 128))
    assert torch.equal(m.transformer.ln_f.weight, torch.ones(128))


def test_float32_and_float64_agree(small_model, make_ids):
    idx = make_ids((2, 16), small_model.config.vocab_size, seed=9)
    m32 = GPT(small_model.config)
    m32.load_state_dict({k: v.float() for k, v in small_model.state_dict().items()})
    torch.testing.assert_close(m32(idx).double(), small_model(idx), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "bad",
    [
        lambda m: m(torch.zeros(1, 25, dtype=torch.long)),  # longer than block_size 24
        lambda m: m(torch.tensor([[0, 97]])),  # id == vocab_size
        lambda m: m(torch.tensor([[-1]])),
        lambda m: m(torch.zeros(4, dtype=torch.long)),  # not (B, T)
        lambda m: m(torch.zeros(1, 3)),  # float ids
        lambda m: m(torch.zeros(1, 0, dtype=torch.long)),
        lambda m: m.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=-1.0),
        lambda m: m.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=1.0, top_k=0),
        lambda m: m.generate(torch.zeros(1, 2, dtype=torch.long), -1),
    ],
)
def test_bad_inputs_raise_model_error(small_model, bad):
    with pytest.raises(ModelError):
        bad(small_model)


def test_cache_past_block_size_raises(small_model):
    _, past = small_model(torch.zeros(1, 24, dtype=torch.long), use_cache=True)
    with pytest.raises(ModelError, match="block_size"):
        small_model(torch.zeros(1, 1, dtype=torch.long), past_kv=past, use_cache=True)


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_embd=30, n_head=4), dict(n_layer=0), dict(layer_norm_epsilon=0.0), dict(vocab_size=True)],
)
def test_bad_config_raises_model_error(kwargs):
    base = dict(n_layer=1, n_head=2, n_embd=8, vocab_size=11, block_size=4)
    with pytest.raises(ModelError):
        GPTConfig(**{**base, **kwargs})
