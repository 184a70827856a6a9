"""Replay opened parties' computations and compare them, step by step, with what they committed.

The auditor re-executes the parties' program with the same protocol code, on a
`ReplaySession` that holds the opened parties on its party axis (one row each,
as a job holds its local parties; `replay_party` is the one-party case): each
party's dealer material comes from its seed (and, for the last party, the
dealer's revealed corrections), and every opening returns the public value the
parties committed instead of talking to peers. Each step's recomputed digests
(inputs, message sent, public values, output) must equal the party's committed
record; the first difference names the step, for that party only. Parties share
public values only where their committed openings are equal; a party whose
openings differ is replayed on its own (specs/audit.md, section 4).

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
from dataclasses import dataclass, field
from typing import Any, Callable

import blake3
import cbor2
import torch

from mpc_core.communicator import Communicator
from mpc_core.dealer import Dealer, Request, expand_party, kind_spec
from mpc_core.errors import DealerError
from mpc_core.domains import TRANSCRIPT_TENSOR
from mpc_core.session import Session
from mpc_core.transcript import StepRecord, tensor_digest
from verifier.freivalds import FreivaldsContext, Term, as_term, exact_check, freivalds_batch

# Pending deferred checks are flushed once their own tensors (outputs, left operands, plain terms)
# exceed this many bytes; shared right operands (masked weights) are not counted.
PENDING_BYTES_LIMIT = 256 << 20
# A replay reports its progress (ReplaySession.progress) every this many steps.
PROGRESS_EVERY = 64
# Fixed cost charged per matmul call in the exact-or-Freivalds choice, in multiply-adds.
CALL_OVERHEAD_MACS = 20_000
# Input fields whose digest the replay does not recompute: in each of these step kinds the named
# message is the input plus (or XOR) the party's own material of that step (sent.e = x - a,
# sent.c = x + r (+ 2^62 for party 0; lookup_open too), sent.d = x ^ a, sent.f = w - b), a bijection of the input
# once the material is fixed. (b2a's message packs bit 0 of bits ^ rb, 64 to a word: not a bijection
# of its input words, so the replay hashes in.bits.) So the message digest matching the replay's
# means the party used exactly the replay's input; the input digest adds no check on anything the
# party sent or output (specs/freivalds.md, "What the replay hashes").
IMPLIED_INPUTS: dict[str, dict[str, str]] = {
    "beaver_mul": {"in.x": "sent.e", "in.y": "sent.f"},
    "beaver_matmul": {"in.x": "sent.e", "in.y": "sent.f"},
    "mask_weight": {"in.w": "sent.f"},
    "fixed_matmul": {"in.x": "sent.e"},
    "trunc": {"in.x": "sent.c"},
    "and": {"in.x": "sent.d", "in.y": "sent.e"},
    "and_many": {"in.x": "sent.d"},
    "a2b_open": {"in.x": "sent.c"},
    "lookup_open": {"in.x": "sent.c"},
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
    joint: int = 1  # parties replayed together in the replay that judged this one (`seconds` is that replay's)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "finding"}
        d["finding"] = self.finding.as_dict() if self.finding else None
        return d


class _Diverged(Exception):
    def __init__(self, finding: Finding):
        super().__init__(finding.what)
        self.finding = finding


class _NoPeers(Communicator):
    def __init__(self, parties: tuple[int, ...], n_parties: int):
        self.n_parties, self.local_parties = n_parties, tuple(parties)

    def all_gather(self, local: torch.Tensor) -> torch.Tensor:  # pragma: no cover - replay never exchanges
        raise RuntimeError("a replay never talks to peers")


class _ReplayDealer(Dealer):
    """The replayed parties' material, stacked on the party axis: each party's from its own seed, the
    last party's derived components from the dealer's revealed corrections (as SeededDealerClient)."""

    def __init__(self, parties: tuple[int, ...], n_parties: int, job: bytes, seeds: list[bytes],
                 corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None):
        for p in parties:
            if not 0 <= p < n_parties:
                raise DealerError(f"party {p} outside 0..{n_parties - 1}")
        if n_parties - 1 in parties and corrections is None:
            raise DealerError("the last party needs a correction channel to the dealer")
        if len(seeds) != len(parties) or len(set(parties)) != len(parties):
            raise DealerError("one seed per replayed party, and each party once")
        self.n_parties, self.local_parties, self.job = n_parties, tuple(parties), bytes(job)
        self._seeds, self._fetch = list(seeds), corrections
        self._fixed_cache: dict = {}
        self._stacked: dict = {}

    def get(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        spec = kind_spec(req)
        per = []
        for p, seed in zip(self.local_parties, self._seeds):
            m = expand_party(req, op_index, self.job, p, self.n_parties, seed, self._fixed_cache)
            if p == self.n_parties - 1:
                corr = self._fetch(req, op_index)
                for c in spec.derived:
                    if c.name not in corr or tuple(corr[c.name].shape) != c.shape:
                        raise DealerError(f"dealer correction for {req.kind} #{op_index} lacks {c.name} of shape {c.shape}")
                    m[c.name] = corr[c.name]
            per.append(m)
        if len(per) == 1:
            return {k: v.unsqueeze(0) for k, v in per[0].items()}
        if any(v.dtype != torch.int64 for m in per for v in m.values()):
            raise DealerError(f"dealer material for {req.kind} #{op_index} is not int64")
        fixed = {c.name: c for c in spec.randoms if c.fixed_key is not None}
        out = {}
        for k in per[0]:
            c = fixed.get(k)
            if c is None:
                out[k] = torch.stack([m[k] for m in per])
                continue
            ck = (c.fixed_key, k, c.shape)
            stacked = self._stacked.get(ck)
            if stacked is None:  # one copy of a weight-sized mask: per-party cache entries become views
                stacked = torch.stack([self._fixed_cache[(p, c.fixed_key, k, c.shape)] for p in self.local_parties])
                for row, p in enumerate(self.local_parties):
                    self._fixed_cache[(p, c.fixed_key, k, c.shape)] = stacked[row]
                self._stacked[ck] = stacked
            out[k] = c.apply_narrow(stacked, offset=1)
        return out


# --- digests --------------------------------------------------------------------------------
_HEADS: dict[tuple[str, tuple[int, ...]], Any] = {}


def _head(name: str, shape: tuple[int, ...]):
    """The BLAKE3 state after a tensor digest's header for (name, shape), computed once and kept."""
    head = _HEADS.get((name, shape))
    if head is None:
        head = blake3.blake3(TRANSCRIPT_TENSOR)
        head.update(cbor2.dumps([name, list(shape)], canonical=True))
        if len(_HEADS) < 65536:
            _HEADS[(name, shape)] = head
    return head


