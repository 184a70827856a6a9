"""`verify audit JOB --ledger URL`: audit a job from the ledger and post a signed verdict.

Posts the challenge (derived from the first checkpoint that seals the job's
commitments) unless one is recorded, waits for the nodes' openings and the
dealer's seed release, replays every opened party and posts the verdict.
Exit codes: 0 clean, 1 a node cheated, 2 the audit could not finish.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="audit a job and post a verdict", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_id")
    p.add_argument("--ledger", required=True, help="ledger URL (sqlite:///path or postgresql://...)")
    p.add_argument("--key", type=Path, help="the auditor's key file (prover keygen); needed to post")
    p.add_argument("--lambda", dest="lam", type=int, default=40, help="Freivalds columns (default 40: 2^-40)")
    p.add_argument("--exact", action="store_true", help="recompute every product instead of Freivalds")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for openings (default 30)")
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
    try:
        led = Ledger.open(args.ledger, create=False)
        res = audit_on_ledger(led, args.job_id, identity, lam=args.lam, mode="exact" if args.exact else "freivalds",
                              wait_s=args.wait)
    except (AuditIncomplete, LedgerError, OSError, ValueError) as exc:
        err.print(f"verify audit: {exc}")
        return EXIT_INCOMPLETE
    v = res.verdict
    paths = {}
    for p, bundle in res.evidence.items():
        args.evidence_dir.mkdir(parents=True, exist_ok=True)
        path = args.evidence_dir / f"evidence-{args.job_id}-party{p}.cbor"
        path.write_bytes(bundle)
        paths[p] = str(path)
    if args.json:
        print(json.dumps({**v.as_dict(), "checks": res.checks, "evidence": paths,
                          "challenge_index": res.challenge_index, "verdict_index": res.verdict_index}))
    else:
        render_verdict(Console(), v, checks=res.checks)
        for p, path in paths.items():
            Console().print(f"evidence for party {p}: {path}  (check offline: verify evidence {path})")
    if v.cheaters:
        return EXIT_FAILED
    return EXIT_OK if v.clean and all(res.checks.values()) else EXIT_INCOMPLETE
