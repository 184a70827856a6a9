"""`shardproof`: clients, dealers, model owners and the log operator (infer, dealer serve, publish, owner serve, ledger, demo)."""
from __future__ import annotations

import sys
from typing import Sequence

from cli.common import run_subcommands

COMMANDS = {
    "demo": "cli.demo",
    "dealer": "cli.dealer_serve",
    "infer": "cli.infer",
    "ledger": "cli.ledger_cmd",
    "owner": "cli.owner_serve",
    "publish": "cli.publish",
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommands("shardproof", __doc__ or "", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
