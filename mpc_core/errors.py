"""The MPCError tree: every failure in mpc_core is one of these, never an assert."""
from __future__ import annotations


class MPCError(Exception):
    """Root of all mpc_core errors."""


class EncodingError(MPCError):
    """A value cannot be encoded (non-finite, out of range, float in a canonical encoding, bad bytes)."""


class ShapeError(MPCError):
    """Shapes do not fit the operation."""


class PartyError(MPCError):
    """Wrong party count, party index, or shares from different sessions / encodings."""


class DTypeError(MPCError):
    """A tensor has the wrong dtype for the operation."""


class DealerError(MPCError):
    """The dealer cannot serve a request (unknown kind, bad spec, missing seed)."""


class TransportError(MPCError):
    """Communication failed."""


class PeerTimeout(TransportError):
    """A peer did not answer within the configured timeout."""


class PeerDisconnected(TransportError):
    """A peer closed its connection mid-protocol."""


class TranscriptError(MPCError):
    """A transcript record is missing, corrupt or inconsistent."""
