"""Replicas: R processes run each share index's party, and peers take a message from any of them.

specs/node-daemon.md section 7. A job with N share indices and R replicas per index has N R
party ranks on its mesh, replica-major:

    rank(party, replica) = replica * N + party          (R = 1: rank = party, as without replicas)

The replicas of one index hold the same weight share and dealer seed and receive the same
inputs, so an honest replica sends bit for bit what its twins send. Every message for index i
goes to every live replica of i; a round takes index i's message from its lowest live replica
and compares the copies of the others (`pick`): a copy that differs is a divergence, kept as
evidence by the broadcast chains and receipts (specs/broadcast.md), never silently used.
"""
from __future__ import annotations

from dataclasses import dataclass

from mpc_core.errors import PartyError

MAX_REPLICAS = 8


@dataclass(frozen=True)
class Layout:
    """The party ranks of a job: N share indices, R replicas each."""

    n_parties: int
    replicas: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.n_parties, int) or self.n_parties < 2:
            raise PartyError(f"MPC needs at least 2 parties, got {self.n_parties!r}")
        if not isinstance(self.replicas, int) or not 1 <= self.replicas <= MAX_REPLICAS:
            raise PartyError(f"replicas must be 1..{MAX_REPLICAS}, got {self.replicas!r}")

    @property
    def party_ranks(self) -> int:
        """How many ranks run parties (N R); the job's other roles come after them."""
        return self.n_parties * self.replicas

    def rank(self, party: int, replica: int = 0) -> int:
        if not (0 <= party < self.n_parties and 0 <= replica < self.replicas):
            raise PartyError(f"no party {party} replica {replica} in {self.n_parties} x {self.replicas}")
        return replica * self.n_parties + party

    def party_of(self, rank: int) -> int:
        self._check(rank)
        return rank % self.n_parties

    def replica_of(self, rank: int) -> int:
        self._check(rank)
        return rank // self.n_parties

    def ranks_of(self, party: int) -> list[int]:
        """Every replica's rank of share index `party`, replica 0 first."""
        return [self.rank(party, r) for r in range(self.replicas)]

    def peer_ranks(self, rank: int) -> list[int]:
        """The ranks a party rank exchanges openings with: every replica of every other index."""
        p = self.party_of(rank)
        return [j for j in range(self.party_ranks) if j % self.n_parties != p]

    def _check(self, rank: int) -> None:
        if not 0 <= rank < self.party_ranks:
            raise PartyError(f"rank {rank} is not a party rank of {self.n_parties} x {self.replicas}")


def pick(copies: dict[int, bytes]) -> tuple[int, list[int]]:
    """Of one index's copies of a message (rank -> bytes, at least one), the rank whose copy counts
    (the lowest) and the ranks whose copy differs from it."""
    if not copies:
        raise PartyError("no copy of the message from any replica")
    first = min(copies)
    return first, sorted(j for j, b in copies.items() if j != first and b != copies[first])
