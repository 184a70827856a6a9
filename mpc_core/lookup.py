"""Lookup tables on a masked input: the public tables and the dealer's derivation (specs/protocols.md,
"Lookup tables on a masked input").

A shared value x is opened once as c = x + r (r the dealer's uniform mask in Z_2^64). From the
public c and tables the dealer derived from r, the parties compute without further rounds:

* a piecewise polynomial of x: with c_low = c mod 2^m and l = c_low - r_low (r_low = r mod 2^m),
  x = v 2^m + l exactly, where v = ((c >> m) - (r >> m)) mod 2^k names the segment and l is in
  (-2^m, 2^m) (with t dropped bits, c_low and r_low are shifted right by t first: l then errs by
  less than one unit of 2^t, a truncation for free). The dealer rotates the public coefficient table B (segment v: P_v(l) = sum_d B_d[v] l^d)
  by r's bits and folds the powers of r_low in: U_e[j] = sum_{d >= e} C(d, e) (-r_low)^(d-e) B_d[v(j)],
  so that sum_e c_low^e U_e[(c >> m) mod 2^k] = P_v(l), an exact identity in the ring;
* comparisons [x >= t] with public thresholds t, in one more masked lookup: with y = x - t + 2^ell
  (0 <= y < 2^(ell+1)), bit ell of y is c1 ^ r1 ^ [c0 < r0] (c0, r0 the low ell bits of c - t + 2^ell and
  of r; c1, r1 bit ell). [c0 < r0] is the sign of sum_i 2^i sign(c0_i - r0_i) over the b-bit digits
  of c0 and r0 (lexicographic: each digit outweighs every lower one), read from per-digit tables of
  r0's digits in which the dealer also folded r1 (`compare_tables`); the resulting D (nd + 1 bits) is
  negative iff r1 ^ [c0 < r0], which a second lookup (an exact step table, `sign_step`) reads.

Every table value is an integer computed with correctly rounded decimal arithmetic (Python's
decimal module), so every machine derives bit-identical material. Cf. the lookup tables of SIGMA
(Gupta et al., PETS 2024) and Pika (Wagh, PETS 2022), which reach one-round tables with function
secret sharing for 2 parties; with N additive holders and a dealer the table is simply secret-shared.
"""
from __future__ import annotations

import decimal
import functools
import math
from decimal import Decimal
from typing import Callable

import torch

from mpc_core.errors import DealerError
from mpc_core.ring import lshr

MAX_DIGIT_BITS = 10
MAX_COMPARE_BITS = 62
MAX_SECOND_STAGE_BITS = 16  # nd + 1: the second stage's table has 2^(nd+1) entries per threshold
MAX_THRESHOLDS = 64
MAX_TABLE_BITS = 12
MAX_DEGREE = 3
MAX_TABLES = 32  # polynomial tables on one opening
_PREC = 60  # decimal digits for table values
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")


# --- the functions a table may hold (real -> real, on Decimal) ---------------------------------------
def _recip(x: Decimal) -> Decimal:
    return 1 / max(x, Decimal("0.5"))  # tables read it on [1, 4); the lowest pieces' nodes reach just below 0.5


def _rsqrt(x: Decimal) -> Decimal:
    return 1 / max(x, Decimal("0.5")).sqrt()


def _exp(x: Decimal) -> Decimal:
    return x.exp()


def _gelu(x: Decimal) -> Decimal:
    """GPT-2's tanh GeLU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), with tanh z = 1 - 2 / (1 + e^2z)."""
    z = (2 / _PI).sqrt() * (x + Decimal("0.044715") * x ** 3)
    if z > 200:
        return x
    if z < -200:
        return Decimal(0)
    tanh = 1 - 2 / (1 + (2 * z).exp())
    return x * (1 + tanh) / 2


def _step(x: Decimal) -> Decimal:
    return Decimal(int(x >= 0))


FUNCTIONS: dict[str, Callable[[Decimal], Decimal]] = {"recip": _recip, "rsqrt": _rsqrt, "exp": _exp, "gelu": _gelu,
                                                      "step": _step}


