"""Replay one party's computation and compare it, step by step, with what it committed.

The auditor re-executes the party's program with the same protocol code, on a
`ReplaySession` that holds only that party: its dealer material comes from its
seed (and, for the last party, the dealer's revealed corrections), and every
opening returns the public value the parties committed instead of talking to
peers. Each step's recomputed digests (inputs, message sent, public values,
output) must equal the committed record; the first difference names the step.

Matrix products (`mode="freivalds"`): the replay takes the committed output from
the opening (its digest must match the record) and goes on at once; the product
checks are deferred and run together at the end of the replay (or when the
pending checks exceed a memory bound), as one stacked Freivalds batch
(specs/freivalds.md, "Deferred checks in the replay"). A group of checks whose
recomputation costs fewer multiply-adds than its Freivalds check is recomputed
exactly instead (miss probability 0). A failing deferred check names its step
when no earlier step differs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import blake3
import cbor2
import numpy as np
import torch

from mpc_core.communicator import Communicator
from mpc_core.dealer import Request, SeededDealerClient
from mpc_core.domains import TRANSCRIPT_TENSOR
from mpc_core.session import Session
from mpc_core.transcript import StepRecord, tensor_digest
from verifier.freivalds import FreivaldsContext, Term, as_term, exact_check, freivalds_batch

# Pending deferred checks are flushed once their own tensors (outputs, left operands, plain terms)
# exceed this many bytes; shared right operands (masked weights) are not counted.
PENDING_BYTES_LIMIT = 256 << 20
# Fixed cost charged per matmul call in the exact-or-Freivalds choice, in multiply-adds.
CALL_OVERHEAD_MACS = 20_000
# Input fields whose digest the replay does not recompute: in each of these step kinds the named
# message is the input plus (or XOR) the party's own material of that step (sent.e = x - a,
# sent.c = x + r (+ 2^62 for party 0), sent.d = x ^ a, sent.f = w - b, sent.v = bits ^ rb), a
# bijection of the input once the material is fixed. So the message digest matching the replay's
# means the party used exactly the replay's input; the input digest adds no check on anything the
# party sent or output (specs/freivalds.md, "What the replay hashes").
IMPLIED_INPUTS: dict[str, dict[str, str]] = {
    "beaver_mul": {"in.x": "sent.e", "in.y": "sent.f"},
    "beaver_matmul": {"in.x": "sent.e", "in.y": "sent.f"},
    "mask_weight": {"in.w": "sent.f"},
    "fixed_matmul": {"in.x": "sent.e"},
    "trunc": {"in.x": "sent.c"},
    "and": {"in.x": "sent.d", "in.y": "sent.e"},
    "a2b_open": {"in.x": "sent.c"},
    "b2a": {"in.bits": "sent.v"},
}


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
    matmul_checks: int  # matrix-product steps checked on the opened output (Freivalds or recomputed)
    mode: str
    lam: int
    seconds: float
    finding: Finding | None = None
    error: str | None = None  # the replay could not run (malformed opening): not a verdict of cheating
    matmul_recomputed: int = 0  # of matmul_checks, those recomputed because that was cheaper than Freivalds
    freivalds_batches: int = 0

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


# --- digests --------------------------------------------------------------------------------
_HEADS: dict[tuple[str, tuple[int, ...]], Any] = {}


def step_digest(name: str, t: torch.Tensor) -> bytes:
    """The same bytes as mpc_core.transcript.tensor_digest(name, t), with the per-(name, shape)
    header hashed once and kept."""
    if t.dtype != torch.int64 or not isinstance(name, str):
        return tensor_digest(name, t)  # raises the same error
    shape = tuple(t.shape)
    head = _HEADS.get((name, shape))
    if head is None:
        head = blake3.blake3(TRANSCRIPT_TENSOR)
        head.update(cbor2.dumps([name, list(shape)], canonical=True))
        if len(_HEADS) < 65536:
            _HEADS[(name, shape)] = head
    h = head.copy()
    arr = t.detach().cpu().contiguous().numpy().astype("<i8", copy=False)
    h.update(memoryview(arr).cast("B"))
    return h.digest()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a and b are views of the same memory with the same shape and strides (hence the same values)."""
    return (a is b) or (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
                        and a.dtype == b.dtype and a.device == b.device)


# --- deferred product checks ----------------------------------------------------------------
@dataclass
class _Pending:
    index: int
    kind: str
    scope: str
    committed: str  # hex digest of the committed output
    z: torch.Tensor
    terms: list[Term]


def _bkey(b: torch.Tensor) -> tuple:
    return (b.data_ptr(), b.storage_offset(), tuple(b.shape), tuple(b.stride()), str(b.device))


def _product_dims(t: Term) -> tuple[int, int, int, int]:
    a, b = t.a, t.b
    batch = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    return batch, a.shape[-2], a.shape[-1], b.shape[-1]


