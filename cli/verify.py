"""`verify`: auditors (audit, evidence, ledger-check)."""
from __future__ import annotations

import sys
from typing import Sequence

from cli.common import run_subcommands

COMMANDS = {
    "audit": "cli.verify_audit",
    "evidence": "cli.verify_evidence",
    "ledger-check": "cli.ledger_check",
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommands("verify", __doc__ or "", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