# --- public coefficient tables ----------------------------------------------------------------------
def check_poly(poly) -> tuple[str, int, int, int, int, int, int, int, int]:
    """Validate a polynomial table's parameters (name, f_in, m, k, deg, S, v_lo, t, div) (raises DealerError)."""
    try:
        name, f_in, m, k, deg, out_bits, v_lo, t, div = poly
        f_in, m, k, deg, out_bits, v_lo, t, div = (int(v) for v in (f_in, m, k, deg, out_bits, v_lo, t, div))
    except (TypeError, ValueError) as exc:
        raise DealerError(f"bad polynomial table parameters {poly!r}") from exc
    if name not in FUNCTIONS:
        raise DealerError(f"unknown table function {name!r}; known: {sorted(FUNCTIONS)}")
    if not (0 <= f_in <= 62 and 0 <= m <= 62 and 1 <= k <= MAX_TABLE_BITS and m + k <= 64
            and 0 <= deg <= MAX_DEGREE and 0 <= out_bits <= 61 and -(1 << 40) <= v_lo <= (1 << 40)
            and 0 <= t <= m and m - t <= 24 and 1 <= div <= (1 << 20)):
        raise DealerError(f"polynomial table parameters out of range: {poly!r}")
    return str(name), f_in, m, k, deg, out_bits, v_lo, t, div


@functools.lru_cache(maxsize=64)
def coefficients(name: str, f_in: int, m: int, k: int, deg: int, out_bits: int, v_lo: int, t: int = 0,
                 div: int = 1) -> torch.Tensor:
    """(2^k, deg + 1) int64: row v - v_lo holds B_d with sum_d B_d l^d ~ f((v 2^m + l 2^t) / (2^f_in div)) 2^out_bits
    for l in (-2^(m-t), 2^(m-t)): the polynomial interpolating f at deg + 1 equispaced points of the
    segment [v - 1, v + 1] 2^m (ends included), its coefficient of u^d (u = l / 2^(m-t)) scaled by
    2^(out_bits - (m - t) d). (t > 0 drops t low bits of the input: it errs by less than 2^t.)"""
    fn = FUNCTIONS[name]
    rows = []
    with decimal.localcontext() as ctx:
        ctx.prec = _PREC
        nodes = [Decimal(-1) + Decimal(2 * i) / deg for i in range(deg + 1)] if deg else [Decimal(0)]
        inverse = _vandermonde_inverse(nodes)
        radius = Decimal(2) ** (m - f_in) / div
        for v in range(v_lo, v_lo + (1 << k)):
            centre = Decimal(v) * radius
            values = [fn(centre + u * radius) for u in nodes]
            a = [sum(inverse[d][i] * values[i] for i in range(deg + 1)) for d in range(deg + 1)]
            rows.append([_round_int(a[d] * Decimal(2) ** (out_bits - (m - t) * d)) for d in range(deg + 1)])
    return torch.tensor(rows, dtype=torch.int64)


def _round_int(v: Decimal) -> int:
    out = int(v.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
    if not -(1 << 63) <= out < (1 << 63):
        raise DealerError("a table coefficient does not fit in 64 bits")
    return out


def _vandermonde_inverse(nodes: list[Decimal]) -> list[list[Decimal]]:
    """Inverse of V[i][d] = nodes[i]^d (Gauss-Jordan in Decimal): a = V^-1 y gives the coefficients."""
    n = len(nodes)
    a = [[nodes[i] ** d if d else Decimal(1) for d in range(n)] + [Decimal(int(i == j)) for j in range(n)] for i in range(n)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[piv] = a[piv], a[col]
        p = a[col][col]
        a[col] = [v / p for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col])]
    return [row[n:] for row in a]


