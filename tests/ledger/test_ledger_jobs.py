"""Audit integrity rules the ledger enforces on jobs: one job id, one job.open."""
from __future__ import annotations

import pytest

from ledger import entries as E
from ledger.errors import DuplicateEntry, DuplicateJob, LedgerError

from .conftest import ident, step


def job_open(who: str, job: str, model: str = "m", t: int = 0) -> E.Entry:
    body = {"job_id": job, "model_id": model, "n_parties": 3, "replicas": 1, "stages": 1, "dealer": "bob"}
    return E.make_entry(ident(who), E.JOB_OPEN, body, time=1_700_000_000_000 + t)


def test_second_job_open_with_same_id_is_refused(ledger):
    first = ledger.append(job_open("alice", "j1"))
    n = ledger.size()
    again = job_open("bob", "j1", model="other", t=1)  # another author, another body: same job id
    with pytest.raises(DuplicateJob):
        ledger.append(again)
    with pytest.raises(DuplicateJob):  # in a batch: nothing of the batch is written
        ledger.append_many([step("alice", 7), job_open("alice", "j1", t=2)])
    assert ledger.size() == n and [e.index for e in ledger.by_job("j1", kind=E.JOB_OPEN)] == [first]
    with pytest.raises(DuplicateEntry):  # replaying the very same entry stays a DuplicateEntry
        ledger.append(ledger.get(first).data)
    assert ledger.append(job_open("alice", "j2", t=3)) == n  # other ids are fine
    assert ledger.check().ok


def test_two_job_opens_of_one_id_in_one_batch_are_refused(ledger):
    n = ledger.size()
    with pytest.raises(DuplicateJob) as exc:
        ledger.append_many([job_open("alice", "j9"), job_open("bob", "j9", t=1)])
    assert isinstance(exc.value, LedgerError)
    assert ledger.size() == n and ledger.by_job("j9") == []
