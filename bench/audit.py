"""Audit cost: audit CPU seconds vs the job's compute seconds, measured in the same run.

For each model, one private-generation job runs with every party in this process
(transcripts spilled to disk, as nodes do); then the auditor replays the N-1 opened
parties, with Freivalds (default lambda) and with --exact. Reported: job seconds
(all N parties, dealer included), audit seconds, their ratio, and both per party
(job / N vs audit / (N-1)), plus the steps and matrix products checked. The opened
parties are replayed together in one session ("joint": how many; specs/audit.md, section 4).

The nodes' answers to the challenge (reading their spilled transcripts back) are
the nodes' work, not the auditor's: they are prepared first and timed apart
("open cpu s"); "audit cpu s" is the auditor alone (record roots, replay, product
checks). "audit+open/job" adds the two, for comparison with figures taken before
the split. On a shared 2-core machine the first audit after the job pays
first-touch costs (page faults, cold caches: up to 2x on a 2-layer GPT-2 shape),
so compare modes over repeated runs, not the first row alone.

Usage: python bench/audit.py [--models tiny gpt2-small] [--tokens 4] [--json PATH]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402


GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(model_name: str, tokens: int, lams: list[int], parties: int, closed: int | None = None) -> list[dict]:
    from mpc_core.prg import master_from_int
    from sim.local_job import run_job
    from models import TINY_MODEL_DIR, GPTConfig, load_checkpoint, random_model
    from models.publish import publish_model
    from sim.local_audit import audit_local_job, local_openings

    model = load_checkpoint(TINY_MODEL_DIR) if model_name == "tiny" else random_model(GPTConfig(**GPT2_SMALL), seed=0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as d:
        publish_model(model, parties, f"{d}/model", master_from_int(1))
        prompt = list(range(5, 13))
        seed = 0
        while True:  # with --closed, the next job seed until the challenge closes that party (compare like with like)
            t0, c0 = time.perf_counter(), cpu()
            job = run_job(f"{d}/model", prompt, tokens, workdir=f"{d}/job-{seed}", seed=seed)
            job_s, job_cpu = time.perf_counter() - t0, cpu() - c0
            if closed is None or job.challenge().closed == closed:
                break
            seed += 1
        for mode, lam in [("freivalds", lam) for lam in lams] + [("exact", 0)]:
            t0, c0 = time.perf_counter(), cpu()
            openings = local_openings(job)  # the challenged nodes' side
            open_s, open_cpu = time.perf_counter() - t0, cpu() - c0
            t0, c0 = time.perf_counter(), cpu()
            v = audit_local_job(job, mode=mode, lam=max(lam, 1), openings=openings)
            audit_s, audit_cpu = time.perf_counter() - t0, cpu() - c0
            del openings
            opened = [p for p in v.parties if p.replay is not None]
            rows.append({
                "model": model_name, "parties": parties, "tokens": tokens, "mode": mode, "lambda": lam,
                "job_s": job_s, "job_cpu_s": job_cpu, "audit_s": audit_s, "audit_cpu_s": audit_cpu,
                "open_s": open_s, "open_cpu_s": open_cpu,
                "ratio_cpu": audit_cpu / job_cpu, "ratio_per_party": (audit_cpu / len(opened)) / (job_cpu / parties),
                "ratio_cpu_with_open": (audit_cpu + open_cpu) / job_cpu,
                "steps_checked": sum(p.replay.steps_checked for p in opened),
                "matmul_checks": sum(p.replay.matmul_checks for p in opened),
                "matmuls_recomputed": sum(p.replay.matmul_recomputed for p in opened),
                "matmuls_freivalds": sum(p.replay.matmul_checks - p.replay.matmul_recomputed for p in opened),
                "joint": max((p.replay.joint for p in opened), default=0),
                "clean": v.clean, "closed": v.closed_party, "job_seed": seed,
            })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny"])
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--lambdas", type=int, nargs="+", default=[40])
    ap.add_argument("--closed", type=int, default=None,
                    help="rerun the job with the next seed until the challenge closes this party (default: take the "
                         "first job); opening the last party adds the dealer's corrections to the replay")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    for m in args.models:
        rows += run(m, args.tokens, args.lambdas, args.parties, args.closed)
    print_table("audit cost vs job compute (same run)",
                ["model", "N", "mode", "lambda", "job cpu s", "audit cpu s", "audit/job", "per party", "open cpu s",
                 "audit+open/job", "steps", "matmuls", "Freivalds", "joint", "clean", "closed"],
                [[r["model"], r["parties"], r["mode"], r["lambda"], r["job_cpu_s"], r["audit_cpu_s"], r["ratio_cpu"],
                  r["ratio_per_party"], r["open_cpu_s"], r["ratio_cpu_with_open"], r["steps_checked"],
                  r["matmul_checks"], r["matmuls_freivalds"], r["joint"], r["clean"], r["closed"]] for r in rows])
    write_json(args.json, {"bench": "audit", "machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
