"""`prover keygen` and `prover register` end to end against a SQLite ledger in a tmp dir (in process)."""
from __future__ import annotations

import json
import os
import stat

import pytest

from cli.prover import main
from ledger import Identity, Ledger
from ledger import entries as E
from prover.keys import NodeKeys, lookup_peer

LOG = Identity("log", b"L" * 32)


def run(capsys, *argv: str) -> tuple[int, dict]:
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


@pytest.fixture
def ledger_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.open(url, origin="test.shardproof/nodes", log_identity=LOG).close()
    return url


def test_keygen_writes_0600_and_refuses_second_run(tmp_path, capsys):
    path = tmp_path / "node.key"
    rc, out = run(capsys, "keygen", "--out", str(path))
    assert rc == 0 and out["ok"] is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    keys = NodeKeys.load(path)
    assert out["node_id"] == keys.node_id and out["x25519"] == keys.x25519_pub.hex()
    assert out["ed25519"] == keys.ed25519_pub.hex() and out["bls"] == keys.bls_pub.hex()
    before = path.read_bytes()
    rc, out = run(capsys, "keygen", "--out", str(path), "--id", "another")
    assert rc == 2 and out["ok"] is False and "exists" in out["error"]
    assert path.read_bytes() == before


def test_keygen_explicit_id_bad_id_and_bad_path(tmp_path, capsys):
    rc, out = run(capsys, "keygen", "--out", str(tmp_path / "a.key"), "--id", "node-a")
    assert rc == 0 and out["node_id"] == "node-a" == NodeKeys.load(tmp_path / "a.key").node_id
    rc, _ = run(capsys, "keygen", "--out", str(tmp_path / "b.key"), "--id", "bad id")
    assert rc == 2 and not (tmp_path / "b.key").exists()
    rc, _ = run(capsys, "keygen", "--out", str(tmp_path / "missing" / "c.key"))
    assert rc == 2


def test_keygen_panel_output(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert "node keys written" in capsys.readouterr().out


def test_register_round_trip_against_the_ledger(tmp_path, capsys, ledger_url):
    key = tmp_path / "node.key"
    NodeKeys.generate("node-1", seed=b"1" * 32).save(key)
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(key), "--endpoint", "127.0.0.1:29500")
    assert rc == 0 and out["ok"] is True and out["node_id"] == "node-1"
    keys = NodeKeys.load(key)
    with Ledger.open(ledger_url, create=False) as led:
        (le,) = led.query(kind=E.REGISTER, author="node-1")
        assert le.index == out["index"]
        b = le.body
        assert (b["ed25519"], b["bls"], b["x25519"]) == (keys.ed25519_pub, keys.bls_pub, keys.x25519_pub)
        assert b["endpoint"] == "127.0.0.1:29500" and b["roles"] == ["node"]
        assert le.entry.verify_sig(keys.ed25519_pub)
        reg = led.registration("node-1")
        assert reg is not None and reg.ed25519 == keys.ed25519_pub and reg.bls == keys.bls_pub
        peer = lookup_peer(led, "node-1")
        assert peer is not None and peer.x25519 == keys.x25519_pub and peer.endpoint == "127.0.0.1:29500"
        assert lookup_peer(led, "nobody") is None
        assert led.check().ok
    # the registered node can now author entries
    with Ledger.open(ledger_url, create=False) as led:
        led.append(E.make_entry(keys.identity, E.STEP_COMMIT, {"job_id": "j", "node": "node-1", "party": 0,
                                                               "first_step": 0, "count": 1, "root": bytes(32)}))
    # same registration again: a no-op; a different endpoint: refused
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(key), "--endpoint", "127.0.0.1:29500")
    assert rc == 0 and out["already"] is True
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(key), "--endpoint", "127.0.0.1:29501")
    assert rc == 1 and out["ok"] is False
    with Ledger.open(ledger_url, create=False) as led:
        assert len(led.query(kind=E.REGISTER, author="node-1")) == 1


def test_register_roles(tmp_path, capsys, ledger_url):
    key = tmp_path / "owner.key"
    NodeKeys.generate("owner-1", seed=b"2" * 32).save(key)
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(key), "--endpoint", "[::1]:7000",
                  "--roles", "owner,client", "--roles", "owner")
    assert rc == 0 and out["roles"] == ["owner", "client"]
    with Ledger.open(ledger_url, create=False) as led:
        assert lookup_peer(led, "owner-1").roles == ("owner", "client")


