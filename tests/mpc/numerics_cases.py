"""The grids on which every nonlinear function's error bound is measured and tested.

Shared by tests/mpc/test_numerics.py and tools/measure_numerics.py (which writes
the table in specs/numerics.md). References are float64 torch functions applied
to the *encoded* input, so the bound is the protocol's error, not the encoding's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def _lin(lo: float, hi: float, n: int) -> torch.Tensor:
    return torch.linspace(lo, hi, n, dtype=torch.float64)


def _log(lo: float, hi: float, n: int) -> torch.Tensor:
    return torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _masked_rows() -> torch.Tensor:
    x = torch.randn(16, 128, generator=_gen(1), dtype=torch.float64) * 5
    mask = torch.rand(16, 128, generator=_gen(2)) < 0.4
    x[mask] = -1e4
    x[:, 0] = torch.randn(16, generator=_gen(3), dtype=torch.float64)  # every row keeps one real entry
    return x


def _causal_scores() -> torch.Tensor:
    x = torch.randn(12, 32, 32, generator=_gen(4), dtype=torch.float64) * 3
    return x.masked_fill(torch.triu(torch.ones(32, 32, dtype=torch.bool), 1), -1e4)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], torch.Tensor]
    mpc: Callable
    ref: Callable[[torch.Tensor], torch.Tensor]


CASES = [
    Case("exp [-30, 10]", lambda: _lin(-30, 10, 4001), lambda a: a.exp(), torch.exp),
    Case("exp [-1e4, -30]", lambda: _lin(-1e4, -30, 2001), lambda a: a.exp(), torch.exp),
    Case("reciprocal [1e-3, 1e5]", lambda: _log(1e-3, 1e5, 4001), lambda a: a.reciprocal(), torch.reciprocal),
    Case("rsqrt [1e-4, 1e4]", lambda: _log(1e-4, 1e4, 4001), lambda a: a.rsqrt(), torch.rsqrt),
    Case("sigmoid [-40, 40]", lambda: _lin(-40, 40, 4001), lambda a: a.sigmoid(), torch.sigmoid),
    Case("gelu [-20, 20]", lambda: _lin(-20, 20, 4001), lambda a: a.gelu(),
         lambda x: F.gelu(x, approximate="tanh")),
    Case("softmax 16x128, 40% masked -1e4", _masked_rows, lambda a: a.softmax(-1), lambda x: x.softmax(-1)),
    Case("softmax 12x32x32 causal", _causal_scores, lambda a: a.softmax(-1), lambda x: x.softmax(-1)),
    Case("softmax 1x50257", lambda: torch.randn(1, 50257, generator=_gen(5), dtype=torch.float64) * 3,
         lambda a: a.softmax(-1), lambda x: x.softmax(-1)),
    Case("layer_norm 32x768", lambda: torch.randn(32, 768, generator=_gen(6), dtype=torch.float64) * 2 + 0.5,
         lambda a: a.layer_norm(eps=1e-5), lambda x: F.layer_norm(x, (x.shape[-1],), eps=1e-5)),
    Case("max 64x100", lambda: torch.randn(64, 100, generator=_gen(7), dtype=torch.float64) * 100,
         lambda a: a.max(-1), lambda x: x.max(-1).values),
    Case("relu [-1e3, 1e3]", lambda: _lin(-1e3, 1e3, 4001), lambda a: a.relu(), torch.relu),
    # Small inputs take the lookup-table protocols (mpc_core/protocols/lookup.py); the larger grids above
    # take the bit-decomposition ones where the tables would exceed lookup.MAX_TABLE_WORDS.
    Case("reciprocal [1e-3, 1e5], tables", lambda: _log(1e-3, 1e5, 81), lambda a: a.reciprocal(), torch.reciprocal),
    Case("rsqrt [1e-4, 1e4], tables", lambda: _log(1e-4, 1e4, 81), lambda a: a.rsqrt(), torch.rsqrt),
    Case("relu [-1e3, 1e3], tables", lambda: _lin(-1e3, 1e3, 1001), lambda a: a.relu(), torch.relu),
    Case("max 16x16, tables", lambda: torch.randn(16, 16, generator=_gen(10), dtype=torch.float64) * 100,
         lambda a: a.max(-1), lambda x: x.max(-1).values),
    Case("softmax 4x3x16 causal, tables", lambda: _causal_scores()[:4, 13:16, :16],
         lambda a: a.softmax(-1), lambda x: x.softmax(-1)),
    Case("mul 64x64", lambda: torch.randn(64, 64, generator=_gen(8), dtype=torch.float64) * 30,
         lambda a: a * a, lambda x: x * x),
    Case("matmul 32x768 @ 768x32", lambda: torch.randn(32, 768, generator=_gen(9), dtype=torch.float64),
         lambda a: a @ a.transpose(0, 1), lambda x: x @ x.transpose(0, 1)),
]


def parse_bounds(spec_text: str) -> dict[str, tuple[float, float]]:
    """Read `| name | abs bound | rel bound | ...` rows of the bounds table in specs/numerics.md."""
    bounds = {}
    in_table = False
    for line in spec_text.splitlines():
        if line.startswith("<!-- bounds-table-start -->"):
            in_table = True
            continue
        if line.startswith("<!-- bounds-table-end -->"):
            break
        if in_table and line.startswith("|") and not line.startswith("|--") and not line.startswith("| function"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            bounds[cells[0]] = (float(cells[1]), float(cells[2]))
    return bounds
