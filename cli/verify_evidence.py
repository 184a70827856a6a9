"""`verify evidence FILE`: check an evidence bundle offline (no database, no network).

Verifies the ledger proofs and signatures in the bundle against a pinned log key
(--log-key, or the key pinned for the bundle's log in the known-logs file), the
authorship of every counted entry, that the challenge follows from the sealed
commitments and the revealed beacons, and then either replays every accused party
or checks that its answer is absent from the log up to the deadline (defaulted).
Exit codes: 0 the evidence proves the accusation, 1 it does not, 2 unreadable
file or no pinned log key (could not decide).
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
    p.add_argument("--log-key", metavar="HEX", help="the log's BLS public key (`shardproof ledger info`); default: "
                                                    "the key pinned for the bundle's log in the known-logs file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.panel import Panel

    from ledger.evidence import bundle_origin
    from verifier.known_logs import KnownLogsError, pinned_key
    from verifier.ledger_audit import check_evidence

    try:
        data = args.file.read_bytes()
        key = bytes.fromhex(args.log_key) if args.log_key else pinned_key(bundle_origin(data) or "")
    except (OSError, ValueError, KnownLogsError) as exc:
        Console(stderr=True).print(f"verify evidence: {exc}")
        return EXIT_INCOMPLETE
    c = check_evidence(data, key)
    if args.json:
        print(json.dumps(c.as_dict()))
    else:
        if c.ok:
            body = f"[bold red]proven: {', '.join(c.accused)} cheated or defaulted[/]"
        elif c.status == "unpinned":
            body = "[yellow]unpinned: no log key to check the bundle against (could not decide)[/]"
        else:
            body = "[yellow]not proven[/]"
        details = [f"party {p.party} ({p.node}): {p.status}: {p.reason}" for p in c.parties] + c.reasons
        Console().print(Panel(body + "\n" + "\n".join(details), title=f"evidence {args.file.name}"))
    if c.status == "unpinned":
        return EXIT_INCOMPLETE
    return EXIT_OK if c.ok else EXIT_FAILED
