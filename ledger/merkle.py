"""RFC 9162 Merkle tree math: leaf/node hashes, roots, inclusion and consistency proofs.

Pure functions only. The tree structure is the one of RFC 9162 section 2.1.1
(leaf hash H(0x00 || d), node hash H(0x01 || left || right), split at the
largest power of two strictly below n). The hash is a parameter: blake3 by
default, sha256 so that the RFC 6962 / 9162 reference vectors apply.

Two layers:
- list-based functions (`root_hash`, `inclusion_proof`, ...) over the leaf
  *data*, for tests and small trees;
- a range algebra (`inclusion_ranges`, `consistency_ranges`,
  `range_subtrees`, `MerkleFrontier`) that lets the storage layer build proofs
  from O(log n) stored complete-subtree hashes without touching the leaves.

A complete subtree is named (level, idx): it covers leaves
[idx * 2**level, (idx + 1) * 2**level).
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

from blake3 import blake3

from ledger.errors import LedgerError, ProofError

HASH_NAMES = ("blake3", "sha256")
DIGEST_SIZE = 32
LEVEL_SHIFT = 48  # node id = level << 48 | idx; at most 2**48 leaves


class UnknownHash(LedgerError):
    """The hash name is not one of HASH_NAMES."""


def _blake3(data: bytes) -> bytes:
    return blake3(data).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


_HASHES: dict[str, Callable[[bytes], bytes]] = {"blake3": _blake3, "sha256": _sha256}


def hasher(hash_name: str) -> Callable[[bytes], bytes]:
    """The hash function named `hash_name` (raises UnknownHash)."""
    try:
        return _HASHES[hash_name]
    except (KeyError, TypeError):
        raise UnknownHash(f"unknown hash {hash_name!r}; expected one of {HASH_NAMES}") from None


def empty_root(hash_name: str = "blake3") -> bytes:
    """MTH({}) = HASH() (RFC 9162 section 2.1.1)."""
    return hasher(hash_name)(b"")


def leaf_hash(data: bytes, hash_name: str = "blake3") -> bytes:
    """MTH({d}) = HASH(0x00 || d) (RFC 9162 section 2.1.1)."""
    return hasher(hash_name)(b"\x00" + bytes(data))


def node_hash(left: bytes, right: bytes, hash_name: str = "blake3") -> bytes:
    """HASH(0x01 || left || right) (RFC 9162 section 2.1.1)."""
    return hasher(hash_name)(b"\x01" + left + right)


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --- list-based reference functions ----------------------------------------
def _mth(hashes: Sequence[bytes], h: Callable[[bytes], bytes]) -> bytes:
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = split_point(n)
    return h(b"\x01" + _mth(hashes[:k], h) + _mth(hashes[k:], h))


def _leaf_hashes(leaves: Iterable[bytes], hash_name: str) -> list[bytes]:
    h = hasher(hash_name)
    return [h(b"\x00" + bytes(d)) for d in leaves]


def root_hash(leaves: Sequence[bytes], hash_name: str = "blake3") -> bytes:
    """MTH(D[n]) of the leaf data `leaves` (RFC 9162 section 2.1.1)."""
    f = MerkleFrontier(hash_name=hash_name)
    for lh in _leaf_hashes(leaves, hash_name):
        f.append(lh)
    return f.root()


def _range_hash_fn(leaf_hs: Sequence[bytes], hash_name: str) -> Callable[[int, int], bytes]:
    h = hasher(hash_name)
    return lambda a, b: _mth(leaf_hs[a:b], h)


def inclusion_proof(leaves: Sequence[bytes], index: int, hash_name: str = "blake3") -> list[bytes]:
    """PATH(index, D[n]) for the leaf data `leaves` (RFC 9162 section 2.1.3.1)."""
    n = len(leaves)
    if not isinstance(index, int) or not 0 <= index < n:
        raise ProofError(f"index {index} out of range for tree size {n}")
    mth = _range_hash_fn(_leaf_hashes(leaves, hash_name), hash_name)
    return [mth(a, b) for a, b in inclusion_ranges(index, n)]


def consistency_proof(leaves: Sequence[bytes], old_size: int, hash_name: str = "blake3") -> list[bytes]:
    """PROOF(old_size, D[n]) for the leaf data `leaves` (RFC 9162 section 2.1.4.1)."""
    n = len(leaves)
    if not isinstance(old_size, int) or not 0 <= old_size <= n:
        raise ProofError(f"old size {old_size} out of range for tree size {n}")
    mth = _range_hash_fn(_leaf_hashes(leaves, hash_name), hash_name)
    return [mth(a, b) for a, b in consistency_ranges(old_size, n)]


# --- range algebra ---------------------------------------------------------
def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges [a, b) whose MTH form PATH(index, D[size]), leaf to root (RFC 9162 2.1.3.1)."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} out of range for tree size {size}")
    top_down: list[tuple[int, int]] = []
    start, n, m = 0, size, index
    while n > 1:
        k = split_point(n)
        if m < k:
            top_down.append((start + k, start + n))
            n = k
        else:
            top_down.append((start, start + k))
            start, m, n = start + k, m - k, n - k
    top_down.reverse()
    return top_down


def consistency_ranges(old_size: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTH form PROOF(old_size, D[size]) (RFC 9162 section 2.1.4.1)."""
    if not 0 <= old_size <= size:
        raise ProofError(f"old size {old_size} out of range for tree size {size}")
    if old_size == 0 or old_size == size:
        return []
    top_down: list[tuple[int, int]] = []
    start, m, n, b = 0, old_size, size, True
    while m != n:
        k = split_point(n)
        if m <= k:
            top_down.append((start + k, start + n))
            n = k
        else:
            top_down.append((start, start + k))
            start, m, n, b = start + k, m - k, n - k, False
    if not b:
        top_down.append((start, start + n))
    top_down.reverse()
    return top_down


