"""Typed errors raised by the prover's plaintext side (models, checkpoints, tokenizer)."""
from __future__ import annotations


class ProverError(Exception):
    """Root of every error the prover package raises on purpose."""


class ModelError(ProverError):
    """A model was called with inputs it cannot handle (bad shape, too long a context, bad config)."""


class CheckpointError(ProverError):
    """A checkpoint directory is missing, incomplete, inconsistent or holds bad values."""


class TokenizerError(ProverError):
    """A tokenizer file is malformed, or a text or token id cannot be encoded or decoded."""
