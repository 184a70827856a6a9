"""Plaintext reference models: the GPT-2-family decoder, checkpoint I/O and a byte-level BPE tokenizer.

The plaintext model here is the yardstick for every MPC accuracy figure. The names below load
their modules on first use (PEP 562), so that importing `models.errors` (every role's exception
tree does) does not import torch: key, ledger and report commands start in a fraction of a second.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mpc_core.lazy import lazy_attributes

# The small model trained by tools/train_tiny_gpt.py and shipped in the package.
TINY_MODEL_DIR: Path = Path(__file__).resolve().parent / "data" / "tiny"

_LAZY = {
    "load_checkpoint": "models.checkpoint",
    "load_model_and_tokenizer": "models.checkpoint",
    "load_tokenizer": "models.checkpoint",
    "random_model": "models.checkpoint",
    "read_config": "models.checkpoint",
    "save_hf_checkpoint": "models.checkpoint",
    "GPT": "models.gpt",
    "GPTConfig": "models.gpt",
    "sample_next_token": "models.gpt",
    "ByteBPETokenizer": "models.tokenizer",
}

if TYPE_CHECKING:
    from models.checkpoint import (
        load_checkpoint,
        load_model_and_tokenizer,
        load_tokenizer,
        random_model,
        read_config,
        save_hf_checkpoint,
    )
    from models.gpt import GPT, GPTConfig, sample_next_token
    from models.tokenizer import ByteBPETokenizer


__getattr__ = lazy_attributes('models', _LAZY, globals())


__all__ = ["TINY_MODEL_DIR", *_LAZY]
