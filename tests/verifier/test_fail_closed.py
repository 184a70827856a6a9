"""The verifier fails closed: a bug in its own replay gives "error" (could not decide, exit 2), never
"cheated" -- an honest node is never accused by accident."""
from __future__ import annotations

import pytest

from models import GPTConfig, random_model
from sim.local_network import LocalNetwork
from verifier import replay as R
from verifier.ledger_audit import audit_on_ledger

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)


@pytest.mark.parametrize("hook", ["record", "linear_result", "dealer"])
def test_a_replay_that_breaks_gives_error_not_cheated(tmp_path, monkeypatch, hook):
    from cli.verify import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), tmp_path / "model")
    job = net.run(tmp_path / "model", model_id, [3, 1, 4], 2, job_id="honest", workdir=tmp_path / "w")

    def boom(*a, **k):
        raise RuntimeError("a bug in the verifier")

    target = {"record": (R.ReplaySession, "record"), "linear_result": (R.ReplaySession, "linear_result"),
              "dealer": (R._ReplayDealer, "get")}[hook]
    monkeypatch.setattr(*target, boom)
    res = audit_on_ledger(net.ledger, "honest", net.verifier, lam=8,
                          respond=lambda ci, ps: net.respond(job, "honest", ci, ps))
    v = res.verdict
    assert v.cheaters == [] and v.accused_nodes == [] and not res.evidence, v.as_dict()
    assert sorted(v.errors) == sorted(p for p in range(3) if p != v.closed_party), v.as_dict()
    assert v.outcome == "error" and not v.clean and res.verdict_index is None
    # The command says "could not decide" (exit 2), and posts no verdict it cannot stand behind.
    assert main(["audit", "honest", "--ledger", url, "--wait", "0"]) == 2
