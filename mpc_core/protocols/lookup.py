"""Lookup tables on a masked input (specs/protocols.md, "Lookup tables on a masked input").

One opening of c = x + r gives, through dealer tables derived from r (mpc_core.lookup):
a piecewise polynomial of x with no further round, and exact comparisons [x >= t] against
public thresholds t in one more round. The material grows with the table sizes (2^k words
per polynomial coefficient, nd 2^b + n 2^(nd+1) words for n thresholds, per element), so callers
use it where the element count is small (`fits`) and the bit-decomposition protocols elsewhere.
"""
from __future__ import annotations

import torch

from mpc_core.lookup import check_compare, check_poly, digit_bits, digits, material_words, sign_step
from mpc_core.ring import lshr
from mpc_core.session import Session

# Per-call bound on the derived material (words per party) above which callers fall back to the
# bit-decomposition protocols: 2^22 words = 32 MiB that the dealer sends the last party.
MAX_TABLE_WORDS = 1 << 22

Poly = tuple[str, int, int, int, int, int, int, int, int]  # (function, f_in, m, k, deg, out_bits, v_lo, t, div): mpc_core.lookup


def fits(shape: tuple[int, ...], ell: int, n_thresholds: int, polys: tuple = ()) -> bool:
    """Whether a lookup on `shape` stays within MAX_TABLE_WORDS of dealer material."""
    b = digit_bits(ell, n_thresholds) if n_thresholds else 1
    return material_words(tuple(shape), ell, b, n_thresholds, tuple(polys)) <= MAX_TABLE_WORDS


def lookup_open(s: Session, x: torch.Tensor, ell: int, b: int, polys: tuple = ()) -> tuple[torch.Tensor, dict, list]:
    """Steps 1-3 of `masked_lookup` as one recorded step (kind lookup_open): request the material
    (digit tables when b > 0, one table per entry of `polys`), open c = x + r (one round) and read the
    polynomials. Returns (c, the material, the polynomials' values)."""
    shape = tuple(x.shape[1:])
    polys = tuple(check_poly(p) for p in polys)
    mat = s.material("lookup", shape, ell, b, polys)
    c_sh = x + mat["r"]
    (c,) = s.open_many([c_sh])
    values = []
    for i, (_, _, m, k, deg, _, _, t_drop, _) in enumerate(polys):
        j = lshr(c, m) & ((1 << k) - 1)
        c_low = (c & ((1 << m) - 1)) >> t_drop
        U = mat[f"U{i}"]  # (P, deg + 1, *shape, 2^k)
        picked = torch.gather(U, -1, j.expand(x.shape[0], deg + 1, *shape).unsqueeze(-1)).squeeze(-1)
        value = picked[:, 0]
        power = torch.ones_like(c_low)
        for e in range(1, deg + 1):
            power = power * c_low
            value = value + power * picked[:, e]
        values.append(value)
    out = {}
    if values:  # the recorded output and the values used downstream are the same tensor
        out["out"] = torch.stack(values, dim=1)
        values = [out["out"][:, i] for i in range(len(values))]
    s.record("lookup_open", {"in.x": x, "sent.c": c_sh, **out}, {"opened.c": c})
    return c, mat, values


def masked_lookup(s: Session, x: torch.Tensor, *, ell: int = 47, thresholds: tuple[int, ...] = (),
                  polys: tuple = ()) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """([x >= t] for each public raw threshold t, as arithmetic 0/1 shares (P, n, *shape); each polynomial
    table's value (P, *shape) at its scale 2^out_bits). Comparisons are exact for abs(x - t) < 2^ell.

    1. Dealer: [r] uniform; tables derived from r (mpc_core.lookup): per-digit signs [dig] (with r's
       bit ell folded in), the rotated polynomial tables [U].
    2. Open c = x + r (one round).
    3. Polynomials (local): j = (c >> m) mod 2^k, c_low = (c mod 2^m) >> t, [P] = sum_e c_low^e [U_e][j].
    4. Threshold t (local): c' = c - t + 2^ell, its digits c0_i below bit ell, c1 = bit ell;
       [D] = sum_i 2^i [dig_i][c0_i], negative iff r1 ^ [c0 < r0].
    5. One more lookup on every D (an exact step table, one round): [u] = [D < 0] = 1 - [D >= 0];
       [x >= t] = c1 ^ u = c1 + (1 - 2 c1) [u] (party 0 adds c1).
    """
    n = len(thresholds)
    b = digit_bits(ell, n) if n else 0
    c, mat, values = lookup_open(s, x, ell, b, polys)
    if not n:
        return None, values
    shape = tuple(x.shape[1:])
    P = x.shape[0]
    nd = check_compare(ell, b, n)
    t = torch.tensor([int(v) for v in thresholds], dtype=torch.int64).reshape((n,) + (1,) * len(shape))
    cj = c.unsqueeze(0) - t + (1 << ell)  # (n, *shape)
    c1 = lshr(cj, ell) & 1
    cd = digits(cj, ell, b)  # (n, *shape, nd)
    dig = mat["dig"].unsqueeze(1).expand(P, n, *shape, nd, 1 << b)
    signs = torch.gather(dig, -1, cd.unsqueeze(0).expand(P, n, *shape, nd).unsqueeze(-1)).squeeze(-1)
    D = (signs * (1 << torch.arange(nd, dtype=torch.int64))).sum(-1)  # (P, n, *shape)
    _, _, (nonneg,) = lookup_open(s, D, 0, 0, (sign_step(nd),))
    u = s.party0(len(shape) + 1) - nonneg
    return s.party0(len(shape) + 1) * c1 + (1 - 2 * c1) * u, values
