"""`shardproof publish`: the owner's command posts the manifest and sealed deliveries; bad input exits 2."""
from __future__ import annotations

import json

from cli.shardproof import main
from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from prover.keys import NodeKeys, registration_entry
from prover.model_delivery import fetch_share
from models.publish import load_party_share


def _keys(name: str) -> NodeKeys:
    return NodeKeys.generate(name, prg.master_from_int(4, f"test-publish:{name}"))


def _deployment(tmp_path, n_nodes: int):
    """A ledger with a registered owner (its key file in tmp_path) and `n_nodes` registered nodes."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    led = Ledger.open(url, origin="test", log_identity=Identity("log", b"L" * 32))
    owner, nodes = _keys("owner"), [_keys(f"node-{i}") for i in range(n_nodes)]
    led.append_many([registration_entry(k) for k in [owner] + nodes])
    owner.save(tmp_path / "owner.key")
    return url, led, nodes, ",".join(k.node_id for k in nodes)


def test_publish_delivers_each_node_its_share(tmp_path, capsys):
    url, led, nodes, ids = _deployment(tmp_path, 3)
    rc = main(["publish", "--ledger", url, "--key", str(tmp_path / "owner.key"), "--nodes", ids,
               "--out", str(tmp_path / "pub"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n_parties"] == 3 and set(out["delivered_bytes"]) == {k.node_id for k in nodes}
    for i, k in enumerate(nodes):
        assert fetch_share(led, k, out["model_id"], tmp_path / f"n{i}") == i
        load_party_share(tmp_path / f"n{i}", i)
    size = led.size()
    assert main(["publish", "--ledger", url, "--key", str(tmp_path / "owner.key"), "--nodes", ids + ",ghost",
                 "--out", str(tmp_path / "pub2")]) == 2
    assert main(["publish", "--ledger", url, "--key", str(tmp_path / "missing.key"), "--nodes", ids]) == 2
    assert main(["publish", "--ledger", url, "--key", str(tmp_path / "owner.key"), "--nodes", "one"]) == 2
    assert led.size() == size  # nothing was posted by the failed runs
    assert len(led.query(kind=E.MODEL)) == 1
    led.close()


def test_publish_with_replicas_gives_each_replica_its_index_share(tmp_path, capsys):
    url, led, nodes, ids = _deployment(tmp_path, 4)
    size = led.size()
    for bad in (["--replicas", "3"], ["--replicas", "0"], ["--replicas", "4"]):  # 4 nodes / 3; none; 1 index
        assert main(["publish", "--ledger", url, "--key", str(tmp_path / "owner.key"), "--nodes", ids,
                     "--out", str(tmp_path / "bad"), *bad]) == 2
    assert led.size() == size
    rc = main(["publish", "--ledger", url, "--key", str(tmp_path / "owner.key"), "--nodes", ids, "--replicas", "2",
               "--out", str(tmp_path / "pub"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n_parties"] == 2
    for i, k in enumerate(nodes):  # node i is replica i div 2 of index i mod 2
        assert fetch_share(led, k, out["model_id"], tmp_path / f"n{i}") == i % 2
    a, b = load_party_share(tmp_path / "n0", 0), load_party_share(tmp_path / "n2", 0)
    assert all(bool((a[name] == b[name]).all()) for name in a)  # the replicas of an index hold one share
    led.close()


def test_owner_serve_posts_refreshes_and_rejects_bad_input(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from ledger import entries as E

    url = f"sqlite:///{tmp_path / 'l.db'}"
    led = Ledger.open(url, origin="test", log_identity=Identity("log", b"L" * 32))
    owner, client, nodes = _keys("owner"), _keys("client"), [_keys(f"node-{i}") for i in range(2)]
    led.append_many([registration_entry(k) for k in [owner, client] + nodes])
    owner.save(tmp_path / "owner.key")
    assert main(["publish", "--ledger", url, "--key", str(tmp_path / "owner.key"), "--nodes",
                 ",".join(k.node_id for k in nodes), "--out", str(tmp_path / "pub")]) == 0
    model_id = led.query(kind=E.MODEL)[0].entry.body["model_id"]
    assert main(["owner", "serve", "--ledger", url, "--key", str(tmp_path / "owner.key"),
                 "--published", str(tmp_path / "missing")]) == 2
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "cli.shardproof", "owner", "serve", "--ledger", url, "--key",
                             str(tmp_path / "owner.key"), "--published", str(tmp_path / "pub"), "--poll", "0.1"],
                            cwd=repo, stderr=subprocess.PIPE)
    try:
        led.append(E.make_entry(client.identity, E.JOB_OPEN, {
            "job_id": "j", "model_id": model_id, "n_parties": 2, "replicas": 1, "stages": 1,
            "dealer": client.node_id, "client": client.node_id}))
        deadline = time.monotonic() + 60
        while not led.by_job("j", kind=E.REFRESH) and time.monotonic() < deadline:
            time.sleep(0.2)
        refresh = led.by_job("j", kind=E.REFRESH)
        assert refresh and refresh[0].entry.author == owner.node_id
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read().decode()[-2000:]
        led.close()