def range_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Complete subtrees (level, idx), left to right, whose fold is MTH(D[start:end]).

    Valid for the ranges RFC 9162 proofs use: `start` is a multiple of a power
    of two >= end - start (every range from `inclusion_ranges`,
    `consistency_ranges` and every prefix [0, n)).
    """
    out: list[tuple[int, int]] = []
    length = end - start
    pos = start
    for level in range(length.bit_length() - 1, -1, -1):
        if length >> level & 1:
            out.append((level, pos >> level))
            pos += 1 << level
    return out


def fold_subtrees(hashes: Sequence[bytes], hash_name: str = "blake3") -> bytes:
    """MTH of a range from its complete-subtree hashes, left to right (right fold)."""
    h = hasher(hash_name)
    acc = hashes[-1]
    for x in reversed(hashes[:-1]):
        acc = h(b"\x01" + x + acc)
    return acc


def node_id(level: int, idx: int) -> int:
    """Storage key of complete subtree (level, idx)."""
    return (level << LEVEL_SHIFT) | idx


def node_level_idx(nid: int) -> tuple[int, int]:
    """Inverse of `node_id`."""
    return nid >> LEVEL_SHIFT, nid & ((1 << LEVEL_SHIFT) - 1)


class MerkleFrontier:
    """Incremental RFC 9162 tree: the O(log n) complete-subtree hashes of a prefix [0, n).

    `append` costs O(1) amortised (O(log n) worst case) and returns the new
    complete subtrees (level, idx, hash) so that they can be stored.
    """

    __slots__ = ("size", "hashes", "hash_name", "_h")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = (), hash_name: str = "blake3") -> None:
        self._h = hasher(hash_name)
        self.hash_name = hash_name
        if len(hashes) != bin(size).count("1"):
            raise ProofError(f"frontier of size {size} needs {bin(size).count('1')} hashes, got {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> "MerkleFrontier":
        return MerkleFrontier(self.size, self.hashes, self.hash_name)

    def append(self, lh: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the complete subtrees it completes (level 0 first)."""
        h = self._h
        idx, level, cur = self.size, 0, lh
        new = [(0, idx, lh)]
        while idx & 1:
            cur = h(b"\x01" + self.hashes.pop() + cur)
            idx >>= 1
            level += 1
            new.append((level, idx, cur))
        self.hashes.append(cur)
        self.size += 1
        return new

    def root(self) -> bytes:
        """MTH(D[0:size])."""
        if not self.hashes:
            return self._h(b"")
        return fold_subtrees(self.hashes, self.hash_name)


