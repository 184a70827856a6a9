"""Typed errors raised by the prover's plaintext side (models, checkpoints, tokenizer)."""
from __future__ import annotations


from models.errors import CheckpointError, ModelError, ModelsError, TokenizerError  # noqa: F401 (re-exported)


class ProverError(Exception):
    """Root of every error the prover package raises on purpose."""


# --- node key files (prover/keys.py) -------------------------------------------
class NodeKeyError(ProverError):
    """Node key material cannot be created, written, read or trusted."""


class KeyFileExists(NodeKeyError):
    """The key file already exists; keygen never overwrites a key."""


class KeyFilePermissions(NodeKeyError):
    """The key file is readable or writable by group or others, or is not a regular file."""


class KeyFileFormat(NodeKeyError):
    """The key file is not a well-formed node key file of a supported version, or is inconsistent."""


class InvalidNodeId(NodeKeyError):
    """A node id is empty, too long or uses characters outside [A-Za-z0-9._:@-]."""


# --- private channels (prover/channels.py) ---------------------------------------
class ChannelError(ProverError):
    """A private-channel message or frame is refused."""


class ChannelFormatError(ChannelError):
    """Garbage, non-canonical or wrongly shaped CBOR, unknown tag or version."""


class ChannelKeyError(ChannelError):
    """A public key is malformed or a key agreement yields no usable secret (low-order point)."""


class ChannelAuthError(ChannelError):
    """AEAD authentication failed: wrong key, tampered ciphertext or tampered header (associated data)."""


class ChannelContextError(ChannelError):
    """An authentic-looking message is for another recipient, job, purpose or sender than expected."""


class ReplayError(ChannelError):
    """The counter is not strictly greater than the last accepted one of its stream."""


class FrameError(ChannelError):
    """A length-prefixed socket frame is malformed."""


class FrameTooLarge(FrameError):
    """A frame's length exceeds the allowed maximum (checked before reading or sending the body)."""


class TruncatedFrame(FrameError):
    """The peer closed the connection in the middle of a frame."""


class PeerClosed(FrameError):
    """The peer closed the connection cleanly at a frame boundary."""