@pytest.mark.parametrize(
    "extra",
    [["--endpoint", "no-port"], ["--endpoint", "host:0"], ["--endpoint", "host:70000"], ["--endpoint", "a b:1"],
     ["--endpoint", "h:1", "--roles", "log"], ["--endpoint", "h:1", "--roles", "king"]],
)
def test_register_bad_input(tmp_path, capsys, ledger_url, extra):
    key = tmp_path / "k"
    NodeKeys.generate("n", seed=b"3" * 32).save(key)
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(key), *extra)
    assert rc == 2 and out["ok"] is False


def test_register_bad_key_file_and_unreachable_ledger(tmp_path, capsys, ledger_url):
    key = tmp_path / "k"
    NodeKeys.generate("n", seed=b"3" * 32).save(key)
    os.chmod(key, 0o644)
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(key), "--endpoint", "h:1")
    assert rc == 2 and "KeyFilePermissions" in out["error"]
    rc, _ = run(capsys, "register", "--ledger", ledger_url, "--key", str(tmp_path / "none"), "--endpoint", "h:1")
    assert rc == 2
    os.chmod(key, 0o600)
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    rc, out = run(capsys, "register", "--ledger", missing, "--key", str(key), "--endpoint", "h:1")
    assert rc == 2 and out["ok"] is False and not (tmp_path / "nope.db").exists()
    rc, _ = run(capsys, "register", "--ledger", "postgresql://nobody@127.0.0.1:1/none", "--key", str(key),
                "--endpoint", "h:1")
    assert rc == 2


def test_register_operator_round_trip(tmp_path, capsys, ledger_url):
    """--operator declares who runs the node (specs/threat-model.md); without it the node is its own operator."""
    from cli.shardproof import main as shardproof_main
    from cli.verify import main as verify_main

    a, b, c = tmp_path / "a.key", tmp_path / "b.key", tmp_path / "c.key"
    for path, nid in ((a, "node-a"), (b, "node-b"), (c, "node-c")):
        NodeKeys.generate(nid, seed=nid.encode()[-1:] * 32).save(path)
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(a), "--endpoint", "h:1")
    assert rc == 0 and out["operator"] == "node-a"
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(b), "--endpoint", "h:2", "--operator", "acme")
    assert rc == 0 and out["operator"] == "acme"
    b_index = out["index"]
    with Ledger.open(ledger_url, create=False) as led:
        (ra,) = led.query(kind=E.REGISTER, author="node-a")
        (rb,) = led.query(kind=E.REGISTER, author="node-b")
        assert "operator" not in ra.body and rb.body["operator"] == "acme"
        assert E.registered_operator(ra.entry) == "node-a" and E.registered_operator(rb.entry) == "acme"
        assert lookup_peer(led, "node-a").operator == "node-a" and lookup_peer(led, "node-b").operator == "acme"
    # the same registration again is a no-op (an explicit own id equals the default); another operator is refused
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(b), "--endpoint", "h:2", "--operator", "acme")
    assert rc == 0 and out["already"] is True
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(a), "--endpoint", "h:1", "--operator", "node-a")
    assert rc == 0 and out["already"] is True
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(b), "--endpoint", "h:2")
    assert rc == 1 and "operator" in out["error"]
    rc, out = run(capsys, "register", "--ledger", ledger_url, "--key", str(c), "--endpoint", "h:3", "--operator", "a b")
    assert rc == 2 and "operator id" in out["error"]
    with Ledger.open(ledger_url, create=False) as led:
        assert lookup_peer(led, "node-c") is None and len(led.query(kind=E.REGISTER)) == 3  # log, node-a, node-b
    # shown where registrations are listed
    verify_main(["nodes", "--ledger", ledger_url, "--json"])
    nodes = {n["node_id"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert nodes["node-a"]["operator"] == "node-a" and nodes["node-b"]["operator"] == "acme"
    shardproof_main(["ledger", "get", str(b_index), "--ledger", ledger_url, "--json"])
    entry = json.loads(capsys.readouterr().out)["entry"]
    assert entry["operator"] == "acme" and entry["body"]["operator"] == "acme"
