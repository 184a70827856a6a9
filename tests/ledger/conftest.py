"""Fixtures for the ledger suite: identities, a throwaway PostgreSQL server, ledgers on both backends."""
from __future__ import annotations

import itertools
import os

import pytest

from ledger import entries as E
from ledger.keys import Identity
from ledger.log import Ledger

ORIGIN = "test.shardproof/ledger"


def ident(name: str) -> Identity:
    """Deterministic identity per name (BLS PoPs are cached per process)."""
    if name not in _IDS:
        _IDS[name] = Identity(name, name.encode().ljust(32, b"\x00")[:32])
    return _IDS[name]


_IDS: dict[str, Identity] = {}
LOG = ident("log")


_db_counter = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request, tmp_path):
    """A URL for a fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    srv = request.getfixturevalue("pg_server")
    return srv.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
def ledger(ledger_url):
    """An open ledger with the log identity at index 0 and alice (1), bob (2) registered."""
    led = Ledger.open(ledger_url, origin=ORIGIN, log_identity=LOG)
    led.append_many([E.registration(ident("alice")), E.registration(ident("bob"), roles=("node", "verifier"))])
    yield led
    led.close()


def step(who: str, i: int, job: str = "job-1", party: int = 0) -> E.Entry:
    """A small signed step.commit entry."""
    return E.make_entry(
        ident(who),
        E.STEP_COMMIT,
        {"job_id": job, "node": who, "party": party, "first_step": i, "count": 1, "root": i.to_bytes(32, "big")},
        time=1_700_000_000_000 + i,
    )
