"""`shardproof demo`: private generation with the shipped model, then audits on a real ledger.

1. Three parties (local nodes) hold additive shares of the published model; the client
   shares its prompt; only the client reconstructs logits. The text is compared with the
   plaintext model's.
2. The job's commitments go on an embedded SQLite ledger (registrations, model, job,
   dealer seed commitments, BLS-signed job roots, a sealing checkpoint); an auditor
   derives the challenge, the nodes open 2 of 3 share indices, the auditor replays them
   with Freivalds checks and posts a verdict: clean.
3. The same job again with one node cheating (--cheat, default a single 2^63 error in a
   matmul share): the verdict names it, and its evidence bundle verifies offline.
The MPC runs in this process; `prover serve` daemons post the same entries over the network.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK

DEFAULT_PROMPT = "And the LORD said unto Moses,"
DEFAULT_CHEAT = "matmul-2^63@1000"


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="private generation + audit demo on a local ledger", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parties", type=int, default=3, help="share holders (default 3)")
    p.add_argument("--tokens", type=int, default=6, help="tokens to generate (default 6)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--cheat", default=DEFAULT_CHEAT, help=f"cheat for the second job, KIND[@STEP] (default {DEFAULT_CHEAT}); "
                   "'none' to skip")
    p.add_argument("--cheater", type=int, default=1, help="which party cheats (default 1)")
    p.add_argument("--lambda", dest="lam", type=int, default=40, help="Freivalds columns (default 40)")
    p.add_argument("--ledger", default=None, help="ledger URL (default: a temporary SQLite file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from cli.audit_report import render_verdict
    from prover.cheats import Cheat, CheatSpecError
    from prover.errors import ProverError
    from prover.local_network import LocalNetwork
    from prover.models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer
    from verifier.ledger_audit import audit_on_ledger, check_evidence

    out = Console(stderr=args.json)
    if args.parties < 2:
        print("shardproof demo: MPC needs at least 2 parties", file=sys.stderr)
        return EXIT_INCOMPLETE
    try:
        cheat = None if args.cheat == "none" else Cheat.parse(args.cheat)
        model, tok = load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR)
    except (CheatSpecError, ProverError) as exc:
        print(f"shardproof demo: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if not 0 <= args.cheater < args.parties:
        print(f"shardproof demo: --cheater must be in 0..{args.parties - 1}", file=sys.stderr)
        return EXIT_INCOMPLETE
    ids = tok.encode(args.prompt)
    tmp = tempfile.TemporaryDirectory(prefix="shardproof-demo-")
    d = Path(tmp.name)
    url = args.ledger or f"sqlite:///{d / 'ledger.db'}"
    out.print(Panel.fit(f"model: shipped tiny GPT ({model.num_params():,} parameters, {model.config.n_layer} layers)\n"
                        f"parties: {args.parties} local nodes holding additive shares over Z_2^64 (16 fractional bits)\n"
                        f"ledger: {url}\nprompt: {args.prompt!r}", title="shardproof demo"))
    net = LocalNetwork.create(url, args.parties, seed=0)
    model_id = net.publish(model, d / "model", TINY_MODEL_DIR)
    nodes = {p: n.node_id for p, n in enumerate(net.nodes)}

    def job_and_audit(job_id: str, cheats: dict, label: str):
        t0 = time.perf_counter()
        job = net.run(d / "model", model_id, ids, args.tokens, job_id=job_id, workdir=d / job_id, cheats=cheats)
        job_seconds = time.perf_counter() - t0
        res = audit_on_ledger(net.ledger, job_id, net.verifier, lam=args.lam,
                              respond=lambda ci, ps: net.respond(job, job_id, ci, ps))
        render_verdict(out, res.verdict, nodes, res.checks, title=label)
        return job, res, job_seconds

    with out.status("running the private job (3 local nodes) and committing to the ledger ..."):
        job, res, job_seconds = job_and_audit("demo-job-1", {}, "audit of the honest job")
    ref = model.double().generate(torch.tensor([ids]), args.tokens, temperature=0)[0, len(ids):].tolist()
    side = Table(title="greedy continuation")
    side.add_column("MPC (client's view)")
    side.add_column("plaintext reference")
    side.add_row(tok.decode(job.tokens), tok.decode(ref))
    out.print(side)
    summary = {"job_id": "demo-job-1", "text": tok.decode(job.tokens), "identical_to_plaintext": job.tokens == ref,
               "verdict": "clean" if res.verdict.clean else "not clean", "cheaters": [nodes[p] for p in res.verdict.cheaters],
               "unresponsive": [nodes[p] for p in res.verdict.unresponsive], "lambda": args.lam,
               "audit_seconds": res.verdict.seconds, "job_seconds": job_seconds}
    ok = res.verdict.clean and job.tokens == ref
    if cheat is not None:
        caught = None
        for attempt in range(4):
            jid = f"demo-cheat-{attempt + 1}"
            with out.status(f"running the job again with {nodes[args.cheater]} cheating ({cheat}) ..."):
                cjob, cres, cseconds = job_and_audit(jid, {args.cheater: cheat},
                                                     f"audit with {nodes[args.cheater]} cheating ({cheat})")
            if cres.verdict.closed_party == args.cheater:
                out.print(f"[yellow]the challenge left {nodes[args.cheater]}'s share index closed (probability "
                          f"1/{args.parties} per job; replicas cover it): running another job[/]")
                continue
            caught = (jid, cres, cseconds)
            break
        if caught is None:
            ok = False
        else:
            jid, cres, cseconds = caught
            ev = {}
            for p, bundle in cres.evidence.items():
                path = d / f"evidence-{jid}-party{p}.cbor"
                path.write_bytes(bundle)
                chk = check_evidence(bundle, net.ledger.log_key)
                ev[nodes[p]] = {"bytes": len(bundle), "verifies_offline": chk.ok}
                out.print(Panel(f"evidence against {nodes[p]}: {len(bundle):,} bytes; checked offline "
                                f"(ledger proofs, signatures, challenge derivation, replay): "
                                f"{'[bold red]proves the cheating[/]' if chk.ok else '[yellow]does not verify[/]'}",
                                title="evidence"))
            named = [nodes[p] for p in cres.verdict.cheaters]
            ok = ok and named == [nodes[args.cheater]] and all(e["verifies_offline"] for e in ev.values())
            summary["cheat_run"] = {"job_id": jid, "cheat": str(cheat), "verdict": "cheating detected" if named else "clean",
                                    "cheaters": named, "unresponsive": [nodes[p] for p in cres.verdict.unresponsive],
                                    "audit_seconds": cres.verdict.seconds, "job_seconds": cseconds, "evidence": ev}
    if args.json:
        print(json.dumps(summary))
    tmp.cleanup()
    return EXIT_OK if ok else EXIT_FAILED
