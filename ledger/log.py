"""The Ledger API: open by URL, append (single or batch), read, proofs, checkpoints, blobs, subscribe.

The log's rules live here; rows live in a `ledger.storage.LogStorage`
(ledger.sql_storage: SQLite or PostgreSQL), the math in ledger.merkle and the
formats in ledger.entries and ledger.checkpoints. Every append is validated in
full (canonical CBOR, schema, Ed25519 signature by a registered author,
referenced blobs present, no second job.open of a job) before anything is
written, and written in one storage transaction under the log's append lock:
entry rows, the new complete-subtree hashes (so that appends and proofs are
O(log n), never a recomputation) and registrations.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from ledger import entries as E
from ledger import merkle
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
    DuplicateJob,
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
    WriteConflict,
)
from ledger.keys import Identity, bls_pop_verify
from ledger.retention import DEFAULT_KEEP_DAYS
from ledger.storage import LogReader, LogStorage, LogWriter

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ledger.check import CheckReport
    from ledger.retention import PruneReport
    from ledger.subscribe import Subscription

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
    """An append-only Merkle log over a LogStorage. Use `Ledger.open(url)`."""

    def __init__(self, store: LogStorage, origin: str, hash_name: str, log_key: bytes | None,
                 log_node: str | None, identity: Identity | None) -> None:
        self.store = store
        self.url = store.url
        self.origin = origin
        self.hash_name = hash_name
        self.log_key = log_key
        self.log_node = log_node
        self.identity = identity
        self.blobs = BlobStore(store)
        self._regs: dict[str, Registration] = {}
        self._frontier = _Frontier()

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
        from ledger.sql_storage import open_storage

        store = open_storage(url, create=create)
        with store.snapshot() as r:
            meta = r.meta()
        if not meta:
            if not create:
                store.close()
                raise StorageError(f"no ledger at {store.url}")
            want_hash = hash_name or "blake3"
            merkle.hasher(want_hash)
            rows = {"origin": (origin or DEFAULT_ORIGIN).encode(), "hash": want_hash.encode()}
            if log_identity is not None:
                rows["log_key"] = log_identity.bls_pub
                rows["log_node"] = log_identity.node_id.encode()
            with store.transaction() as tx:
                if not tx.meta():  # lost a creation race: someone else initialised
                    tx.set_meta(rows)
            with store.snapshot() as r:
                meta = r.meta()
        led = cls(
            store,
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
        self.store.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return self.store.backend

    @property
    def engine(self) -> "Engine":
        """The SQLAlchemy engine of a SQL store (tamper tests write behind the Ledger's back with it)."""
        return self.store.engine  # type: ignore[attr-defined]

    # --- registry ------------------------------------------------------------
    def registration(self, node_id: str) -> Registration | None:
        """The registration of `node_id`, or None (registrations are immutable, so cached)."""
        reg = self._regs.get(node_id)
        if reg is not None:
            return reg
        with self.store.snapshot() as r:
            row = r.registration(node_id)
        if row is not None:
            reg = self._regs[node_id] = Registration(*row)
        return reg

    def registrations(self) -> list[Registration]:
        """All registrations in index order."""
        with self.store.snapshot() as r:
            return [Registration(*row) for row in r.registrations()]

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

        Any invalid item refuses the whole batch (typed LedgerError) and nothing is written;
        a `job.open` of a job id already opened (in the log or earlier in the batch) is DuplicateJob.
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
            with self.store.transaction() as tx:
                return self._append_locked(tx, prepared)
        except WriteConflict as exc:
            self._frontier = _Frontier()
            raise self._explain_conflict(prepared, exc) from exc
        except LedgerError:
            self._frontier = _Frontier()
            raise

    def _explain_conflict(self, prepared: list[_Prepared], exc: WriteConflict) -> LedgerError:
        with self.store.snapshot() as r:
            dup = r.leaf_index([p.lh for p in prepared])
            if dup is not None:
                return DuplicateEntry(f"entry already in the log at index {dup}")
            for p in prepared:
                if p.reg is not None and r.registration(p.reg.node_id) is not None:
                    return DuplicateRegistration(f"node {p.reg.node_id!r} is already registered")
        return exc

    def _check_new_jobs(self, tx: LogReader, prepared: list[_Prepared]) -> None:
        """Refuse a job.open whose job id was opened before (audit integrity: one job, one opening)."""
        opened: set[str] = set()
        for p in prepared:
            if p.entry.kind != E.JOB_OPEN:
                continue
            job = p.entry.job_id
            before = tx.entries(job_id=job, kind=E.JOB_OPEN, limit=1)
            if before and before[0][1] == p.data:
                raise DuplicateEntry(f"entry already in the log at index {before[0][0]}")
            if before or job in opened:
                where = f"at index {before[0][0]}" if before else "earlier in this batch"
                raise DuplicateJob(f"job {job!r} was already opened {where}; a job id is opened once")
            opened.add(job)

    def _load_frontier(self, tx: LogReader, n: int) -> merkle.MerkleFrontier:
        if self._frontier.size == n:
            return merkle.MerkleFrontier(n, self._frontier.hashes, self.hash_name)
        keys = [merkle.node_id(lv, i) for lv, i in merkle.range_subtrees(0, n)]
        got = tx.nodes(keys)
        if len(got) != len(keys):
            raise StorageError(f"tree nodes for size {n} are missing: the database is corrupt")
        return merkle.MerkleFrontier(n, [got[k] for k in keys], self.hash_name)

    def _append_locked(self, tx: LogWriter, prepared: list[_Prepared]) -> list[int]:
        from ledger.check import EntryRow

        self._check_new_jobs(tx, prepared)
        frontier = self._load_frontier(tx, tx.size())
        entry_rows, node_rows, reg_rows = [], [], []
        for p in prepared:
            idx = frontier.size
            if p.checkpoint is not None:
                self._check_checkpoint_against_tree(tx, p.checkpoint, frontier)
            node_rows += [(merkle.node_id(lv, i), h) for lv, i, h in frontier.append(p.lh)]
            e = p.entry
            entry_rows.append(EntryRow(idx, e.kind, e.author, e.job_id, e.node, p.data))
            if p.reg is not None:
                reg_rows.append((p.reg.node_id, idx, p.reg.ed25519, p.reg.bls))
        tx.append_batch(entry_rows, node_rows, reg_rows)
        self._frontier = _Frontier(frontier.size, list(frontier.hashes))
        return [r.idx for r in entry_rows]

    def _check_checkpoint_against_tree(self, tx: LogReader, scp: SignedCheckpoint,
                                       frontier: merkle.MerkleFrontier) -> None:
        if scp.size > frontier.size:
            raise InconsistentCheckpoint(f"checkpoint size {scp.size} is beyond the log ({frontier.size})")
        root = frontier.root() if scp.size == frontier.size else self._root_at(tx, scp.size)
        if root != scp.root:
            raise InconsistentCheckpoint(f"checkpoint root at size {scp.size} does not match the log")

    # --- blobs ---------------------------------------------------------------
    def put_blob(self, data: bytes, digest: bytes | None = None) -> bytes:
        """Store a blob; returns its blake3 digest (entries refer to blobs by this digest)."""
        return self.blobs.put(data, digest)

    def get_blob(self, digest: bytes) -> bytes:
        """A blob's bytes, integrity-checked."""
        return self.blobs.get(digest)

    def prune(self, keep_days: float = DEFAULT_KEEP_DAYS, *, now_ms: int | None = None,
              dry_run: bool = False) -> "PruneReport":
        """Delete the bytes of the blobs that the retention rule releases (ledger.retention: the opening
        blobs of jobs with a verdict or job.fail whose newest entry is older than `keep_days` at `now_ms`,
        default now), each recorded in pruned_blobs; entries and roots are untouched. Raises LedgerError
        (and deletes nothing) if an entry does not decode: the log must pass `ledger check` first."""
        from ledger.retention import PruneReport, RetentionIndex

        now = E.now_ms() if now_ms is None else int(now_ms)
        if not 0 <= now < 1 << 63:
            raise ValueError(f"now_ms {now} is not a time in ms since the epoch")
        idx = RetentionIndex()
        with self.store.snapshot() as r:
            size = r.size()
            for row in r.scan_entries(5000):
                idx.add(E.decode_entry(row.data))
        rep = PruneReport(keep_days, now, dry_run, idx.plan(now, keep_days))
        want = [d for j in rep.jobs for d in j.digests]
        if dry_run:
            sizes = self.store.blob_sizes(want)
            rep.pruned = [(d, *sizes[d]) for d in want if d in sizes]
            return rep
        rep.in_use_before = self.store.space_in_use()
        with self.store.transaction() as tx:  # under the append lock: what was appended since the scan stays
            late = {d for _, data in tx.entries(start=size) for d in E.decode_entry(data).blob_refs()}
            rep.pruned = tx.prune_blobs([d for d in want if d not in late], now)
        if rep.pruned:
            self.store.reclaim_space()
        rep.in_use_after = self.store.space_in_use()
        return rep

    # --- reading -------------------------------------------------------------
    def size(self) -> int:
        """Number of entries."""
        return self.store.size()

    def wait_for_new(self, after_size: int, timeout: float, stop: threading.Event | None = None) -> int:
        """Block until the log has more than `after_size` entries, `timeout` passes or `stop` is set;
        returns the size last read (LISTEN/NOTIFY on PostgreSQL, a cheap backed-off poll on SQLite)."""
        return self.store.wait_for_new(after_size, timeout, stop)

    def _rows_to_entries(self, rows: Iterable[tuple[int, bytes]]) -> list[LoggedEntry]:
        return [LoggedEntry(i, E.decode_entry(d), d) for i, d in rows]

    def get(self, index: int) -> LoggedEntry:
        """The entry at `index` (NotFound)."""
        with self.store.snapshot() as r:
            rows = r.entries(start=index, stop=index + 1) if isinstance(index, int) else []
        if not rows:
            raise NotFound(f"no entry at index {index}")
        return self._rows_to_entries(rows)[0]

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
        with self.store.snapshot() as r:
            rows = r.entries(start=start, stop=stop, job_id=job_id, kind=kind, node=node, author=author, limit=limit)
        return self._rows_to_entries(rows)

    def rows(self, start: int = 0, stop: int | None = None, chunk: int = 5000) -> Iterator[tuple[int, bytes]]:
        """The encoded entries (index, bytes) with start <= index < stop (default: the size when called),
        in order, read `chunk` at a time, each page in its own snapshot, not decoded: a reader pages
        through a large log lazily and can report a row that does not decode instead of failing."""
        stop = self.size() if stop is None else stop
        at = start
        while at < stop:
            with self.store.snapshot() as r:
                page = r.entries(start=at, stop=min(at + chunk, stop))
            if not page:
                return
            yield from page
            at = page[-1][0] + 1

    def by_job(self, job_id: str, kind: str | None = None) -> list[LoggedEntry]:
        """All entries of a job (optionally of one kind)."""
        return self.query(job_id=job_id, kind=kind)

    def by_kind(self, kind: str, start: int = 0) -> list[LoggedEntry]:
        return self.query(kind=kind, start=start)

    def by_node(self, node: str, start: int = 0) -> list[LoggedEntry]:
        return self.query(node=node, start=start)

    # --- tree ----------------------------------------------------------------
    def _root_at(self, r: LogReader, size: int) -> bytes:
        if size == 0:
            return merkle.empty_root(self.hash_name)
        return self._ranges_to_hashes(r, [(0, size)])[0]

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` entries (default: all). O(log n)."""
        with self.store.snapshot() as r:
            n = r.size()
            size = n if size is None else size
            if not 0 <= size <= n:
                raise ProofError(f"size {size} outside [0, {n}]")
            return self._root_at(r, size)

    def tree_head(self) -> tuple[int, bytes]:
        """(size, root) read in one snapshot."""
        with self.store.snapshot() as r:
            n = r.size()
            return n, self._root_at(r, n)

    def _ranges_to_hashes(self, r: LogReader, ranges: list[tuple[int, int]]) -> list[bytes]:
        plans = [[merkle.node_id(lv, i) for lv, i in merkle.range_subtrees(a, b)] for a, b in ranges]
        got = r.nodes(list({k for p in plans for k in p}))
        try:
            return [merkle.fold_subtrees([got[k] for k in p], self.hash_name) for p in plans]
        except KeyError:
            raise StorageError("tree nodes needed for the proof are missing: the database is corrupt") from None

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) (RFC 9162 section 2.1.3.1) from O(log n) stored subtree hashes."""
        with self.store.snapshot() as r:
            if size is None:
                size = r.size()
            if not isinstance(index, int) or not 0 <= index < size:
                raise ProofError(f"index {index} out of range for tree size {size}")
            return self._ranges_to_hashes(r, merkle.inclusion_ranges(index, size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) (RFC 9162 section 2.1.4.1)."""
        with self.store.snapshot() as r:
            n = r.size()
            new_size = n if new_size is None else new_size
            if not 0 <= old_size <= new_size <= n:
                raise ProofError(f"need 0 <= old ({old_size}) <= new ({new_size}) <= size ({n})")
            return self._ranges_to_hashes(r, merkle.consistency_ranges(old_size, new_size))

    # --- checkpoints ---------------------------------------------------------
    def checkpoint(self, log_entry: bool = True) -> SignedCheckpoint:
        """Sign the current tree head with the log's BLS key and store it.

        With `log_entry`, the signed checkpoint is also appended to the log as a
        `checkpoint` entry (at index == its size), in the same transaction.
        A BLS signature costs milliseconds (ledger/bls.py); the log operator still signs at most every interval.
        """
        if self.identity is None or self.log_key is None:
            raise NoLogKey("opening the ledger with log_identity= is needed to sign checkpoints")
        try:
            with self.store.transaction() as tx:
                n = tx.size()
                root = self._root_at(tx, n)
                scp = sign_checkpoint(Checkpoint(self.origin, n, root, self.hash_name), self.identity)
                latest = _decode(tx.latest_checkpoint())
                if latest is None or latest.size != n or latest.root != root:
                    tx.add_checkpoint(n, root, scp.encode())
                if log_entry:
                    e = E.make_entry(self.identity, E.CHECKPOINT, {"checkpoint": scp.to_obj()})
                    p = _Prepared(e, e.encode(), merkle.leaf_hash(e.encode(), self.hash_name), scp)
                    self._append_locked(tx, [p])
            return scp
        except LedgerError:
            self._frontier = _Frontier()
            raise

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The stored checkpoint with the largest size."""
        with self.store.snapshot() as r:
            return _decode(r.latest_checkpoint())

    def checkpoints(self) -> list[SignedCheckpoint]:
        """All stored checkpoints, by size."""
        with self.store.snapshot() as r:
            return [decode_checkpoint(d) for d in r.checkpoints()]

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
        with self.store.transaction() as tx:
            latest = _decode(tx.latest_checkpoint())
            n = tx.size()
            if latest is not None and conflicting(latest, scp):
                conflict = (scp, latest, "same size, different root")
            elif scp.size > n:
                conflict = (scp, latest, f"checkpoint size {scp.size} is beyond the log size {n}")
            elif self._root_at(tx, scp.size) != scp.root:
                conflict = (scp, latest, f"root at size {scp.size} differs from the log")
            elif latest is not None and scp.size < latest.size:
                raise CheckpointOutOfOrder(f"checkpoint size {scp.size} < latest accepted {latest.size}")
            if conflict is not None:
                a, b, reason = conflict
                tx.add_conflict(a.encode(), b.encode() if b else b"", reason)
            else:
                tx.add_checkpoint(scp.size, scp.root, scp.encode())
        if conflict is not None:
            raise InconsistentCheckpoint(f"checkpoint refused and kept as evidence: {conflict[2]}")
        return scp

    def add_cosignature(self, scp: SignedCheckpoint) -> SignedCheckpoint:
        """Store `scp`, a checkpoint this log already stored (same size and root) with more signers
        (witness cosignatures aggregated, ledger.witness), whatever checkpoints were signed since.
        Raises BadCheckpointSignature, or CheckpointError if the log never stored that tree head."""
        self._check_checkpoint_sig(scp)
        with self.store.transaction(lock=False) as tx:
            stored = [_decode(d) for d in tx.checkpoints()]
            if not any(c is not None and c.size == scp.size and c.root == scp.root for c in stored):
                raise CheckpointError(f"the log stored no checkpoint ({scp.size}, {scp.root.hex()[:16]})")
            tx.add_checkpoint(scp.size, scp.root, scp.encode())
        return scp

    def report_conflict(self, a: SignedCheckpoint, b: SignedCheckpoint, reason: str = "split view") -> None:
        """Keep two validly signed, conflicting checkpoints of this log as evidence."""
        self._check_checkpoint_sig(a)
        self._check_checkpoint_sig(b)
        if not conflicting(a, b):
            raise CheckpointError("the two checkpoints do not conflict (different sizes need a consistency check)")
        with self.store.transaction(lock=False) as tx:
            tx.add_conflict(a.encode(), b.encode(), reason)

    def conflicts(self) -> list[tuple[SignedCheckpoint, SignedCheckpoint | None, str]]:
        """Kept evidence of conflicting checkpoints."""
        with self.store.snapshot() as r:
            return [(decode_checkpoint(a), _decode(b or None), reason) for a, b, reason in r.conflicts()]

    # --- integrity -------------------------------------------------------------
    def check(self, log_key: bytes | None = None, chunk: int = 20000,
              progress: Callable[[int], None] | None = None) -> "CheckReport":
        """Run `ledger.check.check_rows` over every row, in one read snapshot; `progress(n)` is called
        with the number of entries read so far, every 1000 entries and at the end."""
        from ledger.check import check_rows

        with self.store.snapshot() as r:
            rows = r.scan_entries(chunk)
            if progress is not None:
                rows = _counted(rows, 1000, progress)
            return check_rows(r.meta(), rows, r.scan_nodes(True, chunk), r.scan_nodes(False, chunk),
                              r.checkpoint_rows(), r.scan_blobs(), r.registrations(), log_key,
                              pruned_rows=r.pruned_blobs())

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


def _counted(rows: Iterable[Any], every: int, progress: Callable[[int], None]) -> Iterator[Any]:
    n = 0
    for row in rows:
        yield row
        n += 1
        if n % every == 0:
            progress(n)
    progress(n)


def _decode(data: bytes | None) -> SignedCheckpoint | None:
    return None if data is None else decode_checkpoint(data)


def open_ledger(url: str, **kwargs: Any) -> Ledger:
    """Shorthand for Ledger.open(url, ...)."""
    return Ledger.open(url, **kwargs)
