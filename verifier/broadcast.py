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
    return out


def _who(rank: int, n_parties: int | None) -> str:
    if not n_parties:
        return f"party {rank}"
    return f"party {rank % n_parties} replica {rank // n_parties}"
