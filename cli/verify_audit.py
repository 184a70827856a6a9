"""`verify audit JOB --ledger URL`: audit a job from the ledger and post a signed verdict.

Checks the ledger against a pinned log key (--log-key, or the key pinned in the
known-logs file on first use, as ssh does), posts the challenge (derived from the
first checkpoint that seals the job's commitments and the participants' revealed
beacons) unless one is recorded, waits for the nodes' openings and the dealer's
seed release, replays every opened party and posts one verdict per auditor and job
(a rerun reports the existing one unless --force). Nothing is posted while an
answer is still due (before the job's deadline). Evidence bundles of accused
nodes are written to --evidence-dir.
Exit codes: 0 clean, 1 a node cheated or defaulted, 2 could not decide (pending,
error, bad input, log key mismatch).
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, add_key_argument, add_ledger_argument
from cli.progress import on_terminal


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="audit a job and post a verdict", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_id", metavar="JOB", help="the job id (printed by `shardproof infer`)")
    add_ledger_argument(p)
    add_key_argument(p, "the auditor's key file (prover keygen); needed to post", required=False, type=Path)
    p.add_argument("--lambda", dest="lam", type=int, default=40, help="Freivalds columns (default 40: 2^-40)")
    p.add_argument("--exact", action="store_true", help="recompute every product instead of Freivalds")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for reveals and openings (default 60); answers still due after that "
                        "leave the audit pending (exit 2, nothing posted)")
    p.add_argument("--log-key", default=None, metavar="HEX",
                   help="the log's BLS public key (from `shardproof ledger info`); default: the key pinned in the "
                        "known-logs file ($SHARDPROOF_KNOWN_LOGS or ~/.config/shardproof/known_logs), pinned on first use")
    p.add_argument("--force", action="store_true", help="post a new verdict even if this auditor posted one before")
    p.add_argument("--evidence-dir", type=Path, default=Path("."), help="where to write evidence bundles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cli.audit_report import render_verdict
    from ledger import Ledger, LedgerError
    from verifier.ledger_audit import AuditIncomplete, audit_on_ledger

    err = Console(stderr=True)
    if args.lam < 1:
        err.print("verify audit: --lambda must be at least 1")
        return EXIT_INCOMPLETE
    identity = None
    if args.key is not None:
        from prover.errors import NodeKeyError
        from prover.keys import NodeKeys

        try:
            identity = NodeKeys.load(args.key).identity
        except NodeKeyError as exc:
            err.print(f"verify audit: bad key file: {exc}", highlight=False, soft_wrap=True)
            return EXIT_INCOMPLETE
    from verifier.known_logs import KnownLogsError, pin

    try:
        led = Ledger.open(args.ledger, create=False)
        if led.log_key is None:
            raise ValueError("the ledger has no log key (it was not created by `shardproof ledger init`)")
        if args.log_key is not None:
            key = bytes.fromhex(args.log_key)
            if key != led.log_key:
                raise KnownLogsError("the ledger's log key differs from --log-key")
        else:
            key, new = pin(led.origin, led.log_key)
            if new:
                err.print(f"verify audit: pinned log {led.origin} with key {key.hex()[:16]}... (trust on first use)")
        with audit_progress(args.job_id, args.wait, on_terminal(args.json)) as progress:
            res = audit_on_ledger(led, args.job_id, identity, lam=args.lam, mode="exact" if args.exact else "freivalds",
                                  wait_s=args.wait, log_key=key, force=args.force, progress=progress)
    except AuditIncomplete as exc:  # an answer is still due (or the job is not sealed): nothing was posted
        if args.json:
            print(json.dumps({"job_id": args.job_id, "outcome": "incomplete", "clean": False, "accused": [],
                              "reason": str(exc)}))
        else:
            err.print(f"verify audit: could not decide yet: {exc}")
        return EXIT_INCOMPLETE
    except (LedgerError, KnownLogsError, OSError, ValueError) as exc:
        err.print(f"verify audit: {exc}")
        return EXIT_INCOMPLETE
    v = res.verdict
    paths = {}
    for node, bundle in res.evidence.items():
        args.evidence_dir.mkdir(parents=True, exist_ok=True)
        path = args.evidence_dir / f"evidence-{args.job_id}-{node}.cbor"
        path.write_bytes(bundle)
        paths[node] = str(path)
    if args.json:
        print(json.dumps({**v.as_dict(), "checks": res.checks, "evidence": paths,
                          "challenge_index": res.challenge_index, "verdict_index": res.verdict_index,
                          "existing_verdict": res.existing_verdict, "missing_evidence": res.missing_evidence}))
    else:
        render_verdict(Console(), v, checks=res.checks)
        if res.existing_verdict is not None:
            Console().print(f"this auditor's verdict was posted before (entry #{res.existing_verdict}); "
                            "--force posts another")
        for node, path in paths.items():
            Console().print(f"evidence against {node}: {path}  (check offline: verify evidence {path})")
        for node in res.missing_evidence:
            err.print(f"verify audit: no signed checkpoint covers the evidence against {node} yet "
                      "(is `shardproof ledger serve` running?); run the audit again to write it")
    if v.outcome == "fail":
        return EXIT_FAILED
    return EXIT_OK if v.clean and all(res.checks.values()) else EXIT_INCOMPLETE


@contextlib.contextmanager
def audit_progress(job_id: str, wait: float, enabled: bool):
    """A spinner while the audit waits for reveals, openings and a checkpoint, then a bar over the
    replayed steps; yields the audit's `progress(done, total)`. Nothing when not `enabled`."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(f"auditing {job_id}: waiting up to {wait:g} s for reveals, openings and a checkpoint",
                             total=None)

        def progress(done: int, total: int) -> None:
            prog.update(task, description=f"auditing {job_id}: replaying the opened parties' steps",
                        total=total, completed=done)
        yield progress