def _costs(checks: list[_Pending], lam: int) -> tuple[float, float]:
    """(exact, Freivalds) multiply-adds of a group of checks sharing their right operands."""
    exact = frei = 0.0
    shared: dict[tuple, float] = {}
    for c in checks:
        rows = c.z.numel() // c.z.shape[-1]
        frei += rows * c.z.shape[-1] * lam + CALL_OVERHEAD_MACS  # Z R
        for t in c.terms:
            if t.b is None:
                frei += rows * c.z.shape[-1] * lam + CALL_OVERHEAD_MACS
                exact += t.a.numel()
                continue
            batch, m, k, n = _product_dims(t)
            exact += batch * m * k * n + CALL_OVERHEAD_MACS
            frei += batch * m * k * lam + CALL_OVERHEAD_MACS
            shared[_bkey(t.b)] = math.prod(t.b.shape) * lam + CALL_OVERHEAD_MACS  # B R once per batch
    return exact, frei + sum(shared.values())


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
        self.matmul_recomputed = 0
        self.freivalds_batches = 0
        self._verified: dict[str, torch.Tensor] = {}  # this step's tensors whose digest already matched
        self._pending: list[_Pending] = []
        self._pending_bytes = 0

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
            if v is None or list(v.shape) != list(sent.shape[1:]) or step_digest(name, v) != rec.digests[name]:
                raise _Diverged(Finding(rec.index, rec.kind, rec.scope, name, rec.digests[name].hex(),
                                        "opening missing or not matching its commitment" if v is not None else "missing"))
            self._verified[name] = v
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
        if z is None or list(z.shape) != rec.shapes.get("out") or step_digest("out", z) != rec.digests.get("out"):
            raise _Diverged(Finding(rec.index, rec.kind, rec.scope, "out", rec.digests.get("out", b"").hex(),
                                    "opened output missing or not matching its commitment"))
        self._verified["out"] = z
        z = z.unsqueeze(0)
        self.matmul_checks += 1
        kept = []
        for t in (as_term(t) for t in terms()):
            if t.b is not None and not bool(t.a.any()):
                continue  # a zero left operand (party 0's extra term, for other parties) adds exactly 0
            kept.append(t)
            self._pending_bytes += 8 * t.a.numel()
        self._pending.append(_Pending(rec.index, rec.kind, rec.scope, rec.digests["out"].hex(), z, kept))
        self._pending_bytes += 8 * z.numel()
        if self._pending_bytes > PENDING_BYTES_LIMIT:
            found = self.check_pending()
            if found is not None:
                raise _Diverged(found)
        return z

    def check_pending(self, before: int | None = None) -> Finding | None:
        """Run the deferred product checks (those of steps < `before`, if given) and drop them all;
        the failing check with the smallest step index, if any."""
        todo = [c for c in self._pending if before is None or c.index < before]
        self._pending, self._pending_bytes = [], 0
        if not todo:
            return None
        groups: dict[tuple, list[_Pending]] = {}
        for c in todo:
            groups.setdefault(tuple(_bkey(t.b) for t in c.terms if t.b is not None), []).append(c)
        exact_l, frei_l = [], []
        for cs in groups.values():
            e_cost, f_cost = _costs(cs, self.lam)
            (exact_l if e_cost <= f_cost else frei_l).extend(cs)
        failures: list[Finding] = []
        for c in exact_l:
            self.matmul_recomputed += 1
            res = exact_check(c.z, c.terms)
            if not res.ok:
                failures.append(Finding(c.index, c.kind, c.scope, "out", c.committed,
                                        step_digest("out", (c.z - res.residual)[0]).hex(),
                                        "recomputed product differs from the opened output"))
        if frei_l:
            label = f"replay:{self.freivalds_batches}"
            self.freivalds_batches += 1
            batch = freivalds_batch([(c.z, c.terms) for c in frei_l], self.lam, seed=self.challenge_seed,
                                    context=FreivaldsContext(self.job, label, self.party), mode="stack")
            for c, res in zip(frei_l, batch.results):
                if not res.ok:
                    failures.append(Finding(c.index, c.kind, c.scope, "freivalds", c.committed,
                                            "Z R != c R + e (b R) + a (F R)",
                                            f"lambda={self.lam}, batch {label}, first failing column "
                                            f"{res.failing_column}, index {res.failing_index}"))
        return min(failures, key=lambda f: f.step) if failures else None

    def record(self, kind: str, local: dict[str, torch.Tensor], public: dict[str, torch.Tensor] | None = None) -> int:
        rec = self._current(kind)
        index = self._step_index
        self._step_index += 1
        self.counters.steps += 1
        verified, self._verified = self._verified, {}
        if rec.kind != kind:
            raise _Diverged(Finding(index, rec.kind, rec.scope, "kind", rec.kind, kind))
        tensors = {n: t[0] for n, t in local.items()}
        if public:
            tensors.update(public)
        if set(tensors) != set(rec.digests):
            raise _Diverged(Finding(index, kind, rec.scope, "fields", ",".join(sorted(rec.digests)), ",".join(sorted(tensors))))
        implied = IMPLIED_INPUTS.get(kind, {})
        for name in sorted(tensors):
            t = tensors[name]
            if name in verified and _same(verified[name], t):
                continue  # this very tensor matched this record's digest when it was opened
            sent = implied.get(name)
            if sent is not None and sent in tensors and tuple(tensors[sent].shape) == tuple(t.shape):
                continue  # checked through its message (IMPLIED_INPUTS)
            got = step_digest(name, t)
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
    try:
        # Deferred product checks of the steps before the first difference: a failure among them
        # is the earlier difference. After an error, every pending check (all before it) runs.
        earlier = s.check_pending(before=finding.step if finding is not None else None)
    except Exception as exc:  # pragma: no cover - pending checks were formed by the replay itself
        earlier, error = None, error or f"{type(exc).__name__}: {exc}"
    if earlier is not None:
        finding, error = earlier, None
    return ReplayResult(party, finding is None and error is None, s._step_index, s.matmul_checks, mode, lam,
                        time.perf_counter() - t0, finding, error, s.matmul_recomputed, s.freivalds_batches)
