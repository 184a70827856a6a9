"""Freivalds checks of linear step outputs over the ring Z_2^64 (see specs/freivalds.md).

A party's output Z of a Beaver or fixed-weight matmul step is a sum of plain
tensors and products A @ B of tensors it (or the public) holds. The auditor
checks the committed Z against that sum without forming any product:

    Z R == sum_t C_t R + sum_t A_t (B_t R)      (mod 2^64)

for a challenge matrix R (n x lam) read from the specified PRG. Soundness over
Z_2^64 (not a field): for an error E = Z - sum != 0 whose entries are all
divisible by 2^v but not all by 2^(v+1), one uniform column misses E with
probability at most 2^-(64-v), so lam columns miss with probability at most
2^-(lam*(64-v)) <= 2^-lam. The bound is attained (a single entry off by 2^63
passes one column half the time).

Everything here is a pure function of its arguments. A mismatch is a result,
never an exception; only structurally invalid calls (dtypes, shapes, lam < 1,
bad seeds) raise a `verifier.errors.MalformedCheckError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import torch

from mpc_core import prg
from mpc_core.domains import FREIVALDS_ALPHA, FREIVALDS_R
from verifier.errors import CheckDTypeError, CheckParameterError, CheckShapeError

RING_BITS = 64
PRIME_61 = (1 << 61) - 1  # Mersenne prime for the comparison-only field variant
DEFAULT_LAMBDA = 40  # worst case 2^-40 miss probability per cheating check (specs/freivalds.md)

Tensor = torch.Tensor


# --- inputs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One summand of a linear step output: the product a @ b, or the plain tensor a (b is None).

    Products follow torch.matmul broadcasting (leading batch dims); both operands are at least 2-d.
    """

    a: Tensor
    b: Tensor | None = None

    @staticmethod
    def product(a: Tensor, b: Tensor) -> "Term":
        """The product a @ b."""
        return Term(a, b)

    @staticmethod
    def plain(c: Tensor) -> "Term":
        """A tensor added as is."""
        return Term(c, None)

    @property
    def is_product(self) -> bool:
        return self.b is not None


TermLike = Union[Term, Tensor, tuple]


def as_term(t: TermLike) -> Term:
    """A Term from a Term, a plain tensor, or an (a, b) pair (the `linear_result` hook's format)."""
    if isinstance(t, Term):
        return t
    if isinstance(t, Tensor):
        return Term(t, None)
    if isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, Tensor) for x in t):
        return Term(t[0], t[1])
    raise CheckParameterError(f"a term is a Term, a tensor or an (a, b) pair of tensors, not {type(t).__name__}")


@dataclass(frozen=True)
class FreivaldsContext:
    """What a challenge is bound to: the job, the step (index or label) and the party whose output is checked."""

    job: bytes
    step: Union[int, str]
    party: int


# --- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FreivaldsResult:
    """Outcome of one check.

    `residual` is Z R - sum(terms) R, shape z.shape[:-1] + (lam,) (for exact checks: Z - sum(terms),
    shape z.shape). `failing_column` is the smallest challenge column with a nonzero residual
    (exact: the last-dim index of the first differing entry) and `failing_index` the index of
    the first failing row within it (z.shape[:-1] coordinates), or None when ok.
    `miss_bound` is the worst-case probability that a wrong Z passes (0 for exact).
    """

    ok: bool
    lam: int
    exact: bool
    failing_column: int | None
    failing_index: tuple[int, ...] | None
    residual: Tensor

    @property
    def miss_bound(self) -> float:
        return 0.0 if self.exact else miss_probability(self.lam, RING_BITS - 1)


@dataclass(frozen=True)
class BatchResult:
    """Outcome of a batch: one FreivaldsResult per group of checks, and which checks each group covers.

    mode "stack": one group per check (a failure names the check). mode "fold-odd": one group per
    (z shape), residuals folded with odd coefficients (a failure names only the group).
    """

    ok: bool
    lam: int
    mode: str
    results: tuple[FreivaldsResult, ...]
    groups: tuple[tuple[int, ...], ...]

    @property
    def failing_checks(self) -> tuple[int, ...]:
        """Indices of the checks in failing groups (all checks of a failing fold group)."""
        return tuple(k for r, g in zip(self.results, self.groups) if not r.ok for k in g)

    @property
    def first_failure(self) -> FreivaldsResult | None:
        return next((r for r in self.results if not r.ok), None)


