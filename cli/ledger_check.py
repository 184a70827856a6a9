"""`verify ledger-check --ledger URL [--json] [--log-key HEX]`: recompute and verify a whole ledger.

A progress bar counts the entries on a terminal (not with --json, not when stdout is
not a terminal). Exit 0: clean (summary printed). Exit 1: the ledger is bad (first bad index and
reason). Exit 2: the check could not run (unreachable database, not a ledger).
A referenced blob deleted by `shardproof ledger prune` is reported as "pruned by
retention" (counted, not damage) when the retention rule releases it; a missing blob
that was not pruned, or that the rule never releases, is damage (exit 1).
"""
from __future__ import annotations

import argparse
import json
import sys

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, add_ledger_argument


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="recompute every leaf, node, root, signature and checkpoint of a ledger",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ledger_argument(p)
    p.add_argument("--log-key", default=None, help="pin the log's BLS public key (hex, 48 bytes)")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from cli.progress import on_terminal, progress_bar
    from ledger.log import Ledger

    err = Console(stderr=True)
    try:
        log_key = bytes.fromhex(args.log_key) if args.log_key else None
        if log_key is not None and len(log_key) != 48:
            raise ValueError("--log-key must be 48 bytes of hex")
        led = Ledger.open(args.ledger, create=False)
        try:
            size = led.size()
            with progress_bar("checking entries", size, on_terminal(args.json) and size > 2000) as advance:
                rep = led.check(log_key=log_key, progress=advance)
        finally:
            led.close()
    except Exception as exc:  # noqa: BLE001 - any failure to run is exit 2, never a traceback
        if args.json:
            print(json.dumps({"ok": None, "error": f"{type(exc).__name__}: {exc}"}))
        else:
            err.print(Panel(f"{type(exc).__name__}: {exc}", title="ledger-check could not run", style="yellow"))
        return EXIT_INCOMPLETE
    if args.json:
        print(json.dumps(rep.to_json(), indent=2))
        return EXIT_OK if rep.ok else EXIT_FAILED
    con = Console()
    t = Table(title=f"ledger-check {args.ledger}", show_header=False)
    for k, v in [
        ("origin", rep.origin),
        ("hash", rep.hash_name),
        ("size", str(rep.size)),
        ("root", rep.root.hex() if rep.root else "-"),
        ("entries / signatures", f"{rep.entries} / {rep.signatures}"),
        ("registrations", str(rep.registrations)),
        ("checkpoints", str(rep.checkpoints)),
        ("tree nodes (interior)", str(rep.tree_nodes)),
        ("blobs", str(rep.blobs)),
        ("blobs pruned by retention", f"{rep.pruned_blobs} ({rep.pruned_bytes / 1e6:.3f} MB)"),
        ("seconds", f"{rep.seconds:.2f}"),
    ]:
        t.add_row(k, v)
    con.print(t)
    if rep.ok:
        pruned = (f"; {rep.pruned_blobs} referenced blob(s) pruned by retention" if rep.pruned_blobs else "")
        con.print(Panel("every leaf, node, root, signature, checkpoint and blob verifies" + pruned, title="OK",
                        style="green"))
        return EXIT_OK
    lines = [f"first bad index: {rep.first_bad_index}", f"reason: {rep.reason}"]
    if len(rep.findings) > 1:
        lines.append(f"({len(rep.findings)} findings; --json lists them)")
    con.print(Panel("\n".join(lines), title="BAD LEDGER", style="red"))
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(EXIT_INCOMPLETE)
