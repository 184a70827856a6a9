"""`prover serve` end to end: three node daemons (subprocesses) on a SQLite ledger, the client and dealer in
the test process, the TCP mesh on loopback. An honest job generates the plaintext model's greedy tokens and audits
clean; a node restarted with a cheat still answers the earlier job's challenge from disk and is named in a
later job's audit."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from prover.keys import NodeKeys, registration_entry
from models import GPTConfig, random_model
from models.publish import MANIFEST_FILE, publish_model
from prover.dealer_service import release_for_challenge
from prover.remote_client import run_remote_job
from verifier.ledger_audit import audit_on_ledger

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]
STEPS = 2
N = 3
REPO = Path(__file__).resolve().parents[2]
CHEATER = 1


def _keys(name: str) -> NodeKeys:
    return NodeKeys.generate(name, prg.master_from_int(7, f"test-daemon:{name}"))


@pytest.fixture
def deployment(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger.open(url, origin="test.shardproof/daemon", log_identity=Identity("log", prg.master_from_int(7, "log")))
    owner, client, verifier = _keys("owner"), _keys("client"), _keys("verifier")
    nodes = [_keys(f"node-{i}") for i in range(N)]
    led.append_many([registration_entry(owner, ("owner",)), registration_entry(client, ("client", "dealer")),
                     registration_entry(verifier, ("verifier",))]
                    + [registration_entry(k, ("node",), f"127.0.0.1:{29600 + i}") for i, k in enumerate(nodes)])
    model = random_model(CFG, seed=4)
    manifest = publish_model(model, N, tmp_path / "model", prg.master_from_int(1, "owner"))
    model_id = manifest["model_id"][:64]
    digest = led.put_blob((tmp_path / "model" / MANIFEST_FILE).read_bytes())
    led.append(E.make_entry(owner.identity, E.MODEL, {"model_id": model_id, "manifest": digest, "n_shares": N,
                                                     "commitments": bytes.fromhex(manifest["model_id"])}))
    for i, k in enumerate(nodes):
        k.save(tmp_path / f"node{i}.key")
        shutil.copytree(tmp_path / "model", tmp_path / f"data{i}" / "models" / model_id)
    return {"url": url, "led": led, "client": client, "verifier": verifier, "nodes": nodes, "model": model,
            "model_id": model_id, "tmp": tmp_path}


def _start(d: dict, i: int, cheat: str | None = None) -> subprocess.Popen:
    tmp = d["tmp"]
    cmd = [sys.executable, "-m", "cli.prover", "serve", "--ledger", d["url"], "--key", str(tmp / f"node{i}.key"),
           "--data", str(tmp / f"data{i}"), "--poll", "0.1", "--timeout", "60"]
    if cheat:
        cmd += ["--cheat", cheat]
    log = open(tmp / f"node{i}.log", "ab")
    try:
        return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _job(d: dict, job_id: str) -> dict:
    return run_remote_job(d["url"], d["client"], [k.node_id for k in d["nodes"]], d["model_id"], PROMPT, STEPS,
                          job_id, timeout_s=60, state_dir=d["tmp"])


def _audit(d: dict, job_id: str, state_file: str):
    d["led"].checkpoint()  # seals the job roots before any challenge
    release_for_challenge(d["url"], d["client"], state_file, job_id)  # the dealer (in the client) reveals its beacon
    return audit_on_ledger(d["led"], job_id, d["verifier"].identity, lam=40, wait_s=60,
                           respond=lambda ci, ps: release_for_challenge(d["url"], d["client"], state_file, job_id))


def _logs(d: dict) -> str:
    return "\n".join(f"--- node {i}\n" + (d["tmp"] / f"node{i}.log").read_text(errors="replace")[-3000:]
                     for i in range(N) if (d["tmp"] / f"node{i}.log").exists())


@pytest.mark.soak  # make test covers the same path: tests/cli/test_readme_walkthrough.py, test_cheats_multiprocess.py
def test_daemons_run_jobs_answer_challenges_and_name_a_cheater(deployment):
    d = deployment
    ref = d["model"].generate(torch.tensor([PROMPT]), STEPS, temperature=0)[0, len(PROMPT):].tolist()
    procs = {i: _start(d, i) for i in range(N)}
    try:
        honest = _job(d, "honest-1")
        assert honest["tokens"] == ref, _logs(d)
        # Restart node 1 as a cheater: it must not redo the finished job, and must still open it.
        procs[CHEATER].send_signal(signal.SIGTERM)
        assert procs[CHEATER].wait(timeout=30) == 0, _logs(d)
        procs[CHEATER] = _start(d, CHEATER, cheat="matmul-2^63@20")
        res = _audit(d, "honest-1", honest["state_file"])
        assert res.verdict.clean and all(res.checks.values()), (res.verdict.as_dict(), res.checks, _logs(d))
        assert d["led"].get(res.verdict_index).entry.body["outcome"] == "pass"
        assert len(d["led"].by_job("honest-1", kind=E.JOB_ROOT)) == N  # no job was run twice
        for attempt in range(12):
            job_id = f"cheat-{attempt}"
            out = _job(d, job_id)
            res = _audit(d, job_id, out["state_file"])
            if res.verdict.closed_party != CHEATER:
                break
        assert res.verdict.cheaters == [CHEATER], (res.verdict.as_dict(), _logs(d))
        v = d["led"].get(res.verdict_index).entry.body
        assert v["outcome"] == "fail" and v["accused"] == [d["nodes"][CHEATER].node_id]
        for i, p in procs.items():
            p.send_signal(signal.SIGTERM)
        for i, p in procs.items():
            assert p.wait(timeout=30) == 0, _logs(d)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def test_serve_bad_input_exits_2(tmp_path):
    from cli.prover import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.open(url, origin="test.shardproof/daemon", log_identity=Identity("log", b"L" * 32)).close()
    key = tmp_path / "node.key"
    _keys("node-x").save(key)
    assert main(["serve", "--ledger", url, "--key", str(key), "--data", str(tmp_path), "--cheat", "nonsense"]) == 2
    assert main(["serve", "--ledger", url, "--key", str(tmp_path / "missing.key"), "--data", str(tmp_path)]) == 2
    assert main(["serve", "--ledger", f"sqlite:///{tmp_path / 'none.db'}", "--key", str(key),
                 "--data", str(tmp_path)]) == 2
    assert main(["serve", "--ledger", url, "--key", str(key), "--data", str(tmp_path), "--max-jobs", "0"]) == 2


def test_dealer_serve_bad_input_exits_2(tmp_path):
    from cli.shardproof import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.open(url, origin="test.shardproof/daemon", log_identity=Identity("log", b"L" * 32)).close()
    key = tmp_path / "dealer.key"
    _keys("dealer-x").save(key)
    assert main(["dealer", "serve", "--ledger", url, "--key", str(tmp_path / "missing.key"), "--data", str(tmp_path)]) == 2
    assert main(["dealer", "serve", "--ledger", f"sqlite:///{tmp_path / 'none.db'}", "--key", str(key),
                 "--data", str(tmp_path)]) == 2
    assert main(["dealer", "serve", "--ledger", url, "--key", str(key), "--data", str(tmp_path), "--poll", "0"]) == 2
    assert main(["dealer"]) == 2
