"""Re-execute one recorded step on its own: the protocol call that produced a step record, rebuilt from
the record's kind, its dealer requests (`StepRecord.ops`), its input shares and the public values of
the steps it references (`StepRecord.refs`).

This is how a single step is checked without replaying the job before it (a one-step evidence bundle,
specs/audit.md section 5): the same protocol functions run on a session that serves the step's
material and committed openings and compares what the call sends and outputs with the record.
"""
from __future__ import annotations

from typing import Callable

import torch

from mpc_core.errors import MPCError
from mpc_core.protocols import arithmetic as A
from mpc_core.protocols import binary as Bn
from mpc_core.protocols import lookup as L
from mpc_core.session import Session


class StepSpecError(MPCError):
    """A record that does not describe a step that can be re-executed on its own."""


def _params(ops: list, kind: str) -> list:
    if len(ops) != 1 or not isinstance(ops[0], list) or len(ops[0]) != 2:
        raise StepSpecError(f"a {kind} step uses exactly one dealer request, the record lists {len(ops)}")
    req = ops[0][1]
    if not isinstance(req, list) or len(req) != 2 or not isinstance(req[1], list):
        raise StepSpecError(f"malformed request {req!r}")
    return req[1]


def _and_many_params(ops: list, kind: str) -> tuple:
    """The monomials of an and_many step's request [shape, m, monomials] (the protocol validates them)."""
    p = _params(ops, kind)
    if len(p) != 3 or not isinstance(p[2], list):
        raise StepSpecError(f"malformed and_many request {p!r}")
    return tuple(tuple(tuple(f) for f in mono) for mono in p[2])


def _narrow(p: list, at: int) -> tuple[int, int, int] | None:
    rest = p[at:]
    if not rest:
        return None
    if len(rest) != 3 or not all(isinstance(v, int) for v in rest):
        raise StepSpecError(f"malformed narrow {rest!r}")
    return (rest[0], rest[1], rest[2])


def _masked_weight(refs_public: list[torch.Tensor], narrow: tuple[int, int, int] | None) -> torch.Tensor:
    """F as the program held it: the referenced mask_weight openings, concatenated along the cache dim."""
    if not refs_public:
        raise StepSpecError("a fixed_matmul step references no mask_weight step")
    if len(refs_public) == 1:
        return refs_public[0]
    if narrow is None:
        raise StepSpecError("several mask_weight openings but no cache dim to join them on")
    return torch.cat(refs_public, dim=narrow[0])


def _one(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0)  # the session's party axis: one row


def run_recorded_step(s: Session, kind: str, inputs: dict[str, torch.Tensor], ops: list, refs: list[int],
                      refs_public: list[torch.Tensor]) -> None:
    """Call the protocol function that records a `kind` step, on `s` (holding one party), with the
    recorded input shares `inputs` (no party axis), the parameters of its dealer request `ops`
    and, for fixed_matmul, the referenced mask_weight steps' openings `refs_public` (in `refs` order)."""
    steps: dict[str, Callable[[], object]] = {
        "beaver_mul": lambda: A.beaver_mul(s, _one(inputs["in.x"]), _one(inputs["in.y"])),
        "beaver_matmul": lambda: A.beaver_matmul(s, _one(inputs["in.x"]), _one(inputs["in.y"])),
        "trunc": lambda: A.truncate(s, _one(inputs["in.x"]), int(_params(ops, kind)[1])),
        "and": lambda: Bn.and_(s, _one(inputs["in.x"]), _one(inputs["in.y"])),
        "and_many": lambda: Bn.and_many(s, _one(inputs["in.x"]), _and_many_params(ops, kind)),
        "a2b_open": lambda: Bn.a2b(s, _one(inputs["in.x"])),
        "b2a": lambda: Bn.b2a_bits(s, _one(inputs["in.bits"])),
    }
    if kind == "mask_weight":
        p = _params(ops, kind)
        A.mask_weight(s, _one(inputs["in.w"]), str(p[0]), tuple(int(d) for d in p[1]), _narrow(p, 2))
        return
    if kind == "fixed_matmul":
        p = _params(ops, kind)
        narrow = _narrow(p, 3)
        f = _masked_weight(refs_public, narrow)
        A.fixed_matmul(s, _one(inputs["in.x"]), f, str(p[0]), tuple(int(d) for d in p[2]), narrow, refs=list(refs))
        return
    if kind == "lookup_open":
        p = _params(ops, kind)
        if len(p) != 4 or not isinstance(p[1], int) or not isinstance(p[2], int):
            raise StepSpecError(f"malformed lookup request {p!r}")
        if not isinstance(p[3], list) or not all(isinstance(q, list) for q in p[3]):
            raise StepSpecError(f"malformed lookup tables {p[3]!r}")
        L.lookup_open(s, _one(inputs["in.x"]), p[1], p[2], tuple(tuple(q) for q in p[3]))
        return
    step = steps.get(kind)
    if step is None:
        raise StepSpecError(f"a {kind} step cannot be re-executed on its own")
    step()
