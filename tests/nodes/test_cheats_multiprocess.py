"""Every cheat kind against real processes on loopback, with the ledger on SQLite and on PostgreSQL.

A dealer daemon and three `prover serve` nodes run as separate processes; this process is the
client, the log operator and the auditor. For each kind, node 1 is restarted with `--cheat`,
jobs run until the challenge opens node 1's share index (equivocation is proven without an
opening), and the audit must name node 1 and nobody else, with an evidence bundle that
verifies offline. Honest jobs on the same deployment must audit clean.

`make test` runs two cheat kinds on SQLite (SQLITE_QUICK: a wrong product and equivocation, which needs
no opening; tests/verifier/test_audit.py catches every kind in-process, a silent node's default against
processes is test_a_node_that_withholds_its_served_opening_defaults), one on PostgreSQL (PG_QUICK), every scenario on SQLite and a short honest run on SQLite (at least HONEST_JOBS_QUICK jobs,
continued until the challenge has closed every share index once); `make soak` adds the full cheat matrix
on both backends, the scenarios and the honest run on PostgreSQL, and fifty honest jobs per backend.
"""
from __future__ import annotations

import itertools
import json
import os

import pytest
import torch

from ledger import entries as E
from sim.adversary import KINDS
from models import GPTConfig, random_model
from models.publish import load_party_share
from protocol.opening import decode_opening
from sim.process_network import ProcessNetwork
from protocol import bodies as B
from protocol.job_view import read_job_from_ledger
from verifier.ledger_audit import BlobSource, check_evidence

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]
STEPS = 2
CHEATER = 1
CHEATS = {"matmul-random": "matmul-random@3", "matmul-2^63": "matmul-2^63@20", "trunc": "trunc@5",
          "zeros": "zeros@8", "weights": "weights", "bad-opening": "bad-opening@4", "refuse": "refuse",
          "equivocate": "equivocate@7", "withhold": "withhold"}
HONEST_JOBS = 50  # make soak
HONEST_JOBS_QUICK = 3  # make test: at least this many ...
HONEST_JOBS_CAP = 30  # ... and on until every share index was closed once (P[> 30 needed] = 3 (2/3)^30 ~ 2e-5)
SQLITE_QUICK = ("matmul-random", "equivocate")  # a product and a network-only kind (the rest: make soak)
PG_QUICK = ("matmul-random",)  # one matmul kind (equivocate and the rest on PostgreSQL: make soak)
DEFAULTS = ("withhold",)  # not a deviation but a default: test_a_node_that_withholds_its_served_opening_defaults


def _soak_only_on_postgres(net, request) -> None:
    """The PostgreSQL variant of a scenario test runs under `make soak` (the SQLite one always runs)."""
    from tests.conftest import soak_enabled

    if net.url.startswith("postgresql") and not soak_enabled(request.config):
        pytest.skip("the PostgreSQL variant of this scenario runs under make soak")
WEIGHT = "transformer.h.0.mlp.c_fc.weight"
_jobs = itertools.count()
_dbs = itertools.count()  # a module fixture can be set up twice in one worker (params reordered)
# The daemons' and the client's --timeout (mesh joins and every send/recv wait that long) and the harness's
# idle window. Only a failure ever waits it out; a loaded machine (load 10 on 2 cores) slows a job tenfold
# and had a starved dealer miss a 90 s send deadline.
TIMEOUT_S = 300
pytestmark = pytest.mark.timeout(1800)  # a test of a few jobs takes minutes on a loaded machine


