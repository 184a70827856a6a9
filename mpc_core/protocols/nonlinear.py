"""Fixed-point nonlinear functions a transformer needs (specs/numerics.md).

All inputs and outputs are fixed-point shares at scale 2^f (s.frac_bits).
The designs follow SIGMA (Gupta et al., PETS 2024) and PUMA (Dong et al.,
2023) in spirit: exact comparisons and bit decompositions for range reduction,
then short polynomials and Newton steps on a fixed interval, so accuracy holds
over the ranges real transformers produce, unlike CrypTen's defaults.
"""
from __future__ import annotations

import functools
import math

import torch

from mpc_core.errors import MPCError, ShapeError
from mpc_core.protocols.arithmetic import beaver_mul, truncate
from mpc_core.protocols.binary import RADIX4_SHIFTS, a2b, and_many, b2a_bits, extract_bits, ltz, prefix_or_down
from mpc_core.protocols.lookup import Poly, fits, masked_lookup
from mpc_core.ring import encode_constant, lshr
from mpc_core.session import Session, align

# 2^t on [0, 1): least-squares fit on 200 Chebyshev nodes, degree 4; max rel. error 3.8e-6.
EXP2_COEFFS = (1.0000035971445627, 0.6929695509319236, 0.2416213226628774, 0.05171773546029374, 0.013683982893781102)
# 1/m and m^-1/2 on [1, 2]: linear initial guesses (max rel. error 7.1% and 2.3%), refined by Newton.
RECIP_INIT = (1.4350288425444029, -0.48528137423857054)
RSQRT_INIT = (1.265829310707633, -0.28746831268904044)
RSQRT_NEWTON_STEPS = 2
# The unit-interval iterations (1/m, m^-1/2 for m in [1, 2]) run at scale 2^UNIT_BITS: every value there is
# below 2, so products stay below 2^(2 UNIT_BITS + 1) < 2^62 and each truncation errs by 2^-30, not 2^-f.
UNIT_BITS = 30
# The first guess and the quantities derived from it are linear in (1, m, m^2), formed at scale 2^GUESS_BITS.
GUESS_BITS = 58
# Normalisation covers leading-one positions 0..NORM_BITS-1 of the encoded input (x < 2^(NORM_BITS-1-f)).
NORM_BITS = 47
# Extra fractional bits of 1/sum in softmax (1/50257 needs them) and of 1/std in LayerNorm.
SOFTMAX_EXP_EXTRA_BITS = 12
SOFTMAX_RECIP_EXTRA_BITS = 28
LAYERNORM_EXTRA_BITS = 12
# LayerNorm with a shared weight keeps d w at scale 2^(f + W) until the product with 1/std (its truncation
# error then stays below one output unit for every 1/std up to 1/sqrt(eps)).
LAYERNORM_WEIGHT_BITS = 8
# Extra fractional bits of log2(e) in exp's range reduction (inputs must satisfy |x| < 2^(62-2f-g-1)).
EXP_GUARD_BITS = 8
# max_last: levels of all-pairs comparisons in groups of at most MAX_GROUP entries (a row of up to
# MAX_GROUP entries takes one level); padding entries hold MAX_PAD (raw ring value), below every input
# it must handle (abs(x) < 2^61).
MAX_GROUP = 16
MAX_PAD = -(1 << 61)
GELU_C1 = 2.0 * math.sqrt(2.0 / math.pi)  # tanh(z) = 2 sigmoid(2z) - 1
GELU_C3 = GELU_C1 * 0.044715

# Lookup tables on a masked input (protocols/lookup.py), used wherever their material fits
# (lookup.MAX_TABLE_WORDS), the bit-decomposition protocols above and below elsewhere:
# comparisons with 0 are exact for abs(x) < 2^CMP_BITS (the max's pairs: abs(x_i - x_j) < 2^62);
CMP_BITS = 62
# GeLU: cubic pieces on segments of 1/8 over [-8, 8) at scale 2^58, GeLU(x) = x above GELU_CLIP and 0 below
# -GELU_CLIP (off by below 1e-12); its comparisons cover abs(x) < 2^(f + GELU_RANGE_BITS) (GeLU's domain, 1000).
GELU_CLIP = 7.5
GELU_RANGE_BITS = 11
# 1/x and x^-1/2 by bands: X = x 2^f in band i = [4^i, 4^(i+1)), i < NORM_BANDS, has its own table of the
# unit function of m = X / 4^i in [1, 4) (linear pieces on segments of 2^-BAND_SEGMENT_BITS, reading
# BAND_OFFSET_BITS bits of the offset, values at scale 2^BAND_UNIT_BITS), all read from one opening
# together with the thresholds [X >= 4^i] that say which band holds X.
NORM_BANDS = (NORM_BITS + 1) // 2
BAND_SEGMENT_BITS = 8
BAND_OFFSET_BITS = 8
BAND_UNIT_BITS = 24
# e^z for z <= 0: quadratic pieces on segments of 1/32 over [-31.9, 0.1) at scale 2^60 (the per-piece
# coefficient rounding stays below 2^-38), zeroed below -(f + E) ln 2 like `exp`; the comparison covers
# abs(z) < 2^(f + EXP_RANGE_BITS) (exp's domain, 2^21).
EXP_TABLE_BITS = 60
EXP_RANGE_BITS = 22


