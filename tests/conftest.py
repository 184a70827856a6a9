"""Suite-wide fixtures: one throwaway PostgreSQL server shared by every test that needs one."""
from __future__ import annotations

import pytest

from ledger.pgserver import TempPostgres, find_bin_dir


@pytest.fixture(scope="session")
def pg_server():
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb/pg_ctl) not found; run tools/ensure_postgres.sh")
    srv = TempPostgres(fast=True).start()
    yield srv
    srv.stop()
