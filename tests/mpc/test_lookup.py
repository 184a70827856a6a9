"""Lookup tables on a masked input (mpc_core/lookup.py, mpc_core/protocols/lookup.py): exact comparisons,
exact small tables, piecewise polynomials within their interpolation error, and bad requests refused."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from mpc_core.dealer import Request, kind_spec
from mpc_core.errors import DealerError
from mpc_core.lookup import FUNCTIONS, coefficients, digit_bits
from mpc_core.prg import master_from_int
from mpc_core.protocols.lookup import masked_lookup
from mpc_core.protocols.nonlinear import WIN_STEP, _band_poly, _gelu_poly
from mpc_core.ring import decode, encode
from mpc_core.session import Session


def _session(parties: int = 3, seed: int = 0) -> Session:
    return Session.in_process(parties, master_from_int(seed), record=False)


@given(st.integers(2, 62), st.integers(1, 4), st.integers(2, 4), st.integers(0, 10**6))
@settings(max_examples=40, deadline=None)
def test_comparisons_are_exact_within_their_range(ell, n_thresholds, parties, seed):
    """[x >= t] equals the plaintext comparison for abs(x - t) < 2^ell, at the edges of the range too."""
    g = torch.Generator().manual_seed(seed)
    half = 1 << (ell - 1)
    t = torch.randint(-half, half, (n_thresholds,), generator=g, dtype=torch.int64)
    d = torch.randint(-half + 1, half, (n_thresholds, 24), generator=g, dtype=torch.int64)
    d[:, :6] = torch.tensor([0, 1, -1, half - 1, -half + 1, 2])
    x = (t.unsqueeze(1) + d)[0]  # compared against every threshold: keep abs(x - t_j) < 2^ell
    x = x[((x.unsqueeze(0) - t.unsqueeze(1)).abs() < (1 << ell)).all(0)]
    s = _session(parties, seed)
    bits, values = masked_lookup(s, s.public_to_shares(x), ell=ell, thresholds=tuple(t.tolist()))
    assert values == []
    want = (x.unsqueeze(0) >= t.unsqueeze(1)).to(torch.int64)
    assert torch.equal(bits.sum(0), want)
    assert s.counters.rounds == 2


def test_step_table_is_exact_and_one_round():
    """The max's winner test: a degree-0 table on a 5-bit integer, exact with no carry."""
    s = _session()
    wins = torch.arange(-16, 16, dtype=torch.int64)
    _, (value,) = masked_lookup(s, s.public_to_shares(wins), polys=(WIN_STEP,))
    assert torch.equal(value.sum(0), (wins >= 0).to(torch.int64))
    assert s.counters.rounds == 1


@pytest.mark.parametrize("poly, lo, hi, tol", [
    (_gelu_poly(16), -7.9, 7.8, 5e-6),
    # a band of 1/x and x^-1/2 (linear pieces of 2^-8, 4 bits dropped): m in [1, 4) read at scale 2^20
    (_band_poly("recip", 10), 1.0, 3.999, 2 ** -16 + 2 ** -16 + 2 ** -23),
    (_band_poly("rsqrt", 10), 1.0, 3.999, 0.75 * 2 ** -17 + 2 ** -17 + 2 ** -23),
])
def test_polynomial_tables_within_interpolation_error(poly, lo, hi, tol):
    """A table's value at scale 2^out_bits is within `tol` of the function at the encoded input, across its
    segments (each input lands in one of two segments depending on the mask's carry)."""
    name, f_in, *_ = poly
    out_bits = poly[5]
    lift = max(f_in - 40, 0)  # encode() takes at most 40 fractional bits
    x = encode(torch.linspace(lo, hi, 3001, dtype=torch.float64), f_in - lift) << lift
    for seed in (1, 2):
        s = _session(3, seed)
        _, (value,) = masked_lookup(s, s.public_to_shares(x), polys=(poly,))
        got = value.sum(0).double() / 2.0 ** out_bits
        ref = torch.tensor([float(FUNCTIONS[name](__import__("decimal").Decimal(v))) for v in (x.double() / 2.0 ** f_in).tolist()],
                           dtype=torch.float64)
        assert (got - ref).abs().max().item() < tol, name


def test_coefficient_tables_are_integers_that_rebuild_the_function():
    """The public table's row v evaluates, at l = +-2^(m-t) and 0 (u = +-1, 0), to f at that point times
    2^out_bits: the ends are interpolation nodes (exact up to the coefficients' rounding to integers,
    half a unit of each B_d l^d), the centre within the cubic's error too."""
    import torch.nn.functional as F
    name, f_in, m, k, deg, out_bits, v_lo, t, div = _gelu_poly(16)
    table = coefficients(name, f_in, m, k, deg, out_bits, v_lo, t, div)
    assert table.shape == (1 << k, deg + 1) and table.dtype == torch.int64
    v = torch.arange(v_lo, v_lo + (1 << k)).double()
    rows = table.double() / 2.0 ** out_bits
    step = 2.0 ** (m - f_in)
    rounding = sum(0.5 * 2.0 ** ((m - t) * d - out_bits) for d in range(deg + 1))
    for u, tol in ((-1, rounding), (1, rounding), (0, rounding + 5e-6)):
        value = sum(rows[:, d] * 2.0 ** ((m - t) * d) * float(u) ** d for d in range(deg + 1))
        assert (value - F.gelu((v + u) * step, approximate="tanh")).abs().max() < tol, u


def test_digit_width_minimises_material():
    for ell, n in ((62, 1), (47, 24), (27, 2), (5, 1)):
        b = digit_bits(ell, n)
        cost = lambda w: math.ceil(ell / w) * (1 << w) + n * (1 << (math.ceil(ell / w) + 1))
        assert all(cost(b) <= cost(w) for w in range(1, 11) if math.ceil(ell / w) + 1 <= 16)


@pytest.mark.parametrize("params, what", [
    (((4,), 62, 7, (("nosuch", 16, 11, 7, 3, 60, 16, 0, 1),)), "unknown table function"),
    (((4,), 62, 7, (("recip", 16, 11, 13, 3, 60, 16, 0, 1),)), "out of range"),
    (((4,), 62, 7, (("recip", 16, 11, 7, 4, 60, 16, 0, 1),)), "out of range"),
    (((4,), 62, 7, (("recip", 16, 11, 7, 3, 60, 16, 0, 0),)), "out of range"),
    (((4,), 62, 7, (("recip", 16, 11, 7, 3, 60, 16, 0),)), "bad polynomial table parameters"),
    (((4,), 62, 7, (("step", 0, 0, 5, 0, 0, -16, 0, 1),) * 33), "at most 32"),
    (((4,), 62, 7, ("recip", 16, 11, 7, 3, 60, 16, 0, 1)), "bad polynomial table parameters"),
    (((4,), 63, 7, ()), "out of range"),
    (((4,), 62, 2, ()), "second table"),
    (((4,), 62, 0, ()), "needs comparison digits or a polynomial"),
    (((4,), 62, 11, ()), "out of range"),
    (((4,), 62, 7), "takes (shape, ell, b, polys)"),
])
def test_bad_lookup_requests_are_refused(params, what):
    with pytest.raises(DealerError, match=what.replace("(", r"\(").replace(")", r"\)")):
        kind_spec(Request("lookup", params))
