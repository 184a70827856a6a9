"""`shardproof infer --ledger ... --nodes ...`: the shipped model, three `prover serve` daemons, one client."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.shardproof import main
from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from prover.keys import NodeKeys, registration_entry
from models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer
from models.publish import MANIFEST_FILE, publish_model
from protocol.job_view import last_heartbeat
from prover.ledger_view import wait_for

REPO = Path(__file__).resolve().parents[2]


def _keys(name: str) -> NodeKeys:
    return NodeKeys.generate(name, prg.master_from_int(11, f"test-infer:{name}"))


@pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").is_file(), reason="no shipped model")
def test_infer_on_ledger_nodes_matches_plaintext(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger.open(url, origin="test.shardproof/infer", log_identity=Identity("log", prg.master_from_int(11, "log")))
    owner, client = _keys("owner"), _keys("client")
    nodes = [_keys(f"node-{i}") for i in range(3)]
    led.append_many([registration_entry(owner, ("owner",)), registration_entry(client, ("client", "dealer"))]
                    + [registration_entry(k, ("node",), f"127.0.0.1:{29700 + i}") for i, k in enumerate(nodes)])
    model = load_checkpoint(TINY_MODEL_DIR)
    manifest = publish_model(model, 3, tmp_path / "model", prg.master_from_int(1, "owner"))
    model_id = manifest["model_id"][:64]
    digest = led.put_blob((tmp_path / "model" / MANIFEST_FILE).read_bytes())
    led.append(E.make_entry(owner.identity, E.MODEL, {"model_id": model_id, "manifest": digest, "n_shares": 3,
                                                     "commitments": bytes.fromhex(manifest["model_id"])}))
    client.save(tmp_path / "client.key")
    procs = []
    try:
        for i, k in enumerate(nodes):
            k.save(tmp_path / f"node{i}.key")
            shutil.copytree(tmp_path / "model", tmp_path / f"data{i}" / "models" / model_id)
            with open(tmp_path / f"node{i}.log", "ab") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "cli.prover", "serve", "--ledger", url, "--key", str(tmp_path / f"node{i}.key"),
                     "--data", str(tmp_path / f"data{i}"), "--poll", "0.1", "--timeout", "60"],
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        # infer's pre-flight wants every node's own node.heartbeat (posted when `prover serve` starts)
        assert wait_for(lambda: all(last_heartbeat(led, k.node_id) is not None for k in nodes), 120)
        prompt = "And Moses said"
        rc = main(["infer", "--ledger", url, "--nodes", ",".join(k.node_id for k in nodes), "--key",
                   str(tmp_path / "client.key"), "--model-id", model_id, "--prompt", prompt, "--max-new-tokens", "3",
                   "--temperature", "0", "--job-id", "cli-job", "--dealer-state", str(tmp_path), "--json"])
        cap = capsys.readouterr()
        out = json.loads(cap.out)
        assert out["job_id"] == "cli-job" and "job: cli-job" in cap.err
        logs = "\n".join((tmp_path / f"node{i}.log").read_text(errors="replace")[-2000:] for i in range(3))
        assert rc == 0, logs
        ids = load_tokenizer(TINY_MODEL_DIR).encode(prompt)
        ref = model.generate(torch.tensor([ids]), 3, temperature=0)[0, len(ids):].tolist()
        assert out["tokens"] == ref and out["parties"] == 3
        assert len(led.by_job("cli-job", kind=E.JOB_ROOT)) == 3 and (tmp_path / "dealer-cli-job.cbor").is_file()
        # What the job cost: the rounds the parties signed and the bytes its shapes fix are those of the same
        # job run in-process; the times are the client's view.
        assert out["offline_seconds"] > 0 and 0 < out["online_seconds_per_token"] * 3 <= out["seconds"]
        assert main(["infer", "--prompt", prompt, "--max-new-tokens", "3", "--temperature", "0", "--parties", "3",
                     "--json"]) == 0
        local = json.loads(capsys.readouterr().out)
        assert local["tokens"] == ref
        assert out["rounds_per_token"] == local["rounds_per_token"] > 0
        assert out["bytes_per_party_per_token"] == local["bytes_per_party_per_token"] > 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def test_infer_ledger_needs_nodes_key_and_model(capsys):
    assert main(["infer", "--ledger", "sqlite:///nowhere.db", "--prompt", "x"]) == 2
    assert "--nodes" in capsys.readouterr().err