def step_digest(name: str, t: torch.Tensor) -> bytes:
    """The same bytes as mpc_core.transcript.tensor_digest(name, t), with the per-(name, shape)
    header hashed once and kept."""
    if t.dtype != torch.int64 or not isinstance(name, str):
        return tensor_digest(name, t)  # raises the same error
    h = _head(name, tuple(t.shape)).copy()
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


class _Stop(Exception):
    """No replayed party is left to check: the program need not run further."""


@dataclass
class _Row:
    """One replayed party's state in a (possibly joint) replay."""

    party: int
    records: list[StepRecord]
    opened: Callable[[int], dict[str, torch.Tensor]]
    outs: Callable[[int], torch.Tensor | None]
    active: bool = True
    detached: bool = False  # its public openings differ from the other parties': replayed on its own
    finding: Finding | None = None
    error: str | None = None
    steps: int = 0
    matmul_checks: int = 0
    matmul_recomputed: int = 0
    freivalds_batches: int = 0
    pending: list[_Pending] = field(default_factory=list)
    pending_bytes: int = 0


def _row_bytes(name: str, t: torch.Tensor, rows: list[int]) -> dict[int, bytes]:
    """step_digest(name, t[i]) for each i in `rows`, for a party-axis tensor t."""
    if t.dtype != torch.int64:
        return {i: step_digest(name, t[i]) for i in rows}  # raises the same error
    head = _head(name, tuple(t.shape[1:]))
    arr = t.detach().cpu().contiguous().numpy().astype("<i8", copy=False).reshape(t.shape[0], -1)
    out = {}
    for i in rows:
        h = head.copy()
        h.update(memoryview(arr[i]).cast("B"))
        out[i] = h.digest()
    return out


