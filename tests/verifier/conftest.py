"""Fixtures shared by the verifier tests: one small published model per test module."""
from __future__ import annotations

import pytest

from mpc_core.prg import master_from_int
from models import GPTConfig, random_model
from models.publish import publish_model

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)  # the tests' CFG must equal this


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("published")
    publish_model(random_model(CFG, seed=2), 3, d, master_from_int(7))
    return d