def test_every_cheat_kind_is_covered():
    assert set(CHEATS) == set(KINDS)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def network(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"procnet-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'ledger.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(f"procnet{os.getpid()}_{next(_dbs)}")
    net = ProcessNetwork(url, tmp, n_nodes=3, seed=11, timeout_s=TIMEOUT_S)
    model_id = net.publish(random_model(CFG, seed=4))
    net.start()
    assert net.wait_ready(120), net.logs()
    yield net, model_id
    codes = net.stop()
    net.ledger.close()
    assert all(c == 0 for c in codes.values()), (codes, net.logs())


def _job_id(label: str) -> str:
    return f"{label}-{os.getpid()}-{next(_jobs)}"


def _record_opened_weights(net, job_id: str, opened: dict) -> None:
    """The opened weight shares of a job, fetched as an auditor does: the nodes serve their openings, the
    ledger holds only their digests (specs/audit.md section 3)."""
    source = BlobSource(net.ledger.get_blob)
    for e in net.ledger.by_job(job_id, kind=E.OPENING):
        o = B.Opening.from_entry(e.entry)
        assert o.served and o.url and not e.entry.blob_refs()  # nothing of the opening is on the ledger
        op = decode_opening(source.served(o.data, o.url), None if o.public is None else source.served(o.public, o.url))
        opened.setdefault(o.party, []).append(op["weights"][WEIGHT])


@pytest.mark.parametrize("jobs", [pytest.param(HONEST_JOBS_QUICK, id="quick"),
                                  pytest.param(HONEST_JOBS, marks=pytest.mark.soak, id="fifty")])
def test_honest_jobs_audit_clean(network, jobs, request):
    """Honest jobs (one forward pass each, fresh seeds and challenges): no accusation, no incomplete audit,
    and the challenge closes every share index in some job."""
    net, model_id = network
    if jobs == HONEST_JOBS_QUICK:
        _soak_only_on_postgres(net, request)  # the PostgreSQL deployment runs PG_QUICK's cheats in make test
    closed = set()
    opened: dict[int, list] = {}
    k = 0
    while k < jobs or (closed != {0, 1, 2} and k < max(jobs, HONEST_JOBS_CAP)):
        job_id = _job_id("honest")
        out = net.run_job(model_id, [k % CFG.vocab_size, 1, 4], 1, job_id)
        res = net.audit(job_id)
        assert res.verdict.clean and all(res.checks.values()), (k, res.verdict.as_dict(), res.checks, net.logs())
        assert net.ledger.get(res.verdict_index).entry.body["outcome"] == "pass"
        assert len(out["tokens"]) == 1
        closed.add(res.verdict.closed_party)
        if k < 6:
            _record_opened_weights(net, job_id, opened)
        # The nodes serve their openings and the dealer its release: the ledger keeps their digests only.
        answers = net.ledger.by_job(job_id, kind=E.OPENING) + net.ledger.by_job(job_id, kind=E.RELEASE)
        assert answers and not any(le.entry.blob_refs() for le in answers)
        k += 1
    assert closed == {0, 1, 2}  # every share index was opened in some job
    # Per-job refresh: what an audit opens is that job's fresh share, never the published one, and the
    # openings of all these audits together do not add up to the weights.
    pub = net.published[model_id]
    w = sum(load_party_share(pub, p)[WEIGHT] for p in range(3))
    for p, seen in opened.items():
        assert all(not torch.equal(t, load_party_share(pub, p)[WEIGHT]) for t in seen)
        assert len({tuple(t.reshape(-1)[:8].tolist()) for t in seen}) == len(seen)
    assert not any(torch.equal(a + b + c, w) for a in opened[0] for b in opened[1] for c in opened[2])


def test_a_stopped_node_is_pending_not_accused_and_answers_from_disk_after_a_restart(network, tmp_path, capsys,
                                                                                    request):
    """A node stopped right after its job cannot reveal its beacon: the audit is pending (exit 2, nothing
    posted, nobody accused) until its deadline; restarted, it reveals and opens from disk and the job
    audits clean."""
    from cli.verify import main

    net, model_id = network
    _soak_only_on_postgres(net, request)
    key = tmp_path / "auditor.key"
    net.verifier.save(key)
    victim = 2
    job_id = _job_id("silent")
    try:
        # No seal while the victim still runs (else it may reveal before it stops): the log operator waits.
        assert net.stop_process("log") == 0, net.logs()
        net.run_job(model_id, PROMPT, STEPS, job_id)
        assert net.stop_process(net.nodes[victim].node_id) == 0, net.logs()
        net.start_log()
        rc = main(["audit", job_id, "--ledger", net.url, "--key", str(key), "--wait", "4", "--json",
                   "--evidence-dir", str(tmp_path)])
        out = json.loads(capsys.readouterr().out)
        assert rc == 2 and out["outcome"] == "incomplete" and not out.get("accused"), out
        assert net.ledger.by_job(job_id, kind=E.VERDICT) == []
        net.start_node(victim)
        assert net.wait_serving(net.nodes[victim].node_id, 120), net.logs()
        rc = main(["audit", job_id, "--ledger", net.url, "--key", str(key), "--wait", "300", "--json",
                   "--evidence-dir", str(tmp_path)])
        out = json.loads(capsys.readouterr().out)
        assert rc == 0 and out["clean"] and out["accused"] == [], (out, net.logs())
        v = net.ledger.by_job(job_id, kind=E.VERDICT)
        assert len(v) == 1 and v[0].entry.body["outcome"] == "pass"
    finally:
        if net.nodes[victim].node_id not in net.procs:
            net.start_node(victim)


# (backend, (backend, kind)): the second value is unique per case, so pytest's module-scope grouping
# keeps each backend's deployment up for all of its cases.
CHEAT_CASES = ([pytest.param("sqlite", ("sqlite", k), id=f"sqlite-{k}",
                               marks=[] if k in SQLITE_QUICK else [pytest.mark.soak]) for k in CHEATS
                if k not in DEFAULTS]
               + [pytest.param("postgres", ("postgres", k), id=f"postgres-{k}",
                               marks=[pytest.mark.postgres] + ([] if k in PG_QUICK else [pytest.mark.soak]))
                  for k in CHEATS if k not in DEFAULTS])


@pytest.mark.parametrize("network,case", CHEAT_CASES, indirect=["network"], scope="module")
def test_cheat_is_caught_and_attributed(network, case):
    net, model_id = network
    kind = case[1]
    assert net.restart_node(CHEATER, CHEATS[kind]) == 0, net.logs()
    try:
        for _attempt in range(12):
            job_id = _job_id(kind.replace("^", ""))
            net.run_job(model_id, PROMPT, STEPS, job_id)
            res = net.audit(job_id)
            if res.verdict.closed_party != CHEATER or kind == "equivocate":
                break
        v = res.verdict
        assert v.cheaters == [CHEATER], (kind, v.as_dict(), net.logs())
        assert v.unresponsive == [], (kind, v.as_dict())
        body = net.ledger.get(res.verdict_index).entry.body
        assert body["outcome"] == "fail" and body["accused"] == [net.nodes[CHEATER].node_id]
        chk = check_evidence(res.evidence[net.nodes[CHEATER].node_id], net.ledger.log_key)
        assert chk.ok and chk.accused == [net.nodes[CHEATER].node_id], (kind, chk.as_dict())
        # The honest nodes' receipts are on the ledger with their job roots.
        roots = net.ledger.by_job(job_id, kind=E.JOB_ROOT)
        assert all(len(r.entry.body["receipts"]) == 2 for r in roots if r.entry.body["party"] != CHEATER)
    finally:
        assert net.restart_node(CHEATER, None) == 0, net.logs()


def test_a_node_killed_mid_job_fails_that_job_only(network, request):
    """SIGKILL one node while a job runs: the client gets an error, not a hang; the other daemons and the
    dealer mark the job failed and keep serving, and the next job (with the node restarted) audits clean."""
    _soak_only_on_postgres(network[0], request)
    import time

    from prover.remote_client import RemoteJobError

    net, model_id = network
    victim = 2
    job_id = _job_id("killed")
    job = net.start_job(model_id, PROMPT, 6, job_id)
    joined = f"job {job_id}: joined the mesh as party {victim}"
    log = net.log_file(net.nodes[victim].node_id)
    net.wait_until(lambda: joined in log.read_text(errors="replace"), 120)  # progress-based: a busy machine is slow
    assert joined in log.read_text(errors="replace"), net.logs()
    time.sleep(0.5)  # well inside the job: 6 forward passes take seconds
    net.procs[net.nodes[victim].node_id].kill()
    net.procs.pop(net.nodes[victim].node_id).wait(10)
    job.wait(2 * net.timeout_s)  # TimeoutError: the client hung after a node died
    assert isinstance(job.error, RemoteJobError), (job.error, job.result)
    for i in (0, 1):
        st = net.data_dir(net.nodes[i].node_id) / "jobs" / job_id / "status"
        # A peer may only notice at its mesh timeout (net.timeout_s); progress extends the wait.
        assert net.wait_until(lambda: st.read_text() == "failed", net.timeout_s + 30), (st.read_text(), net.logs())
    net.start_node(victim)
    assert net.wait_serving(net.nodes[victim].node_id, 120), net.logs()
    job_id = _job_id("after-kill")
    net.run_job(model_id, PROMPT, STEPS, job_id)
    res = net.audit(job_id)
    assert res.verdict.clean, (res.verdict.as_dict(), net.logs())


def test_a_node_that_withholds_its_served_opening_defaults(network, request):
    """A node posts its opening by digest and then neither serves it nor puts it on the ledger when an auditor
    asks (blob.request): the audit is pending until the request's deadline, then names the node as defaulted
    (never as a cheater), with evidence that shows the log up to that deadline; the honest nodes' openings,
    fetched from them, audit clean."""
    _soak_only_on_postgres(network[0], request)
    net, model_id = network
    node = net.nodes[CHEATER].node_id
    assert net.restart_node(CHEATER, "withhold") == 0, net.logs()
    try:
        for _attempt in range(12):
            job_id = _job_id("withhold")
            net.run_job(model_id, PROMPT, STEPS, job_id)
            try:
                res = net.audit(job_id)
            except Exception as exc:  # noqa: BLE001 - the cheater was closed: nothing to withhold
                raise AssertionError(exc)
            if res.verdict.closed_party != CHEATER:
                break
        pv = next(p for p in res.verdict.parties if p.party == CHEATER)
        assert pv.status == "pending" and res.verdict_index is None, res.verdict.as_dict()
        requests = net.ledger.by_job(job_id, kind=E.BLOB_REQUEST)
        assert requests and all(r.entry.author == net.verifier.node_id for r in requests)
        k = read_job_from_ledger(net.ledger, job_id).open.body.open_deadline
        for _ in range(k + 1):  # the log's clock runs past the request's deadline
            net.ledger.checkpoint()
        res = net.audit(job_id, wait_s=0.0)
        v = res.verdict
        assert v.defaulted == [CHEATER] and v.cheaters == [] and [p.status for p in v.parties
                                                                  if p.party not in (CHEATER, v.closed_party)] == ["clean"]
        body = net.ledger.get(res.verdict_index).entry.body
        assert body["outcome"] == "fail" and body["defaulted"] == [node]
        chk = check_evidence(res.evidence[node], net.ledger.log_key)
        assert chk.ok and chk.accused == [node] and chk.parties[0].status == "defaulted", chk.as_dict()
    finally:
        assert net.restart_node(CHEATER, None) == 0, net.logs()