def _gelu_poly(f: int) -> Poly:
    return ("gelu", f, f - 3, 7, 3, 58, -64, 0, 1)


def _band_poly(name: str, i: int) -> Poly:
    """Band i's table of name(X / 4^i) (the input X read at scale 2^(2i)): one exact entry per X while
    4^(i+1) <= 2^(2 + 2 BAND_SEGMENT_BITS / 2) (i <= 4), else linear pieces on [0.5, 4.5)."""
    m = 2 * i - BAND_SEGMENT_BITS
    if m <= 0:
        return (name, 2 * i, 0, 2 * i + 2, 0, BAND_UNIT_BITS, 0, 0, 1)
    return (name, 2 * i, m, BAND_SEGMENT_BITS + 2, 1, BAND_UNIT_BITS, 1 << (BAND_SEGMENT_BITS - 1),
            max(m - BAND_OFFSET_BITS, 0), 1)


def _band_polys(name: str, bands: range) -> tuple[Poly, ...]:
    return tuple(_band_poly(name, i) for i in bands)


def _exp_poly(f: int) -> Poly:
    return ("exp", f, f - 5, 10, 2, EXP_TABLE_BITS, -1020, 0, 1)


def less_than_zero(s: Session, x: torch.Tensor) -> torch.Tensor:
    """[x < 0] as arithmetic 0/1 shares, exact: a table comparison (2 rounds) where its material fits and
    abs(x) < 2^CMP_BITS, else the sign bit of an A2B (5 rounds)."""
    shape = tuple(x.shape[1:])
    if fits(shape, CMP_BITS, 1):
        bits, _ = masked_lookup(s, x, ell=CMP_BITS, thresholds=(0,))
        return s.party0(len(shape)) - bits[:, 0]
    return ltz(s, x)


