"""SharedTensor: a secret-shared fixed-point tensor with torch-like names.

The data tensor has a leading party axis (P, *shape) holding the shares of
the parties in this process. Dims given by users never count that axis.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mpc_core.shares import additive_split
from mpc_core.errors import DTypeError, PartyError, ShapeError
from mpc_core.protocols import arithmetic as A
from mpc_core.protocols import nonlinear as NL
from mpc_core.ring import check_ring, decode, encode
from mpc_core.session import Session, align


def _dim(d: int, ndim: int) -> int:
    """Map a user dim (no party axis) to the data tensor's dim."""
    if not -ndim <= d < max(ndim, 1):
        raise ShapeError(f"dim {d} out of range for a {ndim}-d shared tensor")
    return d + 1 if d >= 0 else d


class MaskedWeight:
    """A shared weight W opened once per job as F = W - b (b a fixed dealer mask keyed by `key`);
    `refs` names the mask_weight step that opened F (each product with it records that step)."""

    def __init__(self, session: Session, key: str, opened: torch.Tensor, refs: list[int] | None = None):
        self.session, self.key, self.opened = session, key, opened
        self.refs = list(refs or [])

    @property
    def shape(self) -> torch.Size:
        return self.opened.shape


class MaskedCache:
    """A shared matrix that grows along one dim (a KV cache), masked row by row with one fixed b.

    The dealer's mask b has the full (maximum) shape; appending rows opens only
    those rows of W - b, and `x @ cache` uses b cut to the current length, so each
    decode step moves activation-sized data instead of re-opening the whole cache.
    """

    def __init__(self, session: Session, key: str, full_shape: tuple[int, ...], dim: int):
        self.session, self.key, self.full_shape, self.dim = session, key, tuple(full_shape), dim
        self.opened: torch.Tensor | None = None
        self.length = 0
        self.refs: list[int] = []  # the mask_weight steps that opened the rows so far, in order

    def append(self, rows: "SharedTensor") -> None:
        """Mask and open the new rows (their length along `dim`)."""
        n = rows.shape[self.dim]
        if self.length + n > self.full_shape[self.dim]:
            raise ShapeError(f"cache {self.key} is full ({self.full_shape[self.dim]} along dim {self.dim})")
        with self.session.scope("mask_cache"):
            f = A.mask_weight(self.session, rows.data, self.key, self.full_shape, (self.dim, self.length, n))
        self.refs.append(self.session.next_step_index - 1)
        self.opened = f if self.opened is None else torch.cat([self.opened, f], dim=self.dim)
        self.length += n

    def matmul_data(self, x: torch.Tensor) -> torch.Tensor:
        """[x @ cache] as raw shares at twice the scale (the caller truncates)."""
        if self.opened is None:
            raise ShapeError(f"cache {self.key} is empty")
        return A.fixed_matmul(self.session, x, self.opened, self.key, self.full_shape, (self.dim, 0, self.length),
                              refs=self.refs)


