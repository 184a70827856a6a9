"""`verify evidence FILE`: check an evidence bundle offline (no database, no network).

Verifies the ledger proofs and signatures in the bundle, that the challenge
follows from the sealed commitments, and replays every accused party.
Exit codes: 0 the evidence proves the accusation, 1 it does not, 2 unreadable file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="check an evidence bundle offline", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path)
    p.add_argument("--log-key", help="hex BLS key of the ledger, to pin the checkpoint signer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.panel import Panel

    from verifier.ledger_audit import check_evidence

    try:
        data = args.file.read_bytes()
        key = bytes.fromhex(args.log_key) if args.log_key else None
    except (OSError, ValueError) as exc:
        Console(stderr=True).print(f"verify evidence: {exc}")
        return EXIT_INCOMPLETE
    c = check_evidence(data, key)
    if args.json:
        print(json.dumps(c.as_dict()))
    else:
        body = (f"[bold red]proven: {', '.join(c.accused)} cheated[/]" if c.ok else "[yellow]not proven[/]")
        details = [p.reason for p in c.parties] + c.reasons
        pin = "" if key else "\n(checkpoint signer not pinned: pass --log-key to pin it)"
        Console().print(Panel(body + "\n" + "\n".join(details) + pin, title=f"evidence {args.file.name}"))
    return EXIT_OK if c.ok else EXIT_FAILED
