"""The VerificationError tree: malformed verifier calls, never a verdict.

A check that fails on the values it is given returns a failing result; these
exceptions mean the call itself is structurally invalid (wrong dtype, shapes
that do not fit, bad parameters), which a higher layer turns into a verdict.
"""
from __future__ import annotations


class VerificationError(Exception):
    """Root of all verifier errors."""


class MalformedCheckError(VerificationError):
    """A check was called with structurally invalid inputs."""


class CheckDTypeError(MalformedCheckError):
    """A tensor of a check is not int64 (the ring Z_2^64)."""


class CheckShapeError(MalformedCheckError):
    """The shapes of a check's operands do not fit together."""


class CheckParameterError(MalformedCheckError):
    """A check parameter is invalid (lam < 1, bad seed, context or challenge matrix)."""
