"""`verify browse --ledger URL`: the auditor's terminal, a textual app over the ledger.

Screens (keys in the footer; `?` lists them all):
  1 Jobs   every job, newest first (id, model, node per share index, tokens, started, status,
           verdict); `s` cycles the status filter, `v` the verdict filter, `/` searches (free text,
           or status:X verdict:X node:ID), escape clears; updates live as entries arrive.
  Job      (enter on a job) participants, dealer, owner refresh, job roots, the sealing checkpoint,
           the challenge, openings and every auditor's verdict; for a cheater the step where it
           deviated and its evidence bundle (--evidence-dir); `e` checks that bundle offline
           (verifier.ledger_audit.check_evidence) and shows the replay's finding; `o` opens the
           accused (or first) node's history.
  2 Nodes  every registered node (roles, key fingerprints, endpoint, registered at, last heartbeat,
           jobs, audits passed, accusations, defaulted, unresponsive); enter opens its job history,
           and enter on a job there opens the job.
  3 Log    tree size, the latest checkpoints and their cosignatures, whether the log verifies and
           is consistent with the last checkpoint this auditor saw (kept in the monitor state
           file, $SHARDPROOF_MONITOR_STATE or ~/.config/shardproof/monitor_state.json); `c` runs the
           full ledger check (`verify ledger-check`).
Arrows or j/k move, enter opens, escape goes back, q quits; the mouse works.
The app is cli/browse_app.py (textual, loaded only by this command); the data comes from
verifier.ledger_index (the same as `verify jobs|nodes|show`), polled every --poll
seconds. Exit 0 when the app is closed; 2 when it cannot start (no ledger, not a terminal).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.common import EXIT_INCOMPLETE, EXIT_OK, add_ledger_argument


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from verifier.summary_terms import JOB_STATUSES, VERDICTS

    from cli.verify_reports import add_log_key_argument

    p = sub.add_parser(name, help="browse jobs, nodes, verdicts, evidence and checkpoints in a terminal app",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ledger_argument(p)
    add_log_key_argument(p)
    p.add_argument("--evidence-dir", type=Path, default=Path("."), metavar="DIR",
                   help="where `verify audit` wrote evidence bundles (default: .)")
    p.add_argument("--poll", type=float, default=1.0, metavar="S", help="look for new entries every S seconds (default 1)")
    p.add_argument("--status", choices=JOB_STATUSES, default=None, help="start with this status filter")
    p.add_argument("--verdict", choices=VERDICTS, default=None, help="start with this verdict filter")
    p.add_argument("--node", default=None, metavar="ID", help="start with the jobs of this node")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cli.verify_reports import ReportError, open_ledger, resolve_log_key

    try:
        from cli.browse_app import BrowseApp
    except ImportError as exc:  # textual is a dependency (pyproject.toml); say so rather than fail with a trace
        print(f"verify browse: cannot load the terminal app: {exc} (pip install textual)", file=sys.stderr)
        return EXIT_INCOMPLETE
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        print("verify browse: needs a terminal; for scripts use `verify jobs|nodes|show|report`", file=sys.stderr)
        return EXIT_INCOMPLETE
    if args.poll <= 0:
        print("verify browse: --poll must be positive", file=sys.stderr)
        return EXIT_INCOMPLETE
    try:
        led = open_ledger(args.ledger)
        key, source = resolve_log_key(led, args.log_key)
    except ReportError as exc:
        print(f"verify browse: {exc}", file=sys.stderr)
        return exc.code
    try:
        BrowseApp(led, key, source, evidence_dir=args.evidence_dir, poll=args.poll,
                  filters={"status": args.status, "verdict": args.verdict, "node": args.node}).run()
    finally:
        led.close()
    return EXIT_OK
