"""Deployed-mode latency: a job of the shipped model on a dealer + N `prover serve` processes (loopback),
against the in-process private generation and the plaintext model, measured in the same run.

    .venv/bin/python bench/daemons.py [--tokens 4] [--parties 3] [--json PATH]

What is measured:
- deployed, client: `run_remote_job` wall time (client's view, from joining the group to the last token,
  the dealer's offline phase included; model already fetched by the nodes in a warm-up job).
- deployed, online: the nodes' program time from their logs (from holding the dealer's material to
  the last step), per token, and the rounds per token; no round waits on the dealer unless the log
  counts online dealer requests (requests past the dealer's plan).
- offline: the dealer's plan and corrections (time, bytes) and the bulk transfer to the last party,
  from the dealer's log (specs/dealer.md, "Offline and online").
- audit: `audit_on_ledger` wall time for that job (challenge, the daemons' openings, replay, verdict).
- in-process: PrivateGenerator, all parties in this process (no network, no sealing, no commitments).
- plaintext: the float32 model's greedy generation.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time

from common import machine, print_table, shipped_reference, write_json

from prover.generation import PrivateGenerator
from models import TINY_MODEL_DIR
from sim.process_network import ProcessNetwork



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    T = args.tokens
    model, _tok, ids, ref, plain = shipped_reference(T)

    gen = PrivateGenerator(model, args.parties, seed=0)
    t0 = time.perf_counter()
    local = list(gen.generate(ids, T, 0.0, None, 0))
    inproc = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="bench-daemons-") as d:
        net = ProcessNetwork(f"sqlite:///{d}/ledger.db", d, n_nodes=args.parties, seed=3, timeout_s=300)
        try:
            model_id = net.publish(model, TINY_MODEL_DIR)
            net.start()
            if not net.wait_ready(120):
                raise SystemExit("a process did not start:\n" + net.logs())
            net.run_job(model_id, ids, 1, "warm-up")  # nodes fetch their shares; not timed
            out = net.run_job(model_id, ids, T, "bench-job")
            t0 = time.perf_counter()
            res = net.audit("bench-job")
            audit_s = time.perf_counter() - t0
            logs = net.logs(tail=100_000)
        finally:
            net.stop()
            net.ledger.close()
    job = "bench-job"
    runs = re.findall(rf"job {job}: joined the mesh in ([\d.]+) s, received the dealer's material in ([\d.]+) s, "
                      rf"ran \d+ steps in ([\d.]+) s \((\d+) rounds, (\d+) online dealer requests\)", logs)
    if not runs:
        raise SystemExit("no node reported its run:\n" + logs[-3000:])
    online_s = max(float(r[2]) for r in runs)
    rounds = int(runs[0][3])
    online_requests = max(int(r[4]) for r in runs)
    material_s = max(float(r[1]) for r in runs)
    off = re.search(rf"job {job}: offline phase: (\d+) requests planned in ([\d.]+) s, (\d+) bytes of corrections "
                    rf"computed in ([\d.]+) s", logs)
    sent = re.search(rf"job {job}: sent party \d+ the plan and its corrections, (\d+) bytes in (\d+) sealed messages, "
                     rf"in ([\d.]+) s", logs)
    planned, plan_s, corr_bytes, corr_s = (int(off[1]), float(off[2]), int(off[3]), float(off[4])) if off else (0, 0.0, 0, 0.0)
    stream_bytes, transfer_s = (int(sent[1]), float(sent[3])) if sent else (0, 0.0)
    offline_s = plan_s + corr_s + transfer_s
    deployed = out["seconds"]
    rows = [
        ["plaintext (float32)", T, plain, plain / T, 1.0, "-", "-"],
        [f"in-process MPC, N={args.parties}", T, inproc, inproc / T, inproc / plain, "-", str(local == ref)],
        [f"deployed, client wall: dealer + {args.parties} node processes", T, deployed, deployed / T, deployed / plain,
         rounds, str(out["tokens"] == ref)],
        ["deployed, online (nodes' program)", T, online_s, online_s / T, online_s / plain, rounds,
         str(out["tokens"] == ref)],
    ]
    print_table("private generation, shipped tiny model (greedy)", ["case", "tokens", "seconds", "s/token",
                                                                   "x plaintext", "rounds", "= plaintext"], rows)
    print_table("deployed job: offline phase (dealer) and online phase (nodes)", ["phase", "seconds", "bytes", "detail"], [
        ["offline: plan", plan_s, "-", f"{planned} requests ({planned / T:.0f} per token)"],
        ["offline: corrections", corr_s, corr_bytes, "the last party's, for the whole plan"],
        ["offline: bulk transfer to the last party", transfer_s, stream_bytes, "sealed; plan + corrections"],
        ["offline: total", offline_s, stream_bytes, f"{stream_bytes / T / 1e6:.2f} MB per token"],
        ["online: per token", online_s / T, "-", f"{rounds / T:.0f} rounds per token, {online_requests} online "
                                                  f"dealer requests, material ready after {material_s:.2f} s"],
    ])
    print_table("audit of the deployed job", ["case", "seconds", "verdict"],
                [["audit (λ=40, 2 of 3 parties, daemons answer)", audit_s, "clean" if res.verdict.clean else "NOT clean"]])
    write_json(args.json, {"machine": machine(), "tokens": T, "parties": args.parties, "plaintext_s": plain,
                           "inprocess_s": inproc, "deployed_s": deployed, "deployed_rounds": rounds,
                           "rounds_per_token": rounds / T, "online_s": online_s, "online_s_per_token": online_s / T,
                           "online_dealer_requests": online_requests, "offline_plan_s": plan_s,
                           "offline_corrections_s": corr_s, "offline_transfer_s": transfer_s, "offline_s": offline_s,
                           "offline_bytes": stream_bytes, "offline_corrections_bytes": corr_bytes,
                           "planned_requests": planned,
                           "deployed_equal_plaintext": out["tokens"] == ref, "inprocess_equal_plaintext": local == ref,
                           "audit_s": audit_s, "audit_clean": res.verdict.clean})


if __name__ == "__main__":
    main()
