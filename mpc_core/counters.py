"""Communication and time counters: rounds and bytes sent per party, per op."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OpCount:
    calls: int = 0
    rounds: int = 0
    bytes_per_party: int = 0
    dealer_requests: int = 0
    seconds: float = 0.0  # wall time inside the op (outermost scope), dealer time included

    def as_dict(self) -> dict:
        return {"calls": self.calls, "rounds": self.rounds, "bytes_per_party": self.bytes_per_party,
                "dealer_requests": self.dealer_requests, "seconds": self.seconds}


@dataclass
class Counters:
    """Totals and a per-op breakdown (attributed to the outermost public op)."""

    rounds: int = 0
    bytes_per_party: int = 0
    dealer_requests: int = 0
    dealer_seconds: float = 0.0
    steps: int = 0
    by_op: dict[str, OpCount] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "rounds": self.rounds,
            "bytes_per_party": self.bytes_per_party,
            "dealer_requests": self.dealer_requests,
            "dealer_seconds": self.dealer_seconds,
            "steps": self.steps,
            "by_op": {k: v.as_dict() for k, v in sorted(self.by_op.items())},
        }

    def snapshot(self) -> "Counters":
        return Counters(self.rounds, self.bytes_per_party, self.dealer_requests, self.dealer_seconds, self.steps,
                        {k: OpCount(**v.as_dict()) for k, v in self.by_op.items()})

    def since(self, before: "Counters") -> "Counters":
        """The difference self - before (for measuring one op)."""
        out = Counters(self.rounds - before.rounds, self.bytes_per_party - before.bytes_per_party,
                       self.dealer_requests - before.dealer_requests, self.dealer_seconds - before.dealer_seconds,
                       self.steps - before.steps)
        for k, v in self.by_op.items():
            b = before.by_op.get(k, OpCount())
            d = OpCount(v.calls - b.calls, v.rounds - b.rounds, v.bytes_per_party - b.bytes_per_party,
                        v.dealer_requests - b.dealer_requests, v.seconds - b.seconds)
            if d.calls or d.rounds or d.bytes_per_party:
                out.by_op[k] = d
        return out
