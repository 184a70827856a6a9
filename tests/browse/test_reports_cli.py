"""`verify jobs | nodes | show | report`: fields, formats, exit codes, bad input."""
from __future__ import annotations

import json

import pytest

from cli.verify import main

from .conftest import CHEATER


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich tables as on a wide terminal, not wrapped at 80


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_jobs_json_fields_and_filters(audited, capsys):
    rc, out, err = run(capsys, "jobs", "--ledger", audited.url, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["log"]["ok"] is True and doc["log"]["size"] == audited.n_entries
    by = {j["job_id"]: j for j in doc["jobs"]}
    cheat = by[audited.cheat]
    assert cheat["verdict"] == "cheated" and cheat["accused"] == [f"node-{CHEATER}"] and cheat["status"] == "done"
    assert cheat["nodes"] == {"0": "node-0", "1": "node-1", "2": "node-2"} and cheat["tokens"] == 2
    assert isinstance(cheat["started_ms"], int) and cheat["model_id"] and cheat["dealer"] == "dealer"
    assert by["honest"]["verdict"] == "clean" and by["pending"]["verdict"] == "unaudited"
    assert by["failed"]["status"] == "failed"
    opens = [j["open_index"] for j in doc["jobs"]]
    assert opens == sorted(opens, reverse=True)  # newest first
    rc, out, _ = run(capsys, "jobs", "--ledger", audited.url, "--json", "--verdict", "cheated")
    assert rc == 0 and [j["job_id"] for j in json.loads(out)["jobs"]] == [audited.cheat]
    rc, out, _ = run(capsys, "jobs", "--ledger", audited.url, "--json", "--status", "failed")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == ["failed"]
    rc, out, _ = run(capsys, "jobs", "--ledger", audited.url, "--json", "--node", "node-2", "--limit", "1")
    assert len(json.loads(out)["jobs"]) == 1
    rc, out, _ = run(capsys, "jobs", "--ledger", audited.url)
    assert rc == 0 and audited.cheat in out and "cheated" in out and "unaudited" in out


def test_nodes_json_and_history(audited, capsys):
    rc, out, err = run(capsys, "nodes", "--ledger", audited.url, "--json")
    assert rc == 0, err
    nodes = {n["node_id"]: n for n in json.loads(out)["nodes"]}
    n1 = nodes[f"node-{CHEATER}"]
    assert n1["accusations"] == 1 and n1["roles"] == ["node"] and len(bytes.fromhex(n1["ed25519"])) == 32
    assert len(bytes.fromhex(n1["bls"])) == 48 and n1["endpoint"] and "jobs" not in n1
    assert nodes["verifier"]["roles"] == ["verifier"]
    rc, out, _ = run(capsys, "nodes", f"node-{CHEATER}", "--ledger", audited.url, "--json")
    (only,) = json.loads(out)["nodes"]
    assert {j["job_id"]: j["outcome"] for j in only["jobs"]}[audited.cheat] == "cheated"
    rc, out, _ = run(capsys, "nodes", "--ledger", audited.url)
    assert rc == 0 and "node-1" in out and "accusations" in out
    rc, _, err = run(capsys, "nodes", "nobody", "--ledger", audited.url)
    assert rc == 2 and "nobody" in err and "Traceback" not in err


def test_show_json_fields(audited, capsys):
    rc, out, err = run(capsys, "show", audited.cheat, "--ledger", audited.url, "--json")
    assert rc == 0, err
    d = json.loads(out)
    ch = d["challenge"]
    assert ch["state"] == "counted" and CHEATER in ch["opened"] and ch["closed"] not in ch["opened"]
    assert d["seal"]["signature_verified"] is True and len(d["roots"]) == 3 and d["dealer_commit"] is not None
    assert sorted(o["party"] for o in d["openings"]) == sorted(ch["opened"]) and d["release"] is not None
    (v,) = d["verdicts"]
    assert v["auditor"] == "verifier" and v["outcome"] == "fail" and v["accused"] == [f"node-{CHEATER}"]
    party = d["parties"][CHEATER]
    assert party["status"] == "cheated" and isinstance(party["step"], int) and party["op"]
    assert d["evidence"] == {f"node-{CHEATER}": f"evidence-{audited.cheat}-node-{CHEATER}.cbor"}
    rc, out, _ = run(capsys, "show", "pending", "--ledger", audited.url, "--json")
    d = json.loads(out)
    assert d["verdicts"] == [] and d["ignored_verdicts"][0]["auditor"] == "node-2" and d["noise"]
    rc, out, _ = run(capsys, "show", audited.cheat, "--ledger", audited.url)
    assert rc == 0 and "cheated" in out and f"node-{CHEATER}" in out and "participants" in out


def test_report_formats(audited, capsys):
    ev = str(audited.evidence_dir)
    rc, out, err = run(capsys, "report", audited.cheat, "--ledger", audited.url, "--format", "markdown",
                       "--evidence-dir", ev)
    assert rc == 0, err
    assert out.startswith(f"# Audit report: job `{audited.cheat}`") and "**verdict**: cheated" in out
    assert "| share index | node |" in out and "## Verdicts" in out and "## Evidence" in out
    assert f"verify evidence {ev}/evidence-{audited.cheat}-node-{CHEATER}.cbor" in out
    rc, out, _ = run(capsys, "report", audited.cheat, "--ledger", audited.url, "--format", "json", "--evidence-dir", ev)
    d = json.loads(out)
    assert d["verdict"] == "cheated" and d["log"]["ok"] and list(d["evidence_files"]) == [f"node-{CHEATER}"]
    rc, out, _ = run(capsys, "report", "honest", "--ledger", audited.url, "--format", "text")
    assert rc == 0 and "\x1b[" not in out and "clean" in out and "sealing checkpoint" in out
    rc, out, _ = run(capsys, "report", "pending", "--ledger", audited.url, "--format", "markdown")
    assert "No verdict yet (unaudited)." in out and "does not count: not by a registered auditor" in out


def test_a_tampered_row_makes_every_report_say_the_log_does_not_verify(audited, capsys):
    rc, out, err = run(capsys, "jobs", "--ledger", audited.tampered, "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["log"]["ok"] is False and doc["log"]["status"] == "does not verify"
    assert any("differs from the signed checkpoint" in f for f in doc["log"]["findings"])
    rc, out, err = run(capsys, "jobs", "--ledger", audited.tampered)
    assert rc == 1 and "THE LOG DOES NOT VERIFY" in err
    rc, out, _ = run(capsys, "report", "honest", "--ledger", audited.tampered, "--format", "markdown")
    assert rc == 1 and "## The log does not verify" in out
    rc, out, _ = run(capsys, "show", "honest", "--ledger", audited.tampered, "--json")
    assert rc == 1 and json.loads(out)["seal"] is None  # nothing is shown as sealed on a log that does not verify
    rc, _, _ = run(capsys, "jobs", "--ledger", audited.url, "--log-key", "01" * 48, "--json")
    assert rc == 1  # checkpoints not signed by the given key


def test_bad_input_is_one_line_and_exit_2(audited, capsys, tmp_path):
    cases = [
        ("show", "no-such-job", "--ledger", audited.url),
        ("report", "no-such-job", "--ledger", audited.url, "--format", "json"),
        ("jobs", "--ledger", f"sqlite:///{tmp_path / 'missing.db'}"),
        ("jobs", "--ledger", "postgresql://nobody@127.0.0.1:1/none"),
        ("jobs", "--ledger", audited.url, "--log-key", "zz"),
        ("jobs", "--ledger", audited.url, "--limit", "0"),
    ]
    for argv in cases:
        rc, out, err = run(capsys, *argv)
        assert rc == 2, (argv, out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    rc, out, err = run(capsys, "report", "nope", "--ledger", audited.url, "--format", "json")
    assert json.loads(out)["ok"] is False


def test_an_empty_ledger_lists_nothing(audited, capsys):
    rc, out, err = run(capsys, "jobs", "--ledger", audited.empty, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["jobs"] == [] and doc["log"]["status"] == "no signed checkpoint yet"
    rc, out, _ = run(capsys, "nodes", "--ledger", audited.empty, "--json")
    assert [n["node_id"] for n in json.loads(out)["nodes"]] == ["log"]


@pytest.mark.parametrize("argv", [["jobs", "--help"], ["report", "--help"], ["browse", "--help"]])
def test_help_lists_accepted_values(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert {"jobs": "running,done,failed", "report": "text,json,markdown", "browse": "--evidence-dir"}[argv[0]] in out


def test_no_progress_output_when_not_a_terminal(audited, capsys):
    rc, out, err = run(capsys, "ledger-check", "--ledger", audited.url)
    assert rc == 0 and err == ""  # progress bars only on a terminal
