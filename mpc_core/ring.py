"""Ring Z_2^64 in torch int64 and the fixed-point encoding on top of it.

Elements are int64 tensors; + - * and matmul wrap around modulo 2^64 (two's
complement), which is exactly arithmetic in Z_2^64. A real number x is encoded
as round(x * 2^f) read as a signed 64-bit integer (default f = 16).

Representable range. Encoding accepts |x| < 2^(62 - f) (2^46 for f = 16) and
refuses anything else, and any non-finite value, with `EncodingError`. The
protocols need more headroom than that: a product of two fixed-point values
has 2f fractional bits and must stay below 2^62 in magnitude for truncation
(see specs/numerics.md), so operands of `*` and `@` must keep
|x * y| < 2^(62 - 2f) = 2^30 for f = 16.
"""
from __future__ import annotations

import math

import torch

from mpc_core.errors import DTypeError, EncodingError

RING_BITS = 64
DEFAULT_FRAC_BITS = 16
#: inputs to truncation must satisfy |x| < 2^TRUNC_HEADROOM_BITS (ring units)
TRUNC_HEADROOM_BITS = 62

_INT64_MIN = -(2**63)


def wrap(v: int) -> int:
    """Map a Python integer to its signed 64-bit representative modulo 2^64."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= (1 << 63) else v


def max_abs(frac_bits: int = DEFAULT_FRAC_BITS) -> float:
    """Largest magnitude (exclusive) that `encode` accepts."""
    return float(2 ** (TRUNC_HEADROOM_BITS - frac_bits))


def encode(x: torch.Tensor | float | int, frac_bits: int = DEFAULT_FRAC_BITS) -> torch.Tensor:
    """Fixed-point encode real values into ring elements (int64)."""
    if frac_bits < 0 or frac_bits > 40:
        raise EncodingError(f"frac_bits must be in [0, 40], got {frac_bits}")
    t = torch.as_tensor(x)
    if t.dtype == torch.bool or t.is_complex():
        raise DTypeError(f"cannot fixed-point encode dtype {t.dtype}")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()
        raise EncodingError(f"non-finite value at index {tuple(bad[0].tolist()) if bad.numel() else ()}")
    limit = max_abs(frac_bits)
    if t.numel() and float(t.abs().max()) >= limit:
        raise EncodingError(
            f"value {float(t.abs().max()):.6g} out of the fixed-point range |x| < 2^{TRUNC_HEADROOM_BITS - frac_bits}"
        )
    return torch.round(t * float(2**frac_bits)).to(torch.int64)


def decode(v: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS) -> torch.Tensor:
    """Decode ring elements (int64, signed representative) to float64 reals."""
    if v.dtype != torch.int64:
        raise DTypeError(f"decode needs int64 ring elements, got {v.dtype}")
    # Split into high and low halves so that values near 2^63 keep full precision.
    hi = torch.div(v, 2**32, rounding_mode="floor").to(torch.float64)
    lo = (v - torch.div(v, 2**32, rounding_mode="floor") * 2**32).to(torch.float64)
    return (hi * float(2**32) + lo) / float(2**frac_bits)


def encode_constant(c: float, bits: int) -> int:
    """A public real constant as the integer round(c * 2^bits) (checked to fit the ring)."""
    if not math.isfinite(c):
        raise EncodingError(f"non-finite constant {c}")
    v = round(c * (2**bits))
    if abs(v) >= 2**63:
        raise EncodingError(f"constant {c} at 2^{bits} does not fit in 64 bits")
    return int(v)


def lshr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    if k == 0:
        return x
    if k >= 64:
        return torch.zeros_like(x)
    return (x >> k) & ((1 << (64 - k)) - 1)


def shift_word(x: torch.Tensor, k: int) -> torch.Tensor:
    """x << k for k > 0, the logical x >> -k for k < 0 (zeros shifted in either way), x for k = 0.

    Both are linear over XOR, so they apply share by share to XOR-shared words."""
    if k >= 0:
        return x << k if k < 64 else torch.zeros_like(x)
    return lshr(x, -k)


def bit(x: torch.Tensor, j: int) -> torch.Tensor:
    """Bit j (0 = least significant) of each int64 bit pattern, as 0/1 int64."""
    return lshr(x, j) & 1


_BIT_POSITIONS = torch.arange(64, dtype=torch.int64)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """0/1 words (*lead, n) -> (*lead, ceil(n / 64)) words: entry 64 w + j at bit j of word w (zeros past n).

    Only bit 0 of each input is read. XOR commutes with packing, so it applies share by share to
    XOR-shared bits."""
    n = bits.shape[-1]
    words = -(-n // 64)
    flat = bits & 1
    if words * 64 != n:
        flat = torch.cat([flat, torch.zeros(*bits.shape[:-1], words * 64 - n, dtype=torch.int64)], dim=-1)
    return (flat.reshape(*bits.shape[:-1], words, 64) << _BIT_POSITIONS).sum(-1)


def unpack_bits(words: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of `pack_bits`: (*lead, ceil(n / 64)) words -> (*lead, n) 0/1 words."""
    if words.shape[-1] != -(-n // 64):
        raise EncodingError(f"{words.shape[-1]} packed words cannot hold exactly {n} bits")
    return ((words.unsqueeze(-1) >> _BIT_POSITIONS) & 1).reshape(*words.shape[:-1], -1)[..., :n]


def check_ring(t: torch.Tensor, what: str) -> None:
    """Raise DTypeError unless `t` is an int64 tensor (a ring element)."""
    if not isinstance(t, torch.Tensor):
        raise DTypeError(f"{what}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int64:
        raise DTypeError(f"{what}: ring elements must be int64, got {t.dtype}")