# --- soundness ------------------------------------------------------------------------------
def miss_bits(lam: int, v: int) -> int:
    """-log2 of the worst-case miss probability of lam columns for an error of 2-adic valuation v.

    v is the largest integer such that 2^v divides every entry of the error (0 <= v <= 63).
    """
    _check_lam(lam)
    if not isinstance(v, int) or not 0 <= v < RING_BITS:
        raise CheckParameterError(f"the 2-adic valuation of a nonzero error mod 2^64 is in 0..63, got {v!r}")
    return lam * (RING_BITS - v)


def miss_probability(lam: int, v: int = RING_BITS - 1) -> float:
    """Worst-case probability 2^-(lam*(64-v)) that lam uniform columns miss an error of valuation v.

    Tight: attained by an error with a single nonzero entry. v = 63 (the default) is the
    worst case over all nonzero errors.
    """
    return 2.0 ** -miss_bits(lam, v)


def detection_probability(lam: int) -> float:
    """Worst-case probability 1 - 2^-lam that lam columns catch a wrong output (any error)."""
    return 1.0 - miss_probability(lam, RING_BITS - 1)


def two_adic_valuation(e: Tensor) -> int | None:
    """Largest v with 2^v dividing every entry of e (int64, mod 2^64); None when e is zero."""
    _check_int64("error", e)
    nz = e[e != 0]
    if nz.numel() == 0:
        return None
    for v in range(RING_BITS):  # the least bit set in any entry
        if bool(((nz >> v) & 1).any()):
            return v
    return RING_BITS - 1  # pragma: no cover (nz != 0 has a set bit)


# --- challenges -----------------------------------------------------------------------------
def r_purpose(n: int) -> str:
    """PRG purpose of the challenge matrix for outputs with last dim n."""
    return f"{FREIVALDS_R.decode('ascii')}/n={n}"


def challenge_matrix(seed: bytes, context: FreivaldsContext, n: int, lam: int) -> Tensor:
    """R (n x lam, int64): column j is words [j*n, (j+1)*n) of
    stream(seed, job, step, party, "<FREIVALDS_R>/n=<n>"), so fewer columns are a prefix of more."""
    _check_lam(lam)
    _check_seed_context(seed, context)
    if not isinstance(n, int) or n < 1:
        raise CheckParameterError(f"bad output width {n!r}")
    return prg.ring_tensor(seed, context.job, context.step, context.party, r_purpose(n), (lam, n)).t()


def fold_coefficients(seed: bytes, context: FreivaldsContext, count: int) -> Tensor:
    """count odd ring elements: words of stream(seed, job, step, party, FREIVALDS_ALPHA) with the low bit set."""
    _check_seed_context(seed, context)
    return prg.ring_tensor(seed, context.job, context.step, context.party,
                           FREIVALDS_ALPHA.decode("ascii"), (count,)) | 1


# --- checks ---------------------------------------------------------------------------------
def freivalds_check(z: Tensor, terms: Sequence[TermLike], lam: int = DEFAULT_LAMBDA, r: Tensor | None = None,
                    seed: bytes | None = None, context: FreivaldsContext | None = None) -> FreivaldsResult:
    """Check z == sum(terms) mod 2^64 with lam challenge columns.

    R is `r` when given (n x lam int64), else `challenge_matrix(seed, context, n, lam)`.
    Worst-case miss probability 2^-lam; 2^-(lam*(64-v)) for an error of valuation v.
    """
    _check_lam(lam)
    ts = _validate(z, terms)
    n = z.shape[-1]
    if r is None:
        if seed is None or context is None:
            raise CheckParameterError("freivalds_check needs a challenge matrix r or a seed and a context")
        r = challenge_matrix(seed, context, n, lam)
    else:
        _check_int64("r", r)
        if tuple(r.shape) != (n, lam):
            raise CheckParameterError(f"challenge matrix must be ({n}, {lam}), got {tuple(r.shape)}")
    r = r.to(z.device)
    residual = _residual(z, ts, r, {})
    return _result(residual, lam, exact=False)


