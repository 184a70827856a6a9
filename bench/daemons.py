"""Deployed-mode latency: a job of the shipped model on a dealer + N `prover serve` processes (loopback),
against the in-process private generation and the plaintext model, measured in the same run.

    .venv/bin/python bench/daemons.py [--tokens 4] [--parties 3] [--json PATH]

What is measured:
- deployed: `run_remote_job` wall time (client's view, from joining the group to the last token; model
  already fetched by the nodes in a warm-up job), per token, and the nodes' rounds per job from their
  logs; the dealer answers one correction round trip per request of the last party.
- audit: `audit_on_ledger` wall time for that job (challenge, the daemons' openings, replay, verdict).
- in-process: PrivateGenerator, all parties in this process (no network, no sealing, no commitments).
- plaintext: the float32 model's greedy generation.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time

from common import machine, print_table, write_json

import torch

from prover.generation import PrivateGenerator
from models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer
from sim.process_network import ProcessNetwork

PROMPT = "And the LORD said unto Moses,"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    model, tok = load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR)
    ids = tok.encode(PROMPT)
    T = args.tokens

    t0 = time.perf_counter()
    ref = model.generate(torch.tensor([ids]), T, temperature=0)[0, len(ids):].tolist()
    plain = time.perf_counter() - t0
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
    m = re.findall(r"job bench-job: joined the group in ([\d.]+) s, ran \d+ steps in ([\d.]+) s \((\d+) rounds\)", logs)
    rounds = int(m[0][2]) if m else -1
    deployed = out["seconds"]
    rows = [
        ["plaintext (float32)", T, plain, plain / T, 1.0, "-", "-"],
        [f"in-process MPC, N={args.parties}", T, inproc, inproc / T, inproc / plain, "-", str(local == ref)],
        [f"deployed: dealer + {args.parties} node processes", T, deployed, deployed / T, deployed / plain, rounds,
         str(out["tokens"] == ref)],
    ]
    print_table("private generation, shipped tiny model (greedy)", ["case", "tokens", "seconds", "s/token",
                                                                   "x plaintext", "rounds", "= plaintext"], rows)
    print_table("audit of the deployed job", ["case", "seconds", "verdict"],
                [["audit (λ=40, 2 of 3 parties, daemons answer)", audit_s, "clean" if res.verdict.clean else "NOT clean"]])
    write_json(args.json, {"machine": machine(), "tokens": T, "parties": args.parties, "plaintext_s": plain,
                           "inprocess_s": inproc, "deployed_s": deployed, "deployed_rounds": rounds,
                           "deployed_equal_plaintext": out["tokens"] == ref, "inprocess_equal_plaintext": local == ref,
                           "audit_s": audit_s, "audit_clean": res.verdict.clean})


if __name__ == "__main__":
    main()