class ReplaySession(Session):
    """A session that replays the opened parties `parties` together (one row each on the party axis)
    against their committed records and public openings.

    Rows never mix: each party has its own material (from its seed), records, openings and outputs,
    and is checked on its own row; public values are shared only between parties whose committed
    openings are equal (a party whose openings differ is detached and replayed on its own). The first
    difference of a party ends the checks of that party; the program stops once no party is left."""

    def __init__(self, parties, n_parties: int, job: bytes, seeds, records, opened, outs,
                 corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None = None,
                 mode: str = "freivalds", lam: int = 40, challenge_seed: bytes = bytes(32), frac_bits: int = 16):
        parties = tuple(parties)
        dealer = _ReplayDealer(parties, n_parties, job, list(seeds), corrections)
        super().__init__(_NoPeers(parties, n_parties), dealer, job=job, frac_bits=frac_bits, record=False)
        if mode not in ("exact", "freivalds"):
            raise ValueError(f"unknown replay mode {mode!r}")
        self.rows = [_Row(p, r, o, z) for p, r, o, z in zip(parties, records, opened, outs)]
        if len(self.rows) != len(parties):
            raise ValueError("one list of records, openings and outputs per replayed party")
        self.mode, self.lam, self.challenge_seed = mode, lam, challenge_seed
        self._verified: dict[str, torch.Tensor] = {}  # this step's tensors whose digests already matched
        self.progress: Callable[[int, int], None] | None = None  # progress(steps done, steps committed)
        self._total = max((len(r.records) for r in self.rows), default=0)
        self.stop_after: int | None = None  # stop the program once this step is checked (replay_step)
        self.capture_at: int | None = None  # keep the first row's input shares of this step, then stop
        self.captured: dict[str, torch.Tensor] | None = None

    # --- per-party bookkeeping ----------------------------------------------------------------
    def _live(self) -> list[tuple[int, _Row]]:
        live = [(i, r) for i, r in enumerate(self.rows) if r.active]
        if not live:
            raise _Stop()
        return live

    def _diverge(self, row: _Row, finding: Finding) -> None:
        row.active, row.finding, row.steps = False, finding, self._step_index

    def _fail(self, row: _Row, exc: Exception) -> None:
        row.active, row.error, row.steps = False, f"{type(exc).__name__}: {exc}", self._step_index

    def _current(self, row: _Row, what: str) -> StepRecord | None:
        k = self._step_index
        if k >= len(row.records):
            self._diverge(row, Finding(k, "?", self.scope_path, "missing step", f"{len(row.records)} steps committed",
                                       f"the program needs step {k} ({what})"))
            return None
        return row.records[k]

    def _slice(self, x: torch.Tensor, i: int, ndim: int) -> torch.Tensor:
        """Row i of a party-axis operand (kept as a 1-row party axis); public operands as they are.
        A party-axis operand has the output's ndim and k rows first (the protocol code broadcasts public
        operands over the party axis, which they never occupy with more than one row)."""
        k = len(self.rows)
        if k == 1 or x.dim() != ndim or x.shape[0] != k:
            return x
        return x[i:i + 1]

    # --- the protocol hooks -------------------------------------------------------------------
    def open_many(self, sents: list[torch.Tensor], xor: bool = False) -> list[torch.Tensor]:
        groups: dict[tuple, list] = {}
        for _, row in self._live():
            try:
                rec = self._current(row, "an opening")
                if rec is None:
                    continue
                names = sorted(n for n in rec.digests if n.startswith("opened."))
                if len(names) != len(sents):
                    self._diverge(row, Finding(rec.index, rec.kind, rec.scope, "openings",
                                               f"{len(names)} values", f"{len(sents)} values"))
                    continue
                public = row.opened(rec.index)
                vals = []
                for name, sent in zip(names, sents):
                    v = public.get(name)
                    if v is None or list(v.shape) != list(sent.shape[1:]) or step_digest(name, v) != rec.digests[name]:
                        self._diverge(row, Finding(rec.index, rec.kind, rec.scope, name, rec.digests[name].hex(),
                                                   "opening missing or not matching its commitment" if v is not None
                                                   else "missing"))
                        break
                    vals.append(v)
                else:
                    key = tuple((n, rec.digests[n]) for n in names)
                    groups.setdefault(key, [vals]).append(row)
            except Exception as exc:  # malformed openings: this party's replay cannot go on
                self._fail(row, exc)
        if not groups:
            raise _Stop()
        # Parties whose committed openings are equal share them; any other party is replayed alone.
        best = max(groups, key=lambda key: len(groups[key]))
        for key, g in groups.items():
            if key != best:
                for row in g[1:]:
                    row.active, row.detached = False, True
        out = groups[best][0]
        for (name, _), v in zip(best, out):
            self._verified[name] = v
        # the round is accounted as in a real run (for cost comparisons)
        self.counters.rounds += 1
        return out

    def linear_result(self, exact, terms):
        if self.mode == "exact":
            return exact()
        if terms is None:
            return None  # offline preprocessing folded into the checked result below
        opened: dict[int, tuple[torch.Tensor, StepRecord]] = {}
        for i, row in self._live():
            try:
                rec = self._current(row, "a product")
                if rec is None:
                    continue
                z = row.outs(rec.index)
                if z is None or list(z.shape) != rec.shapes.get("out") or step_digest("out", z) != rec.digests.get("out"):
                    self._diverge(row, Finding(rec.index, rec.kind, rec.scope, "out", rec.digests.get("out", b"").hex(),
                                               "opened output missing or not matching its commitment"))
                    continue
                opened[i] = (z, rec)
            except Exception as exc:
                self._fail(row, exc)
        if not opened:
            raise _Stop()
        if len(self.rows) == 1:
            z = opened[0][0].unsqueeze(0)
        else:  # a party no longer checked gets zeros: its row feeds nothing that is checked
            like = next(iter(opened.values()))[0]
            z = torch.stack([opened[i][0] if i in opened else torch.zeros_like(like) for i in range(len(self.rows))])
        self._verified["out"] = z
        ts = [as_term(t) for t in terms()]
        for i, (_, rec) in opened.items():
            row = self.rows[i]
            zi = self._slice(z, i, z.dim())
            row.matmul_checks += 1
            kept = []
            for t in ts:
                a = self._slice(t.a, i, z.dim())
                b = self._slice(t.b, i, z.dim()) if t.b is not None else None
                if b is not None and not bool(a.any()):
                    continue  # a zero left operand (party 0's extra term, for other parties) adds exactly 0
                kept.append(Term(a, b))
                row.pending_bytes += 8 * a.numel()
            row.pending.append(_Pending(rec.index, rec.kind, rec.scope, rec.digests["out"].hex(), zi, kept))
            row.pending_bytes += 8 * zi.numel()
            if row.pending_bytes > PENDING_BYTES_LIMIT:
                found = self.check_pending(row)
                if found is not None:
                    self._diverge(row, found)
        self._live()
        return z

    def check_pending(self, row: _Row, before: int | None = None) -> Finding | None:
        """Run the party's deferred product checks (those of steps < `before`, if given) and drop them all;
        the failing check with the smallest step index, if any."""
        todo = [c for c in row.pending if before is None or c.index < before]
        row.pending, row.pending_bytes = [], 0
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
            row.matmul_recomputed += 1
            res = exact_check(c.z, c.terms)
            if not res.ok:
                failures.append(Finding(c.index, c.kind, c.scope, "out", c.committed,
                                        step_digest("out", (c.z - res.residual)[0]).hex(),
                                        "recomputed product differs from the opened output"))
        if frei_l:
            label = f"replay:{row.freivalds_batches}"
            row.freivalds_batches += 1
            batch = freivalds_batch([(c.z, c.terms) for c in frei_l], self.lam, seed=self.challenge_seed,
                                    context=FreivaldsContext(self.job, label, row.party), mode="stack")
            for c, res in zip(frei_l, batch.results):
                if not res.ok:
                    failures.append(Finding(c.index, c.kind, c.scope, "freivalds", c.committed,
                                            "Z R != c R + e (b R) + a (F R)",
                                            f"lambda={self.lam}, batch {label}, first failing column "
                                            f"{res.failing_column}, index {res.failing_index}"))
        return min(failures, key=lambda f: f.step) if failures else None

    def record(self, kind: str, local: dict[str, torch.Tensor], public: dict[str, torch.Tensor] | None = None,
               refs: list[int] | None = None) -> int:
        recs: dict[int, StepRecord] = {}
        for i, row in self._live():
            rec = self._current(row, kind)
            if rec is not None:
                recs[i] = rec
        index = self._step_index
        self._step_index += 1
        self.counters.steps += 1
        binding = [self.take_step_ops(), list(refs or [])]
        if self.progress is not None and index % PROGRESS_EVERY == 0:
            self.progress(index, self._total)
        if index == self.capture_at:
            self.captured = {n: t[0].clone() for n, t in local.items() if n.startswith("in.")}
            raise _Stop()
        verified, self._verified = self._verified, {}
        public = public or {}
        names = set(local) | set(public)

        def shape(n: str) -> tuple:
            return tuple(public[n].shape) if n in public else tuple(local[n].shape[1:])

        for i, rec in list(recs.items()):
            try:
                if rec.kind != kind:
                    self._diverge(self.rows[i], Finding(index, rec.kind, rec.scope, "kind", rec.kind, kind))
                elif names != set(rec.digests):
                    self._diverge(self.rows[i], Finding(index, kind, rec.scope, "fields", ",".join(sorted(rec.digests)),
                                                        ",".join(sorted(names))))
                elif [rec.ops, rec.refs] != binding:
                    self._diverge(self.rows[i], Finding(index, kind, rec.scope, "binding", repr([rec.ops, rec.refs]),
                                                        repr(binding), "the step's dealer requests or referenced "
                                                        "steps differ from the program's"))
                else:
                    continue
            except Exception as exc:
                self._fail(self.rows[i], exc)
            del recs[i]
        implied = IMPLIED_INPUTS.get(kind, {})
        for name in sorted(names):
            if not recs:
                break
            t = public[name] if name in public else local[name]
            if name in verified and _same(verified[name], t):
                continue  # this very tensor matched these records' digest when it was opened
            sent = implied.get(name)
            if sent is not None and sent in names and shape(sent) == shape(name):
                continue  # checked through its message (IMPLIED_INPUTS)
            try:
                if name in public:
                    d = step_digest(name, t)
                    got = {i: d for i in recs}
                else:
                    got = _row_bytes(name, t, list(recs))
            except Exception as exc:  # pragma: no cover - the replay's own tensors
                for i in recs:
                    self._fail(self.rows[i], exc)
                recs.clear()
                break
            for i in list(recs):
                rec = recs[i]
                try:
                    if got[i] != rec.digests[name]:
                        self._diverge(self.rows[i], Finding(index, kind, rec.scope, name, rec.digests[name].hex(),
                                                            got[i].hex()))
                        del recs[i]
                except Exception as exc:
                    self._fail(self.rows[i], exc)
                    del recs[i]
        if index == self.stop_after:
            raise _Stop()
        self._live()
        return index


