"""Storage: the LogStorage interface (what every store MUST guarantee; at the end of this module),
and for the SQL stores (ledger.sql_storage) the SQLAlchemy 2 schema, engines (SQLite WAL /
PostgreSQL via psycopg 3), write locks, append-only triggers and versioned migrations.

Append-only is enforced at three layers: the Ledger API has no update or
delete; triggers here reject UPDATE, DELETE (and TRUNCATE on PostgreSQL) on
every ledger table in both engines; and checkpoints make any change that
slips past both detectable (`ledger.check`). The one exception is blob
retention (`Ledger.prune`): a blob row may be deleted once its digest is
recorded in the append-only pruned_blobs table, in the same transaction
(leaves cover digests, not blob bytes, so no root changes).

Writers serialise on one lock per ledger: `BEGIN IMMEDIATE` on SQLite, a
transaction-scoped advisory lock on PostgreSQL. Everything an append writes
(entries, tree nodes, registrations) goes in one transaction, so the Merkle
state is never torn.
"""
from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager, nullcontext

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: fall back to SQLite's busy handler
    fcntl = None  # type: ignore[assignment]
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ledger.errors import SchemaVersionError, StorageError
from ledger.merkle import LEVEL_SHIFT

if TYPE_CHECKING:
    from ledger.check import EntryRow

LOCK_KEY = 0x5348_4450_4C47  # "SHDPLG": pg advisory lock id of the append lock
NOTIFY_CHANNEL = "shardproof_ledger"

_BigInt = BigInteger().with_variant(Integer, "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid: fastest

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(256), nullable=False),
)

