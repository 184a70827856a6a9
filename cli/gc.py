"""`prover gc` and `shardproof dealer gc --data DIR --keep-days D [--ledger URL] [--dry-run] [--json]`.

Removes per-job data whose audit window has closed (prover/gc.py): a node's spill files, state and
secret of a job that failed, whose party the counted challenge did not open, or whose opening is
posted; a dealer's master seed and request log once its release is posted (or it never finished).
Never data that a pending challenge may still need. Only data older than D days goes. Without
--ledger (or a configured one) only jobs that failed here are removed. What is removed leaves a
tombstone, so the daemon never runs or serves the job again. Safe to run beside a serving daemon.
Exit 0: done (also with nothing removed). Exit 2: bad input (no such directory, negative age,
unreachable ledger).
"""
from __future__ import annotations

import argparse
import json
import sys

from cli.common import EXIT_INCOMPLETE, EXIT_OK, add_ledger_argument


def _add_arguments(p: argparse.ArgumentParser, data_help: str) -> None:
    p.add_argument("--data", required=True, metavar="DIR", help=data_help)
    p.add_argument("--keep-days", type=float, required=True, metavar="D",
                   help="keep every job's data for at least D days (0: remove whatever the audit allows)")
    add_ledger_argument(p, required=False)
    p.add_argument("--dry-run", action="store_true", help="report what would be removed; remove nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def register(sub: argparse._SubParsersAction, name: str) -> None:
    """`prover gc`."""
    p = sub.add_parser(name, help="remove job data whose audit window has closed", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p, "the node's data directory (as given to `prover serve --data`)")
    p.set_defaults(func=lambda a: run(a, "node"))


def register_dealer_verb(verbs: argparse._SubParsersAction) -> None:
    """`shardproof dealer gc`."""
    p = verbs.add_parser("gc", help="remove dealer state whose audit window has closed", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p, "the dealer's state directory (as given to `shardproof dealer serve --data`)")
    p.set_defaults(func=lambda a: run(a, "dealer"))


def run(args: argparse.Namespace, role: str) -> int:
    from ledger import Ledger
    from ledger.errors import LedgerError
    from prover.gc import GcError, dealer_gc, node_gc

    prog = "prover gc" if role == "node" else "shardproof dealer gc"
    led = None
    try:
        if args.ledger:
            led = Ledger.open(args.ledger, create=False)
        rep = (node_gc if role == "node" else dealer_gc)(args.data, args.keep_days, led, dry_run=args.dry_run)
    except GcError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except (LedgerError, OSError) as exc:
        print(f"{prog}: cannot open the ledger: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    finally:
        if led is not None:
            led.close()
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2, sort_keys=True))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{prog} {args.data}{' (dry run)' if args.dry_run else ''}")
    for c in ("job", "action", "MB", "why"):
        t.add_column(c, justify="right" if c == "MB" else "left")
    for action, items in ((("would remove" if args.dry_run else "removed"), rep.removed), ("kept", rep.kept)):
        for i in items:
            t.add_row(i.job_id, action, f"{i.bytes / 1e6:.3f}", i.reason)
    con = Console()
    con.print(t)
    con.print(f"{'would free' if args.dry_run else 'freed'} {rep.freed_bytes / 1e6:.3f} MB "
              f"({len(rep.removed)} job(s)); kept {len(rep.kept)}")
    return EXIT_OK
