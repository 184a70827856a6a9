"""Content-addressed blob store in the ledger database: key = blake3(bytes), checked on every read.

Blobs are stored compressed where it pays (specs/ledger.md section 6): the stored form is either the
bytes themselves (then its length equals the row's `size`, the length of the original bytes; every
blob stored before compression existed is of this form) or CODEC_ZLIB followed by zlib of the bytes,
kept only when strictly shorter than the original. The digest is always that of the original bytes,
and every read decompresses and re-hashes.
"""
from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Iterable

from blake3 import blake3

from ledger.errors import BlobCorrupted, BlobMismatch, BlobNotFound, BlobTooLarge

if TYPE_CHECKING:
    from ledger.storage import LogStorage

MAX_BLOB_BYTES = 256 * 1024 * 1024
DIGEST_SIZE = 32
CODEC_ZLIB = b"\x01"  # stored = CODEC_ZLIB || zlib(original), only when shorter than the original
ZLIB_LEVEL = 1  # level 6 gains a few percent on these blobs at 3-6x the time
MIN_COMPRESS = 4096  # smaller blobs are stored as they are
# Compress a large blob only if evenly spaced samples shrink below 97 % (random bytes stay at ~100 %; an
# opening, mostly random shares with a few compressible fields spread through it, shrinks to ~90 %).
_PROBES, _PROBE_BYTES, _PROBE_RATIO = 64, 4096, 0.97


class BlobCodecError(ValueError):
    """Stored blob bytes that do not decode (unknown codec, bad zlib stream, wrong length)."""


def _worth_compressing(data: bytes) -> bool:
    """Whether zlib pays on `data`, judged from evenly spaced samples (random bytes -- shares,
    ciphertexts, hashes -- are not worth the time of compressing them whole)."""
    n = len(data)
    if n < MIN_COMPRESS:
        return False
    if n <= _PROBES * _PROBE_BYTES:
        return True
    step = (n - _PROBE_BYTES) // (_PROBES - 1)
    sample = b"".join(data[i * step:i * step + _PROBE_BYTES] for i in range(_PROBES))
    return len(zlib.compress(sample, ZLIB_LEVEL)) < _PROBE_RATIO * len(sample)


def pack_blob(data: bytes) -> bytes:
    """The stored form of `data`: compressed (CODEC_ZLIB || zlib) if that is shorter, else `data` itself."""
    data = bytes(data)
    if _worth_compressing(data):
        packed = CODEC_ZLIB + zlib.compress(data, ZLIB_LEVEL)
        if len(packed) < len(data):
            return packed
    return data


def unpack_blob(size: int, stored: bytes) -> bytes:
    """The original bytes of a stored blob whose original length is `size` (raises BlobCodecError)."""
    stored = bytes(stored)
    if len(stored) == size:
        return stored  # stored as it is (also every blob written before compression)
    if len(stored) > size or stored[:1] != CODEC_ZLIB:
        raise BlobCodecError(f"stored form of {len(stored)} bytes does not decode to {size} bytes")
    try:
        d = zlib.decompressobj()
        out = d.decompress(stored[1:], size + 1)  # never inflate past the recorded size (a zlib bomb)
    except zlib.error as exc:
        raise BlobCodecError(f"bad zlib stream: {exc}") from None
    if len(out) != size or not d.eof or d.unused_data:
        raise BlobCodecError(f"zlib stream decodes to {len(out)}+ bytes, not {size}")
    return out


def blob_digest(data: bytes) -> bytes:
    """The blob key: plain blake3 of the bytes (anyone can recompute it)."""
    return blake3(bytes(data)).digest()


def check_blob(digest: bytes, data: bytes) -> bool:
    """True iff `data` hashes to `digest`. Never raises."""
    try:
        return isinstance(digest, (bytes, bytearray)) and len(digest) == DIGEST_SIZE and blob_digest(data) == bytes(digest)
    except Exception:  # noqa: BLE001
        return False


class BlobStore:
    """Put/get blobs by digest; puts are idempotent, reads verify integrity."""

    def __init__(self, store: "LogStorage") -> None:
        self.store = store

    def put(self, data: bytes, digest: bytes | None = None) -> bytes:
        """Store `data`; returns its digest. If `digest` is given the bytes must match it."""
        return self.put_many([(data, digest)])[0]

    def put_many(self, items: Iterable[tuple[bytes, bytes | None]]) -> list[bytes]:
        """Store several blobs in one transaction (all or nothing)."""
        rows = []
        for data, want in items:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise BlobMismatch(f"blob must be bytes, got {type(data).__name__}")
            data = bytes(data)
            if len(data) > MAX_BLOB_BYTES:
                raise BlobTooLarge(f"blob is {len(data)} bytes > {MAX_BLOB_BYTES}")
            d = blob_digest(data)
            if want is not None and bytes(want) != d:
                raise BlobMismatch(f"blob bytes hash to {d.hex()}, not the claimed {bytes(want).hex()}")
            rows.append((d, len(data), pack_blob(data)))
        self.store.put_blobs(rows)
        return [r[0] for r in rows]

    def get(self, digest: bytes) -> bytes:
        """The blob's bytes, verified against `digest` (BlobNotFound, BlobCorrupted)."""
        if not isinstance(digest, (bytes, bytearray)) or len(digest) != DIGEST_SIZE:
            raise BlobNotFound("blob digest must be 32 bytes")
        row = self.store.get_blob(bytes(digest))
        if row is None:
            raise BlobNotFound(f"no blob {bytes(digest).hex()}")
        try:
            data = unpack_blob(*row)
        except BlobCodecError as exc:
            raise BlobCorrupted(f"stored bytes of blob {bytes(digest).hex()} do not decode: {exc}") from None
        if blob_digest(data) != bytes(digest):
            raise BlobCorrupted(f"stored bytes of blob {bytes(digest).hex()} do not match its digest")
        return data

    def missing(self, digests: Iterable[bytes]) -> list[bytes]:
        """The digests among `digests` that are not stored."""
        return self.store.missing_blobs(list(digests))

    def has(self, digest: bytes) -> bool:
        return not self.missing([digest])
