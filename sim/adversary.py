"""Deliberate deviations for testing the audit: `prover serve --cheat KIND[@STEP]`.

A cheat corrupts one party's computation at the first matching step at or after
STEP (default 0); the corrupted value is used downstream and committed, exactly
as a dishonest node would do to stay self-consistent. Kinds:

  matmul-random   a random error in a matmul output share
  matmul-2^63     a single error of 2^63 in one entry of a matmul output share
  trunc           a wrong truncation (output off by 2^20)
  zeros           skipped work: a matmul output share replaced by zeros
  weights         a wrong (stale) weight share used in place of the published one
  bad-opening     an opening that does not match the party's commitments
  refuse          refusing to open when challenged
  equivocate      sending one peer a different opening share than the others
                  (round STEP; networked parties only: the in-process transport
                  has no per-peer messages)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mpc_core import prg

KINDS = ("matmul-random", "matmul-2^63", "trunc", "zeros", "weights", "bad-opening", "refuse", "equivocate")
NETWORK_ONLY = ("equivocate",)
MATMUL_KINDS = ("beaver_matmul", "fixed_matmul")


class CheatSpecError(ValueError):
    """A --cheat argument that names no known kind."""


@dataclass(frozen=True)
class Cheat:
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


def install(session, party: int, cheat: Cheat) -> dict:
    """Hook `cheat` into `session` for `party`'s rows; returns a dict that records where it struck."""
    fired: dict = {}
    if cheat.kind in NETWORK_ONLY and getattr(session.comm, "broadcast_log", None) is None:
        raise CheatSpecError(f"cheat {cheat.kind!r} needs a networked party (prover serve)")
    targets = {"matmul-random": MATMUL_KINDS, "matmul-2^63": MATMUL_KINDS, "zeros": MATMUL_KINDS, "trunc": ("trunc",)}
    if cheat.kind not in targets:
        return fired
    row = session.local_parties.index(party)

    def tamper(s, kind: str, index: int, local: dict[str, torch.Tensor]) -> None:
        if fired or index < cheat.step or kind not in targets[cheat.kind]:
            return
        out = local["out"][row]
        if cheat.kind == "matmul-random":
            out += prg.ring_tensor(prg.master_from_int(index, "cheat"), b"cheat", index, party, "err", tuple(out.shape))
        elif cheat.kind == "matmul-2^63":
            out.view(-1)[0] += -(2**63)
        elif cheat.kind == "zeros":
            out.zero_()
        elif cheat.kind == "trunc":
            out += 1 << 20
        fired.update(step=index, kind=kind)

    session.tamper = tamper
    return fired


def equivocation_hook(cheat: Cheat, party: int, n_parties: int):
    """For `equivocate`: the communicator hook that alters the message of round `cheat.step` to one peer
    (the highest-numbered); None for other kinds."""
    if cheat.kind != "equivocate":
        return None
    victim = max(j for j in range(n_parties) if j != party)
    fired: dict = {}

    def outgoing(round_index: int, peer: int, t: torch.Tensor) -> torch.Tensor:
        if fired or round_index < cheat.step or peer != victim:
            return t
        fired.update(round=round_index, peer=peer)
        return altered(t)
    return outgoing


def bad_opening_step(records, cheat: Cheat) -> int:
    """The matmul step whose output a `bad-opening` cheater alters in its opening."""
    return next(r.index for r in records if r.index >= cheat.step and r.kind in MATMUL_KINDS)


def altered(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` off by one in its first entry (what a bad opening reveals instead)."""
    t = t.clone()
    t.view(-1)[0] += 1
    return t
