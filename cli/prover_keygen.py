"""`prover keygen --out FILE [--id NODE_ID] [--json]`: create a node's key file (mode 0600, never overwritten).

Exit 0: written. Exit 2: refused (the file exists; a key is never overwritten) or bad input (invalid id,
unwritable path).
Format: specs/keys.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.common import EXIT_INCOMPLETE, EXIT_OK


def emit(args: argparse.Namespace, title: str, fields: dict[str, Any], style: str, code: int) -> int:
    """Print a result as a rich panel (a failure: one line on stderr) or as one JSON object; return `code`."""
    if getattr(args, "json", False):
        print(json.dumps({"ok": code == EXIT_OK, **fields}, indent=2, sort_keys=True))
        return code
    if code != EXIT_OK:
        print(" ".join(f"prover {title}: {fields.get('error', '')}".split()), file=sys.stderr)
        return code
    from rich.console import Console
    from rich.panel import Panel

    con = Console(stderr=code != EXIT_OK)
    con.print(Panel("\n".join(f"{k}: {v}" for k, v in fields.items()), title=title, style=style))
    return code


def public_fields(keys: Any) -> dict[str, str]:
    """Node id and hex public keys of a prover.keys.NodeKeys."""
    return {
        "node_id": keys.node_id,
        "ed25519": keys.ed25519_pub.hex(),
        "bls": keys.bls_pub.hex(),
        "x25519": keys.x25519_pub.hex(),
    }


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="create a node key file (Ed25519, BLS12-381, X25519) with mode 0600",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="key file to create (refused if it exists)")
    p.add_argument("--id", default=None, help="node id (default: node-<16 hex of BLAKE3 of the Ed25519 key>)")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prover.errors import KeyFileExists, NodeKeyError
    from prover.keys import keygen

    try:
        keys = keygen(args.out, node_id=args.id)
    except KeyFileExists as exc:
        return emit(args, "keygen refused", {"error": str(exc)}, "red", EXIT_INCOMPLETE)
    except NodeKeyError as exc:
        return emit(args, "keygen: bad input", {"error": f"{type(exc).__name__}: {exc}"}, "yellow", EXIT_INCOMPLETE)
    return emit(args, "node keys written", {"path": str(args.out), **public_fields(keys)}, "green", EXIT_OK)
