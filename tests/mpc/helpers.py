"""Shared helpers for mpc_core tests: references on the *encoded* input and error summaries."""
from __future__ import annotations

import torch

from mpc_core import decode, encode

ULP = 2.0**-16


def quantize(x: torch.Tensor) -> torch.Tensor:
    """The value the parties actually hold after fixed-point encoding."""
    return decode(encode(x))


def max_abs_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max())


def within(out: torch.Tensor, ref: torch.Tensor, abs_tol: float, rel_tol: float) -> torch.Tensor:
    """Elementwise |out - ref| <= abs_tol + rel_tol * |ref|."""
    return (out - ref).abs() <= abs_tol + rel_tol * ref.abs()


def assert_within(out: torch.Tensor, ref: torch.Tensor, abs_tol: float, rel_tol: float, what: str) -> None:
    ok = within(out, ref, abs_tol, rel_tol)
    if not bool(ok.all()):
        i = int((~ok).flatten().nonzero()[0])
        raise AssertionError(
            f"{what}: {int((~ok).sum())} entries out of bound; first at flat index {i}: "
            f"got {float(out.flatten()[i])!r}, want {float(ref.flatten()[i])!r} (abs {abs_tol}, rel {rel_tol})")
