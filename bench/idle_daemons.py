"""Idle CPU of the daemons: one `prover serve`, one `shardproof dealer serve` and one `shardproof owner serve`
process on a ledger with no job in flight, per engine (SQLite file; PostgreSQL via ledger.pgserver, as the tests).

    .venv/bin/python bench/idle_daemons.py [--window 60] [--engines sqlite,postgres] [--json PATH]

What is measured: each process's CPU time (user + system, from /proc/<pid>/stat) over `--window` seconds
once all three are serving and have settled, as a share of one core. With `--history N` the node and the
dealer first get N finished jobs on disk whose challenge never came (what a daemon accumulates over a
day of unaudited jobs): a daemon that re-scans on a timer pays for them on every poll. The target is under 1 % per daemon:
an idle daemon waits for the ledger to grow (LISTEN/NOTIFY on PostgreSQL, a backed-off PRAGMA data_version
poll on SQLite) instead of re-scanning it every --poll seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import machine, print_table, write_json

from ledger.pgserver import TempPostgres, find_bin_dir
from mpc_core.encoding import canonical_cbor
from models import GPTConfig, random_model
from prover.local_files import write_secret
from sim.process_network import ProcessNetwork, _cpu_seconds

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
SETTLE_S = 3.0  # after "serving": let imports and the first scan finish before the window opens
DEFAULT_JSON = str(Path(__file__).resolve().parent / "results" / "idle_daemons.json")


def seed_history(net: ProcessNetwork, n_jobs: int) -> None:
    """N finished, never-challenged jobs in node 0's and the dealer's state directories."""
    node_jobs = net.data_dir(net.nodes[0].node_id) / "jobs"
    dealer_dir = net.data_dir(net.dealer.node_id) / "dealer"
    dealer_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_jobs):
        job = f"old-{i}"
        (node_jobs / job).mkdir(parents=True, exist_ok=True)
        (node_jobs / job / "status").write_text("done")
        write_secret(dealer_dir / f"dealer-{job}.cbor", canonical_cbor({
            "format": "shardproof/dealer-state/v1", "job_id": job, "n_parties": 3, "master_seed": b"m" * 32,
            "requests": [], "status": "done"}))


def start_idle_daemons(url: str, workdir: Path, poll_s: float = 0.2,
                       history: int = 0) -> tuple[ProcessNetwork, dict[str, int]]:
    """A ledger at `url` with a published model and one node, dealer and owner process, all serving
    (with `history` finished jobs on disk); returns the network (stop it with `.stop()`) and role -> pid."""
    net = ProcessNetwork(url, workdir, n_nodes=3, poll_s=poll_s)
    net.publish(random_model(CFG, seed=4))
    seed_history(net, history)
    owner_key = workdir / "owner.key"
    net.owner.save(owner_key)
    net.start_node(0)
    net.start_dealer()
    net._spawn("owner", [sys.executable, "-m", "cli.shardproof", "owner", "serve", "--ledger", url,
                         "--key", str(owner_key), "--published", *[str(p) for p in net.published.values()],
                         "--poll", str(poll_s)])
    roles = {"node": net.nodes[0].node_id, "dealer": net.dealer.node_id, "owner": "owner"}
    for name in roles.values():
        if not net.wait_serving(name, 120):
            net.stop()
            raise RuntimeError(f"{name} did not start: see {net.log_file(name)}")
    return net, {role: net.procs[name].pid for role, name in roles.items()}


def measure_idle(pids: dict[str, int], window_s: float) -> dict[str, dict[str, float]]:
    """Each process's CPU seconds over `window_s` and that as a percentage of one core."""
    before = {r: _cpu_seconds(p) for r, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(window_s)
    wall = time.monotonic() - t0
    out = {}
    for r, p in pids.items():
        after = _cpu_seconds(p)
        if before[r] is None or after is None:
            raise RuntimeError(f"{r} (pid {p}) exited or /proc is unreadable")
        cpu = after - before[r]
        out[r] = {"cpu_s": cpu, "wall_s": wall, "core_pct": 100.0 * cpu / wall}
    return out


def run_engine(engine: str, window_s: float, pg: TempPostgres | None, history: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix=f"idle-{engine}-") as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'ledger.db'}" if engine == "sqlite" else pg.create_database(f"idle_{int(time.time())}")
        net, pids = start_idle_daemons(url, work, history=history)
        try:
            time.sleep(SETTLE_S)
            return measure_idle(pids, window_s)
        finally:
            net.stop()
            net.ledger.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=float, default=60.0, help="measurement window in seconds (default 60)")
    ap.add_argument("--engines", default="sqlite,postgres")
    ap.add_argument("--history", type=int, default=0, help="finished, unchallenged jobs on disk (default 0)")
    ap.add_argument("--json", default=DEFAULT_JSON)
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    pg = None
    if "postgres" in engines:
        if find_bin_dir() is None:
            print("PostgreSQL binaries not found (tools/ensure_postgres.sh); skipping postgres", file=sys.stderr)
            engines.remove("postgres")
        else:
            pg = TempPostgres(fast=True).start()
    results: dict[str, dict] = {}
    try:
        for engine in engines:
            results[engine] = run_engine(engine, args.window, pg, args.history)
    finally:
        if pg is not None:
            pg.stop()
    rows = [[engine, role, m["cpu_s"], m["wall_s"], m["core_pct"], "yes" if m["core_pct"] < 1.0 else "NO"]
            for engine, per in results.items() for role, m in per.items()]
    print_table(f"idle daemons: CPU over a {args.window:.0f} s window (no job in flight, {args.history} old jobs)",
                ["engine", "daemon", "cpu s", "wall s", "% of a core", "< 1 %"], rows)
    write_json(args.json, {"bench": "idle_daemons", "window_s": args.window, "history": args.history,
                           "machine": machine(),
                           "results": results})


if __name__ == "__main__":
    main()
