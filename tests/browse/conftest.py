"""One ledger for the auditor's terminal tests, built once per session by short in-process jobs
(sim.local_network): an honest job audited clean, a job whose cheater (node-1) was opened and
accused (with its evidence bundle written as `verify audit` writes it), a job nobody audited, and a
job its opener closed as failed. Then entries by the wrong authors (noise). Copies of the database
are kept before the noise and with one row tampered with.

The ledger is the same on every run, byte for byte: every identity, model, job and beacon is seeded
(sim.local_network), and entries are stamped by `LedgerClock` (a fixed start, one second per entry)
instead of the wall clock, so the checkpoints' roots, hence the challenges, hence which attempt
opens the cheater, never change. The app's snapshots (test_browse_snapshots.py) rely on it."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import text

from ledger import Ledger, storage
from ledger import entries as E
from models import GPTConfig, random_model
from protocol import bodies as B
from sim.adversary import Cheat
from sim.local_network import LocalNetwork
from verifier.ledger_audit import audit_on_ledger

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]
CHEATER = 1
T0_MS = 1_796_106_300_000  # 2026-12-01 06:25:00Z: the fixture ledger's first entry time


class LedgerClock:
    """A stand-in for `ledger.entries.now_ms`: `start`, then `step` ms more at every call."""

    def __init__(self, start: int = T0_MS, step: int = 1000) -> None:
        self.next = start
        self.step = step

    def __call__(self) -> int:
        t, self.next = self.next, self.next + self.step
        return t


@contextmanager
def fixed_clock(start: int = T0_MS) -> Iterator[LedgerClock]:
    """Entries made inside are stamped by a LedgerClock, not the wall clock."""
    clock = LedgerClock(start)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "now_ms", clock)
        yield clock


@dataclass
class Audited:
    url: str  # the ledger, noise included
    before_noise: str  # a copy taken before the noise entries
    tampered: str  # a copy with one entry's bytes changed
    empty: str  # a ledger with nothing but its log registration
    evidence_dir: Path
    log_key: bytes
    honest: str
    cheat: str
    pending: str
    failed: str
    n_entries: int


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite ledger (its WAL included), by SQLite's backup API."""
    import sqlite3

    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    with b:
        a.backup(b)
    a.close()
    b.close()


def _tamper(url: str, index: int) -> None:
    led = Ledger.open(url, create=False)
    data = bytearray(led.get(index).data)
    data[-1] ^= 0x01  # the last signature byte: the row still decodes, its leaf hash changes
    with led.engine.begin() as c:
        for t in storage.APPEND_ONLY_TABLES:
            for s in storage.drop_trigger_sql(led.backend, t):
                c.execute(text(s))
        c.execute(text("UPDATE entries SET data = :d WHERE idx = :i"), {"d": bytes(data), "i": index})
    led.close()


@pytest.fixture(scope="session")
def audited(tmp_path_factory) -> Audited:
    with fixed_clock():
        return build_audited(tmp_path_factory.mktemp("browse"))


def build_audited(d: Path) -> Audited:
    """The fixture ledger and its copies under `d` (see the module doc)."""
    url = _sqlite(d / "ledger.db")
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), d / "model")
    ev = d / "evidence"
    ev.mkdir()

    def run(job_id: str, cheats=None):
        job = net.run(d / "model", model_id, PROMPT, 2, job_id=job_id, workdir=d / job_id, cheats=cheats or {})
        res = audit_on_ledger(net.ledger, job_id, net.verifier, lam=40,
                              respond=lambda ci, ps: net.respond(job, job_id, ci, ps))
        return res

    assert run("honest").verdict.outcome == "pass"
    for attempt in range(16):  # the challenge leaves one index closed: rerun until the cheater's is opened
        cheat = f"cheat-{attempt}"
        res = run(cheat, {CHEATER: Cheat.parse("matmul-random@30")})
        if res.verdict.closed_party != CHEATER:
            break
    assert res.verdict.accused_nodes == [f"node-{CHEATER}"], res.verdict.as_dict()
    for node, bundle in res.evidence.items():
        (ev / f"evidence-{cheat}-{node}.cbor").write_bytes(bundle)
    net.run(d / "model", model_id, PROMPT, 2, job_id="pending", workdir=d / "pending")
    led = net.ledger
    led.append(E.make_entry(net.client, E.JOB_OPEN, B.JobOpen("failed", model_id, 3, net.dealer.node_id,
                                                              net.client.node_id).to_body()))
    led.append(E.make_entry(net.client, E.JOB_FAIL, B.JobFail("failed", "the group never formed").to_body()))
    led.checkpoint()
    copy_db(d / "ledger.db", d / "before-noise.db")

    # Noise: entries by authors the authorship rules do not count.
    n0, n2 = net.nodes[0], net.nodes[2]
    led.append_many([
        E.make_entry(n2, E.VERDICT, B.Verdict("honest", "fail", ("node-0",), "party 0 (node-0): step 1: lies").to_body()),
        E.make_entry(n2, E.VERDICT, B.Verdict("pending", "fail", ("node-1",), "made up").to_body()),
        E.make_entry(n2, E.JOB_FAIL, B.JobFail("pending", "not the opener").to_body()),
        E.make_entry(n2, E.JOB_ASSIGN, B.JobAssign("pending", (B.Assignment("node-2", 0), B.Assignment("node-1", 1),
                                                              B.Assignment("node-0", 2))).to_body()),
        E.make_entry(n0, E.JOB_ROOT, {**led.by_job("pending", kind=E.JOB_ROOT)[1].entry.body, "node": "node-0"}),
        E.make_entry(n2, E.HEARTBEAT, B.Heartbeat("node-0", ("nothing",)).to_body()),
        E.make_entry(n2, E.OPENING, {**led.by_job(cheat, kind=E.OPENING)[0].entry.body, "node": "node-2"}),
    ])
    led.checkpoint()
    n_entries = led.size()

    copy_db(d / "ledger.db", d / "tampered.db")
    honest_root = Ledger.open(_sqlite(d / "tampered.db"), create=False).by_job("honest", kind=E.JOB_ROOT)[0].index
    _tamper(_sqlite(d / "tampered.db"), honest_root)

    empty = _sqlite(d / "empty.db")
    Ledger.open(empty, origin="empty/ledger", log_identity=net.log).close()
    return Audited(url, _sqlite(d / "before-noise.db"), _sqlite(d / "tampered.db"), empty, ev, led.log_key, "honest",
                   cheat, "pending", "failed", n_entries)


