"""Arithmetic protocols on additive shares over Z_2^64: Beaver products and truncation."""
from __future__ import annotations

import torch

from mpc_core.errors import ShapeError
from mpc_core.ring import lshr
from mpc_core.session import Session, align


def beaver_mul(s: Session, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise product [x*y] with a Beaver triple (Beaver, CRYPTO'91); no truncation.

    1. Dealer: [a], [b], [c] with c = a*b (shapes of x, y, and their broadcast).
    2. Open e = x - a and f = y - b in one round.
    3. [z] = [c] + e*[b] + [a]*f + (party 0) e*f.
    """
    xs, ys = tuple(x.shape[1:]), tuple(y.shape[1:])
    if xs != ys:
        try:
            torch.broadcast_shapes(xs, ys)
        except RuntimeError as exc:
            raise ShapeError(f"mul: shapes {xs} and {ys} do not broadcast") from exc
    x, y = align(x, y)
    xs, ys = tuple(x.shape[1:]), tuple(y.shape[1:])
    m = s.material("beaver", xs, ys)
    e_sh, f_sh = x - m["a"], y - m["b"]
    e, f = s.open_many([e_sh, f_sh])
    z = m["c"] + e * m["b"] + m["a"] * f + s.party0(max(len(xs), len(ys))) * (e * f)
    s.record("beaver_mul", {"in.x": x, "in.y": y, "sent.e": e_sh, "sent.f": f_sh, "out": z}, {"opened.e": e, "opened.f": f})
    return z


def beaver_matmul(s: Session, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Matrix product [x@y] with a matrix triple (c = a@b); no truncation.

    1. Dealer: [a] ~ x, [b] ~ y, [c] = [a@b].
    2. Open e = x - a and f = y - b in one round.
    3. [z] = [c] + e@[b] + [a]@f + (party 0) e@f.
    """
    xs, ys = tuple(x.shape[1:]), tuple(y.shape[1:])
    try:
        out_shape = torch.empty(xs, device="meta").matmul(torch.empty(ys, device="meta")).shape
    except RuntimeError as exc:
        raise ShapeError(f"matmul: shapes {xs} and {ys} do not fit") from exc
    if len(xs) > 1 and len(ys) > 1:  # batch dims broadcast; keep the party axis out of it
        x, y = align(x, y)
        xs, ys = tuple(x.shape[1:]), tuple(y.shape[1:])
    m = s.material("matmul", xs, ys)
    e_sh, f_sh = x - m["a"], y - m["b"]
    e, f = s.open_many([e_sh, f_sh])
    p0 = s.party0(len(out_shape))
    z = s.linear_result(
        lambda: m["c"] + torch.matmul(e, m["b"]) + torch.matmul(m["a"], f) + p0 * torch.matmul(e, f),
        lambda: [m["c"], (e, m["b"]), (m["a"], f), (p0 * e, f)])
    s.record("beaver_matmul", {"in.x": x, "in.y": y, "sent.e": e_sh, "sent.f": f_sh, "out": z}, {"opened.e": e, "opened.f": f})
    return z


def mask_weight(s: Session, w: torch.Tensor, key: str, full_shape: tuple[int, ...] | None = None,
                narrow: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Open F = W - b for a fixed per-job mask b keyed by `key` (once per job and weight).

    With `full_shape` and `narrow` = (dim, start, length), W is the slice of a larger
    fixed-masked matrix (new rows of a KV cache): only those rows are opened."""
    ws = tuple(w.shape[1:])
    params = (key, tuple(full_shape) if full_shape else ws) + (tuple(narrow) if narrow else ())
    m = s.material("weight_mask", *params)
    f_sh = w - m["b"]
    (f,) = s.open_many([f_sh])
    s.record("mask_weight", {"in.w": w, "sent.f": f_sh}, {"opened.f": f})
    return f


def fixed_matmul(s: Session, x: torch.Tensor, f: torch.Tensor, key: str, full_shape: tuple[int, ...] | None = None,
                 narrow: tuple[int, int, int] | None = None, refs: list[int] | None = None) -> torch.Tensor:
    """[x@W] for a weight masked once as F = W - b (matrix triples with fixed b); no truncation.
    `refs` are the mask_weight steps whose openings make up F, in order (recorded with the step).

    1. Dealer: fresh [a] ~ x, the job's fixed [b] for `key`, [c] = [a@b].
    2. Offline (before x exists): [pre] = [c] + [a]@F, since a and F are both known.
    3. Open e = x - a (activation-sized, not weight-sized).
    4. [z] = [pre] + e@[b] + (party 0) e@F.
    """
    xs, ws = tuple(x.shape[1:]), tuple(f.shape)
    try:
        out_shape = torch.empty(xs, device="meta").matmul(torch.empty(ws, device="meta")).shape
    except RuntimeError as exc:
        raise ShapeError(f"matmul: shapes {xs} and {ws} do not fit") from exc
    params = (key, xs, tuple(full_shape) if full_shape else ws) + (tuple(narrow) if narrow else ())
    m = s.material("matmul_fixed", *params)
    p0 = s.party0(len(out_shape))
    with s.offline():
        pre = s.linear_result(lambda: m["c"] + torch.matmul(m["a"], f), None)
    e_sh = x - m["a"]
    (e,) = s.open_many([e_sh])
    z = s.linear_result(lambda: pre + torch.matmul(e, m["b"]) + p0 * torch.matmul(e, f),
                        lambda: [m["c"], (m["a"], f), (e, m["b"]), (p0 * e, f)])
    s.record("fixed_matmul", {"in.x": x, "sent.e": e_sh, "out": z}, {"opened.e": e}, refs=list(refs or []))
    return z


def truncate(s: Session, x: torch.Tensor, m: int) -> torch.Tensor:
    """[floor(x / 2^m)] up to one unit, for |x| < 2^62, in one round.

    Follows the dealer-assisted probabilistic-free truncation of Escudero et al.,
    "Improved Primitives for MPC over Mixed Arithmetic-Binary Circuits"
    (CRYPTO 2020), adapted to N parties:
    1. Dealer: [r] uniform in Z_2^64, [r_msb] = [r >> 63], [r_shift] = [(r mod 2^63) >> m].
    2. x' = x + 2^62 (party 0), so 0 <= x' < 2^63.
    3. Open c = x' + r. Let c' = c mod 2^63 and c_msb = c >> 63.
    4. u = c_msb XOR r_msb = c_msb + r_msb - 2 c_msb r_msb (linear: c_msb is public).
    5. [y] = (c' >> m) - [r_shift] + 2^(63-m) [u] - 2^(62-m)  (party 0 adds the publics).
    Since x' = c' - r' + u 2^63, y - floor(x / 2^m) is in {0, 1}: never a wrap, no failure probability.
    """
    shape = tuple(x.shape[1:])
    mat = s.material("trunc", shape, m)
    p0 = s.party0(len(shape))
    c_sh = x + p0 * (1 << 62) + mat["r"]
    (c,) = s.open_many([c_sh])
    c_low = c & ((1 << 63) - 1)
    c_msb = lshr(c, 63)
    u = p0 * c_msb + mat["r_msb"] - 2 * c_msb * mat["r_msb"]
    y = p0 * (lshr(c_low, m) - (1 << (62 - m))) - mat["r_shift"] + (1 << (63 - m)) * u
    s.record("trunc", {"in.x": x, "sent.c": c_sh, "out": y}, {"opened.c": c})
    return y
