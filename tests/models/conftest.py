"""Fixtures for the plaintext model tests: small random configs, seeded generators."""
from __future__ import annotations

import pytest
import torch

from models import GPTConfig, random_model

torch.set_num_threads(1)

SMALL = GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=97, block_size=24, layer_norm_epsilon=1e-5)


@pytest.fixture
def small_config() -> GPTConfig:
    return SMALL


@pytest.fixture
def small_model() -> torch.nn.Module:
    """A random float64 model whose LayerNorm weights and biases are perturbed too (so every tensor matters)."""
    m = random_model(SMALL, seed=7)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".ln_" in name or "ln_f" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m.double()


def _token_ids(shape: tuple[int, ...], vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, shape, generator=g)


@pytest.fixture
def make_ids():
    """`make_ids(shape, vocab, seed)`: token ids from a seeded generator."""
    return _token_ids