# --- comparison layout ------------------------------------------------------------------------------
def digit_bits(ell: int, n_thresholds: int) -> int:
    """The digit width b minimising the per-element material nd 2^b + n_thresholds 2^(nd + 1), nd = ceil(ell / b)."""
    best = None
    for b in range(1, MAX_DIGIT_BITS + 1):
        nd = -(-ell // b)
        if nd + 1 > MAX_SECOND_STAGE_BITS:
            continue
        cost = nd * (1 << b) + n_thresholds * (1 << (nd + 1))
        if best is None or cost < best[0]:
            best = (cost, b)
    if best is None:
        raise DealerError(f"no digit layout for {ell}-bit comparisons")
    return best[1]


def check_compare(ell: int, b: int, n_thresholds: int) -> int:
    """Validate a comparison layout; returns the digit count nd."""
    if not (1 <= ell <= MAX_COMPARE_BITS and 1 <= b <= MAX_DIGIT_BITS and 0 <= n_thresholds <= MAX_THRESHOLDS):
        raise DealerError(f"comparison layout out of range: ell {ell}, digit bits {b}, {n_thresholds} thresholds")
    nd = -(-ell // b)
    if nd + 1 > MAX_SECOND_STAGE_BITS:
        raise DealerError(f"{ell}-bit comparisons in {b}-bit digits need a 2^{nd + 1}-entry second table")
    return nd


def material_words(shape: tuple[int, ...], ell: int, b: int, n_thresholds: int, polys: tuple = ()) -> int:
    """Words of derived material per party for a lookup with n thresholds (both its requests: digit
    tables and polynomial; the second stage's step tables), what the last party receives."""
    n = math.prod(shape)
    words = 0
    if n_thresholds:
        nd = check_compare(ell, b, n_thresholds)
        words += n * (nd * (1 << b) + n_thresholds * (1 << (nd + 1)))
    for p in polys:
        _, _, _, k, deg, _, _, _, _ = check_poly(p)
        words += n * (deg + 1) * (1 << k)
    return words


# --- the dealer's derivation -------------------------------------------------------------------------
def digits(x: torch.Tensor, ell: int, b: int) -> torch.Tensor:
    """(..., nd): the b-bit digits of x mod 2^ell, least significant first."""
    nd = -(-ell // b)
    low = x & ((1 << ell) - 1) if ell < 64 else x
    shifts = torch.arange(nd, dtype=torch.int64) * b
    return (low.unsqueeze(-1) >> shifts) & ((1 << b) - 1)


def compare_tables(r: torch.Tensor, ell: int, b: int) -> torch.Tensor:
    """The dealer's digit tables for mask r (shape): dig (*shape, nd, 2^b), entry d of digit i =
    (1 - 2 r1) sign(d - r0_i), minus r1 on digit 0's entries, so that D = sum_i 2^i dig_i[c0_i] is
    (1 - 2 r1) sum_i 2^i sign(c0_i - r0_i) - r1, which is negative iff r1 ^ [c0 < r0]
    (r0 = r mod 2^ell, r1 = bit ell of r); D is in [-2^nd, 2^nd)."""
    check_compare(ell, b, 1)
    rd = digits(r, ell, b)  # (*shape, nd)
    d = torch.arange(1 << b, dtype=torch.int64)
    r1 = (lshr(r, ell) & 1).unsqueeze(-1).unsqueeze(-1)  # (*shape, 1, 1)
    dig = (1 - 2 * r1) * torch.sign(d - rd.unsqueeze(-1))
    dig[..., 0, :] -= r1[..., 0, :]
    return dig


def sign_step(nd: int) -> tuple:
    """The second stage's table: [D >= 0] for D in [-2^nd, 2^nd), an exact degree-0 table (segments of one)."""
    return ("step", 0, 0, nd + 1, 0, 0, -(1 << nd), 0, 1)


def poly_tables(r: torch.Tensor, poly) -> torch.Tensor:
    """The dealer's rotated polynomial tables for mask r: U (deg + 1, *shape, 2^k) with
    U_e[j] = sum_{d >= e} C(d, e) (-r_low)^(d - e) B_d[(j - (r >> m) - v_lo) mod 2^k] (mod 2^64), with
    r_low = (r mod 2^m) >> t."""
    name, f_in, m, k, deg, out_bits, v_lo, t, div = check_poly(poly)
    table = coefficients(name, f_in, m, k, deg, out_bits, v_lo, t, div)  # (2^k, deg + 1)
    rr = lshr(r, m) & ((1 << k) - 1)
    j = torch.arange(1 << k, dtype=torch.int64)
    rows = (j - rr.unsqueeze(-1) - v_lo) & ((1 << k) - 1)  # (*shape, 2^k)
    rot = table[rows]  # (*shape, 2^k, deg + 1)
    neg_r = -((r & ((1 << m) - 1)) >> t).unsqueeze(-1)
    out = []
    for e in range(deg + 1):
        acc = torch.zeros_like(rows)
        power = torch.ones_like(neg_r)
        for d in range(e, deg + 1):
            acc = acc + math.comb(d, e) * power * rot[..., d]
            power = power * neg_r
        out.append(acc)
    return torch.stack(out)
