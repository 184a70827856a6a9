"""Binary (XOR-shared) protocols and conversions between arithmetic and binary shares.

Binary shares pack 64 bits per int64 word: x = x_0 ^ x_1 ^ ... ^ x_{N-1}.
XOR, shifts and AND with a public word are local; AND of two shared words
costs one round with a binary Beaver triple.
"""
from __future__ import annotations

import torch

from mpc_core.ring import lshr
from mpc_core.session import Session

KOGGE_STONE_SHIFTS = (1, 2, 4, 8, 16, 32)


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


def or_(s: Session, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[x | y] = x ^ y ^ (x & y)."""
    return x ^ y ^ and_(s, x, y)


def a2b(s: Session, x: torch.Tensor) -> torch.Tensor:
    """Arithmetic to binary shares of the same 64-bit word (7 rounds).

    1. Dealer: an edaBit: [r] arithmetic and [r]_B binary shares of the same random r.
    2. Open c = x + r; then x = c - r = c + ~r + 1.
    3. Add the public c to the shared ~r with a Kogge-Stone parallel-prefix adder
       (Kogge and Stone 1973): generate g = c & s, propagate p = c ^ s, carry-in 1
       folded into bit 0; log2(64) = 6 levels of [G ^= P & (G << k), P &= P << k].
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
    for k in KOGGE_STONE_SHIFTS:
        if k == KOGGE_STONE_SHIFTS[-1]:
            G = G ^ and_(s, P, G << k)
        else:
            both = and_(s, torch.stack([P, P], dim=1), torch.stack([G << k, P << k], dim=1))
            G = G ^ both[:, 0]
            P = both[:, 1]
    return p ^ (G << 1) ^ p0


def b2a_bits(s: Session, bits: torch.Tensor) -> torch.Tensor:
    """XOR shares of single bits (0/1 words) to arithmetic shares of the same 0/1 integers (one round).

    1. Dealer: daBits: [b]_B and [b] for a random bit b.
    2. Open v = bit ^ b.
    3. [bit] = v + [b] - 2 v [b]  (party 0 adds v).
    """
    shape = tuple(bits.shape[1:])
    m = s.material("dabit", shape)
    v_sh = bits ^ m["rb"]
    (v,) = s.open_many([v_sh], xor=True)
    out = s.party0(len(shape)) * v + m["ra"] - 2 * v * m["ra"]
    s.record("b2a", {"in.bits": bits, "sent.v": v_sh, "out": out}, {"opened.v": v})
    return out


def extract_bits(xb: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """Bits at `positions` of XOR-shared words, stacked on a new last axis (local)."""
    return torch.stack([lshr(xb, j) & 1 for j in positions], dim=-1)


def ltz(s: Session, x: torch.Tensor) -> torch.Tensor:
    """[x < 0] as arithmetic 0/1 integer shares: the sign bit of x (8 rounds). Exact for |x| < 2^63."""
    xb = a2b(s, x)
    return b2a_bits(s, lshr(xb, 63))


def prefix_or_down(s: Session, xb: torch.Tensor) -> torch.Tensor:
    """[z] with z_i = OR of bits j >= i (6 rounds): the leading one and everything below it."""
    z = xb
    for k in KOGGE_STONE_SHIFTS:
        z = or_(s, z, lshr(z, k))
    return z
