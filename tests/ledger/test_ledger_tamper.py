"""Tampering by raw SQL (after dropping the append-only triggers) is caught by `verify ledger-check` at the right index."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
from sqlalchemy import text

from cli.verify import main as verify_main
from ledger import entries as E
from ledger import merkle, storage
from ledger.log import Ledger

from .conftest import ident, step

BLOB = b"model manifest bytes" * 20


@pytest.fixture
def sealed(ledger):
    """30 entries: registrations 0-2, steps, a blob-referencing model entry at 12, a stored checkpoint at 18,
    and a logged checkpoint (entry at index 30)."""
    d = ledger.put_blob(BLOB)
    ledger.append_many([step("alice", i) for i in range(3, 12)])
    ledger.append(E.make_entry(ident("alice"), E.MODEL, {"model_id": "m", "manifest": d, "n_shares": 3, "commitments": b"\x01" * 32}))
    ledger.append_many([step("bob", i) for i in range(13, 18)])
    ledger.checkpoint(log_entry=False)  # size 18
    ledger.append_many([step("alice", i) for i in range(18, 30)])
    ledger.checkpoint()  # size 30, logged at index 30
    assert ledger.size() == 31
    ledger.blob_digest = d
    return ledger


def run_check(url: str) -> tuple[int, dict]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = verify_main(["ledger-check", "--ledger", url, "--json"])
    return rc, json.loads(out.getvalue())


def sql(led: Ledger, *stmts: str, **params) -> None:
    with led.engine.begin() as c:
        for t in storage.APPEND_ONLY_TABLES:
            for s in storage.drop_trigger_sql(led.backend, t):
                c.execute(text(s))
        for s in stmts:
            c.execute(text(s), params)


def test_clean_ledger_passes(sealed):
    rc, rep = run_check(sealed.url)
    assert rc == 0 and rep["ok"] and rep["size"] == 31 and rep["checkpoints"] == 3


def test_changed_entry(sealed):
    sql(sealed, "UPDATE entries SET data = :d WHERE idx = 10", d=step("alice", 999).encode())
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 10, rep["findings"]


def test_flipped_byte(sealed):
    le = sealed.get(7)
    data = bytearray(le.data)
    data[le.data.index(le.entry.sig) + 5] ^= 1  # inside the signature
    sql(sealed, "UPDATE entries SET data = :d WHERE idx = 7", d=bytes(data))
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 7
    assert any("signature" in f["reason"] for f in rep["findings"])


def test_changed_index_column(sealed):
    sql(sealed, "UPDATE entries SET job_id = 'other' WHERE idx = 5")
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 5 and "columns" in rep["reason"]


def test_deleted_entry(sealed):
    sql(sealed, "DELETE FROM entries WHERE idx = 12")
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 12


def test_reordered_entries(sealed):
    sql(
        sealed,
        "UPDATE entries SET idx = -1 WHERE idx = 15",
        "UPDATE entries SET idx = 15 WHERE idx = 16",
        "UPDATE entries SET idx = 16 WHERE idx = -1",
    )
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 15


def test_truncated_log(sealed):
    sql(sealed, "DELETE FROM entries WHERE idx >= 25")
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 25


def test_truncated_log_and_tree(sealed):
    """Rows and their tree nodes removed consistently: only the signed checkpoint catches it."""
    keep = [merkle.node_id(lv, i) for lv in range(0, 6) for i in range(0, 1 << 10) if (i + 1) << lv <= 25]
    sql(sealed, "DELETE FROM entries WHERE idx >= 25", f"DELETE FROM tree_nodes WHERE nid NOT IN ({','.join(map(str, keep))})")
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 25 and "truncated" in rep["reason"]


def test_swapped_blob_bytes(sealed):
    sql(sealed, "UPDATE blobs SET data = :d WHERE digest = :k", d=b"evil manifest", k=sealed.blob_digest)
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 12 and "blob" in rep["reason"]


def test_deleted_blob(sealed):
    sql(sealed, "DELETE FROM blobs")
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 12 and "missing" in rep["reason"]


def test_consistent_rewrite_caught_by_checkpoint(sealed):
    """An attacker who rewrites entry 20 AND recomputes the whole tree table: the signed checkpoint
    at size 30 no longer matches; the one at 18 still does, so the bad range starts at 18."""
    datas = [e.data for e in sealed.read()]
    datas[20] = step("alice", 777).encode()
    f = merkle.MerkleFrontier(hash_name=sealed.hash_name)
    nodes = [(merkle.node_id(lv, i), h) for d in datas for lv, i, h in f.append(merkle.leaf_hash(d))]
    stmts = ["DELETE FROM tree_nodes", "UPDATE entries SET data = :d WHERE idx = 20"]
    sql(sealed, *stmts, d=datas[20])
    with sealed.engine.begin() as c:
        c.execute(storage.tree_nodes.insert(), [{"nid": n, "hash": h} for n, h in nodes])
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 18 and "checkpoint" in rep["reason"], rep


def test_changed_interior_node(sealed):
    sql(sealed, "UPDATE tree_nodes SET hash = :h WHERE nid = :n", h=b"\x00" * 32, n=merkle.node_id(2, 3))
    rc, rep = run_check(sealed.url)
    assert rc == 1 and rep["first_bad_index"] == 12


def test_cannot_run_exit_2(tmp_path):
    rc, rep = run_check(f"sqlite:///{tmp_path / 'none.db'}")
    assert rc == 2 and rep["ok"] is None
