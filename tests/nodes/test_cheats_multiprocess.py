"""Every cheat kind against real processes on loopback, with the ledger on SQLite and on PostgreSQL.

A dealer daemon and three `prover serve` nodes run as separate processes; this process is the
client, the log operator and the auditor. For each kind, node 1 is restarted with `--cheat`,
jobs run until the challenge opens node 1's share index (equivocation is proven without an
opening), and the audit must name node 1 and nobody else, with an evidence bundle that
verifies offline. Fifty honest jobs on the same deployment must audit clean.
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
from verifier.ledger_audit import check_evidence

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]
STEPS = 2
CHEATER = 1
CHEATS = {"matmul-random": "matmul-random@3", "matmul-2^63": "matmul-2^63@20", "trunc": "trunc@5",
          "zeros": "zeros@8", "weights": "weights", "bad-opening": "bad-opening@4", "refuse": "refuse",
          "equivocate": "equivocate@7"}
HONEST_JOBS = 50
WEIGHT = "transformer.h.0.mlp.c_fc.weight"
_jobs = itertools.count()


def test_every_cheat_kind_is_covered():
    assert set(CHEATS) == set(KINDS)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def network(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"procnet-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'ledger.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(f"procnet{os.getpid()}")
    net = ProcessNetwork(url, tmp, n_nodes=3, seed=11, timeout_s=90)
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
    for e in net.ledger.by_job(job_id, kind=E.OPENING):
        if e.entry.body.get("meta", {}).get("role") != "dealer":
            op = decode_opening(net.ledger.get_blob(e.entry.body["data"]))
            opened.setdefault(e.entry.body["party"], []).append(op["weights"][WEIGHT])


def test_fifty_honest_jobs_audit_clean(network):
    """50 honest jobs (one forward pass each, fresh seeds and challenges): no accusation, no incomplete audit."""
    net, model_id = network
    closed = set()
    opened: dict[int, list] = {}
    for k in range(HONEST_JOBS):
        job_id = _job_id("honest")
        out = net.run_job(model_id, [k % CFG.vocab_size, 1, 4], 1, job_id)
        res = net.audit(job_id)
        assert res.verdict.clean and all(res.checks.values()), (k, res.verdict.as_dict(), res.checks, net.logs())
        assert net.ledger.get(res.verdict_index).entry.body["outcome"] == "pass"
        assert len(out["tokens"]) == 1
        closed.add(res.verdict.closed_party)
        if k < 6:
            _record_opened_weights(net, job_id, opened)
    assert closed == {0, 1, 2}  # every share index was opened in some job
    # Per-job refresh: what an audit opens is that job's fresh share, never the published one, and the
    # openings of all these audits together do not add up to the weights.
    pub = net.published[model_id]
    w = sum(load_party_share(pub, p)[WEIGHT] for p in range(3))
    for p, seen in opened.items():
        assert all(not torch.equal(t, load_party_share(pub, p)[WEIGHT]) for t in seen)
        assert len({tuple(t.reshape(-1)[:8].tolist()) for t in seen}) == len(seen)
    assert not any(torch.equal(a + b + c, w) for a in opened[0] for b in opened[1] for c in opened[2])


def test_verify_audit_cli_names_a_stopped_node_unresponsive_not_a_cheater(network, tmp_path, capsys):
    from cli.verify import main

    net, model_id = network
    key = tmp_path / "auditor.key"
    net.verifier.save(key)
    victim = 2
    try:
        for _attempt in range(12):
            job_id = _job_id("silent")
            net.run_job(model_id, PROMPT, STEPS, job_id)
            assert net.stop_process(net.nodes[victim].node_id) == 0, net.logs()
            net.ledger.checkpoint()
            rc = main(["audit", job_id, "--ledger", net.url, "--key", str(key), "--wait", "4", "--json",
                       "--evidence-dir", str(tmp_path)])
            out = json.loads(capsys.readouterr().out)
            net.start_node(victim)
            assert net.wait_serving(net.nodes[victim].node_id, 120), net.logs()
            if out["closed_party"] != victim:
                break
        assert rc == 2 and out["unresponsive"] == [victim] and out["cheaters"] == [], out
        v = net.ledger.by_job(job_id, kind=E.VERDICT)[0].entry.body
        assert v["outcome"] == "incomplete" and v["accused"] == []
    finally:
        if net.nodes[victim].node_id not in net.procs:
            net.start_node(victim)


@pytest.mark.parametrize("kind", list(CHEATS))
def test_cheat_is_caught_and_attributed(network, kind):
    net, model_id = network
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
        chk = check_evidence(res.evidence[CHEATER], net.ledger.log_key)
        assert chk.ok and chk.accused == [net.nodes[CHEATER].node_id], (kind, chk.as_dict())
        # The honest nodes' receipts are on the ledger with their job roots.
        roots = net.ledger.by_job(job_id, kind=E.JOB_ROOT)
        assert all(len(r.entry.body["meta"]["receipts"]) == 2 for r in roots if r.entry.body["party"] != CHEATER)
    finally:
        assert net.restart_node(CHEATER, None) == 0, net.logs()


def test_a_node_killed_mid_job_fails_that_job_only(network):
    """SIGKILL one node while a job runs: the client gets an error, not a hang; the other daemons and the
    dealer mark the job failed and keep serving, and the next job (with the node restarted) audits clean."""
    import threading
    import time

    from prover.remote_client import RemoteJobError

    net, model_id = network
    victim = 2
    job_id = _job_id("killed")
    outcome: dict = {}

    def client() -> None:
        try:
            outcome["result"] = net.run_job(model_id, PROMPT, 6, job_id)
        except RemoteJobError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=client)
    t.start()
    joined = f"job {job_id}: joined the group as party {victim}"
    log = net.log_file(net.nodes[victim].node_id)
    deadline = time.monotonic() + 120
    while joined not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert joined in log.read_text(errors="replace"), net.logs()
    time.sleep(0.5)  # well inside the job: 6 forward passes take seconds
    net.procs[net.nodes[victim].node_id].kill()
    net.procs.pop(net.nodes[victim].node_id).wait(10)
    t.join(240)
    assert not t.is_alive(), "the client hung after a node died"
    assert "error" in outcome, outcome
    from prover.ledger_view import wait_for

    for i in (0, 1):
        st = net.data_dir(net.nodes[i].node_id) / "jobs" / job_id / "status"
        assert wait_for(lambda: st.read_text() == "failed", 120), (st.read_text(), net.logs())
    net.start_node(victim)
    assert net.wait_serving(net.nodes[victim].node_id, 120), net.logs()
    job_id = _job_id("after-kill")
    net.run_job(model_id, PROMPT, STEPS, job_id)
    res = net.audit(job_id)
    assert res.verdict.clean, (res.verdict.as_dict(), net.logs())
