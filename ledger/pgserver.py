"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl on a free loopback port.

initdb and postgres refuse to run as root, so as root the data directory is
owned by the `postgres` system user and the binaries run via
`runuser -u postgres --`. Binaries come from PATH or /usr/lib/postgresql/*/bin.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from typing import Sequence

from ledger.errors import StorageError


def find_bin_dir() -> str | None:
    """Directory holding initdb/pg_ctl, or None."""
    p = shutil.which("initdb")
    if p:
        return os.path.dirname(p)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda s: [int(x) if x.isdigit() else x for x in s.split("/")])
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    """Start with `start()`, get database URLs with `create_database(name)`, stop with `stop()`."""

    def __init__(self, fast: bool = True) -> None:
        self.fast = fast  # fsync off: for tests; benchmarks pass fast=False
        self.bin_dir = find_bin_dir()
        self.root: str | None = None
        self.port = 0
        self.as_root = os.geteuid() == 0

    def _run(self, args: Sequence[str], **kw: object) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]

    def start(self) -> "TempPostgres":
        if self.bin_dir is None:
            raise StorageError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.root = tempfile.mkdtemp(prefix="shardproof-pg-")
        data, sock = os.path.join(self.root, "data"), os.path.join(self.root, "sock")
        os.makedirs(sock)
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
        self.port = _free_port()
        try:
            self._run([os.path.join(self.bin_dir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-N", "-E", "UTF8"])
            opts = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=100"
            if self.fast:
                opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._run(
                [os.path.join(self.bin_dir, "pg_ctl"), "-D", data, "-o", opts, "-l", os.path.join(self.root, "log"), "-w", "-t", "60", "start"]
            )
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise StorageError(f"cannot start PostgreSQL: {exc.stderr or exc.stdout}") from exc
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        data = os.path.join(self.root, "data")
        if self.bin_dir and os.path.exists(os.path.join(data, "postmaster.pid")):
            try:
                self._run([os.path.join(self.bin_dir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"])
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> "TempPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
