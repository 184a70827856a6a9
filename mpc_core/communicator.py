"""The Communicator interface and the in-process transport.

Shares travel with a leading *party axis*: a tensor of shape (P, *shape)
holds the shares of the P parties that live in this process (all N of them
in-process, one per process over the TCP mesh). Protocol code is written
once against that layout, so both transports run the same code and produce
bit-identical shares and transcripts.
"""
from __future__ import annotations

import torch

from mpc_core.errors import PartyError, ShapeError


class Communicator:
    """Moves protocol messages between parties. One call of `all_gather` is one round."""

    n_parties: int
    local_parties: tuple[int, ...]

    def all_gather(self, local: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Given this process's messages (P_local, *s), return every party's (N, *s)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release transport resources (idempotent)."""


class InProcessCommunicator(Communicator):
    """All N parties in one process: messages are already all here."""

    def __init__(self, n_parties: int):
        if not isinstance(n_parties, int) or n_parties < 2:
            raise PartyError(f"MPC needs at least 2 parties, got {n_parties!r}")
        self.n_parties = n_parties
        self.local_parties = tuple(range(n_parties))

    def all_gather(self, local: torch.Tensor) -> torch.Tensor:
        if local.shape[0] != self.n_parties:
            raise ShapeError(f"in-process all_gather expects {self.n_parties} party rows, got {local.shape[0]}")
        return local
