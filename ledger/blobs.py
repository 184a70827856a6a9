"""Content-addressed blob store in the ledger database: key = blake3(bytes), checked on every read."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from blake3 import blake3

from ledger.errors import BlobCorrupted, BlobMismatch, BlobNotFound, BlobTooLarge

if TYPE_CHECKING:
    from ledger.storage import LogStorage

MAX_BLOB_BYTES = 256 * 1024 * 1024
DIGEST_SIZE = 32


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
            rows.append((d, len(data), data))
        self.store.put_blobs(rows)
        return [r[0] for r in rows]

    def get(self, digest: bytes) -> bytes:
        """The blob's bytes, verified against `digest` (BlobNotFound, BlobCorrupted)."""
        if not isinstance(digest, (bytes, bytearray)) or len(digest) != DIGEST_SIZE:
            raise BlobNotFound("blob digest must be 32 bytes")
        data = self.store.get_blob(bytes(digest))
        if data is None:
            raise BlobNotFound(f"no blob {bytes(digest).hex()}")
        if blob_digest(data) != bytes(digest):
            raise BlobCorrupted(f"stored bytes of blob {bytes(digest).hex()} do not match its digest")
        return data

    def missing(self, digests: Iterable[bytes]) -> list[bytes]:
        """The digests among `digests` that are not stored."""
        return self.store.missing_blobs(list(digests))

    def has(self, digest: bytes) -> bool:
        return not self.missing([digest])
