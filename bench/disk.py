"""Disk per job: ledger growth, node job data (before and after gc) and dealer state, split by what takes it.

    .venv/bin/python bench/disk.py [--tokens 32] [--parties 3] [--json bench/results/disk.json]

A dealer + N `prover serve` processes on loopback (sim.process_network), the shipped model
(models.TINY_MODEL_DIR). A 1-token warm-up job (the nodes fetch their shares; not counted; audited
and pruned before the measured job starts), then the measured job of `--tokens` tokens, audited once
so its openings and the dealer's release exist, then `shardproof ledger prune --keep-days 0`.

What is measured:
- ledger: the SQLite database's logical size (pages in use, WAL included) before the job, after it
  ran, after its audit (the growth while its audit window is open) and after the log operator's
  prune (the permanent growth); the job's entries (encoded bytes by kind) and the blobs they
  reference (stored bytes and original bytes, by the kind of the referencing entry), before and
  after the prune; the opening blobs split into the nodes' own blobs and the public-values blob,
  and what they would take without the dedupe (every opening carrying its public values).
- node: data_dir/jobs/<job> of every node, by file kind (spill files, state, secret, status), then
  after `prover gc --keep-days 0` (when that command exists); the model share (per model, once).
- dealer: data_dir/dealer/dealer-<job>.cbor and the releases it serves (data_dir/dealer/served/<job>/), then
  after `shardproof dealer gc --keep-days 0`. Nodes serve their openings and the dealer its release by
  default (specs/audit.md section 3): they count on their disks until gc, and only their digests on the ledger.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine, print_table, write_json

from models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer
from sim.process_network import ProcessNetwork

PROMPT = "And the LORD said unto Moses,"
MB = 1e6


def db_bytes(path: Path) -> int:
    """Pages in use of a SQLite database (the WAL's committed pages included: a fresh connection sees them)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page = con.execute("PRAGMA page_size").fetchone()[0]
        count = con.execute("PRAGMA page_count").fetchone()[0]
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        return (count - free) * page
    finally:
        con.close()


def ledger_split(led, db: Path, job_id: str) -> dict:
    """The job's entries (encoded bytes by kind) and the blobs they reference (stored / original bytes by kind),
    and its opening blobs: the nodes' own, the public values (distinct blobs, and references to them) and
    what the openings would take without the dedupe (each one carrying its public values)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    cols = {r[1] for r in con.execute("PRAGMA table_info(blobs)")}
    out: dict = {"entries": {}, "blobs_stored": {}, "blobs_original": {}}
    op = {"openings": 0, "own_stored": 0, "own_original": 0, "public_stored": 0, "public_original": 0,
          "public_blobs": 0, "public_refs": 0, "without_dedupe_stored": 0, "without_dedupe_original": 0}
    seen: set = set()

    def row(d: bytes) -> tuple[int, int] | None:
        r = con.execute("SELECT length(data), size FROM blobs WHERE digest = ?", (d,)).fetchone()
        return None if r is None else (int(r[0]), int(r[1]))

    try:
        for le in led.by_job(job_id):
            k = le.entry.kind
            out["entries"][k] = out["entries"].get(k, 0) + len(le.entry.encode())
            for d in set(le.entry.blob_refs()) - seen:
                r = row(d)
                if r is None:
                    continue
                seen.add(d)
                out["blobs_stored"][k] = out["blobs_stored"].get(k, 0) + r[0]
                out["blobs_original"][k] = out["blobs_original"].get(k, 0) + r[1]
            if k in ("opening", "dealer.release") and ("data_hash" in le.body):
                op["served"] = op.get("served", 0) + 1  # served by its author: only the digest is on the ledger
                continue
            if k == "opening":
                own = row(le.body["data"])
                pub = row(le.body["public"]) if "public" in le.body else None
                op["openings"] += 1
                op["public_refs"] += "public" in le.body
                for r, what in ((own, "own"), (pub, "public")):
                    if r is not None:
                        op["without_dedupe_stored"] += r[0]
                        op["without_dedupe_original"] += r[1]
                        if what == "own":
                            op["own_stored"] += r[0]
                            op["own_original"] += r[1]
        pubs = {le.body["public"] for le in led.by_job(job_id, kind="opening") if "public" in le.body}
        for d in pubs:
            r = row(d)
            if r is not None:
                op["public_blobs"] += 1
                op["public_stored"] += r[0]
                op["public_original"] += r[1]
        op["with_dedupe_stored"] = op["own_stored"] + op["public_stored"]
        op["with_dedupe_original"] = op["own_original"] + op["public_original"]
        out["opening_blobs"] = op
        out["compressed_column"] = "codec" in cols
    finally:
        con.close()
    return out


def prune(url: str, key: Path) -> dict | None:
    """`shardproof ledger prune --keep-days 0` as the log operator; None when the command does not exist."""
    return gc(["cli.shardproof", "ledger", "prune", "--ledger", url, "--key", str(key), "--keep-days", "0"])


def tree_bytes(d: Path) -> dict:
    """Bytes under `d` by file kind."""
    out: dict = {}
    if not d.exists():
        return out
    for f in d.rglob("*"):
        if not f.is_file():
            continue
        n = f.name
        kind = ("served" if f.parent.name == "served" or f.parent.parent.name == "served" else
                "spill" if n.endswith(".bin") and n != "secret.bin" else
                "state" if n.startswith("state") else "secret" if n == "secret.bin" else
                "status" if n.startswith("status") else "other")
        out[kind] = out.get(kind, 0) + f.stat().st_size
    return out


def gc(cmd: list[str]) -> dict | None:
    """Run a gc command with --json; None when it does not exist (the figures before it was added)."""
    p = subprocess.run([sys.executable, "-m", *cmd, "--json"], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        return None
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "disk.json"))
    ap.add_argument("--label", default="", help="a note stored with the figures (e.g. before/after)")
    args = ap.parse_args()
    if args.tokens < 1 or args.parties < 2:
        print("--tokens must be >= 1 and --parties >= 2", file=sys.stderr)
        raise SystemExit(2)
    model, tok = load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR)
    ids = tok.encode(PROMPT)
    job = "disk-job"
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as d:
        db = Path(d) / "ledger.db"
        url = f"sqlite:///{db}"
        net = ProcessNetwork(url, d, n_nodes=args.parties, seed=5, timeout_s=300)
        try:
            model_id = net.publish(model, TINY_MODEL_DIR)
            net.start()
            if not net.wait_ready(120):
                raise SystemExit("a process did not start:\n" + net.logs())
            net.run_job(model_id, ids, 1, "warm-up")  # nodes fetch their shares (per model, not per job)
            net.audit("warm-up")
            log_key = net._key_file("log")
            prune(url, log_key)  # the warm-up's openings go before the baseline
            l0 = db_bytes(db)
            net.run_job(model_id, ids, args.tokens, job)
            l1 = db_bytes(db)
            res = net.audit(job)
            l2 = db_bytes(db)
            split = ledger_split(net.ledger, db, job)
            opened = sorted(le.body["party"] for le in net.ledger.by_job(job, kind="opening"))
            pruned = prune(url, log_key)
            l3 = db_bytes(db)
            split_after = ledger_split(net.ledger, db, job)
            check = net.ledger.check()
        finally:
            net.stop()
        nodes = [net.data_dir(k.node_id) for k in net.nodes]
        dealer_dir = net.data_dir(net.dealer.node_id)
        node_before = [tree_bytes(n / "jobs" / job) for n in nodes]
        model_bytes = sum(f.stat().st_size for f in (nodes[0] / "models").rglob("*") if f.is_file())
        dealer_file = dealer_dir / "dealer" / f"dealer-{job}.cbor"
        served_dir = dealer_dir / "dealer" / "served" / job  # releases the dealer served itself
        dealer_before = (dealer_file.stat().st_size if dealer_file.exists() else 0) + sum(tree_bytes(served_dir).values())
        gcs = [gc(["cli.prover", "gc", "--data", str(n), "--keep-days", "0", "--ledger", url]) for n in nodes]
        dgc = gc(["cli.shardproof", "dealer", "gc", "--data", str(dealer_dir), "--keep-days", "0", "--ledger", url])
        node_after = [tree_bytes(n / "jobs" / job) for n in nodes]
        dealer_after = (dealer_file.stat().st_size if dealer_file.exists() else 0) + sum(tree_bytes(served_dir).values())
        net.ledger.close()

    n = args.parties
    node_tot_before = sum(sum(x.values()) for x in node_before) / n
    node_tot_after = sum(sum(x.values()) for x in node_after) / n
    kinds = sorted({k for x in node_before for k in x})
    op = split["opening_blobs"]
    release = split["blobs_stored"].get("dealer.release", 0)
    rows = [["ledger: job run (entries + blobs)", (l1 - l0) / MB], ["ledger: audit of the job", (l2 - l1) / MB],
            ["ledger: per job while its audit window is open (before prune)", (l2 - l0) / MB],
            ["ledger: per job, permanent (after `ledger prune`)", (l3 - l0) / MB if pruned is not None else "no prune"],
            [f"  of which the dealer's release (kept by the rule; parties opened: {opened})", release / MB]]
    for k in sorted(set(split["entries"]) | set(split["blobs_stored"])):
        rows.append([f"  ledger {k}: entries / blobs stored (original), before prune -> after",
                     f"{split['entries'].get(k, 0) / MB:.3f} / {split['blobs_stored'].get(k, 0) / MB:.3f} "
                     f"({split['blobs_original'].get(k, 0) / MB:.3f}) -> "
                     f"{split_after['blobs_stored'].get(k, 0) / MB:.3f}"])
    rows.append([f"  openings: {op['openings']}, without the public dedupe, stored (original)",
                 f"{op['without_dedupe_stored'] / MB:.3f} ({op['without_dedupe_original'] / MB:.3f})"])
    rows.append([f"  openings with the dedupe: own blobs + {op['public_blobs']} public blob(s) for "
                 f"{op['public_refs']} reference(s), stored (original)",
                 f"{op['own_stored'] / MB:.3f} + {op['public_stored'] / MB:.3f} = {op['with_dedupe_stored'] / MB:.3f} "
                 f"({op['with_dedupe_original'] / MB:.3f})"])
    rows.append(["ledger check after prune", f"{'ok' if check.ok else 'BAD: ' + str(check.reason)}, "
                                             f"{check.pruned_blobs} blob(s) pruned by retention"])
    rows.append(["node: job data, mean per node, before gc", node_tot_before / MB])
    for k in kinds:
        rows.append([f"  node {k}", sum(x.get(k, 0) for x in node_before) / n / MB])
    rows.append(["node: job data, mean per node, after gc", node_tot_after / MB if any(gcs) else "no gc"])
    rows.append(["node: model share (once per model)", model_bytes / MB])
    rows.append(["dealer: state per job, before gc", dealer_before / MB])
    rows.append(["dealer: state per job, after gc", dealer_after / MB if dgc is not None else "no gc"])
    print_table(f"disk per job: shipped model, {args.tokens} tokens, {n} parties, audited once "
                f"({'clean' if res.verdict.clean else 'NOT clean'})", ["case", "MB"], rows)
    write_json(args.json, {
        "machine": machine(), "label": args.label, "tokens": args.tokens, "parties": n,
        "audit_clean": res.verdict.clean,
        "ledger_job_bytes": l1 - l0, "ledger_audit_bytes": l2 - l1, "ledger_per_job_bytes": l2 - l0,
        "ledger_audit_window_bytes": l2 - l0, "ledger_permanent_bytes": l3 - l0 if pruned is not None else None,
        "ledger_release_bytes": release, "opened_parties": opened, "opening_blobs": op,
        "ledger_check_after_prune": {"ok": check.ok, "reason": check.reason, "pruned_blobs": check.pruned_blobs},
        "ledger_prune": pruned, "ledger_split": split, "ledger_split_after_prune": split_after, "node_job_bytes_before_gc": node_before, "node_job_bytes_after_gc": node_after,
        "node_mean_bytes_before_gc": node_tot_before, "node_mean_bytes_after_gc": node_tot_after if any(gcs) else None,
        "node_model_bytes": model_bytes, "dealer_state_bytes_before_gc": dealer_before,
        "dealer_state_bytes_after_gc": dealer_after if dgc is not None else None, "node_gc": gcs, "dealer_gc": dgc})


if __name__ == "__main__":
    main()
