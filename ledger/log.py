"""The Ledger API: open by URL, append (single or batch), read, proofs, checkpoints, blobs, subscribe.

I/O lives here; the math is in ledger.merkle, the formats in ledger.entries
and ledger.checkpoints. Every append is validated in full (canonical CBOR,
schema, Ed25519 signature by a registered author, referenced blobs present)
before anything is written, and written in one transaction under the
ledger's append lock: entry rows, the new complete-subtree hashes (so that
appends and proofs are O(log n), never a recomputation) and registrations.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from sqlalchemy import Engine, and_, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ledger import entries as E
from ledger import merkle, storage
from ledger.blobs import BlobStore
from ledger.checkpoints import (
    Checkpoint,
    SignedCheckpoint,
    checkpoint_from_obj,
    conflicting,
    decode_checkpoint,
    sign_checkpoint,
)
from ledger.errors import (
    BadCheckpointSignature,
    BadSignature,
    BlobNotFound,
    CheckpointError,
    CheckpointOutOfOrder,
    DuplicateEntry,
    DuplicateRegistration,
    EntryTooLarge,
    InconsistentCheckpoint,
    LedgerConfigMismatch,
    LedgerError,
    NoLogKey,
    NotFound,
    ProofError,
    StorageError,
    UnknownAuthor,
)
from ledger.keys import Identity, bls_pop_verify

if TYPE_CHECKING:
    from ledger.check import CheckReport

DEFAULT_ORIGIN = "shardproof.local/ledger"


@dataclass(frozen=True)
class Registration:
    """A registered author's public keys (from its node.register entry)."""

    node_id: str
    index: int
    ed25519: bytes
    bls: bytes


@dataclass(frozen=True)
class LoggedEntry:
    """An entry with its position in the log."""

    index: int
    entry: E.Entry
    data: bytes

    @property
    def kind(self) -> str:
        return self.entry.kind

    @property
    def author(self) -> str:
        return self.entry.author

    @property
    def body(self) -> dict:
        return self.entry.body

    def leaf_hash(self, hash_name: str = "blake3") -> bytes:
        return merkle.leaf_hash(self.data, hash_name)


@dataclass
class _Prepared:
    entry: E.Entry
    data: bytes
    lh: bytes
    checkpoint: SignedCheckpoint | None = None
    reg: Registration | None = None


@dataclass
class _Frontier:
    size: int = -1
    hashes: list[bytes] = field(default_factory=list)


