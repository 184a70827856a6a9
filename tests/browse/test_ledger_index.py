"""verifier.ledger_index: job, node and log summaries read through the protocol's authorship rules."""
from __future__ import annotations

import time

import pytest

from ledger import Ledger
from ledger import entries as E
from protocol import bodies as B
from verifier.ledger_index import LedgerIndex, UnknownJob, UnknownNode, reason_segments

from .conftest import CHEATER


def _index(url: str, key: bytes | None = None) -> LedgerIndex:
    ix = LedgerIndex(Ledger.open(url, create=False), key)
    ix.update()
    return ix


@pytest.fixture(scope="module")
def index(audited) -> LedgerIndex:
    return _index(audited.url, audited.log_key)


def test_cheated_job_names_the_accused_node_and_the_step(index, audited):
    s = {j.job_id: j for j in index.jobs()}[audited.cheat]
    assert (s.status, s.verdict, s.accused) == ("done", "cheated", [f"node-{CHEATER}"])
    assert CHEATER in s.opened and s.closed not in s.opened and len(s.opened) == 2
    cheater = s.parties[CHEATER]
    assert cheater.node == f"node-{CHEATER}" and cheater.status == "cheated"
    assert isinstance(cheater.step, int) and cheater.step >= 0 and cheater.op and "differs" in cheater.reason
    others = [p for p in s.parties if p.party != CHEATER]
    assert sorted(p.status for p in others) == ["clean", "not opened"]
    d = index.job(audited.cheat)
    assert d.challenge["state"] == "counted" and d.challenge["closed"] == s.closed
    assert d.seal is not None and d.seal["signature_verified"] is True
    assert [o["party"] for o in d.openings] == s.opened and d.release is not None
    assert [v["auditor"] for v in d.verdicts] == ["verifier"] and d.verdicts[0]["outcome"] == "fail"
    assert d.evidence == {f"node-{CHEATER}": f"evidence-{audited.cheat}-node-{CHEATER}.cbor"}
    assert (audited.evidence_dir / d.evidence[f"node-{CHEATER}"]).is_file()


def test_honest_pending_and_failed_jobs(index, audited):
    by = {j.job_id: j for j in index.jobs()}
    assert (by["honest"].status, by["honest"].verdict, by["honest"].accused) == ("done", "clean", [])
    assert sorted(p.status for p in by["honest"].parties) == ["clean", "clean", "not opened"]
    assert (by["pending"].status, by["pending"].verdict) == ("done", "unaudited")
    assert {p.status for p in by["pending"].parties} == {"unaudited"}
    assert (by["failed"].status, by["failed"].verdict, by["failed"].fail_reason) == \
        ("failed", "unaudited", "the group never formed")
    assert by["honest"].tokens == 2 and by["honest"].prompt_len == 3
    # newest first, by the place of each job.open in the log
    assert [j.open_index for j in index.jobs()] == sorted((j.open_index for j in index.jobs()), reverse=True)
    assert [j.job_id for j in index.jobs(verdict="cheated")] == [audited.cheat]
    assert [j.job_id for j in index.jobs(status="failed")] == ["failed"]
    assigned = {j.job_id for j in index.jobs() if j.participants}  # every job but the failed one
    assert {"honest", audited.cheat, "pending"} <= assigned and "failed" not in assigned
    assert {j.job_id for j in index.jobs(node="node-1")} == assigned
    assert [j.job_id for j in index.jobs(search="pend")] == ["pending"]
    assert len(index.jobs(limit=2)) == 2
    with pytest.raises(UnknownJob):
        index.job("no-such-job")


def test_noise_by_the_wrong_authors_changes_no_summary(index, audited):
    before = _index(audited.before_noise, audited.log_key)
    assert before.size < index.size

    def strip(rows):
        return [{k: v for k, v in r.as_dict().items() if k != "last_index"} for r in rows]

    assert strip(before.jobs()) == strip(index.jobs())
    assert [n.as_dict() for n in before.nodes()] == [n.as_dict() for n in index.nodes()]
    d = index.job("pending")
    assert {n["kind"] for n in d.noise} >= {E.JOB_FAIL, E.JOB_ASSIGN, E.JOB_ROOT}
    assert [v["why"] for v in d.ignored_verdicts] == ["not by a registered auditor"] and d.verdicts == []
    assert any(n["kind"] == E.OPENING for n in index.job(audited.cheat).noise)
    hb = {n.node_id: n for n in index.nodes()}["node-0"]
    assert hb.models == [] and hb.last_heartbeat_ms is None  # node-2's heartbeat for node-0 does not count


