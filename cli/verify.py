"""`verify`: auditors (audit, evidence, ledger-check; jobs, nodes, show, report; browse)."""
from __future__ import annotations

import sys
from typing import Sequence

from cli.common import run_subcommands

COMMANDS = {
    "audit": "cli.verify_audit",
    "evidence": "cli.verify_evidence",
    "ledger-check": "cli.ledger_check",
    "jobs": "cli.verify_reports",
    "nodes": "cli.verify_reports",
    "show": "cli.verify_reports",
    "report": "cli.verify_reports",
    "browse": "cli.browse",
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommands("verify", __doc__ or "", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
