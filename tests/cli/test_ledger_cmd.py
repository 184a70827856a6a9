"""`shardproof ledger init|serve|info|get`: the log operator's commands, against SQLite ledgers in tmp dirs."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.shardproof import main
from ledger import Identity, Ledger
from ledger import entries as E
from prover.keys import NodeKeys

REPO = Path(__file__).resolve().parents[2]


def run_json(capsys, *argv: str) -> tuple[int, dict, str]:
    rc = main(["ledger", *argv, "--json"])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out), cap.err


def one_line_error(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["ledger", *argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1, cap.err
    return rc, lines[0]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory):
    """A ledger made by `ledger init` with a generated key, plus one registered node (not yet checkpointed)."""
    d = tmp_path_factory.mktemp("ledger")
    url, key = f"sqlite:///{d / 'l.db'}", d / "log.key"
    assert main(["ledger", "init", "--ledger", url, "--key", str(key), "--origin", "test/ledger-cmd"]) == 0
    with Ledger.open(url, create=False) as led:
        led.append(E.registration(Identity("node-a", b"A" * 32), roles=("node",), endpoint="127.0.0.1:1"))
    return url, key


def test_init_generates_a_0600_key_and_records_it(initialised, capsys):
    url, key = initialised
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    keys = NodeKeys.load(key)
    rc, info, _ = run_json(capsys, "info", "--ledger", url)
    assert rc == 0 and info["ok"] is True
    assert info["log_key"] == keys.bls_pub.hex() and info["origin"] == "test/ledger-cmd"
    assert info["size"] == 3  # log registration, first checkpoint entry, node-a
    assert info["checkpoint"]["size"] == 1 and info["checkpoint"]["verified"] is True
    assert info["checkpoint"]["time"] is not None


def test_init_refuses_an_existing_ledger(initialised, tmp_path, capsys):
    url, key = initialised
    before = key.read_bytes()
    rc, line = one_line_error(capsys, "init", "--ledger", url, "--key", str(tmp_path / "other.key"))
    assert rc == 2 and "already exists" in line
    assert not (tmp_path / "other.key").exists() and key.read_bytes() == before


def test_init_with_an_existing_key_and_bad_keys(tmp_path, capsys):
    key = tmp_path / "mine.key"
    NodeKeys.generate("log-1").save(key)
    rc, out, _ = run_json(capsys, "init", "--ledger", f"sqlite:///{tmp_path / 'a.db'}", "--key", str(key))
    assert rc == 0 and out["key_generated"] is False and out["log_node"] == "log-1"
    assert out["log_key"] == NodeKeys.load(key).bls_pub.hex()
    key.chmod(0o644)
    rc, line = one_line_error(capsys, "init", "--ledger", f"sqlite:///{tmp_path / 'b.db'}", "--key", str(key))
    assert rc == 2 and "chmod 600" in line and not (tmp_path / "b.db").exists()
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"garbage")
    bad.chmod(0o600)
    rc, line = one_line_error(capsys, "init", "--ledger", f"sqlite:///{tmp_path / 'c.db'}", "--key", str(bad))
    assert rc == 2 and "bad key file" in line


def test_get_checks_inclusion_under_the_latest_checkpoint(initialised, capsys):
    url, _ = initialised
    rc, out, _ = run_json(capsys, "get", "0", "--ledger", url)
    assert rc == 0 and out["entry"]["kind"] == E.REGISTER and out["entry"]["author"] == "log"
    assert out["entry"]["inclusion_ok"] is True and out["entry"]["included_under"]["size"] == 1
    assert isinstance(out["entry"]["body"]["bls"], str)  # bytes as hex
    assert main(["ledger", "get", "0", "--ledger", url]) == 0
    assert "included under checkpoint 1" in capsys.readouterr().out
    rc, line = one_line_error(capsys, "get", "2", "--ledger", url)  # node-a: not under a checkpoint yet
    assert rc == 2 and "not yet under a signed checkpoint" in line


@pytest.mark.parametrize("argv, needle", [
    (["get", "99"], "no entry at index 99"),
    (["get", "-1"], "non-negative integer"),
    (["get", "x"], "non-negative integer"),
    (["get"], "exactly one of INDEX or --job"),
    (["get", "0", "--job", "j"], "exactly one of INDEX or --job"),
    (["get", "--job", "nope"], "no entries for job"),
])
def test_get_bad_input(initialised, capsys, argv, needle):
    rc, line = one_line_error(capsys, *argv, "--ledger", initialised[0])
    assert rc == 2 and needle in line


@pytest.mark.parametrize("verb", [["info"], ["get", "0"], ["get", "--job", "j"], ["serve", "--key", "KEY"]])
def test_no_ledger_is_exit_2(tmp_path, capsys, verb):
    key = tmp_path / "log.key"
    NodeKeys.generate("log").save(key)
    argv = [str(key) if a == "KEY" else a for a in verb]
    rc, line = one_line_error(capsys, *argv, "--ledger", f"sqlite:///{tmp_path / 'none.db'}")
    assert rc == 2 and "no ledger" in line


def test_serve_refuses_a_foreign_or_missing_key(initialised, tmp_path, capsys):
    url, _ = initialised
    other = tmp_path / "other.key"
    NodeKeys.generate("log").save(other)
    rc, line = one_line_error(capsys, "serve", "--ledger", url, "--key", str(other))
    assert rc == 2 and "not this ledger's log key" in line
    rc, line = one_line_error(capsys, "serve", "--ledger", url, "--key", str(tmp_path / "missing.key"))
    assert rc == 2 and "no key file" in line
    rc, line = one_line_error(capsys, "serve", "--ledger", url, "--key", str(other), "--interval", "0")
    assert rc == 2 and "--interval" in line


def _serve(url: str, key: Path, log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    p = subprocess.Popen([sys.executable, "-m", "cli.shardproof", "ledger", "serve", "--ledger", url, "--key", str(key),
                          "--interval", "0.2"], cwd=REPO, stdout=fh, stderr=fh)
    deadline = time.monotonic() + 60
    while b" serving" not in log.read_bytes():
        assert p.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return p


def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_serve_signs_new_entries_resumes_after_restart_and_stops_cleanly(tmp_path, capsys):
    url, key = f"sqlite:///{tmp_path / 'l.db'}", tmp_path / "log.key"
    assert main(["ledger", "init", "--ledger", url, "--key", str(key)]) == 0
    capsys.readouterr()
    led = Ledger.open(url, create=False)
    log = tmp_path / "serve.log"
    p = _serve(url, key, log)
    try:
        led.append(E.registration(Identity("node-b", b"B" * 32), roles=("node",)))  # index 2
        _wait_for(lambda: led.latest_checkpoint().size >= 3)
        time.sleep(1.0)  # a few more rounds: its own checkpoint entries do not trigger new checkpoints
        assert [c.size for c in led.checkpoints()] == [1, 3]
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, log.read_text()
    led.append(E.registration(Identity("node-c", b"C" * 32), roles=("node",)))  # arrives while it is down
    p = _serve(url, key, log)
    try:
        _wait_for(lambda: led.latest_checkpoint().size >= 5)
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    rc, out, _ = run_json(capsys, "get", "--job", "none-such", "--ledger", url)
    assert rc == 2
    rc, out, _ = run_json(capsys, "get", "4", "--ledger", url)
    assert rc == 0 and out["entry"]["author"] == "node-c" and out["entry"]["included_under"]["size"] == 5
    led.close()


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        main(["ledger", "--help"])
    out = capsys.readouterr().out
    for verb in ("init", "serve", "info", "get", "prune"):
        assert verb in out


def test_witness_cosigns_and_serve_collects(tmp_path, capsys):
    """`ledger witness --once` cosigns the latest checkpoint; the log operator aggregates the cosignature and
    `ledger info` names the witness; a witness refuses to start without a pinned log key, with a key not
    registered as a witness, or with a pin that differs from its state."""
    from ledger.operator import LogOperator

    url, log_key = f"sqlite:///{tmp_path / 'l.db'}", tmp_path / "log.key"
    assert main(["ledger", "init", "--ledger", url, "--key", str(log_key)]) == 0
    capsys.readouterr()
    wkey, nkey = tmp_path / "w.key", tmp_path / "n.key"
    NodeKeys.generate("witness-1").save(wkey)
    NodeKeys.generate("node-b").save(nkey)
    _register(url, wkey, "witness")
    _register(url, nkey, "owner")
    pin = NodeKeys.load(log_key).bls_pub.hex()
    state = tmp_path / "w.json"
    base = ["witness", "--ledger", url, "--key", str(wkey), "--state", str(state), "--once"]
    rc, line = one_line_error(capsys, *base)
    assert rc == 2 and "--log-key" in line and not state.exists()
    rc, line = one_line_error(capsys, "witness", "--ledger", url, "--key", str(nkey), "--state", str(state),
                              "--once", "--log-key", pin)
    assert rc == 2 and "not registered with the role witness" in line
    with Ledger.open(url, create=False, log_identity=NodeKeys.load(log_key).identity) as led:
        led.checkpoint()  # the registrations are under a checkpoint
        rc, out, _ = run_json(capsys, *base, "--log-key", pin)
        assert rc == 0 and out["cosigned"] is True and out["size"] == led.latest_checkpoint().size
        rc, out, _ = run_json(capsys, *base)  # pinned in the state now; nothing new
        assert rc == 0 and out["cosigned"] is False
        rc, line = one_line_error(capsys, *base, "--log-key", "00" * 96)
        assert rc == 2 and "differs" in line
        assert LogOperator(led).collect() == 1
    rc, info, _ = run_json(capsys, "info", "--ledger", url)
    assert rc == 0 and info["checkpoint"]["cosigners"] == ["witness-1"] and info["checkpoint"]["verified"]


def _register(url: str, key: Path, roles: str) -> None:
    from cli.prover import main as prover_main

    assert prover_main(["register", "--ledger", url, "--key", str(key), "--roles", roles]) == 0
