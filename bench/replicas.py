"""Replicas and failover: what R replicas per share index cost, and how long a lost replica costs a job.

    .venv/bin/python bench/replicas.py [--tokens 6] [--replicas 1 2 3] [--json PATH]

One loopback deployment (a dealer daemon and 3 x max(R) `prover serve` processes, SQLite ledger) of the
shipped model; jobs run on the first 3 R nodes (node i = replica i div 3 of share index i mod 3). Per R:
- rounds per token: the parties' count from their broadcast receipts (must not grow with R);
- bytes per party per token: what one rank sent its peers (every replica of the other indices), from
  the nodes' logs;
- wall seconds per token: the client's view, from the group forming to the last token;
- failover (R >= 2): a second job in which one replica is SIGKILLed right after token 2; the time from
  the kill to the next token, against the token before it (seconds lost = the difference);
- plaintext: the float32 model's greedy tokens and time, in the same run; every job's tokens must equal them.
- resumption (R = 1, with R >= 2 also measured, so a standby holding index 0 exists): a job with a
  standby that loses nothing (what holding a standby costs: every message kept, every round polled), then
  one whose node 0 is SIGKILLed right after token 2: the standby takes index 0 over (job.resume), replays
  the peers' messages and the job goes on; the time from the kill to the next token against the token
  before it, and the client's loss-to-take-over time.
All processes share this machine's cores: with R replicas R times as many processes compute each token.
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time

from common import machine, print_table, shipped_reference, write_json

from models import TINY_MODEL_DIR
from sim.process_network import ProcessNetwork

N = 3


def _sent_bytes(logs: str, job: str) -> list[int]:
    return [int(b) for b in re.findall(rf"job {job}: rank \d+ sent (\d+) bytes", logs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=6)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.tokens < 3:
        raise SystemExit("--tokens must be at least 3 (the failover job kills a replica after token 2)")
    T = args.tokens
    model, _tok, ids, ref, plain = shipped_reference(T)
    rmax = max(args.replicas)
    rows, out = [], {"machine": machine(), "tokens": T, "parties": N, "plaintext_s": plain, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as d:
        net = ProcessNetwork(f"sqlite:///{d}/ledger.db", d, n_nodes=N, seed=5, timeout_s=300, replicas=rmax)
        try:
            model_id = net.publish(model, TINY_MODEL_DIR)
            net.start()
            if not net.wait_ready(300):
                raise SystemExit("a process did not start:\n" + net.logs())
            net.run_job(model_id, ids, 1, "warm-up", replicas=rmax)  # every node fetches its share; not timed
            for R in sorted(args.replicas):
                job = f"bench-r{R}"
                res = net.run_job(model_id, ids, T, job, replicas=R)
                logs = net.logs(tail=1_000_000)
                sent = _sent_bytes(logs, job)
                run = {"replicas": R, "tokens_equal_plaintext": res["tokens"] == ref, "rounds": res["rounds"],
                       "rounds_per_token": (res["rounds"] or 0) / T, "online_s": res["online_seconds"],
                       "online_s_per_token": res["online_seconds"] / T, "offline_s": res["offline_seconds"],
                       "bytes_per_party_per_token": (max(sent) / T) if sent else None}
                if R >= 2:
                    times: list[float] = []
                    kill: list[float] = []
                    victim = N * (R - 1)  # the last replica of share index 0

                    def on_token(i: int, _t: int) -> None:
                        times.append(time.perf_counter())
                        if i == 1:
                            kill.append(net.kill_node(victim))

                    fo = net.run_job(model_id, ids, T, f"bench-r{R}-failover", replicas=R, on_token=on_token)
                    before = times[1] - times[0]
                    after = times[2] - kill[0]
                    gaps = [b - a for a, b in zip(times[2:], times[3:])]
                    run.update(failover_tokens_equal_plaintext=fo["tokens"] == ref, failover_dropped=sorted(fo["dropped"]),
                               failover_token_before_s=before, failover_kill_to_next_token_s=after,
                               failover_seconds_lost=max(0.0, after - before),
                               failover_token_after_s=statistics.median(gaps) if gaps else None)
                    net.start_node(victim)
                    net.wait_serving(net.nodes[victim].node_id, 300)
                if R == 1 and rmax >= 2:
                    standby = [net.nodes[N].node_id]  # holds share index 0 (replica 1's node)
                    sb = net.run_job(model_id, ids, T, "bench-r1-standby", replicas=1, standby=standby)
                    times, kill = [], []

                    def on_token_r(i: int, _t: int) -> None:
                        times.append(time.perf_counter())
                        if i == 1:
                            kill.append(net.kill_node(0))

                    rs = net.run_job(model_id, ids, T, "bench-r1-resume", replicas=1, standby=standby,
                                     on_token=on_token_r)
                    before = times[1] - times[0]
                    after = times[2] - kill[0]
                    run.update(standby_online_s_per_token=sb["online_seconds"] / T,
                               resume_tokens_equal_plaintext=rs["tokens"] == ref, resume=rs["resumed"],
                               resume_token_before_s=before, resume_kill_to_next_token_s=after,
                               resume_seconds_lost=max(0.0, after - before))
                    net.start_node(0)
                    net.wait_serving(net.nodes[0].node_id, 300)
                out["runs"].append(run)
                rows.append([R, str(run["tokens_equal_plaintext"]), run["rounds_per_token"],
                             f"{run['bytes_per_party_per_token'] / 1e6:.2f}" if run["bytes_per_party_per_token"] else "-",
                             run["online_s_per_token"], run["online_s_per_token"] / (plain / T),
                             f"{run['failover_kill_to_next_token_s']:.2f} (token before: {run['failover_token_before_s']:.2f})"
                             if R >= 2 else "-",
                             f"{run['failover_seconds_lost']:.2f}" if R >= 2 else "-",
                             str(run.get("failover_tokens_equal_plaintext", "-"))])
        finally:
            net.stop()
            net.ledger.close()
    print_table(f"replicas, shipped model, N = {N}, {T} tokens (plaintext {plain / T * 1e3:.1f} ms/token)",
                ["R", "= plaintext", "rounds/token", "MB/party/token", "online s/token", "x plaintext",
                 "kill -> next token (s)", "seconds lost", "failover = plaintext"], rows)
    r1 = next((r for r in out["runs"] if "resume_kill_to_next_token_s" in r), None)
    if r1 is not None:
        take = r1["resume"][0] if r1["resume"] else {}
        print_table("resumption by a standby (R = 1, node 0 SIGKILLed after token 2)",
                    ["online s/token, no standby", "with a standby, no loss", "kill -> next token (s)",
                     "token before (s)", "seconds lost", "loss -> take-over (client, s)", "resumed at step",
                     "= plaintext"],
                    [[r1["online_s_per_token"], r1["standby_online_s_per_token"],
                      r1["resume_kill_to_next_token_s"], r1["resume_token_before_s"], r1["resume_seconds_lost"],
                      take.get("seconds", "-"), take.get("step", "-"), str(r1["resume_tokens_equal_plaintext"])]])
    write_json(args.json, out)


if __name__ == "__main__":
    main()
