"""Shared plumbing for the thin command layer: exit codes and subcommand dispatch."""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Callable, Sequence

# Exit codes mean something (see README "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1  # the check ran and found a problem (cheater, bad ledger, ...)
EXIT_INCOMPLETE = 2  # could not finish (unreachable node, bad usage, missing input)
EXIT_NOT_YET = 3  # subcommand exists but is not implemented yet


def run_subcommands(prog: str, description: str, commands: dict[str, str], argv: Sequence[str] | None) -> int:
    """Dispatch `prog SUBCOMMAND ...` to `module:register` pairs.

    Each value of `commands` names a module exposing `register(subparsers) -> None`
    that adds one subparser whose `func(args) -> int` default runs the command.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in commands.items():
        importlib.import_module(module).register(sub, name)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INCOMPLETE
    return int(args.func(args))


def package_version() -> str:
    """The installed shardproof version (importlib.metadata), else the one in the source tree's pyproject.toml."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shardproof")
    except PackageNotFoundError:
        pass
    import tomllib
    from pathlib import Path

    try:
        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def not_yet(name: str, issue: str) -> Callable[[argparse._SubParsersAction, str], None]:
    """A placeholder subcommand that says it is not implemented yet and exits 3."""

    def register(sub: argparse._SubParsersAction, cmd: str) -> None:
        p = sub.add_parser(cmd, help=f"{name} (not yet: {issue})")
        p.add_argument("rest", nargs=argparse.REMAINDER)

        def func(_args: argparse.Namespace) -> int:
            print(f"{name}: not yet implemented ({issue})", file=sys.stderr)
            return EXIT_NOT_YET

        p.set_defaults(func=func)

    return register


def run_until_signalled(serve: Callable[[threading.Event], None], logger: str) -> int:
    """Run a daemon loop `serve(stop)` until SIGTERM or SIGINT sets `stop`; a clean stop exits 0."""
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        logging.getLogger(logger).info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve(stop)
    return EXIT_OK


def add_daemon_arguments(p: argparse.ArgumentParser, key_help: str, data_help: str) -> None:
    """The options every daemon takes: --ledger, --key, --data, --poll, --timeout."""
    p.add_argument("--ledger", required=True, help="ledger URL: sqlite:///path, postgresql://..., or a file path")
    p.add_argument("--key", required=True, help=key_help)
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--poll", type=float, default=0.2, help="ledger poll interval in seconds (default 0.2)")
    p.add_argument("--timeout", type=float, default=60.0, help="peer timeout in seconds (default 60)")
