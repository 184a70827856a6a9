"""A replica cut off mid-job (issue 13 item 3: "crash, SIGKILL, network cut"): SIGSTOP freezes a node
process, so its streams stay open and it simply stops answering, as behind a cut link. Its peers drop it
after --timeout of silence and the job completes with the plaintext tokens; the client waits longer than
that for the step's outputs instead of taking every stalled rank for lost, and the dealer keeps waiting for
the last index's silent replicas while the job runs (a job longer than --timeout does not lose its dealer).
The frozen node is unresponsive, never accused."""
from __future__ import annotations

import itertools
import os
import random
import signal
import time

import pytest
import torch

from models import GPTConfig, random_model
from protocol.job_view import read_job_from_ledger
from sim.process_network import ProcessNetwork

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [2, 7, 1]
STEPS = 5
N, R = 3, 2
TIMEOUT_S = 10  # short, so that a cut costs seconds; longer than the job's steps on 2 busy cores
pytestmark = pytest.mark.timeout(900)
_jobs = itertools.count()


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cut")
    net = ProcessNetwork(f"sqlite:///{tmp / 'ledger.db'}", tmp, n_nodes=N, seed=23, timeout_s=TIMEOUT_S, replicas=R)
    model = random_model(CFG, seed=6)
    model_id = net.publish(model)
    net.start()
    assert net.wait_ready(180), net.logs()
    ref = model.generate(torch.tensor([PROMPT]), STEPS, temperature=0)[0, len(PROMPT):].tolist()
    net.run_job(model_id, PROMPT, 1, "warm-up")  # every node fetches its share before the timed jobs
    yield net, model_id, ref
    codes = net.stop()
    net.ledger.close()
    assert all(c == 0 for c in codes.values()), (codes, net.logs())


@pytest.mark.parametrize("victim", [pytest.param(4, id="index1"), pytest.param(5, id="last-index")])
def test_a_replica_cut_off_mid_job_is_dropped_after_the_timeout_and_the_job_completes(network, victim):
    net, model_id, ref = network
    name = net.nodes[victim].node_id
    job_id = f"cut-{victim}-{os.getpid()}-{next(_jobs)}"
    job = net.start_job(model_id, PROMPT, STEPS, job_id)
    log = net.log_file(name)
    joined = f"job {job_id}: joined the mesh as party {victim % N} replica {victim // N}"
    assert net.wait_until(lambda: joined in log.read_text(errors="replace"), 120), net.logs()
    time.sleep(random.Random(victim).uniform(0.1, 0.6))
    proc = net.procs[name]
    os.kill(proc.pid, signal.SIGSTOP)  # the cut: open streams, no answers
    try:
        job.wait(6 * TIMEOUT_S + 60)  # TimeoutError: the client hung behind a silent replica
        assert job.error is None, (job.error, net.logs())
        out = job.result
        assert out["tokens"] == ref, (out, net.logs())
        view = read_job_from_ledger(net.ledger, job_id)
        assert len(view.roots) == N and view.divergent == {}
        dealer_log = net.log_file(net.dealer.node_id)
        done = f"job {job_id}: the last party used"  # the dealer finished (a silent last replica: a timeout or two
        assert net.wait_until(lambda: done in dealer_log.read_text(errors="replace"), 4 * TIMEOUT_S), net.logs()
        # every other replica posts its root once its receipts exchange gives up on the silent one (up to a
        # timeout later): audit after that, as an auditor would, not in the race with it
        others = {(p, r) for p in range(N) for r in range(R)} - {(victim % N, victim // N)}
        assert net.wait_until(lambda: others <= set(read_job_from_ledger(net.ledger, job_id).replica_roots),
                              4 * TIMEOUT_S), net.logs()
        res = net.audit(job_id)
        v = res.verdict
        assert v.accused_nodes == [] and v.dealer_status == "ok", (v.as_dict(), net.logs())
        if (victim % N, victim // N) not in view.replica_roots:
            assert name in out["dropped"], out
            assert [r["node"] for r in v.replicas if r["status"] == "unresponsive"] == [name], v.as_dict()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        net.procs.pop(name).wait(10)
        net.start_node(victim)
        assert net.wait_serving(name, 120), net.logs()
