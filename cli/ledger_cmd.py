"""`shardproof ledger init|serve|info|get|prune`: the log operator's role.

  init  --ledger URL --key log.key [--origin NAME] [--json]
        Create the ledger (schema, origin, the log's BLS key; the log identity is
        registered at index 0) and sign its first checkpoint. The only command that
        creates a ledger: refused when one exists. --key is a key file in the node
        key format (`prover keygen`); when it does not exist, init generates it
        (id "log", mode 0600) and says so.
  serve --ledger URL --key log.key [--interval S] [--prune-after-days D]
        Sign a checkpoint whenever entries other than checkpoints have arrived since
        the latest one, at most every S seconds (default 1). Stateless: a restart
        resumes. SIGTERM or SIGINT stop it cleanly. Collects the witnesses'
        cosignatures (checkpoint.cosign entries) into the stored checkpoints.
  witness --ledger URL --key witness.key [--state FILE] [--log-key HEX] [--interval S] [--once]
        A witness (registered with the role witness): cosigns the latest checkpoint
        once it is signed by the pinned log key and consistent with the last one it
        cosigned (RFC 9162 section 8.2); a split view is refused with exit 1.
        With --prune-after-days D, also prunes (as `prune --keep-days D`) at start and
        once a day.
  info  --ledger URL [--json]
        Origin, hash, tree size and root, the latest signed checkpoint (size, root,
        time) and the log's BLS public key (hex): the value auditors pin
        (`verify ledger-check --log-key`, `verify evidence --log-key`).
  get   INDEX --ledger URL [--json]  |  get --job JOB --ledger URL [--json]
        The entry (kind, author, time, body with bytes as hex) or every entry of a
        job, each with its inclusion proof under the latest signed checkpoint
        checked ("included under checkpoint N").
  prune --ledger URL --key log.key [--keep-days D] [--dry-run] [--json]
        Blob retention (specs/ledger.md section 6.1): delete the bytes of the opening
        blobs (each node's own and the public values) and the dealer's release of every
        job whose audit window has closed: the job has a verdict by an auditor or its
        opener's job.fail, and its newest entry is older than D days (default 30). Never
        a model, refresh or registration blob, nor one any such entry references. Entries and
        roots are untouched; each pruned digest is recorded, so `verify ledger-check`
        reports it as "pruned by retention", and an audit of the job says "could not
        decide". --key must be this ledger's log key.

Exit 0: done. Exit 1: a check found a problem (a checkpoint or inclusion proof
that does not verify, an entry signature that does not verify). Exit 2: bad
input, no ledger (or, for init, an existing one), a bad key file, an entry not
yet under a signed checkpoint.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, add_ledger_argument, run_until_signalled

from ledger.operator import DEFAULT_INTERVAL_S, DEFAULT_MAX_IDLE_S
from ledger.retention import DEFAULT_KEEP_DAYS

LOG_NODE_ID = "log"


class CommandError(Exception):
    """Ends a ledger subcommand with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_INCOMPLETE) -> None:
        super().__init__(message)
        self.code = code


