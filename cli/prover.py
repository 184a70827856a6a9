"""`prover`: node operators (keygen, register, serve, gc)."""
from __future__ import annotations

import sys
from typing import Sequence

from cli.common import run_subcommands

COMMANDS = {
    "keygen": "cli.prover_keygen",
    "register": "cli.prover_register",
    "serve": "cli.prover_serve",
    "gc": "cli.gc",
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommands("prover", __doc__ or "", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