def _replay_group(program_for: Callable[[tuple[int, ...]], Callable[[Session], Any]], parties: tuple[int, ...],
                  inputs: dict[int, tuple], n_parties: int, job: bytes,
                  corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None, mode: str, lam: int,
                  challenge_seed: bytes, frac_bits: int,
                  progress: Callable[[int, int], None] | None = None) -> tuple[dict[int, ReplayResult], list[int]]:
    """Replay `parties` together: their results, and the parties to replay again on their own
    (detached, or all of them when the joint replay itself failed)."""
    t0 = time.perf_counter()
    k = len(parties)
    try:
        program = program_for(parties)
        s = ReplaySession(parties, n_parties, job, [inputs[p][0] for p in parties], [inputs[p][1] for p in parties],
                          [inputs[p][2] for p in parties], [inputs[p][3] for p in parties], corrections, mode, lam,
                          challenge_seed, frac_bits)
        s.progress = progress
    except Exception as exc:
        if k > 1:
            return {}, list(parties)
        return {parties[0]: ReplayResult(parties[0], False, 0, 0, mode, lam, time.perf_counter() - t0, None,
                                         f"{type(exc).__name__}: {exc}")}, []
    try:
        program(s)
        for row in s.rows:
            if row.active:
                row.steps = s._step_index
                if s._step_index != len(row.records):
                    row.finding = Finding(s._step_index, "?", "", "extra steps", f"{len(row.records)} steps committed",
                                          f"the program has {s._step_index} steps")
    except _Stop:
        pass
    except Exception as exc:  # malformed openings must give a verdict, never a crash
        if k > 1:  # not attributable to one row: every party is replayed on its own
            return {}, list(parties)
        row = s.rows[0]
        if row.active:
            s._fail(row, exc)
    results, again = {}, []
    for row in s.rows:
        if row.detached:
            again.append(row.party)
            continue
        finding, error = row.finding, row.error
        try:
            # Deferred product checks of the steps before the party's first difference: a failure among
            # them is the earlier difference. After an error, every pending check (all before it) runs.
            earlier = s.check_pending(row, before=finding.step if finding is not None else None)
        except Exception as exc:  # pragma: no cover - pending checks were formed by the replay itself
            earlier, error = None, error or f"{type(exc).__name__}: {exc}"
        if earlier is not None:
            finding, error = earlier, None
        results[row.party] = ReplayResult(row.party, finding is None and error is None, row.steps, row.matmul_checks,
                                          mode, lam, 0.0, finding, error, row.matmul_recomputed,
                                          row.freivalds_batches, k)
    seconds = time.perf_counter() - t0
    for r in results.values():
        r.seconds = seconds
    return results, again