ledger_meta = Table(
    "ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("idx", _BigInt, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),
    Column("author", String(128), nullable=False),
    Column("job_id", String(128), nullable=True),
    Column("node", String(128), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("entries_job", "job_id", "idx"),
    Index("entries_kind", "kind", "idx"),
    Index("entries_node", "node", "idx"),
)

# Complete-subtree hashes keyed by node id = level << 48 | idx (ledger.merkle.node_id).
tree_nodes = Table(
    "tree_nodes",
    metadata,
    Column("nid", _BigInt, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
    Index(
        "tree_leaf_unique",
        "hash",
        unique=True,
        sqlite_where=text(f"nid < {1 << LEVEL_SHIFT}"),
        postgresql_where=text(f"nid < {1 << LEVEL_SHIFT}"),
    ),
)

# Derived from node.register entries (rebuildable; ledger.check never trusts it).
registrations = Table(
    "registrations",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("idx", BigInteger, nullable=False),
    Column("ed25519", LargeBinary, nullable=False),
    Column("bls", LargeBinary, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("checkpoints_size", "size"),
)

conflicts = Table(
    "conflicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("a", LargeBinary, nullable=False),
    Column("b", LargeBinary, nullable=False),
    Column("reason", Text, nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", LargeBinary, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

# Blobs deleted by the retention rule (ledger.retention, `Ledger.prune`): one row per pruned digest, written
# in the same transaction as the deletion. A blob row can be deleted only once its digest is here (trigger).
pruned_blobs = Table(
    "pruned_blobs",
    metadata,
    Column("digest", LargeBinary, primary_key=True),
    Column("size", BigInteger, nullable=False),  # length of the original bytes
    Column("pruned_at", BigInteger, nullable=False),  # ms since the epoch, the operator's clock
)

_M1_TABLES = ("ledger_meta", "entries", "tree_nodes", "registrations", "checkpoints", "conflicts", "blobs")
APPEND_ONLY_TABLES = (*_M1_TABLES, "pruned_blobs")


# --- engines ---------------------------------------------------------------
def normalize_url(url: str) -> str:
    """Accept sqlite:///..., postgresql://... (driver forced to psycopg 3) or a bare file path."""
    if not isinstance(url, str) or not url:
        raise StorageError("ledger URL must be a non-empty string")
    if "://" not in url:
        return "sqlite:///" + os.path.abspath(url)
    try:
        u = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"bad ledger URL: {exc}") from exc
    backend = u.get_backend_name()
    if backend == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise StorageError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return u.render_as_string(hide_password=False)


def backend_of(engine: Engine) -> str:
    return engine.dialect.name


def make_engine(url: str) -> Engine:
    """An engine configured for the ledger (SQLite: WAL, busy timeout, explicit BEGIN IMMEDIATE for writes)."""
    url = normalize_url(url)
    u = make_url(url)
    try:
        if u.get_backend_name() == "sqlite":
            if u.database in (None, "", ":memory:"):
                raise StorageError("in-memory SQLite cannot be shared between connections; use a file")
            engine = create_engine(url, connect_args={"timeout": 120, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                # takes effect only on a new database (before its first table): pruned blob pages can then be
                # returned to the file system (`LogStorage.reclaim_space`); an older file reuses them instead
                cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=120000")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):  # type: ignore[no-untyped-def]
                immediate = conn.get_execution_options().get("ledger_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

            return engine
        return create_engine(url, pool_pre_ping=True)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot open {u.render_as_string()}: {exc}") from exc


_SQLITE_LOCKS: dict[str, tuple[threading.Lock, int]] = {}
_SQLITE_LOCKS_GUARD = threading.Lock()


@contextmanager
def _sqlite_append_lock(engine: Engine) -> Iterator[None]:
    """Writers queue on an flock of `<db>-lock` (woken at once on release) instead of
    SQLite's sleeping busy handler, which made 4 contending writers 10x slower."""
    path = engine.url.database or ""
    with _SQLITE_LOCKS_GUARD:
        if path not in _SQLITE_LOCKS:
            fd = os.open(path + "-lock", os.O_RDWR | os.O_CREAT, 0o644)
            _SQLITE_LOCKS[path] = (threading.Lock(), fd)
        tlock, fd = _SQLITE_LOCKS[path]
    with tlock:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _reset_locks_after_fork() -> None:
    global _SQLITE_LOCKS
    _SQLITE_LOCKS = {}  # an inherited fd shares the parent's flock: reopen in the child


os.register_at_fork(after_in_child=_reset_locks_after_fork)


@contextmanager
def write_tx(engine: Engine, lock: bool = True) -> Iterator[Connection]:
    """A write transaction; with `lock`, holds the ledger's append lock until commit."""
    sqlite_lock = lock and engine.dialect.name == "sqlite" and fcntl is not None
    with _sqlite_append_lock(engine) if sqlite_lock else nullcontext():
        with engine.connect() as conn:
            conn = conn.execution_options(ledger_write=True)
            with conn.begin():
                if lock and engine.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
                yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read transaction (a consistent snapshot on both engines)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


# --- triggers --------------------------------------------------------------
def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'shardproof ledger: {table} is append-only (UPDATE refused)'); END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'shardproof ledger: {table} is append-only (DELETE refused)'); END",
    ]


_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION shardproof_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'shardproof ledger: %% is append-only (%% refused)', TG_TABLE_NAME, TG_OP;
END
$$
"""


def _pg_triggers(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION shardproof_append_only()",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION shardproof_append_only()",
    ]


def trigger_names(dialect: str, table: str) -> list[str]:
    """Names of the append-only triggers on `table` (tests drop them to simulate an attacker)."""
    if dialect == "sqlite":
        return [f"{table}_no_update", f"{table}_no_delete"]
    return [f"{table}_append_only", f"{table}_no_truncate"]


def drop_trigger_sql(dialect: str, table: str) -> list[str]:
    """SQL that removes the append-only triggers of `table` (for tamper tests only)."""
    if dialect == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {n}" for n in trigger_names(dialect, table)]
    return [f"DROP TRIGGER IF EXISTS {n} ON {table}" for n in trigger_names(dialect, table)]


# --- migrations ------------------------------------------------------------
def _m1_initial(conn: Connection) -> None:
    for t in (ledger_meta, entries, tree_nodes, registrations, checkpoints, conflicts, blobs):
        t.create(conn, checkfirst=True)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql(_PG_FUNCTION)
    for t in _M1_TABLES:
        for stmt in _sqlite_triggers(t) if dialect == "sqlite" else _pg_triggers(t):
            conn.exec_driver_sql(stmt)


_BLOBS_DELETE_REFUSED = "shardproof ledger: blobs is append-only (DELETE refused)"

_PG_BLOBS_FUNCTION = """
CREATE OR REPLACE FUNCTION shardproof_blobs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM pruned_blobs WHERE digest = OLD.digest) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'shardproof ledger: %% is append-only (%% refused)', TG_TABLE_NAME, TG_OP;
END
$$
"""


def _m2_pruned_blobs(conn: Connection) -> None:
    """Blob retention: the pruned_blobs table (append-only), and blob rows deletable only once their
    digest is recorded there (in the same transaction: `LogWriter.prune_blobs`)."""
    pruned_blobs.create(conn, checkfirst=True)
    if conn.dialect.name == "sqlite":
        for stmt in _sqlite_triggers("pruned_blobs"):
            conn.exec_driver_sql(stmt)
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS blobs_no_delete")
        conn.exec_driver_sql(
            "CREATE TRIGGER blobs_no_delete BEFORE DELETE ON blobs "
            "WHEN NOT EXISTS (SELECT 1 FROM pruned_blobs WHERE digest = OLD.digest) "
            f"BEGIN SELECT RAISE(ABORT, '{_BLOBS_DELETE_REFUSED}'); END")
        return
    for stmt in _pg_triggers("pruned_blobs"):
        conn.exec_driver_sql(stmt)
    conn.exec_driver_sql(_PG_BLOBS_FUNCTION)
    conn.exec_driver_sql("DROP TRIGGER IF EXISTS blobs_append_only ON blobs")
    conn.exec_driver_sql("CREATE TRIGGER blobs_append_only BEFORE UPDATE OR DELETE ON blobs "
                         "FOR EACH ROW EXECUTE FUNCTION shardproof_blobs_append_only()")


Migration = tuple[int, str, Callable[[Connection], None]]
MIGRATIONS: list[Migration] = [
    (1, "initial schema: meta, entries, tree_nodes, registrations, checkpoints, conflicts, blobs; append-only triggers", _m1_initial),
    (2, "blob retention: pruned_blobs (append-only); a blob row may be deleted once its digest is recorded there",
     _m2_pruned_blobs),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(conn: Connection) -> int:
    """The highest applied migration (0 for an empty database)."""
    if not conn.dialect.has_table(conn, "schema_migrations"):
        return 0
    v = conn.execute(select(func.max(schema_migrations.c.version))).scalar()
    return int(v or 0)


def migrate(engine: Engine) -> int:
    """Apply pending migrations in order, under the write lock; returns the schema version."""
    try:
        with write_tx(engine) as conn:
            schema_migrations.create(conn, checkfirst=True)
            current = schema_version(conn)
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(f"database schema v{current} is newer than this code (v{SCHEMA_VERSION})")
            for version, name, fn in MIGRATIONS:
                if version > current:
                    fn(conn)
                    conn.execute(schema_migrations.insert().values(version=version, name=name))
        return SCHEMA_VERSION
    except SchemaVersionError:
        raise
    except SQLAlchemyError as exc:
        raise StorageError(f"migration failed: {exc}") from exc


# --- the storage interface -------------------------------------------------
# `ledger.log.Ledger` keeps the log's rules (validation, Merkle math, proofs,
# checkpoint checks, evidence); a LogStorage only keeps rows. Implementations:
# ledger.sql_storage (SQLite, PostgreSQL). Rows cross the interface as plain
# tuples: entries as ledger.check.EntryRow (idx, kind, author, job_id, node,
# data), tree nodes as (node_id, hash), registrations as RegRow, blobs as
# (digest, size, data), checkpoints as their encoded bytes.

RegRow = tuple[str, int, bytes, bytes]  # (node_id, index of its node.register entry, ed25519, bls)


class LogReader(ABC):
    """One read snapshot of a log's storage.

    Every read through one reader MUST see the same committed state: a reader
    never sees part of a transaction (entries without their tree nodes, a
    size without its entries), and never sees rows committed after it began.
    A LogWriter is a reader too and also sees its own uncommitted writes.
    """

    @abstractmethod
    def size(self) -> int:
        """Number of entries (largest index + 1; 0 when empty)."""

    @abstractmethod
    def meta(self) -> dict[str, bytes]:
        """The ledger's configuration rows (origin, hash, log key...); empty for an uninitialised store."""

    @abstractmethod
    def nodes(self, keys: Sequence[int]) -> dict[int, bytes]:
        """Stored complete-subtree hashes by node id (ledger.merkle.node_id); keys not stored are absent."""

    @abstractmethod
    def entries(self, *, start: int = 0, stop: int | None = None, job_id: str | None = None,
                kind: str | None = None, node: str | None = None, author: str | None = None,
                limit: int | None = None) -> list[tuple[int, bytes]]:
        """(index, encoded entry) with start <= index < stop matching every given column, in index order."""

    @abstractmethod
    def leaf_index(self, leaf_hashes: Sequence[bytes]) -> int | None:
        """The index of a stored leaf whose hash is one of `leaf_hashes`, or None."""

    @abstractmethod
    def registration(self, node_id: str) -> RegRow | None:
        """The registration row of `node_id`, or None."""

    @abstractmethod
    def registrations(self) -> list[RegRow]:
        """All registration rows in index order."""

    @abstractmethod
    def checkpoints(self) -> list[bytes]:
        """Every stored checkpoint (encoded), by size, then in the order they were stored."""

    @abstractmethod
    def latest_checkpoint(self) -> bytes | None:
        """The stored checkpoint with the largest size (the last stored among equals), or None."""

    @abstractmethod
    def checkpoint_rows(self) -> list[tuple[int, bytes, bytes]]:
        """(size, root, encoded checkpoint) as stored, for the integrity check (which never trusts size/root)."""

    @abstractmethod
    def conflicts(self) -> list[tuple[bytes, bytes, str]]:
        """Kept conflicting-checkpoint evidence: (a, b or b"", reason), in the order stored."""

    @abstractmethod
    def scan_entries(self, chunk: int) -> Iterator["EntryRow"]:
        """Every entry row in index order, fetched `chunk` rows at a time (gaps included as gaps)."""

    @abstractmethod
    def scan_nodes(self, leaves: bool, chunk: int) -> Iterator[tuple[int, bytes]]:
        """Every stored leaf (`leaves`) or interior tree node as (node_id, hash), by node id."""

    @abstractmethod
    def scan_blobs(self) -> Iterator[tuple[bytes, int, bytes]]:
        """Every stored blob as (digest, size, data), by digest, as stored (unverified, not decoded)."""

    @abstractmethod
    def pruned_blobs(self) -> list[tuple[bytes, int, int]]:
        """Every digest deleted by retention as (digest, size, pruned_at ms), by digest."""


class LogWriter(LogReader):
    """One write transaction: everything staged commits together or not at all.

    Nothing staged is visible to other readers before the commit; after it,
    all of it is (entries, their tree nodes and registrations never appear
    apart). A unique-key clash (index, leaf hash, node id, registration)
    MUST refuse the whole transaction with WriteConflict.
    """

    @abstractmethod
    def append_batch(self, entries: Sequence["EntryRow"], nodes: Sequence[tuple[int, bytes]],
                     regs: Sequence[RegRow]) -> None:
        """Stage entries (indexes contiguous from size()), the tree nodes they complete and their registrations.

        Once committed, waiters in `LogStorage.wait_for_new` (any process) MUST wake."""

    @abstractmethod
    def add_checkpoint(self, size: int, root: bytes, data: bytes) -> None:
        """Stage a signed checkpoint (already verified by the caller)."""

    @abstractmethod
    def add_conflict(self, a: bytes, b: bytes, reason: str) -> None:
        """Stage conflicting-checkpoint evidence."""

    @abstractmethod
    def set_meta(self, rows: dict[str, bytes]) -> None:
        """Stage configuration rows; keys are write-once."""

    @abstractmethod
    def prune_blobs(self, digests: Sequence[bytes], pruned_at: int) -> list[tuple[bytes, int, int]]:
        """Stage the deletion of the stored blobs among `digests`, each recorded in pruned_blobs (digest,
        size, `pruned_at` ms; a digest recorded before keeps its first record); returns (digest, size,
        stored size) of what is deleted. The only deletion a store allows (specs/ledger.md section 6.1)."""


class LogStorage(ABC):
    """Where a log's rows live. MUST guarantee:

    - ordering: locked write transactions (`transaction()`) are serialised
      across every handle and process on the same store, so size() read inside
      one is the index the next appended entry gets;
    - atomicity: a transaction commits all it staged or nothing;
    - readers (`snapshot()`) see only whole committed transactions, and a
      reader that starts after a commit sees it;
    - append-only: nothing committed is ever changed or removed through it, except the bytes of blobs
      that `prune_blobs` deletes, each recorded in pruned_blobs in the same transaction.
    """

    backend: str  # "sqlite", "postgresql", ...
    url: str

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[LogReader]:
        """A read snapshot (see LogReader); storage failures raise StorageError."""

    @abstractmethod
    def transaction(self, lock: bool = True) -> AbstractContextManager[LogWriter]:
        """A write transaction, committed when the block exits normally and rolled back on an exception.

        With `lock` it holds the log's append lock (ordering above); without, it
        may only stage rows that do not depend on the log's size."""

    def size(self) -> int:
        """Number of committed entries."""
        with self.snapshot() as r:
            return r.size()

    @abstractmethod
    def put_blobs(self, rows: Sequence[tuple[bytes, int, bytes]]) -> None:
        """Store (digest, size, data) rows in one transaction; a digest already stored is left as it is.
        `data` is the stored form (ledger.blobs.pack_blob), `size` the length of the original bytes."""

    @abstractmethod
    def get_blob(self, digest: bytes) -> tuple[int, bytes] | None:
        """(size, stored form) under `digest` (unverified, not decoded: ledger.blobs.unpack_blob), or None."""

    @abstractmethod
    def missing_blobs(self, digests: Sequence[bytes]) -> list[bytes]:
        """The digests among `digests` that are not stored, in the given order."""

    @abstractmethod
    def blob_sizes(self, digests: Sequence[bytes]) -> dict[bytes, tuple[int, int]]:
        """(size of the original bytes, size as stored) of each stored blob among `digests`."""

    def reclaim_space(self) -> None:
        """Give the space of deleted rows back to the file system where the engine can do it cheaply
        (SQLite created with incremental auto-vacuum); elsewhere the engine reuses it for later rows."""

    def space_in_use(self) -> int | None:
        """Bytes of the store in use by rows (SQLite: pages in use, WAL included), None if unknown."""
        return None

    @abstractmethod
    def wait_for_new(self, after_size: int, timeout: float, stop: threading.Event | None = None) -> int:
        """Block until the committed size exceeds `after_size`, `timeout` seconds pass or `stop` is set
        (honoured within a fraction of a second); returns the size last read.

        Waiting MUST be cheap (no busy loop: an idle waiter costs well under 1% of
        a core) and MUST see appends made by other processes."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (and any waiter's resources)."""
