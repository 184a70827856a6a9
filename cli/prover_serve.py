"""`prover serve --ledger URL --key FILE --data DIR [--openings HOST:PORT|ledger] [--cheat KIND[@STEP]] [--max-jobs N]`.

Runs the jobs the ledger assigns to this node and answers challenges on them
(prover/daemon.py). The model share of a job's model must be in
DIR/models/<model_id>/. One serve per data directory: DIR/serve.lock (fcntl.flock)
holds its pid, and a second serve on DIR exits 2 naming that pid.
Openings are served by the node itself over HTTP on --openings (default 127.0.0.1:0, any free
port: give an address auditors can reach), so that the ledger keeps only their digests; an auditor
that cannot fetch one asks for it on the ledger and the node puts it there. `--openings ledger`
stores them on the ledger instead.
SIGTERM or SIGINT stop it cleanly.
Exit 0: clean shutdown. Exit 2: bad input or unreachable ledger.
"""
from __future__ import annotations

import argparse
import logging
import sys

from cli.common import EXIT_INCOMPLETE, add_daemon_arguments, run_until_signalled


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="run a node: serve assigned jobs and answer challenges from the ledger",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_daemon_arguments(p, "key file written by `prover keygen`",
                         "data directory (models/<model_id>/ and per-job state)")
    from sim.cheat_spec import KINDS

    p.add_argument("--cheat", default=None, metavar="KIND[@STEP]",
                   help=f"deliberate deviation for tests (sim/adversary.py); KIND one of: {', '.join(KINDS)}")
    p.add_argument("--max-jobs", type=int, default=None, metavar="N", help="stop after this many jobs, once each was challenged")
    p.add_argument("--openings", default="127.0.0.1:0", metavar="HOST:PORT|ledger",
                   help="where this node serves its openings (HTTP; port 0: any free port), or 'ledger' to store "
                        "them on the ledger (default: 127.0.0.1:0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ledger.errors import LedgerError
    from sim.adversary import Cheat, CheatingNodeDaemon, CheatSpecError
    from prover.daemon import NodeDaemon
    from prover.errors import NodeKeyError
    from prover.keys import NodeKeys
    from prover.local_files import DataDirLock, DataDirLocked

    def bad(msg: str) -> int:
        print(f"prover serve: {msg}", file=sys.stderr)
        return EXIT_INCOMPLETE

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.max_jobs is not None and args.max_jobs < 1:
        return bad("--max-jobs must be at least 1")
    if args.openings != "ledger" and not args.openings.rpartition(":")[2].isdigit():
        return bad(f"--openings {args.openings!r} is not HOST:PORT or 'ledger'")
    if args.poll <= 0 or args.timeout <= 0 or args.heartbeat <= 0:
        return bad("--poll, --timeout and --heartbeat must be positive")
    try:
        cheat = Cheat.parse(args.cheat) if args.cheat else None
    except CheatSpecError as exc:
        return bad(str(exc))
    try:
        keys = NodeKeys.load(args.key)
    except NodeKeyError as exc:
        return bad(str(exc))
    try:
        lock = DataDirLock(args.data)  # one serve per data directory: DATA/serve.lock holds the pid
    except (DataDirLocked, OSError) as exc:
        return bad(str(exc))
    with lock:
        try:
            if cheat is None:
                daemon = NodeDaemon(args.ledger, keys, args.data, poll_s=args.poll, timeout_s=args.timeout)
            else:
                daemon = CheatingNodeDaemon(args.ledger, keys, args.data, cheat, poll_s=args.poll,
                                            timeout_s=args.timeout)
        except (LedgerError, OSError) as exc:
            return bad(f"cannot open the ledger: {exc}")
        daemon.heartbeat_s = args.heartbeat
        daemon.serve_openings = None if args.openings == "ledger" else args.openings
        return run_until_signalled(lambda stop: daemon.run(stop, max_jobs=args.max_jobs), "shardproof.daemon")