def exact_check(z: Tensor, terms: Sequence[TermLike]) -> FreivaldsResult:
    """Recompute sum(terms) mod 2^64 and compare with z entry by entry (lam = 0, miss_bound 0)."""
    ts = _validate(z, terms)
    total = torch.zeros_like(z)
    for t in ts:
        total = total + (torch.matmul(t.a, t.b) if t.b is not None else t.a)
    residual = z - total
    return _result(residual, 0, exact=True)


def freivalds_batch(checks: Sequence[tuple[Tensor, Sequence[TermLike]]], lam: int = DEFAULT_LAMBDA,
                    seed: bytes | None = None, context: FreivaldsContext | None = None,
                    mode: str = "stack") -> BatchResult:
    """Check many outputs with one challenge per output width; products with the same right operand
    tensor (same storage, offset, shape, strides) share one B @ R.

    mode "stack" (default, use this for audits): all checks share R and every check's residual must
    vanish. This is one Freivalds check of the row-stacked outputs: worst-case miss probability
    2^-(lam*(64-v)) <= 2^-lam for ANY number of wrong outputs, v the least valuation among them.

    mode "fold-odd": same-shaped checks are folded before multiplying by R,
    sum_k alpha_k (z_k - terms_k) R == 0, with alpha_k odd (units mod 2^64, so alpha_k E keeps E's
    valuation). Exactly one wrong output in a fold group: miss <= 2^-(lam*(64-v)) as for a single
    check. Two or more: NO bound. Every odd alpha is 1 mod 2, so errors 2^63 X in two checks
    cancel for every alpha (miss probability 1); any scalar fold is at best a 1-bit test against
    errors of valuation 63 (specs/freivalds.md). It saves a factor lam on per-step work, and is
    sound only where one prover cannot control two checks of a group.
    """
    _check_lam(lam)
    if seed is None or context is None:
        raise CheckParameterError("freivalds_batch needs a seed and a context")
    if mode not in ("stack", "fold-odd"):
        raise CheckParameterError(f"unknown batch mode {mode!r} (stack or fold-odd)")
    if not isinstance(checks, (list, tuple)) or len(checks) == 0:
        raise CheckParameterError("freivalds_batch needs a non-empty list of (z, terms) checks")
    validated: list[tuple[Tensor, list[Term]]] = []
    for k, item in enumerate(checks):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise CheckParameterError(f"check {k} is not a (z, terms) pair")
        z, terms = item
        try:
            validated.append((z, _validate(z, terms)))
        except CheckShapeError as exc:
            raise CheckShapeError(f"check {k}: {exc}") from exc
        except CheckDTypeError as exc:
            raise CheckDTypeError(f"check {k}: {exc}") from exc
    rs: dict[int, Tensor] = {}

    def r_for(z: Tensor) -> Tensor:
        n = z.shape[-1]
        if n not in rs:
            rs[n] = challenge_matrix(seed, context, n, lam)
        return rs[n].to(z.device)

    cache: dict[tuple, Tensor] = {}
    if mode == "stack":
        results = tuple(_result(_residual(z, ts, r_for(z), cache), lam, exact=False) for z, ts in validated)
        groups = tuple((k,) for k in range(len(validated)))
    else:
        alpha = fold_coefficients(seed, context, len(validated))
        by_shape: dict[tuple, list[int]] = {}
        for k, (z, _) in enumerate(validated):
            by_shape.setdefault((tuple(z.shape), str(z.device)), []).append(k)
        results_l, groups_l = [], []
        for ks in by_shape.values():
            results_l.append(_result(_folded_residual([validated[k] for k in ks], [int(alpha[k]) for k in ks],
                                                      r_for(validated[ks[0]][0]), cache), lam, exact=False))
            groups_l.append(tuple(ks))
        results, groups = tuple(results_l), tuple(groups_l)
    return BatchResult(all(r.ok for r in results), lam, mode, results, groups)