class Ledger:
    """An append-only Merkle log in a SQL database. Use `Ledger.open(url)`."""

    def __init__(self, engine: Engine, url: str, origin: str, hash_name: str, log_key: bytes | None,
                 log_node: str | None, identity: Identity | None) -> None:
        self.engine = engine
        self.url = url
        self.origin = origin
        self.hash_name = hash_name
        self.log_key = log_key
        self.log_node = log_node
        self.identity = identity
        self.blobs = BlobStore(engine)
        self._regs: dict[str, Registration] = {}
        self._frontier = _Frontier()
        self._lock = threading.Lock()

    # --- opening -------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str,
        *,
        origin: str | None = None,
        hash_name: str | None = None,
        log_identity: Identity | None = None,
        create: bool = True,
    ) -> "Ledger":
        """Open (and with `create`, initialise) the ledger at `url` (sqlite:///path, postgresql://..., or a path).

        A new ledger records origin, hash and the log's BLS key (from
        `log_identity`) in its metadata and registers the log identity at index 0.
        Reopening with a different origin, hash or log key raises LedgerConfigMismatch.
        """
        url = storage.normalize_url(url)
        if not create and url.startswith("sqlite"):
            path = make_url(url).database or ""
            if not os.path.exists(path):
                raise StorageError(f"no ledger at {url}")
        engine = storage.make_engine(url)
        if not create:
            try:
                with storage.read_tx(engine) as conn:
                    version = storage.schema_version(conn)
            except SQLAlchemyError as exc:
                raise StorageError(f"cannot read {url}: {exc}") from exc
            if version == 0:
                raise StorageError(f"no ledger at {url}")
        storage.migrate(engine)
        meta = _read_meta(engine)
        if not meta:
            if not create:
                raise StorageError(f"no ledger at {url}")
            want_hash = hash_name or "blake3"
            merkle.hasher(want_hash)
            rows = {"origin": (origin or DEFAULT_ORIGIN).encode(), "hash": want_hash.encode()}
            if log_identity is not None:
                rows["log_key"] = log_identity.bls_pub
                rows["log_node"] = log_identity.node_id.encode()
            try:
                with storage.write_tx(engine) as conn:
                    if not _read_meta_conn(conn):  # lost a creation race: someone else initialised
                        conn.execute(storage.ledger_meta.insert(), [{"key": k, "value": v} for k, v in rows.items()])
            except SQLAlchemyError as exc:
                raise StorageError(f"cannot initialise ledger: {exc}") from exc
            meta = _read_meta(engine)
        led = cls(
            engine,
            url,
            meta["origin"].decode(),
            meta["hash"].decode(),
            meta.get("log_key"),
            meta["log_node"].decode() if "log_node" in meta else None,
            None,
        )
        if origin is not None and origin != led.origin:
            raise LedgerConfigMismatch(f"ledger origin is {led.origin!r}, not {origin!r}")
        if hash_name is not None and hash_name != led.hash_name:
            raise LedgerConfigMismatch(f"ledger hash is {led.hash_name!r}, not {hash_name!r}")
        if log_identity is not None:
            if led.log_key is not None and led.log_key != log_identity.bls_pub:
                raise LedgerConfigMismatch("log identity's BLS key differs from the ledger's log key")
            if led.log_key is None:
                raise LedgerConfigMismatch("ledger was created without a log key")
            led.identity = log_identity
            if led.registration(log_identity.node_id) is None:
                try:
                    led.append(E.registration(log_identity, roles=("log",)))
                except DuplicateRegistration:
                    pass
        return led

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    # --- registry ------------------------------------------------------------
    def registration(self, node_id: str) -> Registration | None:
        """The registration of `node_id`, or None (registrations are immutable, so cached)."""
        reg = self._regs.get(node_id)
        if reg is not None:
            return reg
        with storage.read_tx(self.engine) as conn:
            reg = _load_reg(conn, node_id)
        if reg is not None:
            self._regs[node_id] = reg
        return reg

    def registrations(self) -> list[Registration]:
        """All registrations in index order."""
        t = storage.registrations
        with storage.read_tx(self.engine) as conn:
            rows = conn.execute(select(t.c.node_id, t.c.idx, t.c.ed25519, t.c.bls).order_by(t.c.idx)).all()
        return [Registration(r[0], int(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    # --- appending -----------------------------------------------------------
    def _prepare(self, item: E.Entry | bytes) -> _Prepared:
        if isinstance(item, E.Entry):
            E.validate(item)
            data = item.encode()
            if len(data) > E.MAX_ENTRY_BYTES:
                raise EntryTooLarge(f"entry is {len(data)} bytes > {E.MAX_ENTRY_BYTES}")
            entry = item
        else:
            data = bytes(item) if isinstance(item, (bytearray, memoryview)) else item
            entry = E.decode_entry(data)
        p = _Prepared(entry, data, merkle.leaf_hash(data, self.hash_name))
        if entry.kind == E.REGISTER:
            b = entry.body
            if not entry.verify_sig(b["ed25519"]):
                raise BadSignature(f"registration of {entry.author!r} is not signed by the key it registers")
            if not bls_pop_verify(b["bls"], b["bls_pop"]):
                raise BadSignature(f"registration of {entry.author!r}: BLS proof of possession does not verify")
            p.reg = Registration(entry.author, -1, b["ed25519"], b["bls"])
        elif entry.kind == E.CHECKPOINT:
            p.checkpoint = self._check_checkpoint_sig(checkpoint_from_obj(entry.body["checkpoint"]))
            if entry.author != self.log_node:
                raise BadSignature("only the log identity may append checkpoint entries")
        return p

    def _check_checkpoint_sig(self, scp: SignedCheckpoint) -> SignedCheckpoint:
        if scp.checkpoint.origin != self.origin or scp.checkpoint.hash != self.hash_name:
            raise CheckpointError(
                f"checkpoint is for ({scp.checkpoint.origin!r}, {scp.checkpoint.hash}), not this ledger"
            )
        if self.log_key is None:
            raise NoLogKey("this ledger has no log key; cannot accept checkpoints")
        if not scp.verify(self.log_key):
            raise BadCheckpointSignature("checkpoint signature does not verify under the log key")
        return scp

    def append(self, item: E.Entry | bytes) -> int:
        """Append one signed entry; returns its index."""
        return self.append_many([item])[0]

    def append_many(self, items: Sequence[E.Entry | bytes]) -> list[int]:
        """Append signed entries atomically in order, in one transaction; returns their indexes.

        Any invalid item refuses the whole batch (typed LedgerError) and nothing is written.
        """
        prepared = [self._prepare(x) for x in items]
        if not prepared:
            return []
        # authors: registered before, or earlier in this batch
        batch_regs: dict[str, Registration] = {}
        seen: set[bytes] = set()
        for p in prepared:
            if p.lh in seen:
                raise DuplicateEntry("the same entry appears twice in the batch")
            seen.add(p.lh)
            if p.reg is not None:
                if p.reg.node_id in batch_regs or self.registration(p.reg.node_id) is not None:
                    raise DuplicateRegistration(f"node {p.reg.node_id!r} is already registered")
                batch_regs[p.reg.node_id] = p.reg
                continue
            reg = batch_regs.get(p.entry.author) or self.registration(p.entry.author)
            if reg is None:
                raise UnknownAuthor(f"author {p.entry.author!r} has no registration entry")
            if not p.entry.verify_sig(reg.ed25519):
                raise BadSignature(f"signature of {p.entry.kind} entry by {p.entry.author!r} does not verify")
        refs = [d for p in prepared for d in p.entry.blob_refs()]
        if refs:
            missing = self.blobs.missing(refs)
            if missing:
                raise BlobNotFound(f"entry refers to blob {missing[0].hex()} which is not stored; put it first")
        try:
            with storage.write_tx(self.engine) as conn:
                return self._append_locked(conn, prepared)
        except IntegrityError as exc:
            self._frontier = _Frontier()
            raise self._explain_integrity(prepared, exc) from exc
        except LedgerError:
            self._frontier = _Frontier()
            raise
        except SQLAlchemyError as exc:
            self._frontier = _Frontier()
            raise StorageError(f"append failed: {exc}") from exc

    def _explain_integrity(self, prepared: list[_Prepared], exc: Exception) -> LedgerError:
        t = storage.tree_nodes
        with storage.read_tx(self.engine) as conn:
            dup = conn.execute(
                select(t.c.nid).where(and_(t.c.hash.in_([p.lh for p in prepared]), t.c.nid < (1 << merkle.LEVEL_SHIFT)))
            ).first()
            if dup is not None:
                return DuplicateEntry(f"entry already in the log at index {dup[0]}")
            for p in prepared:
                if p.reg is not None and _load_reg(conn, p.reg.node_id) is not None:
                    return DuplicateRegistration(f"node {p.reg.node_id!r} is already registered")
        return StorageError(f"append refused by the database: {exc}")

    def _size_conn(self, conn: Any) -> int:
        v = conn.execute(select(func.max(storage.entries.c.idx))).scalar()
        return 0 if v is None else int(v) + 1

    def _load_frontier(self, conn: Any, n: int) -> merkle.MerkleFrontier:
        if self._frontier.size == n:
            return merkle.MerkleFrontier(n, self._frontier.hashes, self.hash_name)
        keys = [merkle.node_id(lv, i) for lv, i in merkle.range_subtrees(0, n)]
        got = _fetch_nodes(conn, keys)
        if len(got) != len(keys):
            raise StorageError(f"tree nodes for size {n} are missing: the database is corrupt")
        return merkle.MerkleFrontier(n, [got[k] for k in keys], self.hash_name)

    def _append_locked(self, conn: Any, prepared: list[_Prepared]) -> list[int]:
        n = self._size_conn(conn)
        frontier = self._load_frontier(conn, n)
        entry_rows, node_rows, reg_rows = [], [], []
        out = []
        for p in prepared:
            idx = frontier.size
            if p.checkpoint is not None:
                self._check_checkpoint_against_tree(conn, p.checkpoint, frontier)
            for lv, i, h in frontier.append(p.lh):
                node_rows.append({"nid": merkle.node_id(lv, i), "hash": h})
            e = p.entry
            entry_rows.append(
                {"idx": idx, "kind": e.kind, "author": e.author, "job_id": e.job_id, "node": e.node, "data": p.data}
            )
            if p.reg is not None:
                reg_rows.append({"node_id": p.reg.node_id, "idx": idx, "ed25519": p.reg.ed25519, "bls": p.reg.bls})
            out.append(idx)
        conn.execute(storage.entries.insert(), entry_rows)
        conn.execute(storage.tree_nodes.insert(), node_rows)
        if reg_rows:
            conn.execute(storage.registrations.insert(), reg_rows)
        if self.engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_notify('{storage.NOTIFY_CHANNEL}', '{frontier.size}')")
        self._frontier = _Frontier(frontier.size, list(frontier.hashes))
        return out

    def _check_checkpoint_against_tree(self, conn: Any, scp: SignedCheckpoint, frontier: merkle.MerkleFrontier) -> None:
        if scp.size > frontier.size:
            raise InconsistentCheckpoint(f"checkpoint size {scp.size} is beyond the log ({frontier.size})")
        root = frontier.root() if scp.size == frontier.size else self._root_conn(conn, scp.size)
        if root != scp.root:
            raise InconsistentCheckpoint(f"checkpoint root at size {scp.size} does not match the log")

    # --- blobs ---------------------------------------------------------------
    def put_blob(self, data: bytes, digest: bytes | None = None) -> bytes:
        """Store a blob; returns its blake3 digest (entries refer to blobs by this digest)."""
        return self.blobs.put(data, digest)

    def get_blob(self, digest: bytes) -> bytes:
        """A blob's bytes, integrity-checked."""
        return self.blobs.get(digest)

    # --- reading -------------------------------------------------------------
    def size(self) -> int:
        """Number of entries."""
        with storage.read_tx(self.engine) as conn:
            return self._size_conn(conn)

    def _rows_to_entries(self, rows: Iterable[Any]) -> list[LoggedEntry]:
        return [LoggedEntry(int(r[0]), E.decode_entry(bytes(r[1])), bytes(r[1])) for r in rows]

    def get(self, index: int) -> LoggedEntry:
        """The entry at `index` (NotFound)."""
        t = storage.entries
        with storage.read_tx(self.engine) as conn:
            row = conn.execute(select(t.c.idx, t.c.data).where(t.c.idx == index)).first()
        if row is None:
            raise NotFound(f"no entry at index {index}")
        return self._rows_to_entries([row])[0]

    def read(self, start: int = 0, stop: int | None = None) -> list[LoggedEntry]:
        """Entries with start <= index < stop, in order."""
        return self.query(start=start, stop=stop)

    def query(
        self,
        *,
        job_id: str | None = None,
        kind: str | None = None,
        node: str | None = None,
        author: str | None = None,
        start: int = 0,
        stop: int | None = None,
        limit: int | None = None,
    ) -> list[LoggedEntry]:
        """Entries filtered by job id, kind, node (body.node or author) and author, in index order."""
        t = storage.entries
        q = select(t.c.idx, t.c.data).where(t.c.idx >= start)
        if stop is not None:
            q = q.where(t.c.idx < stop)
        if job_id is not None:
            q = q.where(t.c.job_id == job_id)
        if kind is not None:
            q = q.where(t.c.kind == kind)
        if node is not None:
            q = q.where(t.c.node == node)
        if author is not None:
            q = q.where(t.c.author == author)
        q = q.order_by(t.c.idx)
        if limit is not None:
            q = q.limit(limit)
        with storage.read_tx(self.engine) as conn:
            rows = conn.execute(q).all()
        return self._rows_to_entries(rows)

    def by_job(self, job_id: str, kind: str | None = None) -> list[LoggedEntry]:
        """All entries of a job (optionally of one kind)."""
        return self.query(job_id=job_id, kind=kind)

    def by_kind(self, kind: str, start: int = 0) -> list[LoggedEntry]:
        return self.query(kind=kind, start=start)

    def by_node(self, node: str, start: int = 0) -> list[LoggedEntry]:
        return self.query(node=node, start=start)

    # --- tree ----------------------------------------------------------------
    def _root_conn(self, conn: Any, size: int) -> bytes:
        if size == 0:
            return merkle.empty_root(self.hash_name)
        keys = [merkle.node_id(lv, i) for lv, i in merkle.range_subtrees(0, size)]
        got = _fetch_nodes(conn, keys)
        if len(got) != len(keys):
            raise StorageError(f"tree nodes for size {size} are missing")
        return merkle.fold_subtrees([got[k] for k in keys], self.hash_name)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` entries (default: all). O(log n)."""
        with storage.read_tx(self.engine) as conn:
            n = self._size_conn(conn)
            size = n if size is None else size
            if not 0 <= size <= n:
                raise ProofError(f"size {size} outside [0, {n}]")
            return self._root_conn(conn, size)

    def tree_head(self) -> tuple[int, bytes]:
        """(size, root) read in one snapshot."""
        with storage.read_tx(self.engine) as conn:
            n = self._size_conn(conn)
            return n, self._root_conn(conn, n)

    def _ranges_to_hashes(self, conn: Any, ranges: list[tuple[int, int]]) -> list[bytes]:
        plans = [[merkle.node_id(lv, i) for lv, i in merkle.range_subtrees(a, b)] for a, b in ranges]
        got = _fetch_nodes(conn, list({k for p in plans for k in p}))
        try:
            return [merkle.fold_subtrees([got[k] for k in p], self.hash_name) for p in plans]
        except KeyError:
            raise StorageError("tree nodes needed for the proof are missing: the database is corrupt") from None

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) (RFC 9162 section 2.1.3.1) from O(log n) stored subtree hashes."""
        with storage.read_tx(self.engine) as conn:
            if size is None:
                size = self._size_conn(conn)
            if not isinstance(index, int) or not 0 <= index < size:
                raise ProofError(f"index {index} out of range for tree size {size}")
            return self._ranges_to_hashes(conn, merkle.inclusion_ranges(index, size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) (RFC 9162 section 2.1.4.1)."""
        with storage.read_tx(self.engine) as conn:
            n = self._size_conn(conn)
            new_size = n if new_size is None else new_size
            if not 0 <= old_size <= new_size <= n:
                raise ProofError(f"need 0 <= old ({old_size}) <= new ({new_size}) <= size ({n})")
            return self._ranges_to_hashes(conn, merkle.consistency_ranges(old_size, new_size))

    # --- checkpoints ---------------------------------------------------------
    def checkpoint(self, log_entry: bool = True) -> SignedCheckpoint:
        """Sign the current tree head with the log's BLS key and store it.

        With `log_entry`, the signed checkpoint is also appended to the log as a
        `checkpoint` entry (at index == its size), in the same transaction.
        Slow with py_ecc (~0.1 s): make checkpoints on demand or every K entries.
        """
        if self.identity is None or self.log_key is None:
            raise NoLogKey("opening the ledger with log_identity= is needed to sign checkpoints")
        try:
            with storage.write_tx(self.engine) as conn:
                n = self._size_conn(conn)
                root = self._root_conn(conn, n)
                scp = sign_checkpoint(Checkpoint(self.origin, n, root, self.hash_name), self.identity)
                latest = self._latest_checkpoint_conn(conn)
                if latest is None or latest.size != n or latest.root != root:
                    conn.execute(storage.checkpoints.insert().values(size=n, root=root, data=scp.encode()))
                if log_entry:
                    e = E.make_entry(self.identity, E.CHECKPOINT, {"checkpoint": scp.to_obj()})
                    p = _Prepared(e, e.encode(), merkle.leaf_hash(e.encode(), self.hash_name), scp)
                    self._append_locked(conn, [p])
            return scp
        except SQLAlchemyError as exc:
            self._frontier = _Frontier()
            raise StorageError(f"checkpoint failed: {exc}") from exc

    def _latest_checkpoint_conn(self, conn: Any) -> SignedCheckpoint | None:
        t = storage.checkpoints
        row = conn.execute(select(t.c.data).order_by(t.c.size.desc(), t.c.id.desc()).limit(1)).first()
        return None if row is None else decode_checkpoint(bytes(row[0]))

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The stored checkpoint with the largest size."""
        with storage.read_tx(self.engine) as conn:
            return self._latest_checkpoint_conn(conn)

    def checkpoints(self) -> list[SignedCheckpoint]:
        """All stored checkpoints, by size."""
        t = storage.checkpoints
        with storage.read_tx(self.engine) as conn:
            rows = conn.execute(select(t.c.data).order_by(t.c.size, t.c.id)).all()
        return [decode_checkpoint(bytes(r[0])) for r in rows]

    def checkpoint_at(self, size: int) -> SignedCheckpoint | None:
        """A stored checkpoint of exactly `size` (the one with the most signers)."""
        return max((c for c in self.checkpoints() if c.size == size), key=lambda c: len(c.signers), default=None)

    def add_checkpoint(self, scp: SignedCheckpoint | bytes) -> SignedCheckpoint:
        """Accept a signed checkpoint from outside (e.g. with witness cosignatures).

        Refused: bad signature (BadCheckpointSignature), older than the latest
        accepted (CheckpointOutOfOrder), or not consistent with the log
        (InconsistentCheckpoint; the pair is kept in `conflicts()` as evidence).
        """
        if isinstance(scp, (bytes, bytearray)):
            scp = decode_checkpoint(bytes(scp))
        self._check_checkpoint_sig(scp)
        conflict: tuple[SignedCheckpoint, SignedCheckpoint | None, str] | None = None
        try:
            with storage.write_tx(self.engine) as conn:
                latest = self._latest_checkpoint_conn(conn)
                n = self._size_conn(conn)
                if latest is not None and conflicting(latest, scp):
                    conflict = (scp, latest, "same size, different root")
                elif scp.size > n:
                    conflict = (scp, latest, f"checkpoint size {scp.size} is beyond the log size {n}")
                elif self._root_conn(conn, scp.size) != scp.root:
                    conflict = (scp, latest, f"root at size {scp.size} differs from the log")
                elif latest is not None and scp.size < latest.size:
                    raise CheckpointOutOfOrder(f"checkpoint size {scp.size} < latest accepted {latest.size}")
                if conflict is not None:
                    a, b, reason = conflict
                    conn.execute(
                        storage.conflicts.insert().values(a=a.encode(), b=(b.encode() if b else b""), reason=reason)
                    )
                else:
                    conn.execute(storage.checkpoints.insert().values(size=scp.size, root=scp.root, data=scp.encode()))
        except SQLAlchemyError as exc:
            raise StorageError(f"storing checkpoint failed: {exc}") from exc
        if conflict is not None:
            raise InconsistentCheckpoint(f"checkpoint refused and kept as evidence: {conflict[2]}")
        return scp

    def report_conflict(self, a: SignedCheckpoint, b: SignedCheckpoint, reason: str = "split view") -> None:
        """Keep two validly signed, conflicting checkpoints of this log as evidence."""
        self._check_checkpoint_sig(a)
        self._check_checkpoint_sig(b)
        if not conflicting(a, b):
            raise CheckpointError("the two checkpoints do not conflict (different sizes need a consistency check)")
        with storage.write_tx(self.engine, lock=False) as conn:
            conn.execute(storage.conflicts.insert().values(a=a.encode(), b=b.encode(), reason=reason))

    def conflicts(self) -> list[tuple[SignedCheckpoint, SignedCheckpoint | None, str]]:
        """Kept evidence of conflicting checkpoints."""
        t = storage.conflicts
        with storage.read_tx(self.engine) as conn:
            rows = conn.execute(select(t.c.a, t.c.b, t.c.reason).order_by(t.c.id)).all()
        return [
            (decode_checkpoint(bytes(a)), decode_checkpoint(bytes(b)) if b else None, str(r)) for a, b, r in rows
        ]

    # --- integrity -------------------------------------------------------------
    def check(self, log_key: bytes | None = None, chunk: int = 20000) -> "CheckReport":
        """Run `ledger.check.check_rows` over every row, in one read snapshot."""
        from ledger.check import EntryRow, check_rows

        e, tn, b = storage.entries, storage.tree_nodes, storage.blobs
        lvl1 = 1 << merkle.LEVEL_SHIFT
        with storage.read_tx(self.engine) as conn:
            meta = _read_meta_conn(conn)
            top = max(
                conn.execute(select(func.max(e.c.idx))).scalar() or 0,
                conn.execute(select(func.max(tn.c.nid)).where(tn.c.nid < lvl1)).scalar() or 0,
            )

            def entry_rows() -> Iterator[EntryRow]:
                for a in range(0, top + 1, chunk):
                    q = select(e.c.idx, e.c.kind, e.c.author, e.c.job_id, e.c.node, e.c.data)
                    for r in conn.execute(q.where(e.c.idx >= a, e.c.idx < a + chunk).order_by(e.c.idx)).all():
                        yield EntryRow(int(r[0]), r[1], r[2], r[3], r[4], bytes(r[5]))

            def leaf_rows() -> Iterator[tuple[int, bytes]]:
                for a in range(0, top + 1, chunk):
                    q = select(tn.c.nid, tn.c.hash).where(tn.c.nid >= a, tn.c.nid < min(a + chunk, lvl1))
                    for r in conn.execute(q.order_by(tn.c.nid)).all():
                        yield int(r[0]), bytes(r[1])

            def interior_rows() -> Iterator[tuple[int, bytes]]:
                last = lvl1 - 1
                while True:
                    q = select(tn.c.nid, tn.c.hash).where(tn.c.nid > last).order_by(tn.c.nid).limit(chunk)
                    rows = conn.execute(q).all()
                    if not rows:
                        return
                    for r in rows:
                        yield int(r[0]), bytes(r[1])
                    last = int(rows[-1][0])

            def blob_rows() -> Iterator[tuple[bytes, int, bytes]]:
                last = b""
                while True:
                    q = select(b.c.digest, b.c.size, b.c.data).where(b.c.digest > last).order_by(b.c.digest).limit(64)
                    rows = conn.execute(q).all()
                    if not rows:
                        return
                    for r in rows:
                        yield bytes(r[0]), int(r[1]), bytes(r[2])
                    last = bytes(rows[-1][0])

            c, r = storage.checkpoints, storage.registrations
            cps = [(int(x[0]), bytes(x[1]), bytes(x[2])) for x in conn.execute(select(c.c.size, c.c.root, c.c.data))]
            regs = [
                (x[0], int(x[1]), bytes(x[2]), bytes(x[3]))
                for x in conn.execute(select(r.c.node_id, r.c.idx, r.c.ed25519, r.c.bls))
            ]
            return check_rows(meta, entry_rows(), leaf_rows(), interior_rows(), cps, blob_rows(), regs, log_key)

    # --- evidence & subscriptions ----------------------------------------------
    def export_evidence(self, indexes: int | Sequence[int], checkpoint: SignedCheckpoint | None = None) -> bytes:
        """One CBOR evidence bundle (entries, inclusion proofs, signed checkpoint, authors' registrations,
        referenced blobs) that `ledger.evidence.verify_bundle` checks offline."""
        from ledger.evidence import export_bundle

        return export_bundle(self, [indexes] if isinstance(indexes, int) else list(indexes), checkpoint)

    def subscribe(self, start: int | None = None, poll_interval: float = 0.2, **filters: Any) -> "Subscription":
        """Watch for new entries from `start` (default: the current end), filtered like `query`."""
        from ledger.subscribe import Subscription

        return Subscription(self, self.size() if start is None else start, poll_interval, filters)


# --- helpers ---------------------------------------------------------------
def _fetch_nodes(conn: Any, keys: list[int]) -> dict[int, bytes]:
    if not keys:
        return {}
    t = storage.tree_nodes
    return {int(r[0]): bytes(r[1]) for r in conn.execute(select(t.c.nid, t.c.hash).where(t.c.nid.in_(keys)))}


def _load_reg(conn: Any, node_id: str) -> Registration | None:
    t = storage.registrations
    r = conn.execute(select(t.c.node_id, t.c.idx, t.c.ed25519, t.c.bls).where(t.c.node_id == node_id)).first()
    return None if r is None else Registration(r[0], int(r[1]), bytes(r[2]), bytes(r[3]))


def _read_meta_conn(conn: Any) -> dict[str, bytes]:
    t = storage.ledger_meta
    return {str(k): bytes(v) for k, v in conn.execute(select(t.c.key, t.c.value)).all()}


def _read_meta(engine: Engine) -> dict[str, bytes]:
    with storage.read_tx(engine) as conn:
        return _read_meta_conn(conn)


def open_ledger(url: str, **kwargs: Any) -> Ledger:
    """Shorthand for Ledger.open(url, ...)."""
    return Ledger.open(url, **kwargs)
