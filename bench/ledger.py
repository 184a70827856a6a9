"""Ledger benchmark: signed appends/s (SQLite and PostgreSQL, 1 and 4 writers), inclusion-proof time
at 1e5 and 1e6 entries, ledger-check time per 1e5 entries.

    .venv/bin/python bench/ledger.py [--json PATH] [--quick]

What is measured, honestly:
- "signed appends/s": end to end per entry: build + Ed25519-sign a step.commit entry whose body
  encodes to 200 bytes, then Ledger.append_many in batches of --batch (one transaction each),
  which re-validates the CBOR, re-verifies the signature and writes entry + tree-node rows.
  With 4 writers the 4 processes share this machine's cores (os.cpu_count() is reported).
- proof at 1e5: a real ledger of 1e5 signed entries built by batch append (SQLite).
- proof at 1e6: the tree_nodes table is written directly from 1e6 synthetic leaf hashes by the
  same MerkleFrontier that append uses (no entry rows, no signatures), because signing 1e6
  entries takes minutes; the proof path (O(log n) node lookups in one query) is identical.
- PostgreSQL: a throwaway server started here with default durability (fsync on).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from blake3 import blake3  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ledger import entries as E  # noqa: E402
from ledger import merkle  # noqa: E402
from ledger.keys import Identity  # noqa: E402
from ledger.log import Ledger  # noqa: E402
from ledger.pgserver import TempPostgres, find_bin_dir  # noqa: E402
from mpc_core.encoding import canonical_cbor  # noqa: E402

LOG = Identity("log", b"\x01" * 32)


def ident(name: str) -> Identity:
    return Identity(name, blake3(name.encode()).digest())


def body(name: str, i: int) -> dict:
    b = {"job_id": "bench", "node": name, "party": 0, "first_step": i, "count": 1, "root": blake3(i.to_bytes(8, "big")).digest()}
    pad = 200 - len(canonical_cbor({**b, "meta": {"pad": b""}}))
    b["meta"] = {"pad": b"\x00" * max(0, pad - (1 if pad > 23 else 0) - (1 if pad > 255 else 0))}
    return b


def writer(url: str, name: str, n: int, batch: int, start: int, q) -> None:  # type: ignore[no-untyped-def]
    led = Ledger.open(url)
    me = ident(name)
    t0 = time.perf_counter()
    for k in range(0, n, batch):
        led.append_many([E.make_entry(me, E.STEP_COMMIT, body(name, start + i)) for i in range(k, min(n, k + batch))])
    q.put(time.perf_counter() - t0)
    led.close()


def appends(url: str, writers: int, n_total: int, batch: int) -> dict:
    led = Ledger.open(url, origin="bench", log_identity=LOG)
    names = [f"w{os.getpid()}-{writers}-{i}-{time.time_ns()}" for i in range(writers)]
    led.append_many([E.registration(ident(n)) for n in names])
    before = led.size()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    per = n_total // writers
    t0 = time.perf_counter()
    ps = [ctx.Process(target=writer, args=(led.url, n, per, batch, 0, q)) for n in names]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    if any(p.exitcode != 0 for p in ps):
        raise RuntimeError("a writer failed")
    added = led.size() - before
    led.close()
    return {"writers": writers, "entries": added, "batch": batch, "seconds": round(wall, 3), "appends_per_s": round(added / wall)}


def proof_times(led: Ledger, size: int, root: bytes, n: int = 500) -> dict:
    rng = random.Random(1)
    ts = []
    for _ in range(n):
        i = rng.randrange(size)
        t0 = time.perf_counter()
        p = led.inclusion_proof(i, size)
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return {
        "size": size,
        "proofs": n,
        "mean_ms": round(statistics.mean(ts) * 1e3, 4),
        "p50_ms": round(ts[len(ts) // 2] * 1e3, 4),
        "p99_ms": round(ts[int(len(ts) * 0.99)] * 1e3, 4),
        "proof_len": len(p),
        "root": root.hex(),
    }


def build_1e6_direct(path: str, n: int) -> bytes:
    """Write tree_nodes for n synthetic leaves exactly as appends would (fast path, no entries)."""
    Ledger.open(f"sqlite:///{path}", origin="bench-direct").close()
    f = merkle.MerkleFrontier()
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    rows = []
    for i in range(n):
        for lv, idx, h in f.append(merkle.leaf_hash(i.to_bytes(8, "big"))):
            rows.append((merkle.node_id(lv, idx), h))
        if len(rows) > 200_000:
            con.executemany("INSERT INTO tree_nodes(nid, hash) VALUES (?, ?)", rows)
            rows = []
    con.executemany("INSERT INTO tree_nodes(nid, hash) VALUES (?, ?)", rows)
    con.commit()
    con.close()
    return f.root()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    n_app = 4000 if args.quick else 20000
    n_big = 5000 if args.quick else 100_000
    n_huge = 20000 if args.quick else 1_000_000
    tmp = tempfile.mkdtemp(prefix="shardproof-bench-")
    con = Console()
    res: dict = {"cpu_count": os.cpu_count(), "batch": args.batch, "body_bytes": len(canonical_cbor(body("w", 1))), "quick": args.quick}

    con.print("[bold]signed appends, SQLite[/]")
    res["sqlite_1"] = appends(f"sqlite:///{tmp}/a1.db", 1, n_app, args.batch)
    res["sqlite_4"] = appends(f"sqlite:///{tmp}/a4.db", 4, n_app, args.batch)
    res["sqlite_1_single"] = appends(f"sqlite:///{tmp}/a1s.db", 1, n_app // 10, 1)
    if not args.no_postgres and find_bin_dir():
        con.print("[bold]signed appends, PostgreSQL (throwaway server, fsync on)[/]")
        with TempPostgres(fast=False) as pg:
            res["postgres_1"] = appends(pg.create_database("b1"), 1, n_app, args.batch)
            res["postgres_4"] = appends(pg.create_database("b4"), 4, n_app, args.batch)
            res["postgres_1_single"] = appends(pg.create_database("b1s"), 1, n_app // 10, 1)

    con.print(f"[bold]building a real {n_big}-entry ledger (signed, batch append)[/]")
    big = f"sqlite:///{tmp}/big.db"
    res["build_big"] = appends(big, 1, n_big, 1000)
    led = Ledger.open(big)
    res["proof_1e5"] = proof_times(led, led.size(), led.root())
    data = [e.data for e in led.read(0, 10)]
    assert_ok = merkle.verify_inclusion(data[3], 3, led.size(), led.inclusion_proof(3), led.root())
    res["proof_1e5"]["verified"] = bool(assert_ok)
    con.print("[bold]ledger-check on it[/]")
    rep = led.check()
    res["check"] = {"entries": rep.entries, "seconds": round(rep.seconds, 2), "ok": rep.ok,
                    "seconds_per_1e5": round(rep.seconds * 100_000 / max(1, rep.entries), 2)}
    led.close()

    con.print(f"[bold]writing tree nodes for {n_huge} synthetic leaves (direct fast path)[/]")
    t0 = time.perf_counter()
    huge = f"{tmp}/huge.db"
    root = build_1e6_direct(huge, n_huge)
    res["build_1e6_direct_s"] = round(time.perf_counter() - t0, 1)
    led = Ledger.open(f"sqlite:///{huge}")
    pr = proof_times(led, n_huge, root)
    i = 123_457 % n_huge
    p = led.inclusion_proof(i, n_huge)
    pr["verified"] = merkle.verify_inclusion(i.to_bytes(8, "big"), i, n_huge, p, root)
    res["proof_1e6"] = pr
    led.close()

    t = Table(title=f"shardproof ledger benchmark ({os.cpu_count()} CPU cores{', quick' if args.quick else ''})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("notes")
    for key, label in [("sqlite_1", "SQLite, 1 writer"), ("sqlite_4", "SQLite, 4 writers"),
                       ("sqlite_1_single", "SQLite, 1 writer, 1 entry/tx"), ("postgres_1", "PostgreSQL, 1 writer"),
                       ("postgres_4", "PostgreSQL, 4 writers"), ("postgres_1_single", "PostgreSQL, 1 writer, 1 entry/tx")]:
        if key in res:
            r = res[key]
            t.add_row(f"signed appends/s, {label}", f"{r['appends_per_s']:,}", f"{r['entries']} entries, batch {r['batch']}, {r['seconds']} s")
    for key, label in [("proof_1e5", "real signed ledger"), ("proof_1e6", "tree_nodes written directly")]:
        r = res[key]
        t.add_row(f"inclusion proof at {r['size']:,}", f"{r['mean_ms']} ms", f"mean of {r['proofs']}; p99 {r['p99_ms']} ms; {label}; verified={r['verified']}")
    c = res["check"]
    t.add_row("ledger-check per 1e5 entries", f"{c['seconds_per_1e5']} s", f"{c['entries']} entries in {c['seconds']} s, ok={c['ok']}")
    con.print(t)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
