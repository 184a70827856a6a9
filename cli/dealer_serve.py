"""`shardproof dealer serve --ledger URL --key FILE --data DIR [--releases HOST:PORT|ledger]`: the dealer daemon.

Serves every job whose `job.open` names this dealer: posts the seed commitments,
hands each party its seed (and the last party its corrections) on private
channels, and releases the challenged parties' seeds when an auditor's challenge
follows from the sealed ledger (prover/dealer_service.py). State (master seeds,
request logs; mode 0600) lives in DIR/dealer/. Releases are served by the dealer over HTTP on
--releases (default 127.0.0.1:0, any free port), so that the ledger keeps only their digests (the last
party's corrections make a release tens of MB); `--releases ledger` stores them on the ledger.
SIGTERM or SIGINT stop it cleanly.
Exit 0: clean shutdown. Exit 2: bad input or unreachable ledger.
"""
from __future__ import annotations

import argparse
import logging
import sys

from cli.common import EXIT_INCOMPLETE, add_daemon_arguments, run_until_signalled


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="the dealer role: serve the jobs that name this dealer",
                       description="The dealer role. Verbs: serve (run the dealer daemon), "
                                   "gc (remove state whose audit window has closed).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    s = verbs.add_parser("serve", help="run the dealer daemon", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_daemon_arguments(s, "key file written by `prover keygen` (registered with role dealer)", "state directory")
    s.add_argument("--releases", default="127.0.0.1:0", metavar="HOST:PORT|ledger",
                   help="where the dealer serves its releases (HTTP; port 0: any free port), or 'ledger' to store "
                        "them on the ledger (default: 127.0.0.1:0)")
    s.set_defaults(func=run)
    from cli.gc import register_dealer_verb

    register_dealer_verb(verbs)


def run(args: argparse.Namespace) -> int:
    from ledger.errors import LedgerError
    from prover.dealer_service import DealerDaemon
    from prover.errors import NodeKeyError
    from prover.keys import NodeKeys

    def bad(msg: str) -> int:
        print(f"shardproof dealer serve: {msg}", file=sys.stderr)
        return EXIT_INCOMPLETE

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.releases != "ledger" and not args.releases.rpartition(":")[2].isdigit():
        return bad(f"--releases {args.releases!r} is not HOST:PORT or 'ledger'")
    if args.poll <= 0 or args.timeout <= 0 or args.heartbeat <= 0:
        return bad("--poll, --timeout and --heartbeat must be positive")
    try:
        keys = NodeKeys.load(args.key)
    except NodeKeyError as exc:
        return bad(str(exc))
    try:
        daemon = DealerDaemon(args.ledger, keys, args.data, poll_s=args.poll, timeout_s=args.timeout,
                              heartbeat_s=args.heartbeat,
                              serve_releases=None if args.releases == "ledger" else args.releases)
    except (LedgerError, OSError) as exc:
        return bad(f"cannot open the ledger: {exc}")
    return run_until_signalled(lambda stop: daemon.run(stop), "shardproof.dealer")
