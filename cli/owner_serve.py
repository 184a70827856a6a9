"""`shardproof owner serve --ledger URL --key owner.key --published DIR [DIR ...]`: the model owner online.

For every new job of a model published from one of the DIRs (`shardproof publish --out DIR`),
posts `model.refresh`: the commitments to that job's freshly re-randomised weight shares
(prover/owner_service.py). Nodes do not start a job of such a model without it.
SIGTERM or SIGINT stop it cleanly. Exit 0: clean shutdown. Exit 2: bad input or unreachable ledger.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cli.common import EXIT_INCOMPLETE, add_key_argument, add_ledger_argument, run_until_signalled


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="the model owner's role: per-job refresh commitments",
                       description="The model owner's role. Verbs: serve (post per-job refresh commitments).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    s = verbs.add_parser("serve", help="post the refresh commitments of every new job of the published models",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ledger_argument(s)
    add_key_argument(s, "the owner's key file (the one that published)", type=Path)
    s.add_argument("--published", required=True, nargs="+", type=Path, help="publication directories")
    s.add_argument("--poll", type=float, default=0.2, help="ledger poll interval in seconds (default 0.2)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ledger import Ledger, LedgerError
    from prover.errors import ProverError
    from models.errors import ModelsError
    from prover.keys import NodeKeys
    from models.publish import read_manifest
    from prover.owner_service import OwnerService

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        keys = NodeKeys.load(args.key)
        published = {read_manifest(d)["model_id"]: d for d in args.published}
        led = Ledger.open(args.ledger, create=False)
    except (ProverError, ModelsError, LedgerError, OSError) as exc:
        print(f"shardproof owner serve: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if args.poll <= 0:
        print("shardproof owner serve: --poll must be positive", file=sys.stderr)
        return EXIT_INCOMPLETE
    service = OwnerService(led, keys, published, poll_s=args.poll)
    logging.getLogger("shardproof.owner").info("owner %s serving %d models", keys.node_id, len(published))
    return run_until_signalled(service.run, "shardproof.owner")
