"""Resumption by a standby (issue 13, specs/node-daemon.md section 8), over processes: a dealer daemon and
six `prover serve` nodes, node i holding share index i mod 3. A job runs on nodes 0-2 (R = 1) with node 3
(share index 0) as standby; node 0 is SIGKILLed mid-job. The client hands index 0 to the standby with a
job.resume, the peers hold and replay their messages to it, it recomputes party 0 up to the point of loss
(its messages checked against the peers' chains) and the job finishes with the plaintext greedy tokens:
those of an uninterrupted run. The audit is clean, the killed node unresponsive, nobody accused."""
from __future__ import annotations

import itertools
import os
import random
import time

import pytest

from ledger import entries as E
from models import GPTConfig
from protocol import bodies as B
from protocol.job_view import read_job_from_ledger
from prover.remote_client import ResumeRefused, StandbyRefused, post_resume
from tests.nodes.deployment import deployment

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]
STEPS = 4
N = 3
TIMEOUT_S = 120
KILLS_QUICK = 3  # make test: one kill per share index at a random point ...
KILLS = 8  # ... make soak
pytestmark = pytest.mark.timeout(1800)
_jobs = itertools.count()


def _start(net) -> None:
    net.start(replicas=2)  # 7 of the 9 share holders serve: node i holds share index i mod 3
    net.start_node(2 * N)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def network(request, tmp_path_factory):
    yield from deployment(request, tmp_path_factory, "resume", CFG, 5, PROMPT, STEPS, _start, n_nodes=N, seed=17,
                          timeout_s=TIMEOUT_S, replicas=3)


def _soak(request) -> bool:
    from tests.conftest import soak_enabled

    return soak_enabled(request.config)


def _sqlite_only_in_make_test(net, request) -> None:
    if net.url.startswith("postgresql") and not _soak(request):
        pytest.skip("the PostgreSQL variant of this check runs under make soak")


def _job_id(label: str) -> str:
    return f"{label}-{os.getpid()}-{next(_jobs)}"


def _ids(net, idx) -> list[str]:
    return [net.nodes[i].node_id for i in idx]


def _run(net, model_id, job_id, **kw) -> dict:
    """A job on nodes 0-2 (R = 1)."""
    return net.run_job(model_id, PROMPT, STEPS, job_id, replicas=1, **kw)


@pytest.mark.parametrize("kills", [pytest.param(KILLS_QUICK, id="quick"),
                                   pytest.param(KILLS, marks=pytest.mark.soak, id="many")])
def test_a_node_killed_mid_job_is_resumed_by_its_standby_with_the_same_tokens(network, kills, request):
    """SIGKILL node 0, 1 or 2 at a random point after it joined the mesh, with its index's other holder among
    nodes 3-5 as its standby (for the last index the dealer serves the standby the correction stream again): the standby takes the index over, the job finishes with the plaintext greedy
    tokens (an uninterrupted run's), the standby's root is the index's, the audit is clean and lists the
    killed node as unresponsive, and the client's result names the take-over."""
    net, model_id, ref = network
    if net.url.startswith("postgresql") and not _soak(request):
        kills = 1  # PostgreSQL in make test: one kill (make soak: the full sweep)
    rng = random.Random(4321)
    resumed_steps = []
    for k in range(kills):
        p = k % N if k < N else rng.randrange(N)  # every index, the last one (the dealer's corrections) too
        victim, standby = net.nodes[p].node_id, net.nodes[p + N].node_id
        job_id = _job_id(f"resume{k}")
        job = net.start_job(model_id, PROMPT, STEPS, job_id, replicas=1, standby=[standby])
        log = net.log_file(victim)
        joined = f"job {job_id}: joined the mesh as party {p} replica 0"
        assert net.wait_until(lambda: joined in log.read_text(errors="replace"), 180), net.logs()
        time.sleep(rng.uniform(0.0, 2.0))
        net.kill_node(p)
        try:
            job.wait(4 * net.timeout_s)  # TimeoutError: the client hung after a node died
            if "not every node posted its job root" in str(job.error) and (
                    f"job {job_id}: rank {p} sent" in log.read_text(errors="replace")):
                continue  # killed after its last round, before its root: nothing to resume (node-daemon.md 8)
            assert job.error is None, (job.error, net.logs())
            out = job.result
            assert out["tokens"] == ref, (out, net.logs())
            view = read_job_from_ledger(net.ledger, job_id)
            if not out["resumed"]:  # the kill came after the node's part of the job: nothing to resume
                assert view.roots[p].author == victim and view.resumes == {}, view.noise
                continue
            resumed_steps.append(out["resumed"][0]["step"])
            assert out["resumed"][0]["party"] == p and out["resumed"][0]["lost"] == victim
            assert out["resumed"][0]["standby"] == standby and victim in out["dropped"], out
            assert view.resumes[p].body.standby == standby and view.roots[p].author == standby, view.noise
            assert view.replaced == {(p, 0): victim}
            standby_log = net.log_file(standby).read_text(errors="replace")
            assert f"job {job_id}: resuming party {p} for {victim}" in standby_log, net.logs()
            res = net.audit(job_id)
            v = res.verdict
            assert v.clean and v.accused_nodes == [], (v.as_dict(), net.logs())
            assert [r["node"] for r in v.replicas if r["status"] == "unresponsive"] == [victim], v.as_dict()
        finally:
            net.start_node(p)
            assert net.wait_serving(victim, 180), net.logs()
    assert resumed_steps, "no kill landed mid-job: the test proved nothing"


