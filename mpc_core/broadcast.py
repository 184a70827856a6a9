"""Broadcast chains: what a party sent each peer and received from each peer, as hash chains.

Every message between parties is a broadcast (an opening sends the same share to
every peer), so an honest party's chains towards its peers are equal. At the end of
a job each party signs, for each peer, a receipt statement over the chain of what it
sent that peer; the peer checks it against what it received and publishes it. Two
valid receipts by one party for one job with different heads prove that it sent
different values to different peers (equivocation). Spec: specs/broadcast.md.

    h_0     = 32 zero bytes
    h_{k+1} = BLAKE3(BROADCAST_CHAIN || h_k || canonical_cbor([k, dtype, shape]) || tensor bytes)
    receipt = BROADCAST_RECEIPT || canonical_cbor([job, sender_rank, recipient_rank, count, head])

Ranks are party indices without replicas and `replica N + party` with them (mpc_core.replicas).
The recipient is bound in the statement only as information; equivocation is decided on
(job, sender) alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import blake3
import torch

from mpc_core import domains
from mpc_core.encoding import canonical_cbor
from mpc_core.errors import MPCError

ZERO_HEAD = bytes(32)


def chain_step(head: bytes, k: int, t: torch.Tensor) -> bytes:
    """The next chain head after message number `k` (a tensor) was sent or received."""
    h = blake3.blake3(domains.BROADCAST_CHAIN)
    h.update(head)
    h.update(canonical_cbor([k, str(t.dtype).removeprefix("torch."), list(t.shape)]))
    if t.dtype != torch.int64:
        raise MPCError(f"broadcast messages are int64, got {t.dtype}")
    arr = t.contiguous().numpy()
    h.update(memoryview(arr).cast("B") if arr.ndim and arr.size else arr.tobytes())
    return h.digest()


def receipt_message(job: str, sender: int, recipient: int, count: int, head: bytes) -> bytes:
    """The bytes a sender signs: 'I sent `recipient` exactly `count` messages, chaining to `head`'."""
    return domains.BROADCAST_RECEIPT + canonical_cbor([job, sender, recipient, count, bytes(head)])


@dataclass
class BroadcastLog:
    """One party rank's chains: towards each peer rank (sent) and from each peer rank (received).

    `peer_ranks` defaults to every other rank below `n_parties`; with replicas (mpc_core.replicas) it is
    every replica of every other share index. A peer lost mid-job stops being chained: `counts[j]` is the
    number of rounds chained with peer j (every round, for a peer that stayed)."""

    party: int
    n_parties: int
    peer_ranks: tuple[int, ...] | None = None
    sent: dict[int, bytes] = field(default_factory=dict)
    received: dict[int, bytes] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.party < self.n_parties:
            raise MPCError(f"party {self.party} outside 0..{self.n_parties - 1}")
        if self.peer_ranks is None:
            self.peer_ranks = tuple(j for j in range(self.n_parties) if j != self.party)
        if self.party in self.peer_ranks or any(not 0 <= j < self.n_parties for j in self.peer_ranks):
            raise MPCError(f"bad peer ranks {self.peer_ranks} for rank {self.party}")
        for j in self.peers:
            self.sent.setdefault(j, ZERO_HEAD)
            self.received.setdefault(j, ZERO_HEAD)
            self.counts.setdefault(j, 0)

    @property
    def peers(self) -> list[int]:
        return list(self.peer_ranks or ())

    def record_round(self, outgoing: dict[int, torch.Tensor], incoming: dict[int, torch.Tensor]) -> None:
        """Add one round: the tensor sent to each peer and the tensor received from each peer (the peers
        still live: a lost peer is left out, from the round it was lost on)."""
        if set(outgoing) != set(incoming) or not set(outgoing) <= set(self.peers):
            raise MPCError("a broadcast round must name the same peers, once, for both directions")
        k = self.count
        memo: dict[tuple[bytes, int], bytes] = {}  # an honest round sends one tensor to every peer: hash it once
        for j in outgoing:
            key = (self.sent[j], id(outgoing[j]))
            if key not in memo:
                memo[key] = chain_step(self.sent[j], k, outgoing[j])
            self.sent[j] = memo[key]
            self.received[j] = chain_step(self.received[j], k, incoming[j])
            self.counts[j] += 1
        self.count += 1
