"""`shardproof demo`: private generation on processes that trust no one, then audits on a real ledger.

1. A SQLite ledger; a dealer (`shardproof dealer serve`) and 3 nodes (`prover serve`), each a
   separate process on loopback with its own keys; this process is the model owner, the
   client, the log operator and the auditor. The owner publishes additive shares of the
   shipped model (each node gets only its own); the client shares its prompt on private
   channels; only the client reconstructs logits. The text is compared with the plaintext
   model's.
2. The nodes commit to their transcripts (BLS-signed job roots, broadcast receipts), the log
   seals them in a checkpoint, the auditor derives the challenge and posts it; the nodes open
   2 of 3 share indices from disk, the dealer releases their seeds, the auditor replays them
   with Freivalds checks and posts a verdict: clean.
3. Failover: a second replica of every share index starts (each holds its index's share), a job
   runs on both replicas, and one replica is SIGKILLed after the second token: its twin carries
   the job to the end with the plaintext tokens, and the audit lists the killed node as
   unresponsive, accusing nobody (--no-failover skips it).
4. Node 1 is restarted with --cheat (default: a single 2^63 error in a matmul share) and the
   job runs again: the verdict names it, and its evidence bundle verifies offline.

--json prints {job_id, text, identical_to_plaintext, verdict, cheaters, unresponsive, lambda,
audit_seconds, job_seconds, failover: {killed, completed, tokens_match_plaintext, seconds_lost,
dropped, verdict, accused}, cheat_run: {...}}; seconds_lost is how much longer the token after the
kill took than the one before it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
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
    p.add_argument("--no-failover", dest="failover", action="store_false",
                   help="skip the failover scene (a replica killed mid-job)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from cli.audit_report import render_verdict
    from sim.adversary import Cheat, CheatSpecError
    from prover.errors import ProverError
    from models.errors import ModelsError
    from models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer
    from sim.process_network import ProcessNetwork
    from verifier.ledger_audit import AuditIncomplete, check_evidence

    out = Console(stderr=args.json)
    if args.parties < 2:
        print("shardproof demo: MPC needs at least 2 parties", file=sys.stderr)
        return EXIT_INCOMPLETE
    try:
        cheat = None if args.cheat == "none" else Cheat.parse(args.cheat)
        model, tok = load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR)
    except (CheatSpecError, ProverError, ModelsError) as exc:
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
                        f"processes: a dealer and {args.parties} nodes on loopback, each with its own keys; "
                        f"shares over Z_2^64 (16 fractional bits)\n"
                        f"ledger: {url}\nprompt: {args.prompt!r}", title="shardproof demo"))
    net = ProcessNetwork(url, d, n_nodes=args.parties, seed=0, timeout_s=120, replicas=2 if args.failover else 1)
    try:
        with out.status("publishing the model shares and starting the dealer and the nodes ..."):
            model_id = net.publish(model, TINY_MODEL_DIR)  # with failover, the replicas get their shares too
            net.start(replicas=1)
            if not net.wait_ready(120):
                out.print("[red]a process did not start[/]\n" + net.logs())
                return EXIT_INCOMPLETE
        nodes = {p: net.nodes[p].node_id for p in range(args.parties)}

        def job_and_audit(job_id: str, label: str):
            with out.status(f"{label}: running the private job on the nodes ..."):
                job = net.run_job(model_id, ids, args.tokens, job_id, replicas=1)
            with out.status(f"{label}: sealing, challenging, opening and replaying ..."):
                res = net.audit(job_id, lam=args.lam)
            render_verdict(out, res.verdict, nodes, res.checks, title=label)
            return job, res

        job, res = job_and_audit("demo-job-1", "audit of the honest job")
        ref = model.double().generate(torch.tensor([ids]), args.tokens, temperature=0)[0, len(ids):].tolist()
        side = Table(title="greedy continuation")
        side.add_column("MPC (client's view)")
        side.add_column("plaintext reference")
        side.add_row(tok.decode(job["tokens"]), tok.decode(ref))
        out.print(side)
        summary = {"job_id": "demo-job-1", "text": tok.decode(job["tokens"]), "identical_to_plaintext": job["tokens"] == ref,
                   "verdict": "clean" if res.verdict.clean else "not clean",
                   "cheaters": [nodes[p] for p in res.verdict.cheaters],
                   "unresponsive": [nodes[p] for p in res.verdict.unresponsive], "lambda": args.lam,
                   "audit_seconds": res.verdict.seconds, "job_seconds": job["seconds"]}
        ok = res.verdict.clean and job["tokens"] == ref
        if args.failover:
            summary["failover"] = _failover_run(out, net, model_id, ids, ref, args, nodes)
            ok = ok and summary["failover"]["completed"] and summary["failover"]["tokens_match_plaintext"] \
                and not summary["failover"]["accused"]
        if cheat is not None:
            ok = _cheat_run(out, net, cheat, args, nodes, job_and_audit, summary, d, check_evidence) and ok
    except (ProverError, ModelsError, AuditIncomplete, OSError) as exc:
        out.print(f"[red]the demo could not finish: {type(exc).__name__}: {exc}[/]\n" + net.logs())
        return EXIT_INCOMPLETE
    finally:
        net.stop()
        net.ledger.close()
    if args.json:
        print(json.dumps(summary))
    tmp.cleanup()
    return EXIT_OK if ok else EXIT_FAILED


def _failover_run(out, net, model_id: str, ids: list[int], ref: list[int], args, nodes: dict[int, str]) -> dict:
    """Start a second replica of every index, run a job on both, SIGKILL one replica after the second token."""
    import statistics
    import time

    from rich.panel import Panel

    from cli.audit_report import render_verdict
    from prover.remote_client import RemoteJobError

    n = args.parties
    with out.status(f"starting a second replica of every share index ({n} more nodes) ..."):
        for i in range(n, 2 * n):
            net.start_node(i)
        if not all(net.wait_serving(net.nodes[i].node_id, 120) for i in range(n, 2 * n)):
            return {"killed": None, "completed": False, "tokens_match_plaintext": False, "seconds_lost": None,
                    "dropped": {}, "verdict": "not run", "accused": [], "error": "a replica did not start"}
    victim = n  # replica 1 of share index 0
    killed = net.nodes[victim].node_id
    times: list[float] = []
    kill_at: list[float] = []

    k = 1 if args.tokens >= 3 else 0  # kill after this token (the second, or the first of a short job)

    def on_token(i: int, _tok: int) -> None:
        times.append(time.perf_counter())
        if i == k:
            kill_at.append(net.kill_node(victim))

    jid = "demo-failover"
    try:
        with out.status(f"failover: a job on 2 replicas per share index; {killed} is killed after the second token ..."):
            job = net.run_job(model_id, ids, args.tokens, jid, replicas=2, on_token=on_token)
    except RemoteJobError as exc:
        out.print(f"[red]failover: the job failed: {exc}[/]")
        return {"killed": killed, "completed": False, "tokens_match_plaintext": False, "seconds_lost": None,
                "dropped": {}, "verdict": "not run", "accused": []}
    gaps = [b - a for a, b in zip(times[:k + 1], times[1:k + 1])]  # token gaps before the kill
    before = statistics.median(gaps) if gaps else None
    after = times[k + 1] - kill_at[0] if kill_at and len(times) > k + 1 else None
    lost = None if after is None else (after if before is None else max(0.0, after - before))
    with out.status("failover: sealing, challenging, opening and replaying ..."):
        res = net.audit(jid, lam=args.lam)
    render_verdict(out, res.verdict, nodes, res.checks, title="audit of the job that lost a replica")
    lost_nodes = [r["node"] for r in res.verdict.replicas if r["status"] == "unresponsive"]
    match = job["tokens"] == ref
    timing = (f"; the next token came {after:.2f} s after the kill" if after is not None else "") + \
        (f" (a token took {before:.2f} s before it)" if before is not None and after is not None else "")
    out.print(Panel(f"killed {killed} (replica 1 of share index 0) after token {k + 1} of {args.tokens}: the job "
                    f"{'finished' if job['tokens'] else 'did not finish'} on its twin, tokens "
                    f"{'identical to' if match else '[red]different from[/]'} the plaintext model's{timing}. "
                    f"Verdict: {res.verdict.outcome}; lost replicas (unresponsive, never "
                    f"accused): {', '.join(lost_nodes) or 'none'}; accused: {', '.join(res.verdict.accused_nodes) or 'nobody'}",
                    title="failover"))
    return {"killed": killed, "completed": len(job["tokens"]) == args.tokens, "tokens_match_plaintext": match,
            "seconds_lost": None if lost is None else round(lost, 3), "dropped": job["dropped"],
            "verdict": res.verdict.outcome, "accused": res.verdict.accused_nodes, "unresponsive_replicas": lost_nodes}


def _cheat_run(out, net, cheat, args, nodes, job_and_audit, summary, d, check_evidence) -> bool:
    """Restart one node with `cheat`, run jobs until its share index is opened, check the evidence."""
    from rich.panel import Panel

    with out.status(f"restarting {nodes[args.cheater]} with --cheat {cheat} ..."):
        net.restart_node(args.cheater, str(cheat))
        net.wait_serving(nodes[args.cheater], 120)
    caught = None
    for attempt in range(6):
        jid = f"demo-cheat-{attempt + 1}"
        job, res = job_and_audit(jid, f"audit with {nodes[args.cheater]} cheating ({cheat})")
        if res.verdict.closed_party == args.cheater and not res.verdict.cheaters:
            out.print(f"[yellow]the challenge left {nodes[args.cheater]}'s share index closed (probability "
                      f"1/{args.parties} per job; replicas cover it): running another job[/]")
            continue
        caught = (jid, job, res)
        break
    if caught is None:
        return False
    jid, job, res = caught
    ev = {}
    for node, bundle in res.evidence.items():
        path = d / f"evidence-{jid}-{node}.cbor"
        path.write_bytes(bundle)
        chk = check_evidence(bundle, net.ledger.log_key)
        ev[node] = {"bytes": len(bundle), "verifies_offline": chk.ok}
        out.print(Panel(f"evidence against {node}: {len(bundle):,} bytes; checked offline "
                        f"(ledger proofs, signatures, challenge derivation, replay or receipts): "
                        f"{'[bold red]proves the cheating[/]' if chk.ok else '[yellow]does not verify[/]'}",
                        title="evidence"))
    named = [nodes[p] for p in res.verdict.cheaters]
    summary["cheat_run"] = {"job_id": jid, "cheat": str(cheat), "verdict": "cheating detected" if named else "clean",
                            "cheaters": named, "unresponsive": [nodes[p] for p in res.verdict.unresponsive],
                            "audit_seconds": res.verdict.seconds, "job_seconds": job["seconds"], "evidence": ev}
    return named == [nodes[args.cheater]] and all(e["verifies_offline"] for e in ev.values())
