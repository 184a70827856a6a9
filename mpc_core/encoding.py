"""The one canonical byte encoding: deterministic CBOR (RFC 8949 section 4.2.1).

Everything that is hashed or signed anywhere in shardproof (PRG contexts,
commitments, ledger entries, checkpoints) goes through `canonical_cbor`.
Floats are refused: they have several encodings and no place in a hash.
Tensors are hashed through `tensor_bytes`, a fixed little-endian layout.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cbor2
import numpy as np

from mpc_core.errors import EncodingError

if TYPE_CHECKING:  # torch is imported where tensors are encoded: the ledger's CBOR code does not need it
    import torch

_ALLOWED_SCALARS = (int, bytes, str, bool, type(None))


_PLAIN_SCALARS = frozenset((int, bytes, str, bool, type(None)))
_KEY_TYPES = (str, int)


def _encodable(obj: Any) -> bool:
    """Whether `_check` would accept `obj` (the same rules, without building paths)."""
    t = type(obj)
    if t in _PLAIN_SCALARS:
        return True
    if t is list or t is tuple:
        for item in obj:
            if type(item) not in _PLAIN_SCALARS and not _encodable(item):
                return False
        return True
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str and type(k) is not int and not isinstance(k, _KEY_TYPES):
                return False
            if type(v) not in _PLAIN_SCALARS and not _encodable(v):
                return False
        return True
    if isinstance(obj, _ALLOWED_SCALARS):
        return True
    if isinstance(obj, float):
        return False
    if isinstance(obj, (list, tuple)):
        return all(_encodable(item) for item in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, _KEY_TYPES) and _encodable(v) for k, v in obj.items())
    return False


def _check(obj: Any, path: str) -> None:
    if isinstance(obj, bool) or isinstance(obj, _ALLOWED_SCALARS):
        return
    if isinstance(obj, float):
        raise EncodingError(f"float at {path or 'top level'}: floats are not allowed in canonical encodings")
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise EncodingError(f"map key of type {type(k).__name__} at {path}: only str and int keys")
            _check(v, f"{path}.{k}")
        return
    raise EncodingError(f"type {type(obj).__name__} at {path or 'top level'} has no canonical encoding")


def canonical_cbor(obj: Any) -> bytes:
    """Encode `obj` (ints, bytes, str, bool, None, lists, str/int-keyed maps) as deterministic CBOR."""
    if not _encodable(obj):
        _check(obj, "")  # raises, naming the path of the first offending value
    return cbor2.dumps(obj, canonical=True)


def decode_cbor(data: bytes) -> Any:
    """Decode CBOR and insist that it was canonical (re-encoding gives the same bytes)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    try:
        obj = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several unrelated types on garbage
        raise EncodingError(f"malformed CBOR: {exc}") from exc
    try:
        again = canonical_cbor(obj)
    except EncodingError as exc:
        raise EncodingError(f"non-canonical CBOR: {exc}") from exc
    if again != data:
        raise EncodingError("non-canonical CBOR: re-encoding differs (trailing bytes, indefinite lengths or unsorted maps)")
    return obj


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Canonical bytes of an integer tensor: int64 little-endian, C order (shape is hashed separately)."""
    import torch
    if t.dtype != torch.int64:
        raise EncodingError(f"tensor_bytes needs int64, got {t.dtype}")
    arr = t.detach().cpu().contiguous().numpy()
    return arr.astype("<i8", copy=False).tobytes()


def tensor_from_bytes(data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `tensor_bytes` for a known shape."""
    import torch
    n = int(np.prod(shape)) if shape else 1
    if len(data) != 8 * n:
        raise EncodingError(f"tensor bytes length {len(data)} does not match shape {tuple(shape)}")
    arr = np.frombuffer(data, dtype="<i8").reshape(shape).copy()
    return torch.from_numpy(arr)
