"""Replay one party's computation and compare it, step by step, with what it committed.

The auditor re-executes the party's program with the same protocol code, on a
`ReplaySession` that holds only that party: its dealer material comes from its
seed (and, for the last party, the dealer's revealed corrections), and every
opening returns the public value the parties committed instead of talking to
peers. Each step's recomputed digests (inputs, message sent, public values,
output) must equal the committed record; the first difference names the step.
Matrix products can be checked with Freivalds (lambda random columns over
Z_2^64) on the committed output instead of being recomputed (`mode="freivalds"`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from mpc_core.communicator import Communicator
from mpc_core.dealer import Request, SeededDealerClient
from mpc_core.session import Session
from mpc_core.transcript import StepRecord, tensor_digest
from verifier.freivalds import FreivaldsContext, freivalds_check

@dataclass
class Finding:
    """The first place where a party's replay differs from its commitments."""

    step: int
    kind: str
    scope: str
    what: str  # e.g. "out", "sent.e", "opened.c", "missing step", "freivalds"
    committed: str  # hex digest (or a description) the party committed to
    recomputed: str  # hex digest (or a description) the replay produced
    detail: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ReplayResult:
    party: int
    ok: bool
    steps_checked: int
    matmul_checks: int
    mode: str
    lam: int
    seconds: float
    finding: Finding | None = None
    error: str | None = None  # the replay could not run (malformed opening): not a verdict of cheating

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "finding"}
        d["finding"] = self.finding.as_dict() if self.finding else None
        return d


class _Diverged(Exception):
    def __init__(self, finding: Finding):
        super().__init__(finding.what)
        self.finding = finding


class _NoPeers(Communicator):
    def __init__(self, party: int, n_parties: int):
        self.n_parties, self.local_parties = n_parties, (party,)

    def all_gather(self, local: torch.Tensor) -> torch.Tensor:  # pragma: no cover - replay never exchanges
        raise RuntimeError("a replay never talks to peers")


class ReplaySession(Session):
    """A one-party session that replays against committed records and public openings."""

    def __init__(self, party: int, n_parties: int, job: bytes, seed: bytes, records: list[StepRecord],
                 opened: Callable[[int], dict[str, torch.Tensor]], outs: Callable[[int], torch.Tensor | None],
                 corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None = None,
                 mode: str = "freivalds", lam: int = 40, challenge_seed: bytes = bytes(32), frac_bits: int = 16):
        dealer = SeededDealerClient(party, n_parties, job, seed, corrections)
        super().__init__(_NoPeers(party, n_parties), dealer, job=job, frac_bits=frac_bits, record=False)
        if mode not in ("exact", "freivalds"):
            raise ValueError(f"unknown replay mode {mode!r}")
        self.party, self.records, self._opened, self._outs = party, records, opened, outs
        self.mode, self.lam, self.challenge_seed = mode, lam, challenge_seed
        self.matmul_checks = 0

    def _current(self, what: str) -> StepRecord:
        k = self._step_index
        if k >= len(self.records):
            raise _Diverged(Finding(k, "?", self.scope_path, "missing step", f"{len(self.records)} steps committed",
                                    f"the program needs step {k} ({what})"))
        return self.records[k]

    def open_many(self, sents: list[torch.Tensor], xor: bool = False) -> list[torch.Tensor]:
        rec = self._current("an opening")
        names = sorted(n for n in rec.digests if n.startswith("opened."))
        if len(names) != len(sents):
            raise _Diverged(Finding(rec.index, rec.kind, rec.scope, "openings",
                                    f"{len(names)} values", f"{len(sents)} values"))
        public = self._opened(rec.index)
        out = []
        for name, sent in zip(names, sents):
            v = public.get(name)
            if v is None or list(v.shape) != list(sent.shape[1:]) or tensor_digest(name, v) != rec.digests[name]:
                raise _Diverged(Finding(rec.index, rec.kind, rec.scope, name, rec.digests[name].hex(),
                                        "opening missing or not matching its commitment" if v is not None else "missing"))
            out.append(v)
        # the round is accounted as in a real run (for cost comparisons)
        self.counters.rounds += 1
        return out

    def linear_result(self, exact, terms):
        if self.mode == "exact":
            return exact()
        if terms is None:
            return None  # offline preprocessing folded into the checked result below
        rec = self._current("a product")
        z = self._outs(rec.index)
        if z is None or list(z.shape) != rec.shapes.get("out") or tensor_digest("out", z) != rec.digests.get("out"):
            raise _Diverged(Finding(rec.index, rec.kind, rec.scope, "out", rec.digests.get("out", b"").hex(),
                                    "opened output missing or not matching its commitment"))
        z = z.unsqueeze(0)
        self.matmul_checks += 1
        res = freivalds_check(z, terms(), self.lam, seed=self.challenge_seed,
                              context=FreivaldsContext(self.job, rec.index, self.party))
        if not res.ok:
            raise _Diverged(Finding(rec.index, rec.kind, rec.scope, "freivalds", rec.digests["out"].hex(),
                                    "Z R != c R + e (b R) + a (F R)",
                                    f"lambda={self.lam}, first failing column {res.failing_column}, "
                                    f"index {res.failing_index}"))
        return z

    def record(self, kind: str, local: dict[str, torch.Tensor], public: dict[str, torch.Tensor] | None = None) -> int:
        rec = self._current(kind)
        index = self._step_index
        self._step_index += 1
        self.counters.steps += 1
        if rec.kind != kind:
            raise _Diverged(Finding(index, rec.kind, rec.scope, "kind", rec.kind, kind))
        tensors = {n: t[0] for n, t in local.items()}
        if public:
            tensors.update(public)
        if set(tensors) != set(rec.digests):
            raise _Diverged(Finding(index, kind, rec.scope, "fields", ",".join(sorted(rec.digests)), ",".join(sorted(tensors))))
        for name in sorted(tensors):
            got = tensor_digest(name, tensors[name])
            if got != rec.digests[name]:
                raise _Diverged(Finding(index, kind, rec.scope, name, rec.digests[name].hex(), got.hex()))
        return index


def replay_party(program: Callable[[Session], Any], *, party: int, n_parties: int, job: bytes, seed: bytes,
                 records: list[StepRecord], opened: Callable[[int], dict[str, torch.Tensor]],
                 outs: Callable[[int], torch.Tensor | None],
                 corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None = None,
                 mode: str = "freivalds", lam: int = 40, challenge_seed: bytes = bytes(32),
                 frac_bits: int = 16) -> ReplayResult:
    """Replay `program` as party `party`; never raises on attacker-controlled data."""
    t0 = time.perf_counter()
    s = ReplaySession(party, n_parties, job, seed, records, opened, outs, corrections, mode, lam, challenge_seed,
                      frac_bits)
    finding, error = None, None
    try:
        program(s)
        if s._step_index != len(records):
            finding = Finding(s._step_index, "?", "", "extra steps", f"{len(records)} steps committed",
                              f"the program has {s._step_index} steps")
    except _Diverged as d:
        finding = d.finding
    except Exception as exc:  # malformed openings must give a verdict, never a crash
        error = f"{type(exc).__name__}: {exc}"
    return ReplayResult(party, finding is None and error is None, s._step_index, s.matmul_checks, mode, lam,
                        time.perf_counter() - t0, finding, error)