@dataclass
class Unresponsive:
    """A ledger (`url`) where nodes did not answer, with what the fixture made each of them do."""

    url: str
    log_key: bytes
    dealer: str
    closed: dict[str, int]  # audited job -> the share index its challenge left closed
    disputed: int  # in job "disputed", party 0's job root says this party's broadcast receipt was bad
    withheld: int  # in job "silent", this opened party never posted its opening
    no_root: int  # in job "no-root", this party never posted its job root (the opener failed the job)


JOB_DEADLINE_CHECKPOINTS = 3  # sim.local_network's open_deadline: signed checkpoints after the challenge


@pytest.fixture(scope="session")
def unresponsive(tmp_path_factory) -> Unresponsive:
    with fixed_clock():
        return build_unresponsive(tmp_path_factory.mktemp("unresponsive"))


def build_unresponsive(d: Path) -> Unresponsive:
    """Four jobs, in-process (sim.local_network), where someone does not answer:
    - "disputed": party 0's job root disputes party 2's broadcast receipt; audited: `incomplete`,
      party 2 marked unresponsive, nobody accused;
    - "silent": the first opened party never posts its opening; after the deadline: `fail`, that
      node defaulted (accused);
    - "no-release": the nodes open, the dealer never releases the seeds; after the deadline: `fail`,
      the dealer defaulted, the opened nodes marked unresponsive in the dealer's words (not theirs);
    - "no-root": node 1 never posts its job root; never sealed, never audited; the opener fails it."""
    url = _sqlite(d / "ledger.db")
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), d / "model")
    led = net.ledger
    closed: dict[str, int] = {}

    def run(job_id: str, **kw):
        return net.run(d / "model", model_id, PROMPT, 2, job_id=job_id, workdir=d / job_id, **kw)

    def after_deadline(job_id: str):
        for _ in range(JOB_DEADLINE_CHECKPOINTS):
            led.checkpoint()
        return audit_on_ledger(led, job_id, net.verifier, lam=40)

    disputed = 2
    job = run("disputed", root_changes={0: {"disputes": [disputed]}})
    res = audit_on_ledger(led, "disputed", net.verifier, lam=40,
                          respond=lambda ci, ps: net.respond(job, "disputed", ci, ps))
    assert res.verdict.outcome == "incomplete" and res.verdict.unresponsive == [disputed], res.verdict.as_dict()
    closed["disputed"] = res.verdict.closed_party

    job = run("silent")
    withheld: list[int] = []

    def respond_but_one(ci: int, parties: list[int]) -> None:
        withheld.append(parties[0])
        net.respond(job, "silent", ci, parties, withhold=(parties[0],))

    res = audit_on_ledger(led, "silent", net.verifier, lam=40, respond=respond_but_one)
    assert res.verdict.pending == withheld and res.verdict_index is None
    res = after_deadline("silent")
    assert res.verdict.defaulted == withheld and res.verdict.outcome == "fail", res.verdict.as_dict()
    closed["silent"] = res.verdict.closed_party

    job = run("no-release")
    res = audit_on_ledger(led, "no-release", net.verifier, lam=40,
                          respond=lambda ci, ps: net.respond(job, "no-release", ci, ps, release=False))
    assert res.verdict_index is None
    res = after_deadline("no-release")
    assert res.verdict.dealer_status == "defaulted" and res.verdict.defaulted == [], res.verdict.as_dict()
    assert len(res.verdict.unresponsive) == 2 and res.verdict.accused_nodes == [net.dealer.node_id]
    closed["no-release"] = res.verdict.closed_party

    no_root = 1
    run("no-root", withhold_roots=(no_root,))
    led.append(E.make_entry(net.client, E.JOB_FAIL, B.JobFail("no-root", "node-1 never posted its job root").to_body()))
    led.checkpoint()
    return Unresponsive(url, led.log_key, net.dealer.node_id, closed, disputed, withheld[0], no_root)
