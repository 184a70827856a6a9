"""Shared plumbing for the thin command layer: exit codes, subcommand dispatch, configured defaults.

Defaults for `--ledger` and `--key`: the flag, else $SHARDPROOF_LEDGER / $SHARDPROOF_KEY, else
`ledger = "..."` / `key = "..."` in ~/.config/shardproof/config.toml ($XDG_CONFIG_HOME if set)."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
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
    try:
        for name, module in commands.items():
            importlib.import_module(module).register(sub, name)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
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
    """The options every daemon takes: --ledger, --key, --data, --poll, --timeout, --heartbeat."""
    add_ledger_argument(p)
    add_key_argument(p, key_help)
    p.add_argument("--data", required=True, metavar="DIR", help=data_help)
    p.add_argument("--poll", type=float, default=0.2, metavar="S", help="ledger poll interval in seconds (default 0.2)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="peer timeout in seconds (default 60)")
    p.add_argument("--heartbeat", type=float, default=60.0, metavar="S",
                   help="post a node.heartbeat (live; the models held) at start and every S seconds (default 60)")


# --- configured defaults: flag > environment > config file ------------------------------------
CONFIG_ENV = {"ledger": "SHARDPROOF_LEDGER", "key": "SHARDPROOF_KEY"}
LEDGER_HELP = "ledger URL: sqlite:///path, postgresql://user@host/db, or a file path"


class ConfigError(Exception):
    """The config file cannot be read, or a value in it has the wrong type."""


def config_file() -> Path:
    """~/.config/shardproof/config.toml (under $XDG_CONFIG_HOME when set)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "shardproof" / "config.toml"


def configured(name: str) -> str | None:
    """The configured default of `name` ("ledger" or "key"): its environment variable, else the config file."""
    import tomllib

    env = os.environ.get(CONFIG_ENV[name])
    if env:
        return os.path.expanduser(env) if name == "key" else env
    path = config_file()
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config file {path}: {name} must be a non-empty string")
    return os.path.expanduser(value) if name == "key" else value


def _where(name: str) -> str:
    return f"${CONFIG_ENV[name]}, else `{name}` in {config_file()}"


def add_ledger_argument(p: argparse.ArgumentParser, help: str = LEDGER_HELP, required: bool = True) -> None:
    """`--ledger URL`, defaulting to the configured ledger (required only when none is configured)."""
    default = configured("ledger")
    p.add_argument("--ledger", required=required and default is None, default=default, metavar="URL",
                   help=f"{help} (default: {_where('ledger')}{'' if default is None else f'; now {default}'})")


def add_key_argument(p: argparse.ArgumentParser, help: str, required: bool = True, type=str) -> None:
    """`--key FILE`, defaulting to the configured key file (required only when none is configured)."""
    default = configured("key")
    p.add_argument("--key", required=required and default is None, default=default, type=type, metavar="FILE",
                   help=f"{help} (default: {_where('key')}{'' if default is None else f'; now {default}'})")
