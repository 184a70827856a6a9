"""The dealer: correlated randomness from per-party seeds (specs/dealer.md).

Every kind of material is a list of components. *Random* components are
expanded by every party from its own seed (their secret is the sum, or XOR, of
all parties' expansions). *Derived* components are functions of the random
secrets (c = a*b, the bits of r, ...): parties 0..N-2 expand their share from
their seed too, and only the last party receives an explicit correction share
computed by the dealer, who knows all seeds. This is CrypTen's TTP provider
with the PRG pinned down so that an auditor holding party i's seed can
regenerate party i's material exactly.

Kinds (params):
  beaver        (x_shape, y_shape)          a, b | c = a * b
  matmul        (x_shape, y_shape)          a, b | c = a @ b
  weight_mask   (key, w_shape)              b (fixed stream `key`) | -
  matmul_fixed  (key, x_shape, w_shape)     a, b (fixed stream `key`) | c = a @ b
  trunc         (shape, m)                  r | r_msb = r >> 63, r_shift = (r mod 2^63) >> m
  and           (shape,)                    a, b (xor) | c = a & b (xor)
  edabit        (shape,)                    r | rb = r (xor)
  dabit         (shape,)                    rb (xor bit) | ra = rb (arith)
  and_many      (shape, m, monomials)       a (m words, xor) | c[t] = AND of the shifted a's of factor set t (xor)
  lookup        (shape, ell, b, polys)      r | dig (comparison digit tables, b > 0), U0, U1, ... (rotated
                                            polynomial tables, one per entry of polys): mpc_core.lookup

and_many: `monomials` is a tuple of monomials, each a tuple of 2..MAX_AND_FANIN factors (j, k, neg): input
word j shifted by k (shift_word) and complemented if neg (the complement changes only the opened side, not
the material). The derived sets t are every subset of >= 2 factors (j, k) of some monomial, in the order
of `and_many_subsets` (multi-input AND gates, Patra et al., ABY2.0, USENIX Security 2021).
"""
from __future__ import annotations

from dataclasses import dataclass
import functools
import math
from functools import reduce
import itertools
from typing import Callable, Literal

import torch

from mpc_core import lookup, prg
from mpc_core.errors import DealerError
from mpc_core.ring import lshr, shift_word