_VERBS_DOC = ("--ledger defaults to $SHARDPROOF_LEDGER, else `ledger` in ~/.config/shardproof/config.toml; "
              "--key is the log's own key (no configured default). Exit 0 ok, 1 refused or bad, 2 could not run.")


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="the log operator's role: init, serve (sign checkpoints), info, get, prune",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    url_help = "ledger URL: sqlite:///path, postgresql://..., or a file path"

    s = verbs.add_parser("init", help="create a ledger and record the log's key (refused if one exists)",
                         description="Create a ledger and record the log's key (refused if one exists). " + _VERBS_DOC)
    add_ledger_argument(s, url_help)
    s.add_argument("--key", required=True, type=Path,
                   help="the log's key file (node key format, `prover keygen`); generated (id 'log', mode 0600) "
                        "if it does not exist")
    s.add_argument("--origin", default=None, help="the log's origin name, signed into every checkpoint "
                                                  "(default: the ledger's default origin)")
    s.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    s.set_defaults(func=_guard(run_init, "init"))

    s = verbs.add_parser("serve", help="sign a checkpoint whenever new entries arrived (a daemon)",
                         description="Sign a checkpoint whenever new entries arrived (a daemon). " + _VERBS_DOC)
    add_ledger_argument(s, url_help)
    s.add_argument("--key", required=True, type=Path, help="the log's key file (the one `ledger init` recorded)")
    s.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S,
                   help=f"at most one checkpoint every this many seconds (default {DEFAULT_INTERVAL_S:g})")
    s.add_argument("--max-idle", type=float, default=DEFAULT_MAX_IDLE_S,
                   help=f"at least one checkpoint every this many seconds, even when no entry arrived: the log's "
                        f"clock, in which job deadlines are counted (default {DEFAULT_MAX_IDLE_S:g})")
    s.add_argument("--prune-after-days", type=float, default=None, metavar="D",
                   help="also prune blobs as `ledger prune --keep-days D` does, at start and once a day "
                        "(default: never)")
    s.set_defaults(func=_guard(run_serve, "serve"))

    s = verbs.add_parser("prune", help="delete the opening blobs of jobs whose audit window closed (retention)",
                         description="Delete the bytes of the opening blobs of jobs whose audit window has closed: "
                                     "a verdict or the opener's job.fail, and the newest entry older than "
                                     "--keep-days. Entries and roots are untouched; every pruned digest is recorded. "
                                     + _VERBS_DOC)
    add_ledger_argument(s, url_help)
    s.add_argument("--key", required=True, type=Path, help="the log's key file (the one `ledger init` recorded)")
    s.add_argument("--keep-days", type=float, default=DEFAULT_KEEP_DAYS, metavar="D",
                   help=f"keep the blobs of every job whose newest entry is younger than D days (default "
                        f"{DEFAULT_KEEP_DAYS:g}; 0: every closed job)")
    s.add_argument("--dry-run", action="store_true", help="report what would be pruned; delete nothing")
    s.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    s.set_defaults(func=_guard(run_prune, "prune"))

    s = verbs.add_parser("witness", help="cosign the log's checkpoints after checking them (a witness; a daemon)",
                         description="A witness: cosign the log's latest checkpoint once it is signed by the pinned "
                                     "log key and consistent with the last one this witness cosigned (kept in "
                                     "--state); `ledger serve` aggregates the cosignatures into the stored "
                                     "checkpoints. The key must be registered with the role witness "
                                     "(`prover register --roles witness`). Exit 1: the log showed an "
                                     "inconsistent or badly signed checkpoint (a split view). " + _VERBS_DOC)
    add_ledger_argument(s, url_help)
    s.add_argument("--key", required=True, type=Path, help="the witness's key file (`prover keygen`)")
    s.add_argument("--state", type=Path, default=Path("witness-state.json"),
                   help="the witness's state: the pinned log and the last cosigned tree head (default "
                        "witness-state.json; created on the first run, which needs --log-key)")
    s.add_argument("--log-key", default=None, metavar="HEX",
                   help="the log's BLS public key to pin (from `shardproof ledger info`); required on the first "
                        "run, and must match the state afterwards")
    s.add_argument("--interval", type=float, default=10.0,
                   help="look for a new checkpoint every this many seconds (default 10)")
    s.add_argument("--once", action="store_true", help="cosign the latest checkpoint once and exit")
    s.add_argument("--json", action="store_true", help="with --once: machine-readable result on stdout")
    s.set_defaults(func=_guard(run_witness, "witness"))

    s = verbs.add_parser("info", help="tree size and root, latest checkpoint, origin and the log's public key",
                         description="Tree size and root, latest checkpoint, origin and the log's public key. " + _VERBS_DOC)
    add_ledger_argument(s, url_help)
    s.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    s.set_defaults(func=_guard(run_info, "info"))

    s = verbs.add_parser("get", help="an entry (or a job's entries) with its inclusion proof checked",
                         description="An entry (or a job's entries) with its inclusion proof checked. " + _VERBS_DOC)
    s.add_argument("index", nargs="?", default=None, metavar="INDEX", help="entry index (0-based)")
    s.add_argument("--job", default=None, metavar="JOB", help="every entry of this job id instead of INDEX")
    add_ledger_argument(s, url_help)
    s.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    s.set_defaults(func=_guard(run_get, "get"))

    def no_verb(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return EXIT_INCOMPLETE

    p.set_defaults(func=no_verb)


def _guard(fn, verb: str):
    """Run `fn(args)`; a CommandError or any ledger, key or OS error ends in one line on stderr, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        from ledger.errors import LedgerError
        from prover.errors import ProverError
        from models.errors import ModelsError

        try:
            return fn(args)
        except CommandError as exc:
            msg, code = str(exc), exc.code
        except (LedgerError, ProverError, ModelsError, OSError, ValueError) as exc:
            msg, code = f"{type(exc).__name__}: {exc}", EXIT_INCOMPLETE
        msg = " ".join(msg.split())  # one line
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": msg}))
        print(f"shardproof ledger {verb}: {msg}", file=sys.stderr)
        return code

    return run


# --- helpers ------------------------------------------------------------------------------
def _open_existing(url: str, **kw: Any):
    from ledger import Ledger, LedgerError

    try:
        return Ledger.open(url, create=False, **kw)
    except LedgerError as exc:
        if "no ledger" in str(exc):
            raise CommandError(f"no ledger at {url} (create one with `shardproof ledger init`)") from exc
        raise


def _load_key(path: Path):
    from prover.errors import NodeKeyError
    from prover.keys import NodeKeys

    try:
        return NodeKeys.load(path)
    except NodeKeyError as exc:
        raise CommandError(f"bad key file: {exc}") from exc


def _ms_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def plain(value: Any) -> Any:
    """A JSON-able copy of a CBOR value: bytes as hex, map keys as str."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _checkpoint_time(led, scp) -> int | None:
    """The time (ms) of the `checkpoint` entry that logged `scp`, if the log holds one."""
    from ledger import entries as E

    for le in led.query(kind=E.CHECKPOINT, start=scp.size, limit=4):
        cp = le.body.get("checkpoint", {}).get("checkpoint", {})
        if cp.get("size") == scp.size and cp.get("root") == scp.root:
            return le.entry.time
    return None


def _checkpoint_fields(led, scp) -> dict[str, Any] | None:
    if scp is None:
        return None
    t = _checkpoint_time(led, scp)
    witnesses = {r.bls: r.node_id for r in led.registrations()}
    return {"size": scp.size, "root": scp.root.hex(), "time_ms": t, "time": _ms_iso(t),
            "signers": len(scp.signers), "verified": scp.verify(led.log_key),
            "cosigners": [witnesses.get(k, k.hex()[:16]) for k in scp.signers[1:]]}


def _table(title: str, rows: list[tuple[str, str]]):
    from rich.table import Table

    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(k, v)
    return t


# --- init ---------------------------------------------------------------------------------
def run_init(args: argparse.Namespace) -> int:
    from ledger.errors import LedgerExists
    from ledger.operator import init_ledger, refuse_existing
    from prover.keys import NodeKeys

    try:
        refuse_existing(args.ledger)  # before a key is generated for it
    except LedgerExists as exc:
        raise CommandError(str(exc)) from None

    generated = not args.key.exists() and not args.key.is_symlink()
    if generated:
        keys = NodeKeys.generate(LOG_NODE_ID)
        keys.save(args.key)  # mode 0600, never overwrites (KeyFileExists on a race)
    else:
        keys = _load_key(args.key)
    import contextlib

    from rich.console import Console

    err = Console(stderr=True)
    busy = err.status("creating the ledger and signing its first checkpoint...") if err.is_terminal \
        else contextlib.nullcontext()
    try:
        with busy:
            led = init_ledger(args.ledger, keys.identity, args.origin)
            try:
                scp = led.latest_checkpoint()
                size, root = led.tree_head()
                info = {"ledger": args.ledger, "origin": led.origin, "hash": led.hash_name,
                        "log_node": keys.node_id, "log_key": (led.log_key or b"").hex(), "key_file": str(args.key),
                        "key_generated": generated, "size": size, "root": root.hex(), "checkpoint_size": scp.size}
            finally:
                led.close()
    except BaseException:
        if generated:
            args.key.unlink(missing_ok=True)  # do not leave a key for a ledger that was not created
        raise
    if args.json:
        print(json.dumps({"ok": True, **info}, indent=2, sort_keys=True))
        return EXIT_OK
    con = Console()
    con.print(_table(f"ledger created: {args.ledger}", [(k, str(v)) for k, v in info.items()]))
    if generated:
        con.print(f"generated the log key {args.key} (mode 0600); keep it secret, `ledger serve` needs it",
                  highlight=False)
    con.print(f"auditors pin the log key: verify ledger-check --ledger {args.ledger} --log-key {info['log_key']}",
              highlight=False, soft_wrap=True)
    return EXIT_OK


# --- serve --------------------------------------------------------------------------------
def _check_keep_days(days: float | None, flag: str) -> None:
    if days is not None and not (days >= 0 and days != float("inf")):
        raise CommandError(f"{flag} must be a number of days >= 0, not {days!r}")


def _open_as_log(args: argparse.Namespace):
    """The ledger at --ledger opened with the log key at --key (refused when it is not this ledger's)."""
    from ledger.errors import LedgerConfigMismatch

    keys = _load_key(args.key)
    try:
        return _open_existing(args.ledger, log_identity=keys.identity)
    except LedgerConfigMismatch as exc:
        raise CommandError(f"{args.key} is not this ledger's log key ({exc})") from exc


def run_serve(args: argparse.Namespace) -> int:
    if not args.interval > 0 or args.interval == float("inf"):
        raise CommandError("--interval must be a positive number of seconds")
    if not args.max_idle >= args.interval or args.max_idle == float("inf"):
        raise CommandError("--max-idle must be a number of seconds no smaller than --interval")
    _check_keep_days(args.prune_after_days, "--prune-after-days")
    led = _open_as_log(args)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("shardproof.log")

    from ledger.operator import LogOperator

    def serve(stop) -> None:
        log.info("log %s serving %s (origin %r, log key %s), a checkpoint at most every %gs and at least every "
                 "%gs", led.identity.node_id, args.ledger, led.origin, (led.log_key or b"").hex()[:16],
                 args.interval, args.max_idle)
        try:
            LogOperator(led, args.interval, args.max_idle, prune_after_days=args.prune_after_days).serve(stop)
        finally:
            led.close()
            log.info("stopped")

    return run_until_signalled(serve, "shardproof.log")


# --- witness ------------------------------------------------------------------------------
def _witness_state(args: argparse.Namespace, led):
    from ledger.errors import CheckpointError
    from ledger.witness import WitnessState

    pinned = None
    if args.log_key is not None:
        try:
            pinned = bytes.fromhex(args.log_key)
        except ValueError:
            raise CommandError(f"--log-key must be hex, got {args.log_key!r}") from None
    if args.state.exists():
        try:
            st = WitnessState.load(args.state)
        except (CheckpointError, OSError) as exc:
            raise CommandError(f"bad witness state {args.state}: {exc}") from None
        if pinned is not None and pinned != st.log_key:
            raise CommandError(f"--log-key differs from the log key pinned in {args.state}")
        if st.origin != led.origin:
            raise CommandError(f"{args.state} watches the log {st.origin!r}, this ledger is {led.origin!r}")
        return st
    if pinned is None:
        raise CommandError(f"no witness state at {args.state}: pass --log-key (from `shardproof ledger info`) "
                           "to pin the log on the first run")
    st = WitnessState(led.origin, pinned)
    st.save(args.state)
    return st


def run_witness(args: argparse.Namespace) -> int:
    from ledger.errors import CheckpointError
    from ledger.witness import WITNESS_ROLE, witness_step

    if not args.interval > 0 or args.interval == float("inf"):
        raise CommandError("--interval must be a positive number of seconds")
    keys = _load_key(args.key)
    led = _open_existing(args.ledger)
    try:
        reg = led.registration(keys.node_id)
        if reg is None or reg.bls != keys.identity.bls_pub or \
                WITNESS_ROLE not in led.get(reg.index).entry.body.get("roles", []):
            raise CommandError(f"{keys.node_id!r} is not registered with the role witness under this key "
                               "(prover register --roles witness)")
        st = _witness_state(args, led)
        if args.once:
            try:
                scp = witness_step(led, keys.identity, st)
            except CheckpointError as exc:
                raise CommandError(f"refused to cosign: {exc}", EXIT_FAILED) from None
            st.save(args.state)
            out = {"ok": True, "cosigned": scp is not None, "size": st.size, "root": st.root.hex() if st.root else None}
            print(json.dumps(out, sort_keys=True) if args.json else
                  (f"cosigned checkpoint {st.size}" if scp is not None else f"nothing new since checkpoint {st.size}"))
            return EXIT_OK
    except BaseException:
        led.close()
        raise
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("shardproof.witness")
    refused: list[str] = []

    def serve(stop) -> None:
        log.info("witness %s watching %s (log key %s), from (%d, %s)", keys.node_id, args.ledger, st.log_key.hex()[:16],
                 st.size, st.root.hex()[:16] if st.root else "-")
        try:
            while not stop.is_set():
                try:
                    scp = witness_step(led, keys.identity, st)
                    if scp is not None:
                        st.save(args.state)
                        log.info("cosigned checkpoint %d %s", scp.size, scp.root.hex()[:16])
                except CheckpointError as exc:  # a split view or a bad signature: stop, say why
                    log.error("refused to cosign: %s", exc)
                    refused.append(str(exc))
                    return
                except LedgerError as exc:
                    log.warning("ledger unavailable, retrying: %s", exc)
                stop.wait(args.interval)
        finally:
            led.close()

    from ledger.errors import LedgerError

    rc = run_until_signalled(serve, "shardproof.witness")
    return EXIT_FAILED if refused else rc


# --- info ---------------------------------------------------------------------------------
def run_info(args: argparse.Namespace) -> int:
    led = _open_existing(args.ledger)
    try:
        size, root = led.tree_head()
        cp = _checkpoint_fields(led, led.latest_checkpoint())
        info = {"ledger": args.ledger, "origin": led.origin, "hash": led.hash_name, "size": size, "root": root.hex(),
                "log_node": led.log_node, "log_key": led.log_key.hex() if led.log_key else None, "checkpoint": cp}
    finally:
        led.close()
    code = EXIT_FAILED if cp is not None and not cp["verified"] else EXIT_OK
    if args.json:
        print(json.dumps({"ok": code == EXIT_OK, **info}, indent=2, sort_keys=True))
    else:
        from rich.console import Console

        rows = [(k, str(info[k])) for k in ("origin", "hash", "size", "root", "log_node", "log_key")]
        if cp is None:
            rows.append(("checkpoint", "none yet (is `shardproof ledger serve` running?)"))
        else:
            rows += [("checkpoint size", str(cp["size"])), ("checkpoint root", cp["root"]),
                     ("checkpoint time", cp["time"] or "-"),
                     ("witness cosignatures", ", ".join(cp["cosigners"]) or "none"),
                     ("checkpoint signature", "verifies under the log key" if cp["verified"] else "DOES NOT VERIFY")]
        Console().print(_table(f"ledger {args.ledger}", rows))
    if code != EXIT_OK:
        print("shardproof ledger info: the latest checkpoint's signature does not verify under the log key",
              file=sys.stderr)
    return code


# --- get ----------------------------------------------------------------------------------
def _parse_index(text: str) -> int:
    try:
        index = int(text, 10)
    except ValueError:
        raise CommandError(f"INDEX must be a non-negative integer, got {text!r}") from None
    if index < 0:
        raise CommandError(f"INDEX must be a non-negative integer, got {text!r}")
    return index


def entry_report(led, le, scp) -> dict[str, Any]:
    """One entry as plain fields, with its signature and its inclusion under `scp` checked."""
    from ledger import entries as E
    from ledger import merkle

    reg = led.registration(le.author)
    out: dict[str, Any] = {
        "index": le.index, "kind": le.kind, "author": le.author, "time_ms": le.entry.time,
        "time": _ms_iso(le.entry.time), "body": plain(le.body),
        "signature_ok": bool(reg is not None and le.entry.verify_sig(reg.ed25519)),
        "included_under": None, "proof": None,
    }
    if le.kind == E.REGISTER:  # who runs the node: declared, else the node itself (specs/threat-model.md)
        out["operator"] = E.registered_operator(le.entry)
    if scp is not None and le.index < scp.size:
        proof = led.inclusion_proof(le.index, scp.size)
        ok = merkle.verify_inclusion(le.data, le.index, scp.size, proof, scp.root, led.hash_name)
        out["proof"] = [h.hex() for h in proof]
        out["inclusion_ok"] = ok
        out["included_under"] = {"size": scp.size, "root": scp.root.hex()}
    return out


def run_get(args: argparse.Namespace) -> int:
    from ledger.errors import NotFound

    if (args.index is None) == (args.job is None):
        raise CommandError("give exactly one of INDEX or --job JOB")
    index = None if args.index is None else _parse_index(args.index)
    led = _open_existing(args.ledger)
    try:
        if index is not None:
            try:
                found = [led.get(index)]
            except NotFound:
                raise CommandError(f"no entry at index {index} (the ledger has {led.size()} entries)") from None
        else:
            found = led.by_job(args.job)
            if not found:
                raise CommandError(f"no entries for job {args.job!r}")
        scp = led.latest_checkpoint()
        cp_ok = scp is not None and scp.verify(led.log_key)
        reports = [entry_report(led, le, scp) for le in found]
    finally:
        led.close()

    problems: list[str] = []
    failed = incomplete = False
    if scp is not None and not cp_ok:
        problems.append(f"the latest checkpoint (size {scp.size}) does not verify under the log key")
        failed = True
    for r in reports:
        if r["included_under"] is None:
            problems.append(f"entry {r['index']} is not yet under a signed checkpoint (latest covers "
                            f"{scp.size if scp else 0} entries; is `shardproof ledger serve` running?)")
            incomplete = True
        elif not r["inclusion_ok"]:
            problems.append(f"entry {r['index']}: the inclusion proof does not verify under checkpoint {scp.size}")
            failed = True
        if not r["signature_ok"]:
            problems.append(f"entry {r['index']}: the author's signature does not verify")
            failed = True
    code = EXIT_FAILED if failed else EXIT_INCOMPLETE if incomplete else EXIT_OK
    if args.json:
        doc: dict[str, Any] = {"ok": code == EXIT_OK,
                               "checkpoint": None if scp is None else {"size": scp.size, "root": scp.root.hex(),
                                                                       "verified": cp_ok}}
        if index is not None:
            doc["entry"] = reports[0]
        else:
            doc["job"], doc["entries"] = args.job, reports
        if problems:
            doc["problems"] = problems
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        from rich.console import Console

        con = Console()
        for r in reports:
            rows = [("kind", r["kind"]), ("author", r["author"]), ("time", f"{r['time']} ({r['time_ms']} ms)"),
                    ("signature", "ok" if r["signature_ok"] else "DOES NOT VERIFY"),
                    *([("operator", r["operator"])] if "operator" in r else []),
                    ("body", json.dumps(r["body"], indent=2, sort_keys=True))]
            if r["included_under"] is not None:
                inc = r["included_under"]
                rows.append(("inclusion", (f"included under checkpoint {inc['size']} (root {inc['root'][:16]}...)"
                                           if r["inclusion_ok"] and cp_ok else "DOES NOT VERIFY")))
            else:
                rows.append(("inclusion", "not yet under a signed checkpoint"))
            con.print(_table(f"entry {r['index']}", rows))
    for msg in problems:
        print(f"shardproof ledger get: {msg}", file=sys.stderr)
    return code


# --- prune --------------------------------------------------------------------------------
def run_prune(args: argparse.Namespace) -> int:
    _check_keep_days(args.keep_days, "--keep-days")
    led = _open_as_log(args)
    try:
        rep = led.prune(args.keep_days, dry_run=args.dry_run)
    finally:
        led.close()
    doc = rep.as_dict()
    if args.json:
        print(json.dumps({"ok": True, "ledger": args.ledger, **doc}, indent=2, sort_keys=True))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"shardproof ledger prune {args.ledger}{' (dry run)' if args.dry_run else ''}",
              title_justify="left")
    for c in ("job", "action", "blobs", "MB", "why"):
        t.add_column(c, justify="right" if c in ("blobs", "MB") else "left")
    action = "would prune" if args.dry_run else "pruned"
    earlier = 0  # closed, expired jobs with nothing left to prune (pruned by an earlier run)
    for j in doc["jobs"]:
        if j["pruned"]:
            t.add_row(j["job_id"], action, str(len(j["pruned"])), f"{j['pruned_bytes'] / 1e6:.3f}", j["reason"])
        elif j["closed"] and j["expired"]:
            earlier += 1
        else:
            t.add_row(j["job_id"], "kept", "-", "-", j["reason"])
    con = Console()
    con.print(t)
    if earlier:
        con.print(f"{earlier} job(s) whose audit window closed have nothing left to prune", highlight=False,
                  soft_wrap=True)
    use = ""
    if doc["in_use_before"] is not None and doc["in_use_after"] is not None:
        use = f"; ledger in use {doc['in_use_before'] / 1e6:.3f} -> {doc['in_use_after'] / 1e6:.3f} MB"
    con.print(f"{'would free' if args.dry_run else 'freed'} {doc['freed_bytes'] / 1e6:.3f} MB stored "
              f"({doc['pruned_blobs']} blob(s), {doc['original_bytes'] / 1e6:.3f} MB original){use}",
              highlight=False, soft_wrap=True)
    return EXIT_OK
