"""`shardproof demo --json`: the end-to-end run keeps its JSON contract and names the cheater."""
import json

from cli.shardproof import main


def test_demo_json_names_the_cheater(capsys):
    rc = main(["demo", "--tokens", "3", "--json", "--cheat", "zeros@100"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    for key in ("job_id", "text", "verdict", "cheaters", "unresponsive", "lambda", "audit_seconds", "job_seconds"):
        assert key in out
    assert out["verdict"] == "clean" and out["cheaters"] == [] and out["identical_to_plaintext"]
    fo = out["failover"]  # a replica killed mid-job: its twin finishes it, nobody is accused
    assert fo["killed"] == "node-3" and fo["completed"] and fo["tokens_match_plaintext"], fo
    assert fo["accused"] == [] and fo["seconds_lost"] is not None and "node-3" in fo["dropped"], fo
    assert fo["unresponsive_replicas"] == ["node-3"] and fo["verdict"] == "pass", fo
    run = out["cheat_run"]
    assert run["verdict"] == "cheating detected" and run["cheaters"] == ["node-1"]
    assert all(e["verifies_offline"] for e in run["evidence"].values())


def test_demo_rejects_bad_arguments(capsys):
    assert main(["demo", "--cheat", "nonsense", "--json"]) == 2
    assert main(["demo", "--parties", "1", "--json"]) == 2