Sharing = Literal["arith", "xor", "xorbit"]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Component:
    """One tensor of dealer material: name, shape, sharing, and the PRG stream it comes from."""

    name: str
    shape: Shape
    sharing: Sharing
    fixed_key: str | None = None  # stream keyed by a weight id instead of the op index
    narrow: tuple[int, int, int] | None = None  # (dim, start, length) slice of a fixed tensor

    @property
    def out_shape(self) -> Shape:
        """The shape handed out (after the optional narrowing of a fixed tensor)."""
        if self.narrow is None:
            return self.shape
        dim, _, length = self.narrow
        return self.shape[:dim] + (length,) + self.shape[dim + 1:]

    def apply_narrow(self, full: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Slice the full fixed tensor (`offset` skips leading axes, e.g. the party axis)."""
        if self.narrow is None:
            return full
        dim, start, length = self.narrow
        return full.narrow(dim + offset, start, length)


@dataclass(frozen=True)
class Request:
    """A request for one unit of material: a kind and its parameters (canonical-CBOR-able)."""

    kind: str
    params: tuple

    def describe(self) -> list:
        def norm(p):
            if isinstance(p, (tuple, list)):
                return [norm(q) for q in p]
            return p

        return [self.kind, norm(self.params)]


@dataclass(frozen=True)
class KindSpec:
    randoms: tuple[Component, ...]
    derived: tuple[Component, ...]
    derive: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _shape(s) -> Shape:
    try:
        out = tuple(int(d) for d in s)
    except Exception as exc:
        raise DealerError(f"bad shape {s!r}") from exc
    if any(d < 0 for d in out):
        raise DealerError(f"negative dimension in shape {out}")
    return out


def _broadcast(a: Shape, b: Shape) -> Shape:
    try:
        return tuple(torch.broadcast_shapes(a, b))
    except RuntimeError as exc:
        raise DealerError(f"shapes {a} and {b} do not broadcast") from exc


def _matmul_shape(a: Shape, b: Shape) -> Shape:
    if len(a) < 1 or len(b) < 1:
        raise DealerError("matmul needs at least 1-d operands")
    try:
        return tuple(torch.empty(a, device="meta").matmul(torch.empty(b, device="meta")).shape)
    except RuntimeError as exc:
        raise DealerError(f"matmul shapes {a} and {b} do not fit") from exc


def _narrow(full: Shape, spec) -> tuple[int, int, int] | None:
    """Validate an optional (dim, start, length) slice of a fixed tensor of shape `full`."""
    if not spec:
        return None
    dim, start, length = (int(v) for v in spec)
    if not (0 <= dim < len(full) and 0 <= start and 0 < length and start + length <= full[dim]):
        raise DealerError(f"slice (dim {dim}, start {start}, length {length}) outside fixed shape {full}")
    return dim, start, length


MAX_AND_FANIN = 4  # factors per and_many monomial: 2^4 - 5 = 11 derived words each
MAX_AND_INPUTS = 8
MAX_AND_MONOMIALS = 8

Factor = tuple[int, int, int]  # (input j, shift k, neg)


def and_many_monomials(m: int, monomials) -> tuple[tuple[Factor, ...], ...]:
    """Validate and normalise and_many monomials (lists from a record or a wire become tuples)."""
    try:
        out = tuple(tuple((int(j), int(k), int(neg)) for j, k, neg in mono) for mono in monomials)
    except (TypeError, ValueError) as exc:
        raise DealerError(f"bad and_many monomials {monomials!r}") from exc
    if not 1 <= m <= MAX_AND_INPUTS or not 1 <= len(out) <= MAX_AND_MONOMIALS:
        raise DealerError(f"and_many takes 1..{MAX_AND_INPUTS} inputs and 1..{MAX_AND_MONOMIALS} monomials")
    for mono in out:
        if not 2 <= len(mono) <= MAX_AND_FANIN:
            raise DealerError(f"an and_many monomial has 2..{MAX_AND_FANIN} factors, got {len(mono)}")
        if len({(j, k) for j, k, _ in mono}) != len(mono):
            raise DealerError(f"repeated factor in and_many monomial {mono}")
        for j, k, neg in mono:
            if not (0 <= j < m and -63 <= k <= 63 and neg in (0, 1)):
                raise DealerError(f"bad and_many factor {(j, k, neg)} for {m} inputs")
    return out


def and_many_subsets(monomials: tuple[tuple[Factor, ...], ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Every set of >= 2 factors (j, k) that is a subset of some monomial, once, by size then value."""
    sets = set()
    for mono in monomials:
        fac = sorted((j, k) for j, k, _ in mono)
        for r in range(2, len(fac) + 1):
            sets.update(itertools.combinations(fac, r))
    return tuple(sorted(sets, key=lambda t: (len(t), t)))


def _and_many_derive(a: torch.Tensor, subsets) -> torch.Tensor:
    """c[t] = AND over (j, k) in t of shift_word(a[j], k)."""
    out = []
    for t in subsets:
        acc = None
        for j, k in t:
            v = shift_word(a[j], k)
            acc = v if acc is None else acc & v
        out.append(acc)
    return torch.stack(out)


@functools.lru_cache(maxsize=4096)
def kind_spec(req: Request) -> KindSpec:
    """The component layout and derivation of a request (raises DealerError on unknown kinds)."""
    k, p = req.kind, req.params
    try:
        if k == "beaver":
            xs, ys = _shape(p[0]), _shape(p[1])
            return KindSpec(
                (Component("a", xs, "arith"), Component("b", ys, "arith")),
                (Component("c", _broadcast(xs, ys), "arith"),),
                lambda s: {"c": s["a"] * s["b"]},
            )
        if k == "matmul":
            xs, ys = _shape(p[0]), _shape(p[1])
            return KindSpec(
                (Component("a", xs, "arith"), Component("b", ys, "arith")),
                (Component("c", _matmul_shape(xs, ys), "arith"),),
                lambda s: {"c": torch.matmul(s["a"], s["b"])},
            )
        if k == "weight_mask":
            key, ws = str(p[0]), _shape(p[1])
            b = Component("b", ws, "arith", fixed_key=key, narrow=_narrow(ws, p[2:]))
            return KindSpec((b,), (), lambda s: {})
        if k == "matmul_fixed":
            key, xs, ws = str(p[0]), _shape(p[1]), _shape(p[2])
            b = Component("b", ws, "arith", fixed_key=key, narrow=_narrow(ws, p[3:]))
            return KindSpec(
                (Component("a", xs, "arith"), b),
                (Component("c", _matmul_shape(xs, b.out_shape), "arith"),),
                lambda s: {"c": torch.matmul(s["a"], s["b"])},
            )
        if k == "trunc":
            shape, m = _shape(p[0]), int(p[1])
            if not 0 < m < 63:
                raise DealerError(f"truncation shift must be in [1, 62], got {m}")
            return KindSpec(
                (Component("r", shape, "arith"),),
                (Component("r_msb", shape, "arith"), Component("r_shift", shape, "arith")),
                lambda s: {"r_msb": lshr(s["r"], 63), "r_shift": lshr(s["r"] & ((1 << 63) - 1), m)},
            )
        if k == "and":
            shape = _shape(p[0])
            return KindSpec(
                (Component("a", shape, "xor"), Component("b", shape, "xor")),
                (Component("c", shape, "xor"),),
                lambda s: {"c": s["a"] & s["b"]},
            )
        if k == "edabit":
            shape = _shape(p[0])
            return KindSpec((Component("r", shape, "arith"),), (Component("rb", shape, "xor"),), lambda s: {"rb": s["r"].clone()})
        if k == "dabit":
            shape = _shape(p[0])
            return KindSpec((Component("rb", shape, "xorbit"),), (Component("ra", shape, "arith"),), lambda s: {"ra": s["rb"].clone()})
        if k == "and_many":
            if len(p) != 3:
                raise DealerError(f"and_many takes (shape, m, monomials), got {p!r}")
            shape, m = _shape(p[0]), int(p[1])
            subsets = and_many_subsets(and_many_monomials(m, p[2]))
            return KindSpec(
                (Component("a", (m,) + shape, "xor"),),
                (Component("c", (len(subsets),) + shape, "xor"),),
                lambda s: {"c": _and_many_derive(s["a"], subsets)},
            )
        if k == "lookup":
            return _lookup_spec(p)
    except (IndexError, TypeError, ValueError) as exc:
        raise DealerError(f"bad parameters for dealer kind {k!r}: {p!r}") from exc
    raise DealerError(f"unknown dealer kind {k!r}")


def _lookup_spec(p) -> KindSpec:
    """Material for one masked lookup (mpc_core.lookup): digit tables for comparisons of ell-bit
    differences in b-bit digits (b = 0: none), and an optional polynomial table."""
    if len(p) != 4 or not isinstance(p[3], tuple):
        raise DealerError(f"lookup takes (shape, ell, b, polys), got {p!r}")
    shape, ell, b = _shape(p[0]), int(p[1]), int(p[2])
    if len(p[3]) > lookup.MAX_TABLES:
        raise DealerError(f"a lookup has at most {lookup.MAX_TABLES} polynomial tables")
    tables = tuple(lookup.check_poly(q) for q in p[3])
    if not b and not tables:
        raise DealerError("a lookup needs comparison digits or a polynomial table")
    derived = []
    if b:
        nd = lookup.check_compare(ell, b, 1)
        derived.append(Component("dig", shape + (nd, 1 << b), "arith"))
    for i, q in enumerate(tables):
        derived.append(Component(f"U{i}", (q[4] + 1,) + shape + (1 << q[3],), "arith"))

    def derive(s):
        out = {}
        if b:
            out["dig"] = lookup.compare_tables(s["r"], ell, b)
        for i, q in enumerate(tables):
            out[f"U{i}"] = lookup.poly_tables(s["r"], q)
        return out

    return KindSpec((Component("r", shape, "arith"),), tuple(derived), derive)


MATERIAL_PURPOSE = "material"


def _expand(seed: bytes, job: bytes, op_index: int, party: int, comp: Component) -> torch.Tensor:
    """A fixed-stream component (a weight mask): stream `fixed:<key>`, purpose = component name."""
    stream: prg.StreamId = f"fixed:{comp.fixed_key}"
    if comp.sharing == "xorbit":
        return prg.bit_tensor(seed, job, stream, party, comp.name, comp.shape)
    return prg.ring_tensor(seed, job, stream, party, comp.name, comp.shape)


def _expand_request(seed: bytes, job: bytes, op_index: int, party: int, comps: tuple[Component, ...]) -> dict[str, torch.Tensor]:
    """All per-request components of one party from ONE stream (op_index, party, "material"),
    read in component order (randoms, then derived), 8 bytes per element (bits: the low bit)."""
    sizes = [math.prod(c.shape) for c in comps]
    flat = prg.ring_tensor(seed, job, int(op_index), party, MATERIAL_PURPOSE, (sum(sizes),))
    out, pos = {}, 0
    for c, n in zip(comps, sizes):
        t = flat[pos:pos + n].reshape(c.shape)
        out[c.name] = t & 1 if c.sharing == "xorbit" else t
        pos += n
    return out


def _combine(shares: list[torch.Tensor], sharing: Sharing) -> torch.Tensor:
    if sharing == "arith":
        return reduce(torch.add, shares)
    return reduce(torch.bitwise_xor, shares)


def expand_party(req: Request, op_index: int, job: bytes, party: int, n_parties: int, seed: bytes,
                 fixed_cache: dict | None = None) -> dict[str, torch.Tensor]:
    """Everything party `party` can expand from its own seed (all of it, except the
    last party's derived components, which only the dealer can compute).

    Fixed-stream components (a weight's mask b) are the same for every call, so they
    may be cached in `fixed_cache`, keyed by (party, key, name, shape)."""
    spec = kind_spec(req)
    comps = spec.randoms + (spec.derived if party != n_parties - 1 else ())
    per_request = tuple(c for c in comps if c.fixed_key is None)
    out = _expand_request(seed, job, op_index, party, per_request) if per_request else {}
    for c in comps:
        if c.fixed_key is None:
            continue
        ck = (party, c.fixed_key, c.name, c.shape)
        if fixed_cache is not None and ck in fixed_cache:
            full = fixed_cache[ck]
        else:
            full = _expand(seed, job, op_index, party, c)
            if fixed_cache is not None:
                fixed_cache[ck] = full
        out[c.name] = c.apply_narrow(full)
    return out


def _last_party_derived(spec: KindSpec, secrets: dict[str, torch.Tensor],
                        others: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """derived(secrets) minus (or XOR) the other parties' expanded derived shares."""
    plain = spec.derive(secrets)
    out = {}
    for c in spec.derived:
        value = plain[c.name]
        if others:
            if c.sharing == "arith":
                value = value - reduce(torch.add, [o[c.name] for o in others])
            else:
                value = value ^ reduce(torch.bitwise_xor, [o[c.name] for o in others])
        out[c.name] = value
    return out


def all_parties_material(req: Request, op_index: int, job: bytes, seeds: list[bytes],
                         fixed_cache: dict | None = None, secret_cache: dict | None = None) -> list[dict[str, torch.Tensor]]:
    """Every party's material for one request, each random component expanded once (the dealer's view)."""
    n = len(seeds)
    spec = kind_spec(req)
    per = [expand_party(req, op_index, job, p, n, seeds[p], fixed_cache) for p in range(n)]
    secrets = {}
    for c in spec.randoms:
        sk = (c.fixed_key, c.name, c.shape) if c.fixed_key is not None and c.narrow is None else None
        if secret_cache is not None and sk is not None and sk in secret_cache:
            secrets[c.name] = secret_cache[sk]
            continue
        secrets[c.name] = _combine([per[p][c.name] for p in range(n)], c.sharing)
        if secret_cache is not None and sk is not None:
            secret_cache[sk] = secrets[c.name]
    per[n - 1].update(_last_party_derived(spec, secrets, per[: n - 1]))
    return per


def corrections(req: Request, op_index: int, job: bytes, seeds: list[bytes], fixed_cache: dict | None = None,
                secret_cache: dict | None = None) -> dict[str, torch.Tensor]:
    """The last party's derived shares: derived(secret randoms) minus the others' expansions."""
    spec = kind_spec(req)
    last = all_parties_material(req, op_index, job, seeds, fixed_cache, secret_cache)[-1]
    return {c.name: last[c.name] for c in spec.derived}


class Dealer:
    """Source of correlated randomness for the parties held in this process.

    `get(req, op_index)` returns, for each component, a tensor of shape
    (len(local_parties), *component.shape): the local parties' material.
    """

    n_parties: int
    local_parties: tuple[int, ...]

    def get(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def seed_commitments(self) -> list[bytes]:  # pragma: no cover - interface
        raise NotImplementedError


class TrustedDealer(Dealer):
    """The dealer itself, holding every party seed (in-process simulation, dealer service)."""

    def __init__(self, master_seed: bytes, job: bytes, n_parties: int, local_parties: tuple[int, ...] | None = None):
        if n_parties < 2:
            raise DealerError(f"need at least 2 parties, got {n_parties}")
        self.job = bytes(job)
        self.n_parties = n_parties
        self.master_seed = bytes(master_seed)  # also keys the dealer's challenge beacon (protocol.challenge)
        self.seeds = [prg.derive_party_seed(master_seed, self.job, i) for i in range(n_parties)]
        self.local_parties = tuple(range(n_parties)) if local_parties is None else tuple(local_parties)
        self._fixed_cache: dict = {}
        self._secret_cache: dict = {}
        self._stacked_fixed: dict = {}

    def seed_commitments(self) -> list[bytes]:
        return [prg.seed_commitment(s, self.job, i) for i, s in enumerate(self.seeds)]

    def party_seed(self, party: int) -> bytes:
        """Release party `party`'s seed (to that party, or to an auditor with a recorded challenge)."""
        if not 0 <= party < self.n_parties:
            raise DealerError(f"no party {party} in a {self.n_parties}-party job")
        return self.seeds[party]

    def correction(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        return corrections(req, op_index, self.job, self.seeds, self._fixed_cache, self._secret_cache)

    def get(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        per = all_parties_material(req, op_index, self.job, self.seeds, self._fixed_cache, self._secret_cache)
        fixed = {c.name: c for c in kind_spec(req).randoms if c.fixed_key is not None}
        out = {}
        for k in per[0]:
            if k in fixed:  # stacking a weight-sized mask on every call would cost a copy per token
                c = fixed[k]
                ck = (c.fixed_key, k, c.shape)
                if ck not in self._stacked_fixed:
                    stacked = torch.stack([self._fixed_cache[(p, c.fixed_key, k, c.shape)] for p in self.local_parties])
                    for row, p in enumerate(self.local_parties):  # keep one copy: per-party entries become views
                        self._fixed_cache[(p, c.fixed_key, k, c.shape)] = stacked[row]
                    self._stacked_fixed[ck] = stacked
                out[k] = c.apply_narrow(self._stacked_fixed[ck], offset=1)
            else:
                out[k] = torch.stack([per[p][k] for p in self.local_parties])
        return out


class SeededDealerClient(Dealer):
    """One party's view: expands its own material from its seed; the last party
    fetches its correction shares through `fetch_correction(req, op_index)`."""

    def __init__(self, party: int, n_parties: int, job: bytes, seed: bytes,
                 fetch_correction: Callable[[Request, int], dict[str, torch.Tensor]] | None = None,
                 commitments: list[bytes] | None = None):
        if not 0 <= party < n_parties:
            raise DealerError(f"party {party} outside 0..{n_parties - 1}")
        if party == n_parties - 1 and fetch_correction is None:
            raise DealerError("the last party needs a correction channel to the dealer")
        if commitments is not None and prg.seed_commitment(seed, job, party) != commitments[party]:
            raise DealerError(f"party {party}'s seed does not match the dealer's commitment")
        self.party, self.n_parties, self.job, self.seed = party, n_parties, bytes(job), seed
        self.local_parties = (party,)
        self._fetch = fetch_correction
        self._commitments = commitments
        self._fixed_cache: dict = {}

    def seed_commitments(self) -> list[bytes]:
        if self._commitments is None:
            raise DealerError("this client was built without the dealer's seed commitments")
        return list(self._commitments)

    def get(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        m = expand_party(req, op_index, self.job, self.party, self.n_parties, self.seed, self._fixed_cache)
        if self.party == self.n_parties - 1:
            corr = self._fetch(req, op_index)
            spec = kind_spec(req)
            for c in spec.derived:
                if c.name not in corr or tuple(corr[c.name].shape) != c.shape:
                    raise DealerError(f"dealer correction for {req.kind} #{op_index} lacks {c.name} of shape {c.shape}")
                m[c.name] = corr[c.name]
        return {k: v.unsqueeze(0) for k, v in m.items()}
