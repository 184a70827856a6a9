"""Every nonlinear function against float64 on its grid, within the bounds stated in specs/numerics.md."""
from pathlib import Path

import pytest

from mpc_core import simulate

from .helpers import assert_within, quantize
from .numerics_cases import CASES, parse_bounds

SPEC = Path(__file__).resolve().parents[2] / "specs" / "numerics.md"
BOUNDS = parse_bounds(SPEC.read_text())


def test_every_case_has_a_stated_bound():
    assert set(BOUNDS) == {c.name for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_function_within_documented_bound(case):
    x = case.make()
    out, _ = simulate(case.mpc, x, parties=3, seed=11, record=False)
    abs_tol, rel_tol = BOUNDS[case.name]
    assert_within(out, case.ref(quantize(x)), abs_tol, rel_tol, case.name)


@pytest.mark.parametrize("parties", [2, 5])
def test_bounds_hold_for_other_party_counts(parties):
    for name in ("exp [-30, 10]", "reciprocal [1e-3, 1e5]", "softmax 12x32x32 causal"):
        case = next(c for c in CASES if c.name == name)
        x = case.make()
        out, _ = simulate(case.mpc, x, parties=parties, seed=3, record=False)
        abs_tol, rel_tol = BOUNDS[name]
        assert_within(out, case.ref(quantize(x)), abs_tol, rel_tol, f"{name} N={parties}")