class SharedTensor:
    """Additive shares over Z_2^64 of a fixed-point tensor (scale 2^f)."""

    __slots__ = ("session", "data")

    def __init__(self, session: Session, data: torch.Tensor):
        check_ring(data, "SharedTensor data")
        session.check_local(data, "SharedTensor")
        self.session = session
        self.data = data

    # --- creation and reveal ------------------------------------------------------
    @classmethod
    def from_plain(cls, session: Session, x: Any, owner_seed: bytes | None = None) -> "SharedTensor":
        """Secret-share a plaintext tensor as its owner would: N-1 PRG shares, the last one corrected.

        Every process computes the same split and keeps its own parties' rows, so this is
        the input path for simulations and tests; a client sends shares over private channels.
        """
        seed = owner_seed if owner_seed is not None else session.input_seed
        if seed is None:
            raise PartyError("no input-owner seed: pass owner_seed or build the session with input_seed")
        enc = encode(x, session.frac_bits)
        shares = additive_split(enc, session.n_parties, seed, session.job, f"input:{session.next_input_index()}")
        return cls(session, torch.stack([shares[p] for p in session.local_parties]))

    @classmethod
    def from_ring(cls, session: Session, values: torch.Tensor, owner_seed: bytes | None = None) -> torch.Tensor:
        """Split raw ring elements (int64, no fixed-point scaling; e.g. a 0/1 one-hot) like `from_plain`.

        Returns this process's share rows (P_local, *shape), for protocols that take integer shares."""
        check_ring(values, "from_ring values")
        seed = owner_seed if owner_seed is not None else session.input_seed
        if seed is None:
            raise PartyError("no input-owner seed: pass owner_seed or build the session with input_seed")
        shares = additive_split(values, session.n_parties, seed, session.job, f"input:{session.next_input_index()}")
        return torch.stack([shares[p] for p in session.local_parties])

    @classmethod
    def from_shares(cls, session: Session, local: torch.Tensor) -> "SharedTensor":
        """Wrap this process's share rows (P_local, *shape)."""
        return cls(session, local)

    @classmethod
    def from_public(cls, session: Session, x: Any) -> "SharedTensor":
        """The trivial sharing of a public value (party 0 holds it)."""
        return cls(session, session.public_to_shares(encode(x, session.frac_bits)))

    def reveal(self) -> torch.Tensor:
        """Open to every party and decode to float64 (one round)."""
        with self.session.scope("reveal"):
            (v,) = self.session.open_many([self.data])
            self.session.record("reveal", {"sent.x": self.data}, {"opened.x": v})
        return decode(v, self.session.frac_bits)

    get_plain_text = reveal

    # --- shape -------------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.data.shape[1:]

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.data.dim() - 1

    def numel(self) -> int:
        return self.shape.numel()

    def _wrap(self, data: torch.Tensor) -> "SharedTensor":
        return SharedTensor(self.session, data)

    def reshape(self, *shape) -> "SharedTensor":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape
        try:
            return self._wrap(self.data.reshape((self.data.shape[0],) + tuple(shape)))
        except RuntimeError as exc:
            raise ShapeError(f"cannot reshape {tuple(self.shape)} to {shape}") from exc

    view = reshape

    def transpose(self, d0: int, d1: int) -> "SharedTensor":
        return self._wrap(self.data.transpose(_dim(d0, self.dim()), _dim(d1, self.dim())))

    @property
    def T(self) -> "SharedTensor":
        return self.transpose(-2, -1)

    def permute(self, *dims) -> "SharedTensor":
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return self._wrap(self.data.permute((0,) + tuple(_dim(d, self.dim()) for d in dims)))

    def unsqueeze(self, d: int) -> "SharedTensor":
        return self._wrap(self.data.unsqueeze(d + 1 if d >= 0 else d))

    def squeeze(self, d: int) -> "SharedTensor":
        return self._wrap(self.data.squeeze(_dim(d, self.dim())))

    def expand(self, *shape) -> "SharedTensor":
        return self._wrap(self.data.expand((self.data.shape[0],) + tuple(shape)))

    def __getitem__(self, idx) -> "SharedTensor":
        if not isinstance(idx, tuple):
            idx = (idx,)
        if any(isinstance(i, SharedTensor) for i in idx):
            raise ShapeError("indexing with secret indices is not supported; use a one-hot product")
        return self._wrap(self.data[(slice(None),) + idx])

    @staticmethod
    def cat(tensors: Sequence["SharedTensor"], dim: int = 0) -> "SharedTensor":
        first = tensors[0]
        for t in tensors[1:]:
            first._same_session(t)
        return first._wrap(torch.cat([t.data for t in tensors], dim=_dim(dim, first.dim())))

    @staticmethod
    def stack(tensors: Sequence["SharedTensor"], dim: int = 0) -> "SharedTensor":
        first = tensors[0]
        for t in tensors[1:]:
            first._same_session(t)
        d = dim + 1 if dim >= 0 else dim
        return first._wrap(torch.stack([t.data for t in tensors], dim=d))

    def sum(self, dim: int | None = None, keepdim: bool = False) -> "SharedTensor":
        if dim is None:
            return self._wrap(self.data.reshape(self.data.shape[0], -1).sum(1))
        return self._wrap(self.data.sum(_dim(dim, self.dim()), keepdim=keepdim))

    def mean(self, dim: int, keepdim: bool = False) -> "SharedTensor":
        n = self.shape[dim]
        return self.sum(dim, keepdim) * (1.0 / n)

    # --- linear ops ---------------------------------------------------------------------
    def _same_session(self, other: "SharedTensor") -> None:
        if other.session is not self.session:
            raise PartyError("shared tensors belong to different sessions (parties, jobs or encodings differ)")

    def _public(self, other: Any) -> torch.Tensor:
        if isinstance(other, torch.Tensor) and other.dtype == torch.int64:
            raise DTypeError("int64 public operands are ambiguous (ring element or integer?); pass float values")
        return encode(other, self.session.frac_bits)

    def _broadcast_check(self, other_shape) -> None:
        if tuple(self.shape) == tuple(other_shape):
            return
        try:
            torch.broadcast_shapes(tuple(self.shape), tuple(other_shape))
        except RuntimeError as exc:
            raise ShapeError(f"shapes {tuple(self.shape)} and {tuple(other_shape)} do not broadcast") from exc

    def __add__(self, other: Any) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            self._same_session(other)
            self._broadcast_check(other.shape)
            x, y = align(self.data, other.data)
            return self._wrap(x + y)
        p = self._public(other)
        self._broadcast_check(p.shape)
        x, y = align(self.data, self.session.public_to_shares(p))
        return self._wrap(x + y)

    __radd__ = __add__

    def __neg__(self) -> "SharedTensor":
        return self._wrap(-self.data)

    def __sub__(self, other: Any) -> "SharedTensor":
        return self + (-other)

    def __rsub__(self, other: Any) -> "SharedTensor":
        return (-self) + other

    def __mul__(self, other: Any) -> "SharedTensor":
        s = self.session
        if isinstance(other, SharedTensor):
            self._same_session(other)
            with s.scope("mul"):
                return self._wrap(NL.mul_fx(s, self.data, other.data))
        if isinstance(other, int) and not isinstance(other, bool):
            return self._wrap(self.data * other)
        p = self._public(other)
        self._broadcast_check(p.shape)
        x, y = align(self.data, p.unsqueeze(0))
        with s.scope("mul_public"):
            return self._wrap(A.truncate(s, x * y, s.frac_bits))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            return self * other.reciprocal()
        if isinstance(other, torch.Tensor):
            return self * (1.0 / other.to(torch.float64))
        return self * (1.0 / float(other))

    def __matmul__(self, other: Any) -> "SharedTensor":
        s = self.session
        if isinstance(other, SharedTensor):
            self._same_session(other)
            with s.scope("matmul"):
                return self._wrap(A.truncate(s, A.beaver_matmul(s, self.data, other.data), s.frac_bits))
        if isinstance(other, MaskedCache):
            if other.session is not s:
                raise PartyError("masked cache belongs to another session")
            with s.scope("matmul"):
                return self._wrap(A.truncate(s, other.matmul_data(self.data), s.frac_bits))
        if isinstance(other, MaskedWeight):
            if other.session is not s:
                raise PartyError("masked weight belongs to another session")
            with s.scope("matmul"):
                return self._wrap(A.truncate(s, A.fixed_matmul(s, self.data, other.opened, other.key, refs=other.refs),
                                             s.frac_bits))
        p = self._public(other)
        try:
            z = torch.matmul(self.data, p)
        except RuntimeError as exc:
            raise ShapeError(f"matmul: shapes {tuple(self.shape)} and {tuple(p.shape)} do not fit") from exc
        with s.scope("matmul_public"):
            return self._wrap(A.truncate(s, z, s.frac_bits))

    def __rmatmul__(self, other: Any) -> "SharedTensor":
        p = self._public(other)
        try:
            z = torch.matmul(p, self.data)
        except RuntimeError as exc:
            raise ShapeError(f"matmul: shapes {tuple(p.shape)} and {tuple(self.shape)} do not fit") from exc
        with self.session.scope("matmul_public"):
            return self._wrap(A.truncate(self.session, z, self.session.frac_bits))

    def mask(self, key: str) -> MaskedWeight:
        """Open W - b once for this job (use as `x @ w.mask('layer0.attn')`)."""
        with self.session.scope("mask_weight"):
            f = A.mask_weight(self.session, self.data, key)
            return MaskedWeight(self.session, key, f, [self.session.next_step_index - 1])

    # --- comparisons -------------------------------------------------------------------
    def _bit_to_fx(self, bit: torch.Tensor) -> "SharedTensor":
        return self._wrap(bit * (1 << self.session.frac_bits))

    def __lt__(self, other: Any) -> "SharedTensor":
        with self.session.scope("lt"):
            return self._bit_to_fx(NL.less_than_zero(self.session, (self - other).data))

    def __gt__(self, other: Any) -> "SharedTensor":
        with self.session.scope("gt"):
            return self._bit_to_fx(NL.less_than_zero(self.session, (-(self - other)).data))

    def __le__(self, other: Any) -> "SharedTensor":
        return 1.0 - (self > other)

    def __ge__(self, other: Any) -> "SharedTensor":
        return 1.0 - (self < other)

    def sign(self) -> "SharedTensor":
        """-1 for negative entries, +1 otherwise."""
        return 1.0 - 2 * (self < 0)

    # --- nonlinear ---------------------------------------------------------------------
    def _unary(self, name: str, fn) -> "SharedTensor":
        NL.check_frac_bits(self.session)
        with self.session.scope(name):
            return self._wrap(fn(self.session, self.data))

    def exp(self) -> "SharedTensor":
        return self._unary("exp", NL.exp)

    def reciprocal(self) -> "SharedTensor":
        return self._unary("reciprocal", NL.reciprocal)

    def rsqrt(self) -> "SharedTensor":
        return self._unary("rsqrt", NL.rsqrt)

    def sigmoid(self) -> "SharedTensor":
        return self._unary("sigmoid", NL.sigmoid)

    def gelu(self) -> "SharedTensor":
        return self._unary("gelu", NL.gelu)

    def relu(self) -> "SharedTensor":
        return self._unary("relu", NL.relu)

    def _along(self, name: str, dim: int, fn, keepdim: bool = False) -> "SharedTensor":
        NL.check_frac_bits(self.session)
        d = _dim(dim, self.dim())
        x = self.data.movedim(d, -1)
        with self.session.scope(name):
            out = fn(self.session, x)
        if out.dim() == x.dim():
            return self._wrap(out.movedim(-1, d))
        out = out.unsqueeze(-1).movedim(-1, d)
        return self._wrap(out if keepdim else out.squeeze(d))

    def softmax(self, dim: int) -> "SharedTensor":
        return self._along("softmax", dim, NL.softmax_last)

    def max(self, dim: int, keepdim: bool = False) -> "SharedTensor":
        """Maximum values along `dim` (values only; torch also returns indices)."""
        return self._along("max", dim, NL.max_last, keepdim)

    def layer_norm(self, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> "SharedTensor":
        """LayerNorm over the last dim; weight and bias may be shared or public (a shared weight is
        applied inside the LayerNorm's own rounds)."""
        if isinstance(weight, SharedTensor) and tuple(weight.shape) == (self.shape[-1],):
            self._same_session(weight)
            w = weight.data
            out = self._along("layer_norm", -1, lambda s, x: NL.layer_norm_last(s, x, eps, w))
            return out + bias if bias is not None else out
        out = self._along("layer_norm", -1, lambda s, x: NL.layer_norm_last(s, x, eps))
        if weight is not None:
            out = out * weight
        if bias is not None:
            out = out + bias
        return out

    def __repr__(self) -> str:
        return f"SharedTensor(shape={tuple(self.shape)}, parties={self.session.local_parties}/{self.session.n_parties})"

    def __bool__(self):
        raise PartyError("a shared value has no truth value without revealing it")
