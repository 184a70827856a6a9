"""`prover register --ledger URL --key FILE --endpoint HOST:PORT [--roles node[,...]] [--operator ID] [--json]`.

Appends the node's self-signed `node.register` entry (Ed25519, BLS12-381 with
proof of possession, X25519, endpoint, roles, operator) to an existing ledger.
--operator names who runs the node (default: the node itself); nodes of one
operator never hold two share indices of one job (specs/threat-model.md).
Re-running with the same keys, roles, endpoint and operator is a no-op (exit 0);
a different registration under the same id is refused (v1 has no key rotation).
Exit 0: registered. Exit 1: refused by the ledger. Exit 2: bad input or unreachable ledger.
"""
from __future__ import annotations

import argparse
import re

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, add_key_argument, add_ledger_argument
from cli.prover_keygen import emit, public_fields

_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)")
REGISTRABLE_ROLES = ("node", "owner", "client", "dealer", "verifier", "witness")  # "log" is the ledger's own


def parse_endpoint(text: str) -> str:
    """`text` if it is HOST:PORT (IPv6 in brackets, port 1..65535); raises ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"endpoint {text!r} is not HOST:PORT (IPv6 as [addr]:port, port 1..65535)")
    return f"{host}:{int(port)}"


def parse_roles(values: list[str]) -> tuple[str, ...]:
    """Roles from repeated and/or comma-separated values, de-duplicated in order; raises ValueError."""
    out: list[str] = []
    for v in values:
        for r in v.split(","):
            r = r.strip()
            if r not in REGISTRABLE_ROLES:
                raise ValueError(f"role {r!r} not one of {', '.join(REGISTRABLE_ROLES)}")
            if r not in out:
                out.append(r)
    if not out:
        raise ValueError("at least one role is needed")
    return tuple(out)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="register this node's public keys and endpoint on the ledger",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ledger_argument(p)
    add_key_argument(p, "key file written by `prover keygen`")
    p.add_argument("--endpoint", default=None, help="HOST:PORT where this node accepts private channels "
                                                    "(required for the roles node and dealer)")
    p.add_argument("--roles", action="append", default=None, metavar="ROLE[,ROLE...]",
                   help=f"roles, comma-separated or repeated, each one of: {', '.join(REGISTRABLE_ROLES)} (default: node)")
    p.add_argument("--operator", default=None, metavar="ID",
                   help="who runs this node (1-128 of: letters, digits, . _ : @ -; default: the node's own id). "
                        "A job never gives one operator two share indices")
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ledger.errors import AuthError, EntryError
    from ledger.log import Ledger
    from prover.errors import NodeKeyError
    from prover.keys import NodeKeys, lookup_peer, registration_entry, validate_operator_id

    def bad(msg: str) -> int:
        return emit(args, "register: bad input", {"error": msg}, "yellow", EXIT_INCOMPLETE)

    try:
        roles = parse_roles(args.roles or ["node"])
        if args.endpoint is None and {"node", "dealer"} & set(roles):
            raise ValueError("a node or a dealer needs --endpoint HOST:PORT")
        endpoint = parse_endpoint(args.endpoint) if args.endpoint is not None else None
        if args.operator is not None:
            validate_operator_id(args.operator)
    except (ValueError, NodeKeyError) as exc:
        return bad(str(exc))
    try:
        keys = NodeKeys.load(args.key)
    except NodeKeyError as exc:
        return bad(f"{type(exc).__name__}: {exc}")
    try:
        led = Ledger.open(args.ledger, create=False)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the ledger is exit 2, never a traceback
        return emit(args, "register: ledger unreachable", {"error": f"{type(exc).__name__}: {exc}"}, "yellow",
                    EXIT_INCOMPLETE)
    operator = args.operator if args.operator is not None else keys.node_id
    info = {**public_fields(keys), "endpoint": endpoint, "roles": list(roles), "operator": operator,
            "ledger": args.ledger}
    try:
        existing = lookup_peer(led, keys.node_id)
        if existing is not None:
            same = (existing.ed25519, existing.bls, existing.x25519, existing.endpoint, existing.roles,
                    existing.operator) == (keys.ed25519_pub, keys.bls_pub, keys.x25519_pub, endpoint, roles, operator)
            if same:
                return emit(args, "already registered", {**info, "index": existing.index, "already": True}, "green",
                            EXIT_OK)
            return emit(args, "register refused", {
                **info, "index": existing.index,
                "error": f"{keys.node_id!r} is already registered at index {existing.index} with other keys, "
                         f"roles, endpoint or operator (no re-registration in ledger v1)"}, "red", EXIT_FAILED)
        index = led.append(registration_entry(keys, roles=roles, endpoint=endpoint, operator=args.operator))
    except (AuthError, EntryError) as exc:
        return emit(args, "register refused", {**info, "error": f"{type(exc).__name__}: {exc}"}, "red", EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - storage trouble (LedgerError or driver) is exit 2, never a traceback
        return emit(args, "register: ledger error", {**info, "error": f"{type(exc).__name__}: {exc}"}, "yellow",
                    EXIT_INCOMPLETE)
    finally:
        led.close()
    return emit(args, "registered", {**info, "index": index}, "green", EXIT_OK)
