"""`prover gc` and `shardproof dealer gc`: only data whose audit window has closed goes, and it leaves a tombstone."""
from __future__ import annotations

import json
import os
import time

import pytest

from cli.prover import main as prover_main
from cli.shardproof import main as shardproof_main
from models import GPTConfig, random_model
from mpc_core.encoding import canonical_cbor, decode_cbor
from prover.dealer_service import STATE_FORMAT
from prover.gc import COLLECTED
from sim.local_network import LocalNetwork
from verifier.ledger_audit import audit_on_ledger

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]
OLD = time.time() - 3 * 86400  # three days ago


def _node_job(data, job_id: str, party: int, status: str = "done", old: bool = True, spill: int = 50_000) -> None:
    """A node's job directory as `prover serve` leaves it (status, state, secret, spill file)."""
    d = data / "jobs" / job_id
    d.mkdir(parents=True)
    (d / f"party{party}.steps.bin").write_bytes(os.urandom(spill))
    (d / "state.cbor").write_bytes(canonical_cbor({"job_id": job_id, "party": party, "records": [], "tokens": []}))
    (d / "secret.bin").write_bytes(os.urandom(32))
    (d / "status").write_text(status)
    if old:
        os.utime(d / "status", (OLD, OLD))


def _dealer_job(data, job_id: str, status: str = "done", old: bool = True) -> None:
    d = data / "dealer"
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"dealer-{job_id}.cbor"
    f.write_bytes(canonical_cbor({"format": STATE_FORMAT, "job_id": job_id, "n_parties": 3, "master_seed": os.urandom(32),
                                  "requests": [["x", [1, 2]]] * 200, "status": status}))
    if old:
        os.utime(f, (OLD, OLD))


def _gc(main, argv, capsys) -> tuple[int, dict]:
    rc = main(argv + ["--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if rc == 0 else {})


@pytest.mark.parametrize("cmd", [["gc"], ["dealer", "gc"]])
def test_gc_bad_input_exits_2(tmp_path, cmd, capsys):
    main = prover_main if cmd == ["gc"] else shardproof_main
    d = str(tmp_path)
    for argv in ([*cmd, "--data", str(tmp_path / "missing"), "--keep-days", "1"],
                 [*cmd, "--data", d, "--keep-days", "-1"],
                 [*cmd, "--data", d, "--keep-days", "nan"],
                 [*cmd, "--data", d],
                 [*cmd, "--data", d, "--keep-days", "0", "--ledger", str(tmp_path / "no" / "ledger.db")]):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse refuses a missing or malformed option with 2
            rc = exc.code
        assert rc == 2, argv
    capsys.readouterr()


def test_gc_keeps_what_a_pending_challenge_needs_and_removes_answered_old_jobs(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), tmp_path / "model")
    job = net.run(tmp_path / "model", model_id, PROMPT, 2, job_id="answered", workdir=tmp_path / "w1")
    res = audit_on_ledger(net.ledger, "answered", net.verifier, lam=40,
                          respond=lambda ci, ps: net.respond(job, "answered", ci, ps))
    assert res.verdict.clean
    opened = net.ledger.get(res.challenge_index).entry.body["parties"]
    net.run(tmp_path / "model", model_id, PROMPT, 2, job_id="pending", workdir=tmp_path / "w2")  # revealed, no challenge
    net.ledger.close()

    for p in range(3):
        data = tmp_path / f"node-{p}"
        _node_job(data, "answered", p)
        _node_job(data, "pending", p)
        _node_job(data, "young", p, old=False)
        _node_job(data, "broke", p, status="failed")
        rc, dry = _gc(prover_main, ["gc", "--data", str(data), "--keep-days", "1", "--ledger", url, "--dry-run"], capsys)
        assert rc == 0 and dry["dry_run"] and {i["job_id"] for i in dry["removed"]} == {"answered", "broke"}
        assert (data / "jobs" / "answered" / f"party{p}.steps.bin").exists()  # a dry run removes nothing

        rc, rep = _gc(prover_main, ["gc", "--data", str(data), "--keep-days", "1", "--ledger", url], capsys)
        assert rc == 0
        removed = {i["job_id"]: i for i in rep["removed"]}
        kept = {i["job_id"]: i for i in rep["kept"]}
        assert set(removed) == {"answered", "broke"} and set(kept) == {"pending", "young"}, rep
        assert "pending" in kept["pending"]["reason"] and "younger" in kept["young"]["reason"]
        want = "opening posted" if p in opened else "not opened"
        assert want in removed["answered"]["reason"], removed["answered"]
        assert removed["answered"]["bytes"] > 50_000 and rep["freed_bytes"] >= 100_000
        for j in ("answered", "broke"):  # only the tombstone is left: the daemon never runs the job again
            assert sorted(x.name for x in (data / "jobs" / j).iterdir()) == ["status"]
            assert (data / "jobs" / j / "status").read_text() == COLLECTED
        assert (data / "jobs" / "pending" / f"party{p}.steps.bin").exists()
        assert (data / "jobs" / "pending" / "state.cbor").exists()
        # A second run finds nothing more to do; without a ledger only failed jobs may go.
        rc, again = _gc(prover_main, ["gc", "--data", str(data), "--keep-days", "1", "--ledger", url], capsys)
        assert rc == 0 and again["removed"] == [] and again["freed_bytes"] == 0

    data = tmp_path / "node-x"
    _node_job(data, "answered", 0)
    _node_job(data, "broke", 0, status="failed")
    rc, rep = _gc(prover_main, ["gc", "--data", str(data), "--keep-days", "0"], capsys)
    assert rc == 0 and [i["job_id"] for i in rep["removed"]] == ["broke"] and [i["job_id"] for i in rep["kept"]] == ["answered"]

    dealer = tmp_path / "dealer"
    _dealer_job(dealer, "answered")
    _dealer_job(dealer, "pending")
    _dealer_job(dealer, "interrupted", status="started")
    rc, rep = _gc(shardproof_main, ["dealer", "gc", "--data", str(dealer), "--keep-days", "1", "--ledger", url], capsys)
    assert rc == 0
    assert {i["job_id"] for i in rep["removed"]} == {"answered", "interrupted"}, rep
    assert [i["job_id"] for i in rep["kept"]] == ["pending"] and "pending" in rep["kept"][0]["reason"]
    tomb = decode_cbor((dealer / "dealer" / "dealer-answered.cbor").read_bytes())
    assert tomb == {"format": STATE_FORMAT, "job_id": "answered", "status": COLLECTED}  # the master seed is gone
    assert "master_seed" in decode_cbor((dealer / "dealer" / "dealer-pending.cbor").read_bytes())
