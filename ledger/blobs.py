"""Content-addressed blob store in the ledger database: key = blake3(bytes), checked on every read."""
from __future__ import annotations

from typing import Iterable

from blake3 import blake3
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from ledger import storage
from ledger.errors import BlobCorrupted, BlobMismatch, BlobNotFound, BlobTooLarge, StorageError

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

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert(self):  # type: ignore[no-untyped-def]
        ins = sqlite_insert if self.engine.dialect.name == "sqlite" else pg_insert
        return ins(storage.blobs).on_conflict_do_nothing(index_elements=["digest"])

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
            rows.append({"digest": d, "size": len(data), "data": data})
        if rows:
            try:
                with storage.write_tx(self.engine, lock=False) as conn:
                    conn.execute(self._insert(), rows)
            except SQLAlchemyError as exc:
                raise StorageError(f"blob write failed: {exc}") from exc
        return [r["digest"] for r in rows]

    def get(self, digest: bytes) -> bytes:
        """The blob's bytes, verified against `digest` (BlobNotFound, BlobCorrupted)."""
        if not isinstance(digest, (bytes, bytearray)) or len(digest) != DIGEST_SIZE:
            raise BlobNotFound("blob digest must be 32 bytes")
        with storage.read_tx(self.engine) as conn:
            row = conn.execute(select(storage.blobs.c.data).where(storage.blobs.c.digest == bytes(digest))).first()
        if row is None:
            raise BlobNotFound(f"no blob {bytes(digest).hex()}")
        data = bytes(row[0])
        if blob_digest(data) != bytes(digest):
            raise BlobCorrupted(f"stored bytes of blob {bytes(digest).hex()} do not match its digest")
        return data

    def missing(self, digests: Iterable[bytes]) -> list[bytes]:
        """The digests among `digests` that are not stored."""
        want = list(dict.fromkeys(bytes(d) for d in digests))
        if not want:
            return []
        with storage.read_tx(self.engine) as conn:
            have = {
                bytes(r[0])
                for r in conn.execute(select(storage.blobs.c.digest).where(storage.blobs.c.digest.in_(want)))
            }
        return [d for d in want if d not in have]

    def has(self, digest: bytes) -> bool:
        return not self.missing([digest])