# --- prime-field comparison (benchmarks only) -----------------------------------------------
def prime_freivalds_check(z: Tensor, terms: Sequence[TermLike], lam: int, seed: bytes,
                          context: FreivaldsContext) -> FreivaldsResult:
    """The same check over F_p, p = 2^61 - 1, for cost comparison only (entries must be in [0, p)).

    Miss probability <= p^-lam per wrong output. Products mod p are formed from 21-bit limbs in
    int64 (9 limb products per field product), so this is not the cost of a native field kernel.
    """
    _check_lam(lam)
    ts = _validate(z, terms)
    n = z.shape[-1]
    r = prg.ring_tensor(seed, context.job, context.step, context.party, r_purpose(n) + "/p61",
                        (lam, n)).t() & PRIME_61
    r = torch.where(r == PRIME_61, torch.zeros_like(r), r).to(z.device)
    acc = _mulmod_p(z, r)
    for t in ts:
        if t.b is None:
            c = _expand_last(t.a, n)
            acc = _submod_p(acc, _mulmod_p(c, r))
        else:
            acc = _submod_p(acc, _mulmod_p(t.a, _mulmod_p(t.b, r)))
    return _result(acc, lam, exact=False)


def _split21(x: Tensor) -> list[Tensor]:
    mask = (1 << 21) - 1
    return [x & mask, (x >> 21) & mask, x >> 42]


def _shiftmod_p(x: Tensor, s: int) -> Tensor:
    """x * 2^s mod p for x in [0, p): a rotation of the 61-bit word."""
    s %= 61
    if s == 0:
        return x
    low = (x & ((1 << (61 - s)) - 1)) << s
    return _reduce_p(low + (x >> (61 - s)))


def _reduce_p(x: Tensor) -> Tensor:
    """x mod p for 0 <= x < 2^63."""
    x = (x & PRIME_61) + (x >> 61)
    return torch.where(x >= PRIME_61, x - PRIME_61, x)


def _mulmod_p(a: Tensor, b: Tensor) -> Tensor:
    """a @ b mod p for entries in [0, p) and contraction length < 2^21."""
    out = None
    for i, ai in enumerate(_split21(a)):
        for j, bj in enumerate(_split21(b)):
            term = _shiftmod_p(_reduce_p(torch.matmul(ai, bj)), 21 * (i + j))
            out = term if out is None else _reduce_p(out + term)
    return out


def _submod_p(x: Tensor, y: Tensor) -> Tensor:
    d = x - y
    return torch.where(d < 0, d + PRIME_61, d)


# --- internals ------------------------------------------------------------------------------
def _check_lam(lam: int) -> None:
    if not isinstance(lam, int) or isinstance(lam, bool) or lam < 1:
        raise CheckParameterError(f"lam must be an int >= 1, got {lam!r}")


def _check_seed_context(seed: bytes, context: FreivaldsContext) -> None:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != prg.SEED_BYTES:
        raise CheckParameterError(f"challenge seeds are {prg.SEED_BYTES} bytes")
    if not isinstance(context, FreivaldsContext) or not isinstance(context.job, (bytes, bytearray)) \
            or not isinstance(context.step, (int, str)) or isinstance(context.step, bool) \
            or not isinstance(context.party, int):
        raise CheckParameterError(f"bad challenge context {context!r}")


def _check_int64(name: str, t: object) -> None:
    if not isinstance(t, Tensor):
        raise CheckDTypeError(f"{name} is a {type(t).__name__}, not a tensor")
    if t.dtype != torch.int64:
        raise CheckDTypeError(f"{name} has dtype {t.dtype}, the ring Z_2^64 is torch.int64")


