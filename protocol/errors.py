"""The protocol package's exception tree."""
from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error raised by protocol/."""


class BodyError(ProtocolError):
    """A ledger entry body that is not a valid body of its kind (missing field, wrong type)."""


class JobError(ProtocolError):
    """A job whose entries on the ledger do not make a job (no job.open, no valid assignment...)."""


class NotSealed(ProtocolError):
    """No valid signed checkpoint seals the job's commitments yet."""


class NotRevealed(ProtocolError):
    """Some participant has not revealed its beacon value yet: the challenge cannot be derived."""