def replay_parties(program_for: Callable[[tuple[int, ...]], Callable[[Session], Any]], *, parties, n_parties: int,
                   job: bytes, seeds: dict[int, bytes], records: dict[int, list[StepRecord]],
                   opened: dict[int, Callable[[int], dict[str, torch.Tensor]]],
                   outs: dict[int, Callable[[int], torch.Tensor | None]],
                   corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None = None,
                   mode: str = "freivalds", lam: int = 40, challenge_seed: bytes = bytes(32),
                   frac_bits: int = 16, progress: Callable[[int, int], None] | None = None) -> list[ReplayResult]:
    """Replay several opened parties in one session, one result per party in the order of `parties`;
    `progress(steps done, steps committed)` is called as the replay goes.

    `program_for(parties)` is the program of those parties on a session holding them all (their inputs
    stacked on the party axis, in that order); it is also asked for single parties. `corrections` are
    the dealer's for the last party. Each party is judged as `replay_party` would judge it alone; a
    party whose openings differ from the others', or a joint replay that fails as a whole, is replayed
    on its own. Never raises on attacker-controlled data."""
    parties = tuple(parties)
    inputs = {p: (seeds[p], records[p], opened[p], outs[p]) for p in parties}
    args = (n_parties, job, corrections, mode, lam, challenge_seed, frac_bits)
    results, again = _replay_group(program_for, parties, inputs, *args, progress=progress) if parties else ({}, [])
    for p in again:
        results.update(_replay_group(program_for, (p,), inputs, *args, progress=progress)[0])
    return [results[p] for p in parties]