# --- verification (never raises) -------------------------------------------
def _is_size(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is_hash_list(proof: object) -> bool:
    return isinstance(proof, (list, tuple)) and all(
        isinstance(p, (bytes, bytearray)) and len(p) == DIGEST_SIZE for p in proof
    )


def verify_inclusion_hash(
    lh: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes, hash_name: str = "blake3"
) -> bool:
    """Verify an inclusion proof for a leaf *hash* (RFC 9162 section 2.1.3.2)."""
    try:
        h = _HASHES.get(hash_name) if isinstance(hash_name, str) else None
        if h is None or not _is_size(index) or not _is_size(size) or not _is_hash_list(proof):
            return False
        if not isinstance(lh, (bytes, bytearray)) or not isinstance(root, (bytes, bytearray)):
            return False
        if index >= size:
            return False
        fn, sn, r = index, size - 1, bytes(lh)
        for p in proof:
            p = bytes(p)
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = h(b"\x01" + p + r)
                if not fn & 1:
                    while not fn & 1 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                r = h(b"\x01" + r + p)
            fn >>= 1
            sn >>= 1
        return sn == 0 and r == bytes(root)
    except Exception:  # noqa: BLE001 - a verifier answers False, never raises
        return False


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes, hash_name: str = "blake3"
) -> bool:
    """Verify that leaf *data* `leaf` is at `index` in the tree of `size` with `root` (RFC 9162 2.1.3.2)."""
    try:
        if not isinstance(leaf, (bytes, bytearray, memoryview)) or hash_name not in _HASHES:
            return False
        return verify_inclusion_hash(leaf_hash(bytes(leaf), hash_name), index, size, proof, root, hash_name)
    except Exception:  # noqa: BLE001
        return False


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
    hash_name: str = "blake3",
) -> bool:
    """Verify that the tree (new_size, new_root) extends (old_size, old_root) (RFC 9162 section 2.1.4.2).

    old_size == 0 is consistent with anything given an empty proof and the empty root.
    """
    try:
        h = _HASHES.get(hash_name) if isinstance(hash_name, str) else None
        if h is None or not _is_size(old_size) or not _is_size(new_size) or not _is_hash_list(proof):
            return False
        if not isinstance(old_root, (bytes, bytearray)) or not isinstance(new_root, (bytes, bytearray)):
            return False
        old_root, new_root = bytes(old_root), bytes(new_root)
        if old_size > new_size:
            return False
        if old_size == 0:
            return len(proof) == 0 and old_root == h(b"")
        if old_size == new_size:
            return len(proof) == 0 and old_root == new_root
        if len(proof) == 0:
            return False
        path = [bytes(p) for p in proof]
        if old_size & (old_size - 1) == 0:  # exact power of two
            path.insert(0, old_root)
        fn, sn = old_size - 1, new_size - 1
        while fn & 1:
            fn >>= 1
            sn >>= 1
        fr = sr = path[0]
        for c in path[1:]:
            if sn == 0:
                return False
            if fn & 1 or fn == sn:
                fr = h(b"\x01" + c + fr)
                sr = h(b"\x01" + c + sr)
                if not fn & 1:
                    while not fn & 1 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                sr = h(b"\x01" + sr + c)
            fn >>= 1
            sn >>= 1
        return fr == old_root and sr == new_root and sn == 0
    except Exception:  # noqa: BLE001
        return False