def test_node_summaries_count_jobs_audits_and_accusations(index, audited):
    nodes = {n.node_id: n for n in index.nodes()}
    assert set(nodes) >= {"node-0", "node-1", "node-2", "dealer", "verifier", "log"}
    n1 = nodes[f"node-{CHEATER}"]
    assigned = [j for j in index.jobs() if j.participants]  # the failed job has no assignment
    assert n1.accusations == 1 and n1.defaulted == 0 and n1.jobs_served == len(assigned)
    assert n1.roles == ["node"] and n1.endpoint.startswith("127.0.0.1:") and len(n1.ed25519) == 32
    mine = {j.job_id: j for j in n1.jobs}
    assert mine[audited.cheat].outcome == "cheated" and mine["pending"].outcome == "unaudited"
    for n in ("node-0", "node-2"):
        assert nodes[n].accusations == 0
        passed = sum(1 for j in index.jobs() for p in j.parties if p.node == n and p.status == "clean")
        assert nodes[n].audits_passed == passed
    assert nodes["dealer"].jobs_served == len(index.jobs()) and nodes["verifier"].jobs_served == 0
    with pytest.raises(UnknownNode):
        index.nodes("nobody")
    assert [n.node_id for n in index.nodes("node-2")] == ["node-2"]


def test_log_state_verifies_and_a_tampered_row_does_not(index, audited):
    log = index.log()
    assert log.ok and log.latest_verified and log.size == audited.n_entries and log.findings == []
    assert log.latest is not None and log.latest.consistent and log.latest.by_pinned_key
    bad = _index(audited.tampered, audited.log_key)
    blog = bad.log()
    assert not blog.ok and any("differs from the signed checkpoint" in f for f in blog.findings)
    # nothing on an unverified log counts as sealed: no challenge is shown as derived from it
    assert bad.job("honest").challenge["state"] == "none" and bad.job("honest").seal is None
    other_key = _index(audited.url, b"\x01" * 48).log()
    assert not other_key.ok and any("not signed by the pinned log key" in f for f in other_key.findings)


def test_consistency_with_the_head_seen_before(index):
    log = index.log()
    cp = log.checkpoints[0]
    assert index.consistent_with(None)[0] is None
    assert index.consistent_with((cp.size, cp.root)) == (True, "")
    assert index.consistent_with((cp.size, bytes(32)))[0] is False
    assert index.consistent_with((index.size + 5, cp.root))[0] is False


def test_incremental_update_reads_only_new_entries(audited, tmp_path):
    from pathlib import Path

    from .conftest import copy_db

    copy_db(Path(audited.before_noise.removeprefix("sqlite:///")), tmp_path / "l.db")
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", create=False)
    ix = LedgerIndex(led, audited.log_key)
    n = ix.update()
    assert n == led.size() and ix.update() == 0
    assert ix.jobs(verdict="unaudited")[0].job_id == "failed"
    from ledger.keys import Identity
    from mpc_core import prg

    verifier = Identity("verifier", prg.master_from_int(0, "identity:verifier"))  # sim.local_network's auditor
    led.append(E.make_entry(verifier, E.VERDICT, B.Verdict("pending", "pass", (), "").to_body()))
    assert ix.update() == 1
    assert {j.job_id: j.verdict for j in ix.jobs()}["pending"] == "clean"


def test_reason_segments():
    r = "dealer d: withheld; party 0 (node-0): step 12 (matmul in h.0.attn): out differs; party 2 (n-2): no opening"
    seg = reason_segments(r)
    assert seg == {0: "step 12 (matmul in h.0.attn): out differs", 2: "no opening"}
    assert reason_segments("") == {} and reason_segments("garbage (x): y") == {}


def test_ten_thousand_entries_in_one_pass(tmp_path):
    """10^4 small entries: one paged pass (no per-entry reads), a few seconds."""
    from .big_ledger import build

    led = build(f"sqlite:///{tmp_path / 'big.db'}", 10_000)
    pages = []
    real_rows = led.rows

    def rows(start=0, stop=None, chunk=5000):
        pages.append((start, stop, chunk))
        return real_rows(start, stop, chunk)

    led.rows = rows
    calls = {"query": 0}
    real_query = led.query

    def query(**kw):
        calls["query"] += 1
        return real_query(**kw)

    led.query = query
    t0 = time.perf_counter()
    ix = LedgerIndex(led)
    assert ix.update() == led.size() >= 10_000
    jobs = ix.jobs()
    nodes = {n.node_id: n for n in ix.nodes()}
    took = time.perf_counter() - t0
    assert len(pages) == 1 and calls["query"] == 0  # one pass over the rows; nothing re-read per entry or job
    assert len(jobs) == len(real_query(kind=E.JOB_OPEN)) and nodes["node-1"].accusations == len(jobs) // 2
    assert ix.log().ok and ix.update() == 0
    print(f"10^4 entries: index {took:.2f} s")
    assert took < 30, took  # ~3 s on an idle core


@pytest.mark.soak
def test_hundred_thousand_entries(tmp_path):
    from .big_ledger import build

    t0 = time.perf_counter()
    led = build(f"sqlite:///{tmp_path / 'big.db'}", 100_000, checkpoint_every=20_000)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    ix = LedgerIndex(led)
    ix.update()
    jobs = ix.jobs()
    took = time.perf_counter() - t0
    print(f"10^5 entries: built in {built:.1f} s, indexed in {took:.1f} s ({len(jobs)} jobs)")
    assert len(jobs) == len(led.query(kind=E.JOB_OPEN)) and ix.log().ok
    t0 = time.perf_counter()
    assert ix.update() == 0 and ix.jobs(verdict="cheated")
    assert time.perf_counter() - t0 < 1.0  # a poll with nothing new costs next to nothing