# --- building blocks ---------------------------------------------------------
def mul_fx(s: Session, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fixed-point product: Beaver product then truncation by f (2 rounds)."""
    return truncate(s, beaver_mul(s, x, y), s.frac_bits)


def mul_batch(s: Session, pairs: list[tuple[torch.Tensor, torch.Tensor, bool]],
              shift: int | None = None) -> list[torch.Tensor]:
    """Several same-shaped products in one Beaver round; those flagged True are then truncated together
    by `shift` (default f) in one more round."""
    pairs = [align(a, b) + (t,) for a, b, t in pairs]
    shapes = [a.shape if a.shape == b.shape else torch.broadcast_shapes(a.shape, b.shape) for a, b, _ in pairs]
    xs = torch.stack([a if a.shape == sh else a.expand(sh) for (a, _, _), sh in zip(pairs, shapes)], dim=1)
    ys = torch.stack([b if b.shape == sh else b.expand(sh) for (_, b, _), sh in zip(pairs, shapes)], dim=1)
    z = beaver_mul(s, xs, ys)
    idx = [i for i, (_, _, t) in enumerate(pairs) if t]
    out = [z[:, i] for i in range(len(pairs))]
    if idx:
        zt = truncate(s, z[:, idx], s.frac_bits if shift is None else shift)
        for j, i in enumerate(idx):
            out[i] = zt[:, j]
    return out


def truncate_flat(s: Session, xs: list[torch.Tensor], m: int) -> list[torch.Tensor]:
    """Tensors of any shapes truncated by m in one round (one trunc step on their flattened concatenation)."""
    P = xs[0].shape[0]
    z = truncate(s, torch.cat([x.reshape(P, -1) for x in xs], dim=1), m)
    out, pos = [], 0
    for x in xs:
        k = x[0].numel()
        out.append(z[:, pos:pos + k].reshape(x.shape))
        pos += k
    return out


def truncate_many(s: Session, xs: list[torch.Tensor], m: int) -> list[torch.Tensor]:
    """Several same-shaped tensors truncated by m in one round (one trunc step on their stack)."""
    z = truncate(s, torch.stack(xs, dim=1), m)
    return [z[:, i] for i in range(len(xs))]


def mul_public(s: Session, x: torch.Tensor, c: float, bits: int | None = None) -> torch.Tensor:
    """x * c for a public real c encoded with `bits` fractional bits (default f), then truncated (1 round)."""
    bits = s.frac_bits if bits is None else bits
    return truncate(s, x * encode_constant(c, bits), bits)


def add_public(s: Session, x: torch.Tensor, c: float) -> torch.Tensor:
    """x + c for a public real c (party 0 adds it; local)."""
    return x + s.party0(x.dim() - 1) * encode_constant(c, s.frac_bits)


def linear_combination(s: Session, terms: list[tuple[float, torch.Tensor]], const: float = 0.0, bits: int = 32) -> torch.Tensor:
    """const + sum c_k * t_k with constants at 2^bits precision and a single truncation (1 round)."""
    acc = None
    for c, t in terms:
        v = t * encode_constant(c, bits)
        acc = v if acc is None else acc + v
    acc = acc + s.party0(acc.dim() - 1) * encode_constant(const, bits + s.frac_bits)
    return truncate(s, acc, bits)


# --- exp -------------------------------------------------------------------------
def exp(s: Session, x: torch.Tensor, out_extra: int = 0) -> torch.Tensor:
    """e^x for -2^21 < x < (32-f-E) ln2 (11.09 at f = 16, E = 0), as fixed point at scale 2^(f+E), E = out_extra.

    Inputs below -(f+E) ln2 give 0 (the true value is below the output's resolution).

    1. Y = x * log2(e) + f + E at scale 2^(2f+g), g = EXP_GUARD_BITS (local; no truncation needed;
       the guard bits keep log2(e) to 2^-(f+g) so that |x| up to 2^21 loses no accuracy).
    2. Bit-decompose Y (A2B). With y' = Y / 2^(2f+g): sign s, integer part k in [0, 32) from
       bits 2f+g..2f+g+4, fraction t in [0, 1) from bits f+g..2f+g-1; convert those 22 bits to arithmetic.
    3. 2^(k - f - E) as the integer product prod_j (1 + (2^(2^j) - 1) k_j), times (1 - s) to send
       negative y' to 0; it is exactly the encoding of 2^(k-f-E) at scale 2^(f+E).
    4. 2^t by a degree-4 polynomial, its powers computed in the same rounds as step 3.
    5. e^x = 2^(k-f-E) * 2^t (one fixed-point product).
    """
    f = s.frac_bits
    nd = x.dim() - 1
    p0 = s.party0(nd)
    g = EXP_GUARD_BITS
    Y = x * encode_constant(1.0 / math.log(2.0), f + g) + p0 * ((f + out_extra) << (2 * f + g))
    yb = a2b(s, Y)
    int_pos = [2 * f + g + j for j in range(5)]
    frac_pos = [f + g + j for j in range(f)]
    bits = b2a_bits(s, extract_bits(yb, [63] + int_pos + frac_pos))
    sign, kbits, fbits = bits[..., 0], bits[..., 1:6], bits[..., 6:]
    t = (fbits * (2 ** torch.arange(f, dtype=torch.int64))).sum(-1)  # fraction at scale 2^f
    fac = [p0 + ((1 << (1 << j)) - 1) * kbits[..., j] for j in range(5)] + [p0 - sign]
    # Round 1: three integer products and t^2 (truncated).
    a, b, c, t2 = mul_batch(s, [(fac[0], fac[1], False), (fac[2], fac[3], False), (fac[4], fac[5], False), (t, t, True)])
    # Round 2: a*b, t^3, t^4.
    ab, t3, t4 = mul_batch(s, [(a, b, False), (t2, t, True), (t2, t2, True)])
    # Round 3: the whole integer product.
    (pint,) = mul_batch(s, [(ab, c, False)])
    poly = linear_combination(s, [(EXP2_COEFFS[1], t), (EXP2_COEFFS[2], t2), (EXP2_COEFFS[3], t3), (EXP2_COEFFS[4], t4)],
                              const=EXP2_COEFFS[0])
    return mul_fx(s, pint, poly)


def exp_nonpositive(s: Session, z: torch.Tensor, out_extra: int = 0) -> torch.Tensor:
    """e^z for -2^21 < z <= 0 at scale 2^(f+E), E = out_extra; 0 below -(f+E) ln 2, like `exp`.

    Where the material fits, by one lookup (4 rounds): a quadratic piece P of e^z on [-31.9, 0.1) and
    g = [z >= -(f+E) ln 2] from one opening (2 rounds); g P (one Beaver round) truncated to scale 2^(f+E).
    Otherwise `exp` (13 rounds)."""
    f = s.frac_bits
    shape = tuple(z.shape[1:])
    poly = _exp_poly(f)
    if not fits(shape, f + EXP_RANGE_BITS, 1, (poly,)):
        return exp(s, z, out_extra)
    floor = -encode_constant((f + out_extra) * math.log(2.0), f)
    g, (p,) = masked_lookup(s, z, ell=f + EXP_RANGE_BITS, thresholds=(floor,), polys=(poly,))
    return truncate(s, beaver_mul(s, g[:, 0], p), EXP_TABLE_BITS - f - out_extra)


# --- normalisation for reciprocal and rsqrt --------------------------------------
def _normalise(s: Session, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For x > 0 return ([m] at scale 2^f with m in [1, 2), [onehot] of the leading-one position p of X = x 2^f).

    1. A2B of X; 2. prefix-OR from the top (6 rounds) and onehot = z ^ (z >> 1);
    3. onehot bits 0..NORM_BITS-1 to arithmetic; 4. m = X * 2^(61-p) / 2^(61-f).
    """
    f = s.frac_bits
    xb = a2b(s, x)
    z = prefix_or_down(s, xb)
    onehot = b2a_bits(s, extract_bits(z ^ (z >> 1), list(range(NORM_BITS))))
    scale = torch.tensor([1 << (61 - j) for j in range(NORM_BITS)], dtype=torch.int64)
    k = (onehot * scale).sum(-1)
    m = truncate(s, beaver_mul(s, x, k), 61 - f)
    return m, onehot


def _banded(s: Session, x: torch.Tensor, name: str, gains: list[float], out_bits: int, bands: range) -> torch.Tensor:
    """name(x) * gain for X = x 2^f in [4^lo, 4^(hi+1)) (bands = range(lo, hi + 1)) at scale 2^out_bits, where
    name(x) = name(m) gains[i] for m = X / 4^i in band i (4 rounds; 3 with a single band).

    1. One lookup (2 rounds): g_i = [X >= 4^i] for lo < i <= hi and every band's unit value
       y_i = name(X / 4^i) at scale 2^BAND_UNIT_BITS (meaningful in X's own band only);
       onehot_i = g_i - g_(i+1), with g_lo = 1 and g_(hi+1) = 0.
    2. sum_i (onehot_i K_i) y_i with K_i = gains[i] 2^out_bits (one Beaver round; onehot_i K_i is local),
       truncated by BAND_UNIT_BITS (one round). Exactly one onehot_i is 1, and the other bands' products
       are exactly 0 (not truncated separately), so the result errs by one truncation and K_i's rounding.
    The selected band's K_i y_i must stay below 2^62: gains[i] 2^out_bits < 2^(62 - BAND_UNIT_BITS)."""
    thresholds = tuple(1 << (2 * i) for i in bands[1:])
    g, ys = masked_lookup(s, x, ell=NORM_BITS, thresholds=thresholds, polys=_band_polys(name, bands))
    one = (s.party0(x.dim() - 1) * torch.ones_like(x)).unsqueeze(1)
    below = torch.cat([one, g], dim=1) if thresholds else one  # g_lo .. g_hi
    onehot = below - torch.cat([below[:, 1:], torch.zeros_like(below[:, :1])], dim=1)  # (P, bands, ...)
    k = torch.tensor([round(gains[i] * 2.0 ** out_bits) for i in bands], dtype=torch.int64)
    k = k.reshape((1, len(bands)) + (1,) * (x.dim() - 1))
    z = beaver_mul(s, onehot * k, torch.stack(ys, dim=1)).sum(1)
    return truncate(s, z, BAND_UNIT_BITS)


def _bands(f: int, lo: float | None, hi: float | None) -> range:
    """The bands of X = x 2^f for x in [lo, hi] (default: the whole domain [2^-f, 2^(NORM_BITS-f)))."""
    first = 0 if lo is None else max(0, int(math.floor(math.log2(lo * 2.0 ** f) / 2)))
    last = NORM_BANDS - 1 if hi is None else min(NORM_BANDS - 1, int(math.floor(math.log2(hi * 2.0 ** f) / 2)))
    return range(first, max(first, last) + 1)


def _banded_fits(shape: tuple[int, ...], bands: range) -> bool:
    return fits(shape, NORM_BITS, len(bands) - 1, _band_polys("recip", bands))


def _by_position(s: Session, y: torch.Tensor, onehot: torch.Tensor, consts: list[int], shift: int) -> torch.Tensor:
    """y * (sum_j onehot_j * consts[j]) / 2^shift: apply a per-position public factor (2 rounds)."""
    k = (onehot * torch.tensor(consts, dtype=torch.int64)).sum(-1)
    return truncate(s, beaver_mul(s, y, k), shift)


def _unit_guess(s: Session, m: torch.Tensor, rows: list[tuple[float, float, float]]) -> list[torch.Tensor]:
    """Polynomials c0 + c1 m + c2 m^2 of m in [1, 2] (scale 2^f), at scale 2^UNIT_BITS (2 rounds):
    [m^2] by a Beaver product (no truncation), then every row's combination truncated in one round."""
    f, K, S = s.frac_bits, GUESS_BITS, UNIT_BITS
    p0 = s.party0(m.dim() - 1)
    m2 = beaver_mul(s, m, m)  # scale 2^(2f)
    raw = [p0 * encode_constant(c0, K) + m * encode_constant(c1, K - f) + m2 * encode_constant(c2, K - 2 * f)
           for c0, c1, c2 in rows]
    return truncate_many(s, raw, K - S)


def _recip_unit(s: Session, m: torch.Tensor) -> torch.Tensor:
    """1/m for m in [1, 2] at scale 2^f (8 rounds): Goldschmidt's iteration, whose products are independent.

    Goldschmidt, "Applications of division by convergence" (MIT thesis, 1964); with a linear first guess
    as in Catrina and Saxena (FC 2010) for secure fixed-point division.
    1. y0 = c0 + c1 m (max rel. error 7.1%) and e = 1 - m y0 = 1 - c0 m - c1 m^2, both linear in (1, m, m^2):
       one Beaver round for m^2, one truncation round for both (at scale 2^30).
    2. 1/m = y0 / (1 - e) = y0 (1 + e)(1 + e^2)(1 + e^4) (1 - e^8), |e^8| < 6.4e-10:
       [y1 = y0 (1 + e), e^2] then [y2 = y1 (1 + e^2), e^4] (each one Beaver and one truncation round,
       the two products of a round independent), then y2 (1 + e^4) truncated straight to scale 2^f.
    The truncations at 2^-30 add about 1e-9; the result errs by at most one unit in the last place
    (the last truncation) and 6.4e-10 relative.
    """
    f, S = s.frac_bits, UNIT_BITS
    c0, c1 = RECIP_INIT
    y, e = _unit_guess(s, m, [(c0, c1, 0.0), (1.0, -c0, -c1)])
    one = s.party0(m.dim() - 1) * (1 << S)
    y, e2 = mul_batch(s, [(y, one + e, True), (e, e, True)], shift=S)
    y, e4 = mul_batch(s, [(y, one + e2, True), (e2, e2, True)], shift=S)
    (y,) = mul_batch(s, [(y, one + e4, True)], shift=2 * S - f)
    return y


def _rsqrt_unit(s: Session, m: torch.Tensor) -> torch.Tensor:
    """m^-1/2 for m in [1, 2] at scale 2^f (8 rounds): Newton y <- (3y - (m y)(y^2)) / 2 in two product
    levels per step ((m y) and y^2 are independent), at scale 2^30.

    1. y0 = c0 + c1 m (max rel. error 2.3%), y0^2 and m y0 are linear in (1, m, m^2): one Beaver round for
       m^2, one truncation round for all three.
    2. Each step: [z = (m y)(y^2)] (one Beaver round), y <- (3 y 2^30 - z) / 2^31 (one truncation round),
       the last step truncating straight to scale 2^f; the second step first forms [m y, y^2] (one Beaver
       and one truncation round). Relative error after two steps: 1.5 (1.5 e0^2)^2 < 1e-6, plus one unit
       in the last place from the final truncation.
    """
    f, S = s.frac_bits, UNIT_BITS
    c0, c1 = RSQRT_INIT
    y, yy, my = _unit_guess(s, m, [(c0, c1, 0.0), (c0 * c0, 2 * c0 * c1, c1 * c1), (0.0, c0, c1)])
    for step in range(RSQRT_NEWTON_STEPS):
        if step:
            yy, my = mul_batch(s, [(y, y, True), (m * (1 << (S - f)), y, True)], shift=S)
        z = beaver_mul(s, my, yy)  # m y^3 at scale 2^(2S)
        last = step == RSQRT_NEWTON_STEPS - 1
        y = truncate(s, y * (3 << S) - z, (2 * S + 1 - f) if last else (S + 1))
    return y


def reciprocal(s: Session, x: torch.Tensor, extra_bits: int = 0, lo: float | None = None,
               hi: float | None = None) -> torch.Tensor:
    """1/x for x in [2^-f, 2^30) at scale 2^(f+E), E = extra_bits (more precision for small results).

    Where the material fits, by bands (`_banded`, 4 rounds; a caller that knows x in [lo, hi] narrows
    them); otherwise normalise to m in [1, 2) by a bit decomposition, Goldschmidt's iteration, and scale
    back by 2^(f-p) (20 rounds)."""
    f = s.frac_bits
    shift = 29
    bands = _bands(f, lo, hi)
    if _banded_fits(tuple(x.shape[1:]), bands):  # 1/x = (1/m) 2^(f - 2i)
        return _banded(s, x, "recip", [2.0 ** (f - 2 * i) for i in range(NORM_BANDS)], f + extra_bits, bands)
    m, onehot = _normalise(s, x)
    r = _recip_unit(s, m)
    consts = [round(2.0 ** (shift + f - j)) for j in range(NORM_BITS)]
    return _by_position(s, r, onehot, consts, shift - extra_bits)


def rsqrt(s: Session, x: torch.Tensor, extra_bits: int = 0, factor: float = 1.0) -> torch.Tensor:
    """factor/sqrt(x) for x in [2^-f, 2^30): by bands where the material fits (`_banded`, 4 rounds);
    otherwise normalise, Newton y <- y (3 - m y^2) / 2, scale by factor 2^(-(p-f)/2) (20 rounds); the
    public `factor` rides on the per-band (per-position) constants at no cost.

    With `extra_bits` = E the result has scale 2^(f+E). The constant of the leading-one position p must
    keep y * const < 2^62: factor 2^(37 - (p-f)/2) <= 2^45.5, i.e. x >= factor^2 2^-(f+1)."""
    f = s.frac_bits
    shift = 37
    bands = _bands(f, None, None)
    if _banded_fits(tuple(x.shape[1:]), bands):  # x^-1/2 = m^-1/2 2^((f - 2i) / 2)
        return _banded(s, x, "rsqrt", [factor * 2.0 ** ((f - 2 * i) / 2.0) for i in range(NORM_BANDS)],
                       f + extra_bits, bands)
    m, onehot = _normalise(s, x)
    y = _rsqrt_unit(s, m)
    consts = [round(factor * 2.0 ** (shift - (j - f) / 2.0)) for j in range(NORM_BITS)]
    return _by_position(s, y, onehot, consts, shift - extra_bits)


# --- comparisons and selections ------------------------------------------------
def select_bit(s: Session, bit: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """bit * x for an arithmetic 0/1 integer bit and a fixed-point x (one round, no truncation)."""
    return beaver_mul(s, bit, x)


def relu(s: Session, x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) = (1 - [x < 0]) * x."""
    neg = less_than_zero(s, x)
    return beaver_mul(s, s.party0(neg.dim() - 1) - neg, x)


def max_last(s: Session, x: torch.Tensor) -> torch.Tensor:
    """Maximum over the last axis: a tournament whose levels compare every pair of a group at once.

    A level splits a row of n entries into g = ceil(n / MAX_GROUP) groups of b = ceil(n / g) (the last
    group padded with the public MAX_PAD, which never wins) and keeps each group's maximum:
    1. The signs c_ij = [x_i < x_j] of every pair i < j of a group, in one A2B (4 rounds).
    2. Entry i wins iff x_i > x_j for j < i and x_i >= x_j for j > i (ties go to the first entry, so
       exactly one wins): its b - 1 bits c_ji and ~c_ij, packed into one XOR-shared word with ones
       above them, are ANDed into bit 0 by a radix-4 reduction, z &= (z >> k)(z >> 2k)(z >> 3k) for
       k = 1, 4 while 4^level < b - 1 (ceil(log4(b - 1)) rounds of `and_many`).
    3. B2A of the winning bits (1 round) and sum_i w_i x_i (one Beaver round, no truncation).
    A level costs 6 + ceil(log4(b - 1)) rounds (at most 8) and (b - 1) / 2 comparisons per entry (at
    most 7.5): a row of up to 16 entries takes one level, up to 256 two, against 6 ceil(log2 n) rounds
    for a binary tournament. Exact for abs(x) < 2^61.
    """
    if x.shape[-1] == 0:
        raise ShapeError("max over an empty dimension")
    while x.shape[-1] > 1:
        x = _max_level(s, x)
    return x[..., 0]


def _max_level(s: Session, x: torch.Tensor) -> torch.Tensor:
    """One level of `max_last`: (P, ..., n) -> (P, ..., g), the maximum of each group."""
    n = x.shape[-1]
    g = -(-n // MAX_GROUP)
    b = -(-n // g)
    if g * b > n:
        x = torch.cat([x, (s.party0(x.dim() - 1) * MAX_PAD).expand(*x.shape[:-1], g * b - n)], dim=-1)
    xg = x.reshape(*x.shape[:-1], g, b)
    first, second = torch.triu_indices(b, b, offset=1)
    if fits(tuple(xg.shape[1:-1]) + (len(first),), CMP_BITS, 1):
        return _max_level_table(s, xg, first, second)
    lt = lshr(a2b(s, xg[..., first] - xg[..., second]), 63)  # (P, ..., g, pairs): XOR shares of [x_i < x_j]
    pair, flip, fill, levels = _win_layout(b)
    bits = lt[..., pair] ^ (s.party0(lt.dim()) * flip)  # (P, ..., g, b, b - 1): entry i beats entry j
    z = (bits << torch.arange(b - 1)).sum(-1) ^ (s.party0(lt.dim() - 1) * fill)
    for k in RADIX4_SHIFTS[:levels]:
        z = and_many(s, z.unsqueeze(1), (tuple((0, -t * k, 0) for t in range(4)),))[:, 0]
    win = b2a_bits(s, z & 1)  # (P, ..., g, b): 1 for each group's first maximum
    return beaver_mul(s, win, xg).sum(-1)


# The winner test of a table max level: [wins - (b - 1) >= 0] for wins in [0, b - 1], an exact
# one-round table on the 5-bit integer (segments of one unit, degree 0).
WIN_STEP: Poly = ("step", 0, 0, 5, 0, 0, -16, 0, 1)


def _max_level_table(s: Session, xg: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """One level of `max_last` by lookups (4 rounds): every pair's [x_i >= x_j] in one table comparison
    (2 rounds); entry i's wins, sum_{j>i} [x_i >= x_j] + sum_{j<i} (1 - [x_j >= x_i]), are b - 1 for the
    group's first maximum only (the same tie rule as the bit version), read by one step table (1 round);
    sum_i w_i x_i (one Beaver round)."""
    b = xg.shape[-1]
    ge, _ = masked_lookup(s, xg[..., first] - xg[..., second], ell=CMP_BITS, thresholds=(0,))
    ge = ge[:, 0]  # (P, ..., g, pairs)
    sign = torch.zeros(len(first), b, dtype=torch.int64)
    sign[torch.arange(len(first)), first] = 1
    sign[torch.arange(len(first)), second] = -1
    p0 = s.party0(ge.dim() - 1)
    wins = (ge.unsqueeze(-1) * sign).sum(-2) + p0 * (torch.arange(b, dtype=torch.int64) - (b - 1))
    _, (win,) = masked_lookup(s, wins, polys=(WIN_STEP,))
    return beaver_mul(s, win, xg).sum(-1)


@functools.lru_cache(maxsize=None)
def _win_layout(b: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """For a group of b: the pair index of entry i's j-th opponent, whether that sign is complemented
    (i is the first of the pair: i wins on ~[x_i < x_j]), the filler ones above bit b - 2 up to the
    reduction's width 4^levels, and the number of radix-4 levels."""
    index = {(i, j): t for t, (i, j) in enumerate(zip(*torch.triu_indices(b, b, offset=1).tolist()))}
    pair = [[index[min(i, j), max(i, j)] for j in range(b) if j != i] for i in range(b)]
    flip = [[1 if i < j else 0 for j in range(b) if j != i] for i in range(b)]
    levels = 0
    while 4 ** levels < b - 1:
        levels += 1
    width = 4 ** levels
    full = -1 if width >= 64 else (1 << width) - 1
    fill = full ^ ((1 << (b - 1)) - 1)
    return torch.tensor(pair, dtype=torch.int64), torch.tensor(flip, dtype=torch.int64), fill, levels


def sigmoid(s: Session, x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + e^-x) via e^-|x| (never overflows) and a reciprocal on [1, 2]."""
    neg = less_than_zero(s, x)
    absx = x - 2 * beaver_mul(s, neg, x)
    e = exp_nonpositive(s, -absx)
    q = _recip_unit(s, add_public(s, e, 1.0))
    one_minus_2q = add_public(s, -2 * q, 1.0)
    return q + beaver_mul(s, neg, one_minus_2q)


def gelu(s: Session, x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh GeLU: 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) = x * sigmoid(2 sqrt(2/pi)(x + 0.044715 x^3)).

    Where the material fits, by one lookup (4 rounds): a cubic piece P of GeLU on [-8, 8) and the
    thresholds lo = [x >= -7.5], hi = [x >= 7.5] from one opening (2 rounds); (lo - hi) P and hi x in
    one Beaver round; the first truncated to scale 2^f. Otherwise (35 rounds) as x sigmoid(z) below."""
    f = s.frac_bits
    shape = tuple(x.shape[1:])
    clip = encode_constant(GELU_CLIP, f)
    if fits(shape, f + GELU_RANGE_BITS, 2, (_gelu_poly(f),)):
        g, (p,) = masked_lookup(s, x, ell=f + GELU_RANGE_BITS, thresholds=(-clip, clip), polys=(_gelu_poly(f),))
        mid, above = mul_batch(s, [(g[:, 0] - g[:, 1], p, False), (g[:, 1], x, False)])
        return truncate(s, mid, _gelu_poly(f)[5] - f) + above
    x2 = mul_fx(s, x, x)
    x3 = mul_fx(s, x2, x)
    z = linear_combination(s, [(GELU_C1, x), (GELU_C3, x3)], bits=s.frac_bits)
    return mul_fx(s, x, sigmoid(s, z))


def softmax_last(s: Session, x: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis with max subtraction: e^(x - max) / sum e^(x - max)."""
    # e^(x - max) at scale 2^(f+Ee) keeps entries down to e^-(f+Ee)ln2 (vocabulary-sized rows add up
    # many of them); the sum, read at scale 2^f, is 2^Ee * sum, and its reciprocal is taken at scale
    # 2^(f+Er), so e * inv carries scale 2^(2f+Er) and one truncation by f+Er returns to 2^f.
    # The sum holds e^0 = 1 (to within 2e-6) and n entries of at most 1: read at scale 2^f it is in
    # 2^Ee [1 - 2^-10, n (1 + 2^-10)], which names the reciprocal's bands.
    mx = max_last(s, x)
    e = exp_nonpositive(s, x - mx.unsqueeze(-1), out_extra=SOFTMAX_EXP_EXTRA_BITS)
    n, grow = x.shape[-1], 2.0 ** SOFTMAX_EXP_EXTRA_BITS
    inv = reciprocal(s, e.sum(-1), extra_bits=SOFTMAX_RECIP_EXTRA_BITS, lo=grow * (1 - 2 ** -10),
                     hi=grow * n * (1 + 2 ** -10))
    return truncate(s, beaver_mul(s, e, inv.unsqueeze(-1)), s.frac_bits + SOFTMAX_RECIP_EXTRA_BITS)


def layer_norm_last(s: Session, x: torch.Tensor, eps: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the last axis, times the shared `weight` (P, n) if given.

    1. mean = sum(x) / n (1/n kept to 2^-32; one truncation round); d = x - mean.
    2. ssq = sum(d^2) (one Beaver and one truncation round); with a weight, d w in the same Beaver round,
       and d w 2^W (W = LAYERNORM_WEIGHT_BITS) in the same truncation round.
    3. 1/sqrt(var + eps) = sqrt(n) / sqrt(ssq + n eps): the 1/n rides on rsqrt's per-position constants
       instead of costing a truncation round (and ssq + n eps keeps log2(n) more significant bits than var).
    4. d (or d w) * rstd, truncated (one Beaver and one truncation round).
    Domain: abs(d) < 1000 and n <= 1073 keep sum(d^2) < 2^30 (the normalisation's range); var + eps >= 2^-16;
    with a weight, abs(output) < 2^(62 - 2f - W - E) (1024 at f = 16).
    """
    n = x.shape[-1]
    if n == 0:
        raise ShapeError("layer_norm over an empty dimension")
    f = s.frac_bits
    mean = mul_public(s, x.sum(-1), 1.0 / n, bits=2 * f)
    d = x - mean.unsqueeze(-1)
    if weight is None:
        ssq = truncate(s, beaver_mul(s, d, d).sum(-1), f)
        num, extra = d, 0
    else:
        dd, dw = mul_batch(s, [(d, d, False), (d, weight, False)])
        ssq, num = truncate_flat(s, [dd.sum(-1), dw * (1 << LAYERNORM_WEIGHT_BITS)], f)
        extra = LAYERNORM_WEIGHT_BITS
    rstd = rsqrt(s, add_public(s, ssq, n * eps), extra_bits=LAYERNORM_EXTRA_BITS, factor=math.sqrt(n))
    return truncate(s, beaver_mul(s, num, rstd.unsqueeze(-1)), f + LAYERNORM_EXTRA_BITS + extra)


def check_frac_bits(s: Session) -> None:
    """The bit layouts above assume 2f + 5 < 63."""
    if not 4 <= s.frac_bits <= 24:
        raise MPCError(f"nonlinear functions support 4 <= f <= 24, got f = {s.frac_bits}")
