"""A Session binds one process's parties to a transport, a dealer and transcripts.

It owns the two deterministic counters of a run: the dealer op index (every
material request) and the step index (every transcript record). All parties
run the same program, so both counters agree across parties and transports.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import torch

from mpc_core.communicator import Communicator, InProcessCommunicator
from mpc_core.counters import Counters, OpCount
from mpc_core.dealer import Dealer, Request, TrustedDealer
from mpc_core.errors import PartyError, ShapeError
from mpc_core.prg import derive_party_seed
from mpc_core.ring import DEFAULT_FRAC_BITS
from mpc_core.transcript import Transcript


INPUT_OWNER = -1  # the party index under which the input owner's seed is derived


def input_owner_seed(master_seed: bytes, job: bytes) -> bytes:
    """The seed a simulated client uses to split its inputs (derived like a party seed, index -1)."""
    return derive_party_seed(master_seed, job, INPUT_OWNER)


def align(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give two party-axis tensors (P, *shape) the same ndim by inserting 1s after the party axis,
    so that torch broadcasting lines up their element dims and never the party axis."""
    while x.dim() < y.dim():
        x = x.unsqueeze(1)
    while y.dim() < x.dim():
        y = y.unsqueeze(1)
    return x, y


class Session:
    """Context for running MPC protocols for the parties held in this process."""

    def __init__(self, comm: Communicator, dealer: Dealer, *, job: bytes = b"", frac_bits: int = DEFAULT_FRAC_BITS,
                 record: bool = True, transcript_dir: str | None = None, input_seed: bytes | None = None):
        if comm.n_parties != dealer.n_parties:
            raise PartyError(f"transport has {comm.n_parties} parties but dealer has {dealer.n_parties}")
        if tuple(comm.local_parties) != tuple(dealer.local_parties):
            raise PartyError(f"transport holds parties {comm.local_parties}, dealer serves {dealer.local_parties}")
        self.comm = comm
        self.dealer = dealer
        self.job = bytes(job)
        self.frac_bits = frac_bits
        self.n_parties = comm.n_parties
        self.local_parties = tuple(comm.local_parties)
        self.counters = Counters()
        self.record_steps = record
        self.transcripts = {p: Transcript(p, transcript_dir) for p in self.local_parties} if record else {}
        self.input_seed = input_seed
        self.request_log: list[Request] = []  # every material request in op-index order (audits, dealer replays)
        self._step_ops: list = []  # [op index, request] of the requests since the last recorded step
        self._op_index = 0
        self._step_index = 0
        self._input_index = 0
        self._scopes: list[str] = []
        self._party0 = torch.tensor([1 if p == 0 else 0 for p in self.local_parties], dtype=torch.int64)

    # --- construction helpers -------------------------------------------------
    @classmethod
    def in_process(cls, n_parties: int, master_seed: bytes, *, job: bytes = b"simulate", **kw) -> "Session":
        """All parties in this process with a trusted in-process dealer."""
        kw.setdefault("input_seed", input_owner_seed(master_seed, job))
        return cls(InProcessCommunicator(n_parties), TrustedDealer(master_seed, job, n_parties), job=job, **kw)

    def next_input_index(self) -> int:
        """Deterministic counter naming the PRG stream of each shared input."""
        i = self._input_index
        self._input_index += 1
        return i

    # --- party-axis helpers ----------------------------------------------------
    @property
    def n_local(self) -> int:
        return len(self.local_parties)

    def party0(self, ndim: int) -> torch.Tensor:
        """1 for party 0's row, 0 elsewhere, shaped (P, 1, ..., 1) to broadcast over `ndim` dims."""
        return self._party0.reshape((self.n_local,) + (1,) * ndim)

    def public_to_shares(self, value: torch.Tensor) -> torch.Tensor:
        """The trivial sharing of a public ring value: party 0 holds it, the others hold 0."""
        return self.party0(value.dim()) * value.unsqueeze(0)

    def check_local(self, x: torch.Tensor, what: str) -> None:
        if x.dim() < 1 or x.shape[0] != self.n_local:
            raise ShapeError(f"{what}: expected {self.n_local} local party rows, got shape {tuple(x.shape)}")

    # --- scopes and counters ---------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Attribute rounds/bytes to `name` when it is the outermost op."""
        outermost = not self._scopes
        self._scopes.append(name)
        if outermost:
            self.counters.by_op.setdefault(name, OpCount()).calls += 1
            t0 = time.perf_counter()
        try:
            yield
        finally:
            self._scopes.pop()
            if outermost:
                self.counters.by_op[name].seconds += time.perf_counter() - t0

    def _op(self) -> OpCount | None:
        return self.counters.by_op.get(self._scopes[0]) if self._scopes else None

    @property
    def scope_path(self) -> str:
        return "/".join(self._scopes)

    # --- dealer ----------------------------------------------------------------
    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """Count the enclosed work as offline (preprocessing that needs no input), with dealer time."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.counters.dealer_seconds += time.perf_counter() - t0

    def material(self, kind: str, *params) -> dict[str, torch.Tensor]:
        """Request dealer material; returns (P, ...) tensors for the local parties."""
        req = Request(kind, tuple(params))
        self.request_log.append(req)
        t0 = time.perf_counter()
        out = self.dealer.get(req, self._op_index)
        self.counters.dealer_seconds += time.perf_counter() - t0
        self._step_ops.append([self._op_index, req.describe()])
        self._op_index += 1
        self.counters.dealer_requests += 1
        op = self._op()
        if op is not None:
            op.dealer_requests += 1
        return out

    # --- communication ---------------------------------------------------------
    def _exchange(self, local: torch.Tensor) -> torch.Tensor:
        self.check_local(local, "exchange")
        everyone = self.comm.all_gather(local.contiguous())
        per_party = local[0].numel() * 8 * (self.n_parties - 1)
        self.counters.rounds += 1
        self.counters.bytes_per_party += per_party
        op = self._op()
        if op is not None:
            op.rounds += 1
            op.bytes_per_party += per_party
        return everyone

    def open_arith(self, sent: torch.Tensor) -> torch.Tensor:
        """Open additive shares: every party broadcasts its share; the value is their sum mod 2^64."""
        return self._exchange(sent).sum(dim=0)

    def open_xor(self, sent: torch.Tensor) -> torch.Tensor:
        """Open XOR shares: every party broadcasts its share; the value is their XOR."""
        everyone = self._exchange(sent)
        out = everyone[0].clone()
        for i in range(1, everyone.shape[0]):
            out ^= everyone[i]
        return out

    def open_many(self, sents: list[torch.Tensor], xor: bool = False) -> list[torch.Tensor]:
        """Open several share tensors in one round (flattened into one message)."""
        flat = torch.cat([s.reshape(self.n_local, -1) for s in sents], dim=1)
        opened = self.open_xor(flat) if xor else self.open_arith(flat)
        out, pos = [], 0
        for s in sents:
            n = s[0].numel()
            out.append(opened[pos:pos + n].reshape(s.shape[1:]))
            pos += n
        return out

    # --- products that an audit may check instead of recomputing ------------------
    def linear_result(self, exact: Callable[[], torch.Tensor],
                      terms: Callable[[], list] | None) -> torch.Tensor:
        """The output share of a step that is linear in public values and dealer material.

        `exact()` computes it; `terms()` lists it as a sum of plain tensors and (A, B) products,
        which a replaying auditor may check with Freivalds instead (verifier.replay).
        A None `terms` marks offline preprocessing folded into a later result."""
        return exact()

    # --- transcripts -----------------------------------------------------------
    @property
    def next_step_index(self) -> int:
        """The index the next recorded step will get."""
        return self._step_index

    def take_step_ops(self) -> list:
        """The [op index, request] of every material request since the last recorded step (the step's
        dealer material), and start the next step's list."""
        ops, self._step_ops = self._step_ops, []
        return ops

    def record(self, kind: str, local: dict[str, torch.Tensor], public: dict[str, torch.Tensor] | None = None,
               refs: list[int] | None = None) -> int:
        """Record one step for every local party: `local` tensors have the party axis, `public` do not;
        `refs` are the earlier steps whose public values the step used (StepRecord.refs)."""
        index = self._step_index
        self._step_index += 1
        self.counters.steps += 1
        ops = self.take_step_ops()
        if not self.record_steps:
            return index
        scope = self.scope_path
        for row, p in enumerate(self.local_parties):
            tensors = {n: t[row] for n, t in local.items()}
            if public:
                tensors.update(public)
            self.transcripts[p].record(index, kind, scope, tensors, ops, refs)
        return index

    def close(self) -> None:
        for t in self.transcripts.values():
            t.close()
        self.comm.close()
