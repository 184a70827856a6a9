"""Suite-wide fixtures: one throwaway PostgreSQL server shared by every test that needs one.

Also the `soak` marker: long sweeps (many honest jobs, statistics over many trials, the full cheat
matrix on every backend) are deselected unless `--soak` is given, SHARDPROOF_SOAK=1 is set, or the
`-m` expression asks for soak tests (`make soak` runs `pytest --soak -m soak`). `make test` keeps a
smaller version of each sweep that still fails when the property it guards breaks.
"""
from __future__ import annotations

import os

import pytest

from ledger.pgserver import TempPostgres, find_bin_dir


@pytest.fixture(scope="session")
def pg_server():
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb/pg_ctl) not found; run tools/ensure_postgres.sh")
    srv = TempPostgres(fast=True).start()
    yield srv
    srv.stop()


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="also run the long sweeps marked `soak` (make soak); SHARDPROOF_SOAK=1 does the same")


def soak_enabled(config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return bool(config.getoption("--soak") or os.environ.get("SHARDPROOF_SOAK") == "1"
                or ("soak" in expr and "not soak" not in expr))


def pytest_collection_modifyitems(config, items):
    if soak_enabled(config):
        return
    kept, soak = [], []
    for item in items:
        (soak if item.get_closest_marker("soak") else kept).append(item)
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = kept


@pytest.fixture(autouse=True)
def _known_logs(tmp_path, monkeypatch):
    """Every test pins log keys in its own known-logs file (verifier.known_logs), never the user's."""
    monkeypatch.setenv("SHARDPROOF_KNOWN_LOGS", str(tmp_path / "known_logs"))