def test_with_replicas_a_standby_takes_over_an_index_whose_every_replica_was_killed(network, request):
    """R = 2 on nodes 0-5, node 6 (share index 0) standing by: both replicas of index 0 are SIGKILLed mid-job;
    the standby takes replica 0's place, the job finishes with the plaintext tokens, the audit is clean and
    accuses nobody, and both killed nodes are unresponsive."""
    net, model_id, ref = network
    _sqlite_only_in_make_test(net, request)
    standby = net.nodes[2 * N].node_id
    job_id = _job_id("resume-r2")
    job = net.start_job(model_id, PROMPT, STEPS, job_id, replicas=2, standby=[standby])
    log = net.log_file(net.nodes[N].node_id)
    joined = f"job {job_id}: joined the mesh as party 0 replica 1"
    assert net.wait_until(lambda: joined in log.read_text(errors="replace"), 180), net.logs()
    time.sleep(0.5)
    net.kill_node(0)
    time.sleep(0.2)
    net.kill_node(N)
    try:
        job.wait(4 * net.timeout_s)  # TimeoutError: the client hung after both replicas died
        assert job.error is None, (job.error, net.logs())
        out = job.result
        assert out["tokens"] == ref and out["resumed"], (out, net.logs())
        assert out["resumed"][0]["standby"] == standby and out["resumed"][0]["lost"] == net.nodes[0].node_id
        view = read_job_from_ledger(net.ledger, job_id)
        assert view.roots[0].author == standby and view.replica_nodes[(0, 0)] == standby, view.noise
        res = net.audit(job_id)
        v = res.verdict
        assert v.accused_nodes == [] and v.outcome in ("pass", "incomplete"), (v.as_dict(), net.logs())
        assert sorted(r["node"] for r in v.replicas if r["status"] == "unresponsive") == sorted(
            [net.nodes[0].node_id, net.nodes[N].node_id]), v.as_dict()
    finally:
        for i in (0, N):
            net.start_node(i)
        for i in (0, N):
            assert net.wait_serving(net.nodes[i].node_id, 180), net.logs()


def test_standbys_the_ledger_would_not_count_are_refused_before_anything_is_written(network, request):
    """An unregistered standby, one that holds no share of the model, and one that is a node of the job (with
    replicas too): each refused with a clear error before job.open is posted."""
    net, model_id, _ = network
    _sqlite_only_in_make_test(net, request)
    from prover.remote_client import RemoteJobError, run_remote_job

    cases = {"nobody": "not registered", net.owner.node_id: "holds no share",
             net.nodes[1].node_id: "one of the job's nodes"}
    refused = []
    for node, why in cases.items():
        refused.append(_job_id("refused"))
        with pytest.raises(RemoteJobError, match=why) as info:
            _run(net, model_id, refused[-1], standby=[node])
        assert isinstance(info.value.__cause__, StandbyRefused)
    refused.append(_job_id("refused"))
    with pytest.raises(RemoteJobError, match="one of the job's nodes") as info:  # with replicas: any of them
        run_remote_job(net.url, net.client, _ids(net, range(2 * N)), model_id, PROMPT, STEPS, refused[-1],
                       dealer=net.dealer.node_id, replicas=2, standby=[net.nodes[3].node_id])
    assert isinstance(info.value.__cause__, StandbyRefused)
    assert all(net.ledger.query(job_id=j) == [] for j in refused)  # not even a job.open


def test_a_resumption_of_a_finished_job_is_refused_and_nothing_is_written(network, request):
    """After a job finished, asking to resume one of its indices is refused (the index has its root): the
    client's post_resume raises and writes nothing; the same entry posted anyway does not count."""
    net, model_id, ref = network
    _sqlite_only_in_make_test(net, request)
    job_id = _job_id("finished")
    standby = net.nodes[3].node_id
    out = _run(net, model_id, job_id, standby=[standby])
    assert out["tokens"] == ref and out["resumed"] == [], out
    rs = B.JobResume(job_id, 0, standby, net.nodes[0].node_id)
    before = len(net.ledger.query(job_id=job_id))
    with pytest.raises(ResumeRefused, match="already finished"):
        post_resume(net.ledger, net.client, rs)
    assert len(net.ledger.query(job_id=job_id)) == before
    net.ledger.append(E.make_entry(net.client.identity, E.JOB_RESUME, rs.to_body()))  # posted regardless
    view = read_job_from_ledger(net.ledger, job_id)
    assert view.resumes == {} and any("already finished" in x.reason for x in view.noise), view.noise
    assert view.roots[0].author == net.nodes[0].node_id


def test_infer_refuses_a_standby_that_cannot_resume_with_one_line_and_posts_nothing(network, request, capsys):
    """`shardproof infer --standby` runs the same check in its pre-flight: exit 2, the reason, no job entry."""
    from cli.shardproof import main

    net, model_id, _ = network
    _sqlite_only_in_make_test(net, request)
    key = net.dir / "client.key"
    if not key.exists():
        net.client.save(key)
    job_id = _job_id("cli-refused")
    rc = main(["infer", "--ledger", net.url, "--nodes", ",".join(_ids(net, range(N))), "--key", str(key),
               "--model-id", model_id, "--prompt", "x", "--max-new-tokens", "2", "--job-id", job_id,
               "--standby", net.owner.node_id, "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and "not starting the job" in err and "holds no share" in err, err
    assert net.ledger.query(job_id=job_id) == []
