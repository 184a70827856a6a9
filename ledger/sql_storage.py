"""LogStorage on SQL databases (SQLAlchemy 2): SQLite (WAL) and PostgreSQL (psycopg 3).

Both keep the schema of ledger.storage. They differ in how a writer is
serialised (an flock plus BEGIN IMMEDIATE on SQLite, an advisory lock on
PostgreSQL) and in how a waiter learns of new entries: on PostgreSQL every
append NOTIFYs in its transaction (delivered at commit) and waiters LISTEN;
on SQLite waiters poll `PRAGMA data_version` (changes when another connection
commits) on a private connection, backing off to about one second when idle,
and read the size only when it changed.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from sqlalchemy import Connection, Engine, and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ledger import storage as S
from ledger.check import EntryRow
from ledger.errors import LedgerError, StorageError, WriteConflict
from ledger.merkle import LEVEL_SHIFT

_LEAF_LIMIT = 1 << LEVEL_SHIFT  # node ids below this are leaves


class SqlReader(S.LogReader):
    """A LogReader over one SQLAlchemy connection inside a transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def size(self) -> int:
        v = self.conn.execute(select(func.max(S.entries.c.idx))).scalar()
        return 0 if v is None else int(v) + 1

    def meta(self) -> dict[str, bytes]:
        t = S.ledger_meta
        return {str(k): bytes(v) for k, v in self.conn.execute(select(t.c.key, t.c.value)).all()}

    def nodes(self, keys: Sequence[int]) -> dict[int, bytes]:
        if not keys:
            return {}
        t = S.tree_nodes
        return {int(r[0]): bytes(r[1]) for r in self.conn.execute(select(t.c.nid, t.c.hash).where(t.c.nid.in_(list(keys))))}

    def entries(self, *, start: int = 0, stop: int | None = None, job_id: str | None = None,
                kind: str | None = None, node: str | None = None, author: str | None = None,
                limit: int | None = None) -> list[tuple[int, bytes]]:
        t = S.entries
        q = select(t.c.idx, t.c.data).where(t.c.idx >= start)
        for col, want in ((t.c.job_id, job_id), (t.c.kind, kind), (t.c.node, node), (t.c.author, author)):
            if want is not None:
                q = q.where(col == want)
        if stop is not None:
            q = q.where(t.c.idx < stop)
        q = q.order_by(t.c.idx)
        if limit is not None:
            q = q.limit(limit)
        return [(int(r[0]), bytes(r[1])) for r in self.conn.execute(q).all()]

    def leaf_index(self, leaf_hashes: Sequence[bytes]) -> int | None:
        t = S.tree_nodes
        row = self.conn.execute(
            select(t.c.nid).where(and_(t.c.hash.in_(list(leaf_hashes)), t.c.nid < _LEAF_LIMIT))
        ).first()
        return None if row is None else int(row[0])

    def registration(self, node_id: str) -> S.RegRow | None:
        t = S.registrations
        r = self.conn.execute(select(t.c.node_id, t.c.idx, t.c.ed25519, t.c.bls).where(t.c.node_id == node_id)).first()
        return None if r is None else (r[0], int(r[1]), bytes(r[2]), bytes(r[3]))

    def registrations(self) -> list[S.RegRow]:
        t = S.registrations
        rows = self.conn.execute(select(t.c.node_id, t.c.idx, t.c.ed25519, t.c.bls).order_by(t.c.idx)).all()
        return [(r[0], int(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    def checkpoints(self) -> list[bytes]:
        t = S.checkpoints
        return [bytes(r[0]) for r in self.conn.execute(select(t.c.data).order_by(t.c.size, t.c.id)).all()]

    def latest_checkpoint(self) -> bytes | None:
        t = S.checkpoints
        row = self.conn.execute(select(t.c.data).order_by(t.c.size.desc(), t.c.id.desc()).limit(1)).first()
        return None if row is None else bytes(row[0])

    def checkpoint_rows(self) -> list[tuple[int, bytes, bytes]]:
        c = S.checkpoints
        return [(int(x[0]), bytes(x[1]), bytes(x[2])) for x in self.conn.execute(select(c.c.size, c.c.root, c.c.data))]

    def conflicts(self) -> list[tuple[bytes, bytes, str]]:
        t = S.conflicts
        rows = self.conn.execute(select(t.c.a, t.c.b, t.c.reason).order_by(t.c.id)).all()
        return [(bytes(a), bytes(b), str(r)) for a, b, r in rows]

    def _top(self) -> int:
        e, tn = S.entries, S.tree_nodes
        return max(
            self.conn.execute(select(func.max(e.c.idx))).scalar() or 0,
            self.conn.execute(select(func.max(tn.c.nid)).where(tn.c.nid < _LEAF_LIMIT)).scalar() or 0,
        )

    def scan_entries(self, chunk: int) -> Iterator[EntryRow]:
        e = S.entries
        q = select(e.c.idx, e.c.kind, e.c.author, e.c.job_id, e.c.node, e.c.data)
        for a in range(0, self._top() + 1, chunk):
            for r in self.conn.execute(q.where(e.c.idx >= a, e.c.idx < a + chunk).order_by(e.c.idx)).all():
                yield EntryRow(int(r[0]), r[1], r[2], r[3], r[4], bytes(r[5]))

    def scan_nodes(self, leaves: bool, chunk: int) -> Iterator[tuple[int, bytes]]:
        tn = S.tree_nodes
        if leaves:
            for a in range(0, self._top() + 1, chunk):
                q = select(tn.c.nid, tn.c.hash).where(tn.c.nid >= a, tn.c.nid < min(a + chunk, _LEAF_LIMIT))
                for r in self.conn.execute(q.order_by(tn.c.nid)).all():
                    yield int(r[0]), bytes(r[1])
            return
        last = _LEAF_LIMIT - 1
        while True:
            rows = self.conn.execute(select(tn.c.nid, tn.c.hash).where(tn.c.nid > last).order_by(tn.c.nid).limit(chunk)).all()
            if not rows:
                return
            for r in rows:
                yield int(r[0]), bytes(r[1])
            last = int(rows[-1][0])

    def scan_blobs(self) -> Iterator[tuple[bytes, int, bytes]]:
        b = S.blobs
        last = b""
        while True:
            q = select(b.c.digest, b.c.size, b.c.data).where(b.c.digest > last).order_by(b.c.digest).limit(64)
            rows = self.conn.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield bytes(r[0]), int(r[1]), bytes(r[2])
            last = bytes(rows[-1][0])

    def pruned_blobs(self) -> list[tuple[bytes, int, int]]:
        t = S.pruned_blobs
        rows = self.conn.execute(select(t.c.digest, t.c.size, t.c.pruned_at).order_by(t.c.digest)).all()
        return [(bytes(r[0]), int(r[1]), int(r[2])) for r in rows]


class SqlWriter(SqlReader, S.LogWriter):
    """A LogWriter over one SQLAlchemy connection inside a write transaction."""

    def append_batch(self, entries: Sequence[EntryRow], nodes: Sequence[tuple[int, bytes]],
                     regs: Sequence[S.RegRow]) -> None:
        if not entries:
            return
        self.conn.execute(S.entries.insert(), [r._asdict() for r in entries])
        if nodes:
            self.conn.execute(S.tree_nodes.insert(), [{"nid": n, "hash": h} for n, h in nodes])
        if regs:
            self.conn.execute(S.registrations.insert(),
                              [{"node_id": n, "idx": i, "ed25519": ed, "bls": bls} for n, i, ed, bls in regs])
        self._appended(entries[-1].idx + 1)

    def _appended(self, new_size: int) -> None:
        """Hook: the batch is staged and the log will have `new_size` entries once it commits."""

    def add_checkpoint(self, size: int, root: bytes, data: bytes) -> None:
        self.conn.execute(S.checkpoints.insert().values(size=size, root=root, data=data))

    def add_conflict(self, a: bytes, b: bytes, reason: str) -> None:
        self.conn.execute(S.conflicts.insert().values(a=a, b=b, reason=reason))

    def set_meta(self, rows: dict[str, bytes]) -> None:
        if rows:
            self.conn.execute(S.ledger_meta.insert(), [{"key": k, "value": v} for k, v in rows.items()])

    def prune_blobs(self, digests: Sequence[bytes], pruned_at: int) -> list[tuple[bytes, int, int]]:
        want = list(dict.fromkeys(bytes(d) for d in digests))
        b, pb = S.blobs, S.pruned_blobs
        out: list[tuple[bytes, int, int]] = []
        for k in range(0, len(want), 500):
            part = want[k:k + 500]
            rows = self.conn.execute(select(b.c.digest, b.c.size, func.length(b.c.data)).where(b.c.digest.in_(part))).all()
            if not rows:
                continue
            known = {bytes(x[0]) for x in self.conn.execute(select(pb.c.digest).where(pb.c.digest.in_(part)))}
            new = [{"digest": bytes(x[0]), "size": int(x[1]), "pruned_at": int(pruned_at)} for x in rows
                   if bytes(x[0]) not in known]
            if new:
                self.conn.execute(pb.insert(), new)
            self.conn.execute(b.delete().where(b.c.digest.in_([bytes(x[0]) for x in rows])))
            out += [(bytes(x[0]), int(x[1]), int(x[2])) for x in rows]
        return out


class _PgWriter(SqlWriter):
    def _appended(self, new_size: int) -> None:
        # delivered to listeners when (and only if) the transaction commits
        self.conn.exec_driver_sql(f"SELECT pg_notify('{S.NOTIFY_CHANNEL}', '{int(new_size)}')")


class SqlStorage(S.LogStorage):
    """The SQL implementation shared by both engines (see the subclasses for waiting)."""

    _writer = SqlWriter

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.backend = engine.dialect.name

    @contextmanager
    def snapshot(self) -> Iterator[SqlReader]:
        try:
            with S.read_tx(self.engine) as conn:
                yield SqlReader(conn)
        except SQLAlchemyError as exc:
            raise StorageError(f"read failed: {exc}") from exc

    @contextmanager
    def transaction(self, lock: bool = True) -> Iterator[SqlWriter]:
        try:
            with S.write_tx(self.engine, lock=lock) as conn:
                yield self._writer(conn)
        except IntegrityError as exc:
            raise WriteConflict(f"write refused by the database: {exc}") from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"write failed: {exc}") from exc

    def put_blobs(self, rows: Sequence[tuple[bytes, int, bytes]]) -> None:
        if not rows:
            return
        ins = sqlite_insert if self.backend == "sqlite" else pg_insert
        stmt = ins(S.blobs).on_conflict_do_nothing(index_elements=["digest"])
        try:
            with S.write_tx(self.engine, lock=False) as conn:
                conn.execute(stmt, [{"digest": d, "size": n, "data": b} for d, n, b in rows])
        except SQLAlchemyError as exc:
            raise StorageError(f"blob write failed: {exc}") from exc

    def get_blob(self, digest: bytes) -> tuple[int, bytes] | None:
        with self.snapshot() as r:
            row = r.conn.execute(select(S.blobs.c.size, S.blobs.c.data).where(S.blobs.c.digest == bytes(digest))).first()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def missing_blobs(self, digests: Sequence[bytes]) -> list[bytes]:
        want = list(dict.fromkeys(bytes(d) for d in digests))
        if not want:
            return []
        with self.snapshot() as r:
            have = {bytes(x[0]) for x in r.conn.execute(select(S.blobs.c.digest).where(S.blobs.c.digest.in_(want)))}
        return [d for d in want if d not in have]

    def blob_sizes(self, digests: Sequence[bytes]) -> dict[bytes, tuple[int, int]]:
        want = list(dict.fromkeys(bytes(d) for d in digests))
        b = S.blobs
        out: dict[bytes, tuple[int, int]] = {}
        with self.snapshot() as r:
            for k in range(0, len(want), 500):
                q = select(b.c.digest, b.c.size, func.length(b.c.data)).where(b.c.digest.in_(want[k:k + 500]))
                out.update({bytes(x[0]): (int(x[1]), int(x[2])) for x in r.conn.execute(q)})
        return out

    def wait_for_new(self, after_size: int, timeout: float, stop: threading.Event | None = None) -> int:
        raise NotImplementedError

    def close(self) -> None:
        self.engine.dispose()


def _sleep(seconds: float, stop: threading.Event | None) -> None:
    if stop is not None:
        stop.wait(seconds)
    else:
        time.sleep(seconds)


class SqliteStorage(SqlStorage):
    """SQLite file in WAL mode; waiters poll PRAGMA data_version with a backoff."""

    MIN_POLL_S = 0.01
    MAX_POLL_S = 1.0

    def __init__(self, engine: Engine, url: str) -> None:
        super().__init__(engine, url)
        self._local = threading.local()
        self._watchers: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _data_version(self) -> int:
        w = getattr(self._local, "conn", None)
        if w is None:
            w = sqlite3.connect(self.engine.url.database or "", timeout=5, isolation_level=None,
                                check_same_thread=False)
            self._local.conn = w
            with self._guard:
                self._watchers.append(w)
        return int(w.execute("PRAGMA data_version").fetchone()[0])

    def wait_for_new(self, after_size: int, timeout: float, stop: threading.Event | None = None) -> int:
        deadline = time.monotonic() + timeout
        try:
            version = self._data_version()  # baseline before the size read: a later commit changes it
        except sqlite3.Error as exc:
            raise StorageError(f"cannot watch {self.url}: {exc}") from exc
        n = self.size()
        interval = self.MIN_POLL_S
        while n <= after_size and not (stop is not None and stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _sleep(min(interval, left), stop)
            interval = min(interval * 2, self.MAX_POLL_S)
            try:
                v = self._data_version()
            except sqlite3.Error:
                v = version + 1  # cannot tell: read the size
            if v != version:
                version = v
                n = self.size()
        return n

    def space_in_use(self) -> int | None:
        with self.snapshot() as r:
            page = int(r.conn.exec_driver_sql("PRAGMA page_size").scalar() or 0)
            count = int(r.conn.exec_driver_sql("PRAGMA page_count").scalar() or 0)
            free = int(r.conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0)
        return (count - free) * page

    def reclaim_space(self) -> None:
        raw = self.engine.raw_connection()
        try:
            conn = raw.driver_connection
            if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:  # incremental
                # executescript steps the pragma to completion (one execute() frees a single page)
                conn.executescript("PRAGMA incremental_vacuum;")
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot reclaim space in {self.url}: {exc}") from exc
        finally:
            raw.close()

    def close(self) -> None:
        with self._guard:
            watchers, self._watchers = self._watchers, []
        for w in watchers:
            try:
                w.close()
            except sqlite3.Error:
                pass
        super().close()


class PostgresStorage(SqlStorage):
    """PostgreSQL; appends NOTIFY at commit and waiters LISTEN (one connection per waiting thread)."""

    _writer = _PgWriter
    SLICE_S = 0.25  # how often a waiter looks at `stop`
    SAFETY_POLL_S = 5.0  # re-read the size this often even without notifications

    def __init__(self, engine: Engine, url: str) -> None:
        super().__init__(engine, url)
        self._local = threading.local()
        self._listeners: list[Any] = []
        self._guard = threading.Lock()

    def _listener(self) -> Any:
        c = getattr(self._local, "conn", None)
        if c is None or c.closed:
            import psycopg

            u = make_url(self.url).set(drivername="postgresql")
            c = psycopg.connect(u.render_as_string(hide_password=False), autocommit=True)
            c.execute(f"LISTEN {S.NOTIFY_CHANNEL}")
            self._local.conn = c
            with self._guard:
                self._listeners.append(c)
        return c

    def wait_for_new(self, after_size: int, timeout: float, stop: threading.Event | None = None) -> int:
        deadline = time.monotonic() + timeout
        try:
            conn = self._listener()  # listening before the size read: a later commit notifies
        except Exception as exc:  # noqa: BLE001 - psycopg's errors: surface as the ledger's
            raise StorageError(f"cannot LISTEN on {make_url(self.url).render_as_string()}: {exc}") from exc
        n = self.size()
        last_read = time.monotonic()
        while n <= after_size and not (stop is not None and stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            woke = False
            try:
                for _ in conn.notifies(timeout=min(left, self.SLICE_S), stop_after=1):
                    woke = True
            except Exception:  # noqa: BLE001 - a dropped listener: reconnect next time, poll meanwhile
                self._local.conn = None
                _sleep(min(left, self.SLICE_S), stop)
                woke = True
            if woke or time.monotonic() - last_read >= self.SAFETY_POLL_S:
                n = self.size()
                last_read = time.monotonic()
        return n

    def close(self) -> None:
        with self._guard:
            listeners, self._listeners = self._listeners, []
        for c in listeners:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        super().close()


def open_storage(url: str, create: bool = True) -> SqlStorage:
    """The store at `url` (sqlite:///path, postgresql://..., or a path), migrated to the current schema.

    Without `create`, a store that does not exist or was never initialised raises StorageError."""
    url = S.normalize_url(url)
    if not create and url.startswith("sqlite"):
        if not os.path.exists(make_url(url).database or ""):
            raise StorageError(f"no ledger at {url}")
    engine = S.make_engine(url)
    if not create:
        try:
            with S.read_tx(engine) as conn:
                version = S.schema_version(conn)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StorageError(f"cannot read {url}: {exc}") from exc
        if version == 0:
            engine.dispose()
            raise StorageError(f"no ledger at {url}")
    try:
        S.migrate(engine)
    except LedgerError:
        engine.dispose()
        raise
    cls = SqliteStorage if engine.dialect.name == "sqlite" else PostgresStorage
    return cls(engine, url)
