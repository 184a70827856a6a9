"""The `--cheat KIND[@STEP]` spec (sim.adversary implements the kinds); no heavy imports, for CLI help."""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("matmul-random", "matmul-2^63", "trunc", "zeros", "weights", "bad-opening", "refuse", "equivocate",
         "withhold")
NETWORK_ONLY = ("equivocate", "withhold")  # withhold: post a served opening, then never give its data


class CheatSpecError(ValueError):
    """A --cheat argument that names no known kind."""


@dataclass(frozen=True)
class Cheat:
    """One deliberate deviation: its kind, and the first step (or round) at which it may strike."""

    kind: str
    step: int = 0

    @classmethod
    def parse(cls, text: str) -> "Cheat":
        kind, _, step = text.partition("@")
        if kind not in KINDS:
            raise CheatSpecError(f"unknown cheat {kind!r}; known: {', '.join(KINDS)}")
        try:
            return cls(kind, int(step) if step else 0)
        except ValueError:
            raise CheatSpecError(f"bad step in {text!r}") from None

    def __str__(self) -> str:
        return f"{self.kind}@{self.step}"