def _validate(z: Tensor, terms: Sequence[TermLike]) -> list[Term]:
    """Terms as Term objects, after checking dtypes and that every term broadcasts to z's shape."""
    _check_int64("z", z)
    if z.dim() < 1 or z.shape[-1] < 1:
        raise CheckShapeError(f"z must have a nonempty last dim, got shape {tuple(z.shape)}")
    if not isinstance(terms, (list, tuple)):
        raise CheckParameterError("terms must be a list")
    zs = tuple(z.shape)
    out = []
    for i, t in enumerate(terms):
        term = as_term(t)
        _check_int64(f"term {i}", term.a)
        if term.a.device != z.device:
            raise CheckShapeError(f"term {i} is on {term.a.device}, z on {z.device}")
        if term.b is None:
            shape = tuple(term.a.shape)
        else:
            _check_int64(f"term {i} (right operand)", term.b)
            a, b = term.a, term.b
            if b.device != z.device:
                raise CheckShapeError(f"term {i} is on {b.device}, z on {z.device}")
            if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-2]:
                raise CheckShapeError(f"term {i}: {tuple(a.shape)} @ {tuple(b.shape)} is not a (batched) matrix product")
            try:
                batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            except RuntimeError as exc:
                raise CheckShapeError(f"term {i}: batch dims of {tuple(a.shape)} @ {tuple(b.shape)} do not broadcast") from exc
            shape = tuple(batch) + (a.shape[-2], b.shape[-1])
            if b.shape[-1] != zs[-1]:
                raise CheckShapeError(f"term {i}: product has {b.shape[-1]} columns, z has {zs[-1]}")
        try:
            fits = tuple(torch.broadcast_shapes(shape, zs)) == zs
        except RuntimeError:
            fits = False
        if not fits:
            raise CheckShapeError(f"term {i} of shape {shape} does not broadcast to z's shape {zs}")
        out.append(term)
    return out


def _key(t: Tensor) -> tuple:
    """Identity of a tensor's values within one call: same storage, offset, shape and strides."""
    return (t.data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), str(t.device))


def _expand_last(c: Tensor, n: int) -> Tensor:
    """c broadcast along the last dim to width n (for C @ R when c has last dim 1 or is 0-d)."""
    if c.dim() == 0:
        return c.reshape(1).expand(n)
    if c.shape[-1] != n:
        return c.expand(*c.shape[:-1], n)
    return c


def _times_r(t: Term, r: Tensor, cache: dict[tuple, Tensor]) -> Tensor:
    """t @ r without forming a product: a @ (b @ r), with b @ r shared through `cache`."""
    if t.b is None:
        return torch.matmul(_expand_last(t.a, r.shape[0]), r)
    k = _key(t.b) + (r.shape[1],)
    br = cache.get(k)
    if br is None:
        br = torch.matmul(t.b, r)
        cache[k] = br
    return torch.matmul(t.a, br)


def _residual(z: Tensor, terms: Iterable[Term], r: Tensor, cache: dict[tuple, Tensor]) -> Tensor:
    acc = torch.matmul(z, r)
    for t in terms:
        acc = acc - _times_r(t, r, cache)
    return acc


def _folded_residual(group: list[tuple[Tensor, list[Term]]], alpha: list[int], r: Tensor,
                     cache: dict[tuple, Tensor]) -> Tensor:
    """(sum_k alpha_k z_k - sum_k alpha_k terms_k) @ r, folding before multiplying by r:
    plain tensors and left operands that share a right operand are summed first."""
    zf = None
    plain = None
    lefts: dict[tuple, tuple[Tensor, Tensor]] = {}
    for (z, terms), al in zip(group, alpha):
        zf = z * al if zf is None else zf + z * al
        for t in terms:
            if t.b is None:
                plain = t.a * al if plain is None else plain + t.a * al
            else:
                k = _key(t.b)
                if k in lefts:
                    lefts[k] = (lefts[k][0] + t.a * al, t.b)
                else:
                    lefts[k] = (t.a * al, t.b)
    acc = torch.matmul(zf, r)
    if plain is not None:
        acc = acc - _times_r(Term(plain), r, cache)
    for a, b in lefts.values():
        acc = acc - _times_r(Term(a, b), r, cache)
    return acc


def _result(residual: Tensor, lam: int, exact: bool) -> FreivaldsResult:
    bad = residual != 0
    if not bool(bad.any()):
        return FreivaldsResult(True, lam, exact, None, None, residual)
    if exact:
        first = bad.nonzero()[0].tolist()
        return FreivaldsResult(False, lam, exact, int(first[-1]), tuple(int(i) for i in first[:-1]), residual)
    cols = bad.reshape(-1, bad.shape[-1]).any(0)
    col = int(cols.nonzero()[0, 0])
    first = bad[..., col].nonzero()[0].tolist()
    return FreivaldsResult(False, lam, exact, col, tuple(int(i) for i in first), residual)
