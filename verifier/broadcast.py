"""Broadcast consistency from the receipts the nodes publish in their job roots (specs/broadcast.md).

Each node's `node.job_root` carries `receipts`: for every peer j, j's Ed25519
signature over the chain of what j sent this node, and `disputes`: the peers whose
receipt did not match what this node received. Every party broadcasts the same
messages to all peers, so two valid receipts by one sender with different
(count, head) prove equivocation; this needs no opening and holds for the share
index the challenge leaves closed as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ledger.keys import ed25519_verify
from mpc_core.broadcast import receipt_message


@dataclass
class BroadcastFindings:
    """Per sender *rank* (= party index without replicas; replica N + party with them, mpc_core.replicas)."""

    equivocators: dict[int, str] = field(default_factory=dict)  # sender rank -> reason (proven)
    disputes: dict[int, list[int]] = field(default_factory=dict)  # sender rank -> ranks reporting a bad receipt
    minority: dict[int, str] = field(default_factory=dict)  # replica rank -> why its twins outvote it
    receipts_checked: int = 0

    @property
    def consistent(self) -> bool:
        return not self.equivocators and not self.disputes


def check_receipts(job_id: str, job_roots: Iterable[Mapping], assignment: Mapping[int, str],
                   ed25519_keys: Mapping[str, bytes], n_parties: int | None = None) -> BroadcastFindings:
    """Find equivocating senders and disputed receipts in the job roots' bodies; never raises.

    `assignment` maps a rank to its node. With `n_parties` (a job with replicas) a root's rank is
    replica N + party; without it, its party. Receipts that are malformed or do not verify are
    ignored: only the sender's valid signatures can prove anything against it."""
    out = BroadcastFindings()
    said: dict[int, dict[tuple[int, bytes], int]] = {}  # sender -> {(count, head): first recipient}
    chains: dict[tuple[int, int], tuple[int, bytes]] = {}  # (recipient, sender) -> the first valid (count, head)
    for body in job_roots:
        try:
            recipient = int(body["party"]) + (int(body.get("replica", 0)) * n_parties if n_parties else 0)
            receipts, disputes = body.get("receipts") or [], body.get("disputes") or []
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        for item in receipts if isinstance(receipts, list) else []:
            try:
                sender, count, head, sig = item
                sender, count, head, sig = int(sender), int(count), bytes(head), bytes(sig)
                key = ed25519_keys[assignment[sender]]
            except (KeyError, TypeError, ValueError):
                continue
            if sender == recipient or not ed25519_verify(key, receipt_message(job_id, sender, recipient, count, head), sig):
                continue
            out.receipts_checked += 1
            chains.setdefault((recipient, sender), (count, head))
            seen = said.setdefault(sender, {})
            seen.setdefault((count, head), recipient)
            if len(seen) > 1 and sender not in out.equivocators:
                (c1, h1), r1 = next(iter(seen.items()))
                out.equivocators[sender] = (
                    f"equivocation: signed different broadcast chains for {_who(r1, n_parties)} ({c1} messages, "
                    f"head {h1.hex()[:16]}) and {_who(recipient, n_parties)} ({count} messages, head "
                    f"{head.hex()[:16]})")
        for s in disputes if isinstance(disputes, list) else []:
            if isinstance(s, int) and not isinstance(s, bool) and s != recipient:
                out.disputes.setdefault(s, []).append(recipient)
    if n_parties:
        _outvoted(chains, n_parties, out)
    return out


def _outvoted(chains: dict[tuple[int, int], tuple[int, bytes]], n_parties: int, out: BroadcastFindings) -> None:
    """Replicas of one index send bit-identical chains when honest. For each recipient that holds valid
    receipts from three or more replicas of an index, a replica whose (count, head) differs from a strict
    majority of its twins' is outvoted (`minority`): a finding, not a proof (colluding twins could
    outvote an honest replica); an opening of the index decides (specs/audit.md section 7)."""
    heard: dict[tuple[int, int], dict[int, tuple[int, bytes]]] = {}  # (recipient, index) -> {sender: chain}
    for (recipient, sender), chain in chains.items():
        heard.setdefault((recipient, sender % n_parties), {})[sender] = chain
    for (recipient, index), by_sender in sorted(heard.items()):
        if len(by_sender) < 3:
            continue
        tally: dict[tuple[int, bytes], list[int]] = {}
        for sender, chain in by_sender.items():
            tally.setdefault(chain, []).append(sender)
        top = max(tally.values(), key=len)
        if 2 * len(top) <= len(by_sender):
            continue
        for chain, senders in tally.items():
            for sender in senders:
                if senders is not top and sender not in out.minority:
                    out.minority[sender] = (f"outvoted: its broadcast chain to {_who(recipient, n_parties)} differs "
                                            f"from that of {len(top)} of its {len(by_sender) - 1} twins")


def _who(rank: int, n_parties: int | None) -> str:
    if not n_parties:
        return f"party {rank}"
    return f"party {rank % n_parties} replica {rank // n_parties}"
