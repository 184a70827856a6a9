"""The models package's exception tree (model code is shared by every role)."""
from __future__ import annotations


class ModelsError(Exception):
    """Root of every error the models package raises on purpose."""


class ModelError(ModelsError):
    """A model was called with inputs it cannot handle (bad shape, too long a context, bad config)."""


class CheckpointError(ModelsError):
    """A checkpoint directory is missing, incomplete, inconsistent or holds bad values."""


class TokenizerError(ModelsError):
    """A tokenizer file is malformed, or a text or token id cannot be encoded or decoded."""