def replay_party(program: Callable[[Session], Any], *, party: int, n_parties: int, job: bytes, seed: bytes,
                 records: list[StepRecord], opened: Callable[[int], dict[str, torch.Tensor]],
                 outs: Callable[[int], torch.Tensor | None],
                 corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None = None,
                 mode: str = "freivalds", lam: int = 40, challenge_seed: bytes = bytes(32),
                 frac_bits: int = 16) -> ReplayResult:
    """Replay `program` as party `party`; never raises on attacker-controlled data."""
    return replay_parties(lambda ps: program, parties=(party,), n_parties=n_parties, job=job, seeds={party: seed},
                          records={party: records}, opened={party: opened}, outs={party: outs},
                          corrections=corrections, mode=mode, lam=lam, challenge_seed=challenge_seed,
                          frac_bits=frac_bits)[0]


class _OneStep:
    """The record list of a one-step replay: `n_steps` long, holding only the step it checks."""

    def __init__(self, n_steps: int, record: StepRecord):
        self.n, self.record = n_steps, record

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> StepRecord:
        if k != self.record.index:
            raise IndexError(f"a one-step replay holds step {self.record.index} only, not {k}")
        return self.record


def replay_step(*, party: int, n_parties: int, job: bytes, seed: bytes, record: StepRecord, n_steps: int,
                inputs: dict[str, torch.Tensor], public: dict[str, torch.Tensor], refs_public: list[torch.Tensor],
                corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None = None) -> ReplayResult:
    """Re-execute the one committed step `record` of `party` from its input shares `inputs`, its public
    openings `public` and the referenced steps' openings `refs_public` (mpc_core.protocols.steps), and
    compare it with the record exactly, as a full replay compares that step. The caller checks that the
    inputs and openings open the record's digests first. Never raises on attacker-controlled data."""
    from mpc_core.protocols.steps import run_recorded_step

    t0 = time.perf_counter()
    try:
        s = ReplaySession((party,), n_parties, job, [seed], [_OneStep(n_steps, record)], [lambda k: public],
                          [lambda k: None], corrections, "exact")
        s._step_index = record.index
        s._op_index = record.ops[0][0] if record.ops else 0
        s.stop_after = record.index
        with s.scope(record.scope.split("/")[0] or record.kind):
            run_recorded_step(s, record.kind, inputs, record.ops, record.refs, refs_public)
    except _Stop:
        pass
    except Exception as exc:  # noqa: BLE001 - a record or tensors that cannot be re-executed
        return ReplayResult(party, False, 0, 0, "exact", 64, time.perf_counter() - t0, None,
                            f"{type(exc).__name__}: {exc}")
    row = s.rows[0]
    return ReplayResult(party, row.finding is None and row.error is None, 1, int(record.kind in ("beaver_matmul", "fixed_matmul")),
                        "exact", 64, time.perf_counter() - t0, row.finding, row.error)


def capture_inputs(program: Callable[[Session], Any], *, party: int, n_parties: int, job: bytes, seed: bytes,
                   records: list[StepRecord], opened: Callable[[int], dict[str, torch.Tensor]],
                   outs: Callable[[int], torch.Tensor | None], step: int,
                   corrections: Callable[[Request, int], dict[str, torch.Tensor]] | None = None,
                   frac_bits: int = 16) -> dict[str, torch.Tensor] | None:
    """The input shares (`in.*`) that the replay of `party` feeds step `step` (None if the replay stops
    before it): what a one-step evidence bundle reveals of the failing step. Never raises."""
    try:
        s = ReplaySession((party,), n_parties, job, [seed], [records], [opened], [outs], corrections, "freivalds",
                          frac_bits=frac_bits)
        s.capture_at = step
        program(s)
    except _Stop:
        pass
    except Exception:  # noqa: BLE001
        return None
    return s.captured
