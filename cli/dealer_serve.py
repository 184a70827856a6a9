"""`shardproof dealer serve --ledger URL --key FILE --data DIR`: the dealer daemon.

Serves every job whose `job.open` names this dealer: posts the seed commitments,
hands each party its seed (and the last party its corrections) on private
channels, and releases the challenged parties' seeds when an auditor's challenge
follows from the sealed ledger (prover/dealer_service.py). State (master seeds,
request logs; mode 0600) lives in DIR/dealer/. SIGTERM or SIGINT stop it cleanly.
Exit 0: clean shutdown. Exit 2: bad input or unreachable ledger.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from cli.common import EXIT_INCOMPLETE, EXIT_OK


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="the dealer role: serve the jobs that name this dealer")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    s = verbs.add_parser("serve", help="run the dealer daemon", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--ledger", required=True, help="ledger URL: sqlite:///path, postgresql://..., or a file path")
    s.add_argument("--key", required=True, help="key file written by `prover keygen` (registered with role dealer)")
    s.add_argument("--data", required=True, help="state directory")
    s.add_argument("--poll", type=float, default=0.2, help="ledger poll interval in seconds (default 0.2)")
    s.add_argument("--timeout", type=float, default=60.0, help="peer timeout in seconds (default 60)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ledger.errors import LedgerError
    from prover.dealer_service import DealerDaemon
    from prover.errors import NodeKeyError
    from prover.keys import NodeKeys

    def bad(msg: str) -> int:
        print(f"shardproof dealer serve: {msg}", file=sys.stderr)
        return EXIT_INCOMPLETE

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.poll <= 0 or args.timeout <= 0:
        return bad("--poll and --timeout must be positive")
    try:
        keys = NodeKeys.load(args.key)
    except NodeKeyError as exc:
        return bad(str(exc))
    try:
        daemon = DealerDaemon(args.ledger, keys, args.data, poll_s=args.poll, timeout_s=args.timeout)
    except (LedgerError, OSError) as exc:
        return bad(f"cannot open the ledger: {exc}")
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        logging.getLogger("shardproof.dealer").info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.run(stop)
    return EXIT_OK
