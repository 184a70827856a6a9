"""Plaintext reference models: the GPT-2-family decoder, checkpoint I/O and a byte-level BPE tokenizer.

The plaintext model here is the yardstick for every MPC accuracy figure.
"""
from __future__ import annotations

from pathlib import Path

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

# The small model trained by tools/train_tiny_gpt.py and shipped in the package.
TINY_MODEL_DIR: Path = Path(__file__).resolve().parent / "data" / "tiny"

__all__ = [
    "GPT",
    "GPTConfig",
    "ByteBPETokenizer",
    "TINY_MODEL_DIR",
    "load_checkpoint",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "random_model",
    "read_config",
    "sample_next_token",
    "save_hf_checkpoint",
]
