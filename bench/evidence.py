"""Evidence bundles: size and offline check time, one-step proofs against the full evidence.

For each cheat, one job of the shipped model (every role in this process, posting to a SQLite
ledger: sim.local_network) with one cheating node, audited on the ledger; the auditor exports
the accused node's bundle. Reported per cheat: the failing step (kind, scope), the bundle that
`verify audit` writes (a one-step proof where the deviation is inside one step, else the full
evidence), its size and the time `verify evidence` takes to check it offline, and the same for
the full bundle (the opening, the public values and the dealer's release, replayed from step 0)
exported from the same audit for comparison; the job's own wall time is the baseline.

Usage: python bench/evidence.py [--tokens 32] [--cheats matmul-random@400:1 trunc@400:2] [--json PATH]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, print_table, write_json  # noqa: E402

MB = 1e6


def run(tokens: int, cheat: str, party: int, seed: int) -> dict:
    from ledger.evidence import export_bundle
    from models import TINY_MODEL_DIR, load_checkpoint
    from mpc_core.encoding import decode_cbor
    from sim.cheat_spec import Cheat
    from sim.local_network import LocalNetwork
    from verifier import ledger_audit as LA

    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as d:
        net = LocalNetwork.create(f"sqlite:///{d}/ledger.db", 3, seed=seed)
        model_id = net.publish(load_checkpoint(TINY_MODEL_DIR), f"{d}/model")
        prompt = list(range(5, 13))
        attempt = 0
        while True:  # a job whose challenge opens the cheater
            job_id = f"cheat-{attempt}"
            t0 = time.perf_counter()
            job = net.run(f"{d}/model", model_id, prompt, tokens, job_id=job_id, workdir=f"{d}/{job_id}",
                          seed=seed + attempt, cheats={party: Cheat.parse(cheat)})
            job_s = time.perf_counter() - t0
            if job.challenge().closed != party:
                break
            attempt += 1
        t0 = time.perf_counter()
        res = LA.audit_on_ledger(net.ledger, job_id, net.verifier, lam=40,
                                 respond=lambda ci, ps: net.respond(job, job_id, ci, ps))
        audit_s = time.perf_counter() - t0
        node = f"node-{party}"
        if node not in res.evidence:  # the log had not signed a checkpoint covering the verdict yet
            net.ledger.checkpoint()
            res = LA.audit_on_ledger(net.ledger, job_id, net.verifier, lam=40)
        pv = next(p for p in res.verdict.parties if p.party == party)
        bundle = res.evidence[node]
        obj = decode_cbor(bundle)
        full = export_bundle(net.ledger, [e["index"] for e in obj["entries"]], tree_heads=sorted(
            {th["size"] for th in obj.get("tree_heads", [])}))
        row = {"cheat": cheat, "party": party, "tokens": tokens, "job_s": job_s, "audit_s": audit_s,
               "status": pv.status, "step": pv.replay.finding.step if pv.replay and pv.replay.finding else None,
               "kind": pv.replay.finding.kind if pv.replay and pv.replay.finding else None,
               "scope": pv.replay.finding.scope if pv.replay and pv.replay.finding else None,
               "one_step": bool(obj.get("proofs"))}
        for name, data in (("bundle", bundle), ("full", full)):
            t0 = time.perf_counter()
            chk = LA.check_evidence(data, net.ledger.log_key)
            row[f"{name}_bytes"] = len(data)
            row[f"{name}_check_s"] = time.perf_counter() - t0
            row[f"{name}_proven"] = chk.ok and chk.accused == [node]
        net.ledger.close()
        return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--cheats", nargs="+", default=["matmul-random@400:1", "trunc@400:2", "zeros@3000:0"],
                    help="KIND@STEP:PARTY (cheat kinds as in `prover serve --cheat`)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "evidence.json"))
    args = ap.parse_args()
    rows = []
    for spec in args.cheats:
        cheat, _, party = spec.rpartition(":")
        rows.append(run(args.tokens, cheat, int(party), args.seed))
    print_table("Evidence bundles (shipped model)",
                ["cheat", "party", "job s", "audit s", "failing step", "one-step", "bundle MB", "check s",
                 "full MB", "full check s", "proven"],
                [[r["cheat"], r["party"], f"{r['job_s']:.1f}", f"{r['audit_s']:.1f}",
                  f"{r['step']} {r['kind']} ({r['scope']})", r["one_step"], f"{r['bundle_bytes'] / MB:.3f}",
                  f"{r['bundle_check_s']:.2f}", f"{r['full_bytes'] / MB:.1f}", f"{r['full_check_s']:.1f}",
                  f"{r['bundle_proven']}/{r['full_proven']}"] for r in rows])
    write_json(args.json, {"machine": machine(), "tokens": args.tokens, "rows": rows})


if __name__ == "__main__":
    main()
