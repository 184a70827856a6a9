"""Binary (XOR-shared) protocols and conversions between arithmetic and binary shares.

Binary shares pack 64 bits per int64 word: x = x_0 ^ x_1 ^ ... ^ x_{N-1}.
XOR, shifts and AND with a public word are local; AND of two shared words
costs one round with a binary Beaver triple.
"""
from __future__ import annotations

import functools
import itertools

import torch

from mpc_core.dealer import Factor, and_many_monomials, and_many_subsets
from mpc_core.ring import lshr, pack_bits, shift_word, unpack_bits
from mpc_core.session import Session

KOGGE_STONE_SHIFTS = (1, 2, 4, 8, 16, 32)  # radix 2: the spans of the 6 levels of a 2-input-AND prefix
RADIX4_SHIFTS = (1, 4, 16)  # radix 4: each level joins 4 groups, so 3 levels span 64 bits


def and_(s: Session, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[x & y] on XOR shares with a binary Beaver triple (one round).

    1. Dealer: [a], [b], [c] with c = a & b (XOR shares).
    2. Open d = x ^ a and e = y ^ b.
    3. [z] = [c] ^ (d & [b]) ^ (e & [a]) ^ (party 0) (d & e).
    """
    shape = tuple(x.shape[1:])
    m = s.material("and", shape)
    d_sh, e_sh = x ^ m["a"], y ^ m["b"]
    d, e = s.open_many([d_sh, e_sh], xor=True)
    z = m["c"] ^ (d & m["b"]) ^ (e & m["a"]) ^ (s.party0(len(shape)) * (d & e))
    s.record("and", {"in.x": x, "in.y": y, "sent.d": d_sh, "sent.e": e_sh, "out": z}, {"opened.d": d, "opened.e": e})
    return z


def and_many(s: Session, xs: torch.Tensor, monomials: tuple[tuple[Factor, ...], ...]) -> torch.Tensor:
    """Several multi-input ANDs of shifted XOR-shared words in one round (multi-input AND gates with
    dealer-prepared mask products, as ABY2.0's (Patra et al., USENIX Security 2021), here with a dealer).

    `xs` is (P, m, *shape): m input words. A factor (j, k, neg) is shift_word(x_j, k), complemented if neg;
    the result is (P, len(monomials), *shape): each monomial's AND of its factors.
    1. Dealer: [a_j] random words; [A_t] = AND_{(j,k) in t} shift(a_j, k) for every set t of >= 2
       factors inside some monomial (dealer.and_many_subsets).
    2. Open d_j = x_j ^ a_j (all m words in one round).
    3. With D_f = shift(d_j, k) (complemented if neg), each factor is D_f ^ shift(a_j, k), so a monomial
       M is XOR over t subset of M of (AND_{f not in t} D_f) & [A_t]; [A_{f}] = shift([a_j], k) and the
       t = {} term (AND of all D_f, public) is added by party 0.
    """
    m = int(xs.shape[1])
    monomials = and_many_monomials(m, monomials)
    shape = tuple(xs.shape[2:])
    mat = s.material("and_many", shape, m, monomials)
    index = {t: i for i, t in enumerate(and_many_subsets(monomials))}
    d_sh = xs ^ mat["a"]
    (d,) = s.open_many([d_sh], xor=True)
    p0 = s.party0(len(shape))
    outs = []
    for mono in monomials:
        facs = [(j, k) for j, k, _ in mono]
        pub = {(j, k): shift_word(d[j], k) ^ (-1 if neg else 0) for j, k, neg in mono}
        acc = None
        for r in range(len(facs) + 1):
            for t in itertools.combinations(facs, r):
                rest = [pub[f] for f in facs if f not in t]
                if not t:
                    term = p0 * functools.reduce(torch.bitwise_and, rest)
                else:
                    term = shift_word(mat["a"][:, t[0][0]], t[0][1]) if r == 1 else mat["c"][:, index[tuple(sorted(t))]]
                    if rest:
                        term = term & functools.reduce(torch.bitwise_and, rest)
                acc = term if acc is None else acc ^ term
        outs.append(acc)
    z = torch.stack(outs, dim=1)
    s.record("and_many", {"in.x": xs, "sent.d": d_sh, "out": z}, {"opened.d": d})
    return z


def _radix4_level(k: int, last: bool) -> tuple[tuple[Factor, ...], ...]:
    """The monomials of one radix-4 prefix level over inputs (P, G), P_i = P << i k, G_i = G << i k:
    P G_1, P P_1 G_2, P P_1 P_2 G_3 (the generate terms) and, except on the last level, P P_1 P_2 P_3."""
    P = [(0, i * k, 0) for i in range(4)]
    G = [(1, i * k, 0) for i in range(4)]
    mons = ((P[0], G[1]), (P[0], P[1], G[2]), (P[0], P[1], P[2], G[3]))
    return mons if last else mons + ((P[0], P[1], P[2], P[3]),)


def or_(s: Session, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[x | y] = x ^ y ^ (x & y)."""
    return x ^ y ^ and_(s, x, y)


def a2b(s: Session, x: torch.Tensor) -> torch.Tensor:
    """Arithmetic to binary shares of the same 64-bit word (4 rounds).

    1. Dealer: an edaBit: [r] arithmetic and [r]_B binary shares of the same random r.
    2. Open c = x + r; then x = c - r = c + ~r + 1.
    3. Add the public c to the shared ~r with a radix-4 Kogge-Stone parallel-prefix adder
       (Kogge and Stone 1973; radix 4 as in Knowles, "A family of adders", ARITH 1999): generate
       g = c & s, propagate p = c ^ s, carry-in 1 folded into bit 0; log4(64) = 3 levels, k = 1, 4, 16, of
       G ^= P G_1 ^ P P_1 G_2 ^ P P_1 P_2 G_3 and P = P P_1 P_2 P_3 (X_i = X << i k; the terms are
       disjoint, so XOR is OR), each level one round of `and_many`.
    4. Sum bits: p ^ (G << 1) ^ 1.
    """
    shape = tuple(x.shape[1:])
    nd = len(shape)
    m = s.material("edabit", shape)
    c_sh = x + m["r"]
    (c,) = s.open_many([c_sh])
    s.record("a2b_open", {"in.x": x, "sent.c": c_sh}, {"opened.c": c})
    p0 = s.party0(nd)
    not_r = m["rb"] ^ (p0 * -1)  # party 0 flips every bit: XOR shares of ~r
    p = not_r ^ (p0 * c)
    g = not_r & c
    G = g ^ (p & 1)  # carry-in 1: bit 0 generates iff it propagates
    P = p & ~1
    for k in RADIX4_SHIFTS:
        last = k == RADIX4_SHIFTS[-1]
        out = and_many(s, torch.stack([P, G], dim=1), _radix4_level(k, last))
        G = G ^ out[:, 0] ^ out[:, 1] ^ out[:, 2]
        if not last:
            P = out[:, 3]
    return p ^ (G << 1) ^ p0


def b2a_bits(s: Session, bits: torch.Tensor) -> torch.Tensor:
    """XOR shares of single bits (0/1 words) to arithmetic shares of the same 0/1 integers (one round).

    1. Dealer: daBits: [b]_B and [b] for a random bit b.
    2. Open v = bit ^ b, 64 bits per word (`ring.pack_bits`: the message is 1/64 of one word per bit).
    3. [bit] = v + [b] - 2 v [b]  (party 0 adds v).
    Only bit 0 of each input word is read (the callers pass 0/1 words).
    """
    shape = tuple(bits.shape[1:])
    n = bits[0].numel()
    m = s.material("dabit", shape)
    v_sh = pack_bits((bits ^ m["rb"]).reshape(bits.shape[0], n))  # (P, ceil(n / 64))
    (v_packed,) = s.open_many([v_sh], xor=True)
    v = unpack_bits(v_packed, n).reshape(shape)
    out = s.party0(len(shape)) * v + m["ra"] - 2 * v * m["ra"]
    s.record("b2a", {"in.bits": bits, "sent.v": v_sh, "out": out}, {"opened.v": v_packed})
    return out


def extract_bits(xb: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """Bits at `positions` of XOR-shared words, stacked on a new last axis (local)."""
    return torch.stack([lshr(xb, j) & 1 for j in positions], dim=-1)


def ltz(s: Session, x: torch.Tensor) -> torch.Tensor:
    """[x < 0] as arithmetic 0/1 integer shares: the sign bit of x (5 rounds). Exact for |x| < 2^63."""
    xb = a2b(s, x)
    return b2a_bits(s, lshr(xb, 63))


def prefix_or_down(s: Session, xb: torch.Tensor) -> torch.Tensor:
    """[z] with z_i = OR of bits j >= i (3 rounds): the leading one and everything below it.

    Radix-4 prefix: for k = 1, 4, 16, z <- z | z>>k | z>>2k | z>>3k = ~(~z & ~(z>>k) & ~(z>>2k) & ~(z>>3k)),
    one 4-input `and_many` of complemented shifts per level (~ on XOR shares: party 0 flips every bit)."""
    flip = s.party0(xb.dim() - 1) * -1
    z = xb
    for k in RADIX4_SHIFTS:
        nor = and_many(s, z.unsqueeze(1), (tuple((0, -i * k, 1) for i in range(4)),))
        z = nor[:, 0] ^ flip
    return z
