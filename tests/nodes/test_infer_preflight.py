"""`shardproof infer --ledger`: pre-flight on node.heartbeat, job.fail on a failed job, one-line failures."""
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli.shardproof import main
from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from protocol import bodies as B
from protocol.job_view import job_failed, last_heartbeat, read_job_from_ledger
from prover.daemon import DaemonError, NodeDaemon
from prover.dealer_service import DealerDaemon
from prover.keys import NodeKeys, registration_entry
from models import TINY_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]
MODEL = "m-tiny"


def _keys(name: str) -> NodeKeys:
    return NodeKeys.generate(name, prg.master_from_int(12, f"test-preflight:{name}"))


@pytest.fixture
def deployment(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger.open(url, origin="test.shardproof/preflight", log_identity=Identity("log", prg.master_from_int(12, "log")))
    client, dealer = _keys("client"), _keys("dealer")
    nodes = [_keys(f"node-{i}") for i in range(2)]
    led.append_many([registration_entry(client, ("client", "dealer")), registration_entry(dealer, ("dealer",))]
                    + [registration_entry(k, ("node",), f"127.0.0.1:{29800 + i}") for i, k in enumerate(nodes)])
    client.save(tmp_path / "client.key")
    yield {"url": url, "led": led, "client": client, "dealer": dealer, "nodes": nodes, "tmp": tmp_path}
    led.close()


def _beat(d, keys: NodeKeys, models=(MODEL,), age_s: float = 0.0, node: str | None = None) -> None:
    d["led"].append(E.make_entry(keys.identity, E.HEARTBEAT, B.Heartbeat(node or keys.node_id, tuple(models)).to_body(),
                                 time=E.now_ms() - int(age_s * 1000)))


def _infer(d, *extra: str) -> int:
    return main(["infer", "--ledger", d["url"], "--nodes", ",".join(k.node_id for k in d["nodes"]), "--key",
                 str(d["tmp"] / "client.key"), "--model-id", MODEL, "--prompt", "And", "--max-new-tokens", "1",
                 "--dealer-state", str(d["tmp"]), *extra])


@pytest.mark.parametrize("case,expect", [
    ("silent", "never announced itself"),
    ("stale", "last announced itself"),
    ("no-model", "does not hold model"),
    ("forged", "never announced itself"),  # a heartbeat for node-1 written by node-0 does not count
    ("dealer-silent", "dealer 'dealer'"),
])
def test_infer_refuses_nodes_that_are_not_ready(deployment, capsys, case, expect):
    d = deployment
    n0, n1 = d["nodes"]
    _beat(d, n0)
    if case == "stale":
        _beat(d, n1, age_s=1000)
    elif case == "no-model":
        _beat(d, n1, models=("other",))
    elif case == "forged":
        _beat(d, n0, node=n1.node_id)
    elif case == "dealer-silent":
        _beat(d, n1)
    size = d["led"].size()
    rc = _infer(d, *(["--dealer", "dealer"] if case == "dealer-silent" else []))
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and len(err.strip().splitlines()) == 1, err
    assert d["led"].size() == size  # no job opened


@pytest.mark.parametrize("case", ["one-operator", "one-operator-wait-ready", "same-node-twice"])
def test_infer_refuses_a_node_list_that_gives_one_operator_two_share_indices(deployment, capsys, case):
    """Nodes of one declared operator (or one node named twice) never make a job.assign that counts
    (protocol.job_view): the client refuses before posting anything, one line, exit 2, without waiting."""
    d = deployment
    acme = [_keys(f"acme-{i}") for i in range(2)]
    d["led"].append_many([registration_entry(k, ("node",), f"127.0.0.1:{29810 + i}", operator="acme")
                          for i, k in enumerate(acme)])
    for k in [*d["nodes"], *acme]:
        _beat(d, k)  # every node ready: the operators are the only problem
    nodes = [acme[0], d["nodes"][0], acme[1]] if case != "same-node-twice" else [d["nodes"][0], d["nodes"][1],
                                                                                  d["nodes"][0]]
    size = d["led"].size()
    t0 = time.monotonic()
    rc = main(["infer", "--ledger", d["url"], "--nodes", ",".join(k.node_id for k in nodes), "--key",
               str(d["tmp"] / "client.key"), "--model-id", MODEL, "--prompt", "And", "--max-new-tokens", "1",
               "--dealer-state", str(d["tmp"]), *(["--wait-ready", "30"] if case.endswith("wait-ready") else [])])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    if case == "same-node-twice":
        assert "node 'node-0' is named twice" in err
    else:
        assert "operator 'acme'" in err and "0 (node 'acme-0')" in err and "2 (node 'acme-1')" in err, err
    assert d["led"].size() == size  # nothing posted
    assert time.monotonic() - t0 < 10  # --wait-ready does not wait for what waiting cannot fix


def test_run_remote_job_refuses_one_operator_with_two_share_indices_before_posting(deployment):
    """The library path (no pre-flight) refuses too, before job.open."""
    from prover.remote_client import AssignmentRefused, RemoteJobError, assignment_problem, run_remote_job

    d = deployment
    acme = [_keys(f"acme-{i}") for i in range(2)]
    d["led"].append_many([registration_entry(k, ("node",), f"127.0.0.1:{29810 + i}", operator="acme")
                          for i, k in enumerate(acme)])
    assert assignment_problem(d["led"], [k.node_id for k in d["nodes"]]) == ""
    assert assignment_problem(d["led"], ["acme-0", "node-0"]) == ""
    assert "operator 'acme'" in assignment_problem(d["led"], ["acme-0", "acme-1"])
    size = d["led"].size()
    with pytest.raises(RemoteJobError, match="operator 'acme'") as exc:
        run_remote_job(d["url"], d["client"], ["acme-0", "acme-1"], MODEL, [1], 1, "j-acme", state_dir=d["tmp"])
    assert isinstance(exc.value.__cause__, AssignmentRefused)
    assert d["led"].size() == size
    # replicas: acme may hold both replicas of one index, never a node twice, never two indices
    assert assignment_problem(d["led"], ["acme-0", "node-0", "acme-1", "node-1"], 2) == ""
    assert "two share indices" in assignment_problem(d["led"], ["acme-0", "node-0", "node-1", "acme-1"], 2)
    twice = assignment_problem(d["led"], ["node-0", "node-1", "node-0", "acme-0"], 2)
    assert "named twice (share index 0 as replicas 0 and 1)" in twice, twice
    for nodes, replicas, why in [(["node-0", "node-1", "node-0", "acme-0"], 2, "named twice"),
                                 (["node-0", "node-1", "acme-0"], 2, "do not make 2 replicas"),
                                 (["node-0", "node-1"], 9, "replicas must be 1..8")]:
        with pytest.raises(RemoteJobError, match=why):
            run_remote_job(d["url"], d["client"], nodes, MODEL, [1], 1, "j-replicas", state_dir=d["tmp"],
                           replicas=replicas)
    assert d["led"].size() == size  # nothing was posted


def test_nodes_never_serve_a_job_that_gives_their_operator_two_share_indices(deployment):
    """A job.assign posted anyway (not by `shardproof infer`) is noise: the assigned nodes drop the job."""
    d = deployment
    acme = [_keys(f"acme-{i}") for i in range(2)]
    d["led"].append_many([registration_entry(k, ("node",), f"127.0.0.1:{29810 + i}", operator="acme")
                          for i, k in enumerate(acme)])
    d["nodes"] = acme  # _open assigns party i to d["nodes"][i]
    _open(d, "j-acme", d["client"])
    view = read_job_from_ledger(d["led"], "j-acme")
    assert view.assign is None and "operator 'acme'" in view.noise[0].reason
    node = NodeDaemon(d["url"], acme[0], d["tmp"] / "acme-0", heartbeat_s=None)
    with pytest.raises(DaemonError, match="no valid job.assign"):
        node._job_info("j-acme", 0, d["client"].node_id)
    node.poll_once()
    assert "j-acme" not in node._pending and node.status("j-acme") is None


def test_heartbeats_count_only_from_the_node_itself_and_the_latest_wins(deployment):
    d = deployment
    n0, n1 = d["nodes"]
    _beat(d, n0, models=("a",), age_s=10)
    _beat(d, n0, models=("b",))
    _beat(d, n1, models=("forged",), node=n0.node_id)
    assert last_heartbeat(d["led"], n0.node_id).body.models == ("b",)
    assert last_heartbeat(d["led"], n1.node_id) is None


def _open(d, job: str, opener: NodeKeys) -> None:
    d["led"].append_many([
        E.make_entry(opener.identity, E.JOB_OPEN, {"job_id": job, "model_id": MODEL, "n_parties": 2, "replicas": 1,
                                                   "stages": 1, "dealer": opener.node_id, "client": opener.node_id,
                                                   "params": {"prompt_len": 1, "steps": 1, "rendezvous": "127.0.0.1:1"}}),
        E.make_entry(opener.identity, E.JOB_ASSIGN, {"job_id": job, "assignments": [
            {"node": k.node_id, "party": p, "replica": 0, "stage": 0} for p, k in enumerate(d["nodes"])]})])


def test_job_fail_counts_only_from_the_opener_and_nodes_stop_waiting(deployment):
    d = deployment
    _open(d, "j1", d["client"])
    d["led"].append(E.make_entry(d["nodes"][0].identity, E.JOB_FAIL, B.JobFail("j1", "not mine").to_body()))
    view = read_job_from_ledger(d["led"], "j1")
    assert view.fail is None and any(n.kind == E.JOB_FAIL for n in view.noise)
    assert job_failed(d["led"], "j1") is None
    node = NodeDaemon(d["url"], d["nodes"][0], d["tmp"] / "n0", heartbeat_s=None)
    node.poll_once()
    assert "j1" in node._pending  # waiting for the dealer's commitment
    d["led"].append(E.make_entry(d["client"].identity, E.JOB_FAIL, B.JobFail("j1", "the group did not form").to_body()))
    assert read_job_from_ledger(d["led"], "j1").fail.body.reason == "the group did not form"
    with pytest.raises(DaemonError, match="closed"):
        node._job_info("j1", 0, d["client"].node_id)
    node.poll_once()
    assert "j1" not in node._pending and node.status("j1") is None
    dealer = DealerDaemon(d["url"], d["client"], d["tmp"] / "dealer", heartbeat_s=None)
    dealer.poll_once()
    assert not d["led"].by_job("j1", kind=E.DEALER_COMMIT) and not dealer._pending


def test_daemons_post_heartbeats_at_start_and_every_interval(deployment):
    d = deployment
    n0 = d["nodes"][0]
    (d["tmp"] / "n0" / "models" / MODEL).mkdir(parents=True)
    (d["tmp"] / "n0" / "models" / MODEL / "manifest.json").write_text("{}")
    node = NodeDaemon(d["url"], n0, d["tmp"] / "n0", poll_s=0.05, heartbeat_s=0.3)
    dealer = DealerDaemon(d["url"], d["dealer"], d["tmp"] / "dealer", poll_s=0.05, heartbeat_s=0.3)
    stop = threading.Event()
    threads = [threading.Thread(target=x.run, args=(stop,)) for x in (node, dealer)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(10)
    beats = d["led"].query(kind=E.HEARTBEAT, author=n0.node_id)
    assert 2 <= len(beats) <= 6 and last_heartbeat(d["led"], n0.node_id).body.models == (MODEL,)
    assert 2 <= len(d["led"].query(kind=E.HEARTBEAT, author="dealer")) <= 6
    assert last_heartbeat(d["led"], "dealer").body.models == ()


@pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").is_file(), reason="no shipped model")
def test_a_job_whose_nodes_are_down_fails_in_one_line_and_is_closed(deployment, tmp_path):
    """Nodes announced themselves but are gone: the group never forms; one line, exit 2, job.fail posted."""
    d = deployment
    from models import load_checkpoint
    from models.publish import MANIFEST_FILE, publish_model

    manifest = publish_model(load_checkpoint(TINY_MODEL_DIR), 2, tmp_path / "model", prg.master_from_int(1, "owner"))
    digest = d["led"].put_blob((tmp_path / "model" / MANIFEST_FILE).read_bytes())
    owner = d["client"]
    d["led"].append(E.make_entry(owner.identity, E.MODEL, {"model_id": MODEL, "manifest": digest, "n_shares": 2,
                                                          "commitments": bytes.fromhex(manifest["model_id"])}))
    for k in d["nodes"]:
        _beat(d, k)
    proc = subprocess.run(
        [sys.executable, "-m", "cli.shardproof", "infer", "--ledger", d["url"], "--nodes",
         ",".join(k.node_id for k in d["nodes"]), "--key", str(tmp_path / "client.key"), "--model-id", MODEL,
         "--prompt", "And", "--max-new-tokens", "1", "--dealer-state", str(tmp_path), "--job-id", "down-job",
         "--timeout", "3", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    err = [line for line in proc.stderr.strip().splitlines() if line]
    assert proc.returncode == 2, proc.stderr
    assert err[0] == "job: down-job" and len(err) == 2, proc.stderr
    assert err[1].startswith("shardproof infer: job down-job:") and "Traceback" not in proc.stderr
    assert "frame #" not in proc.stderr and f"dealer log: {tmp_path / 'dealer-down-job.log'}" in err[1]
    assert proc.stdout == ""
    fail = job_failed(d["led"], "down-job")
    assert fail is not None and "did not form" in fail.reason
    assert json.dumps(fail.reason) and len(fail.reason.splitlines()) == 1


def test_infer_refuses_a_replica_count_that_does_not_fit_the_nodes(deployment, capsys):
    from cli.shardproof import main

    d = deployment
    size = d["led"].size()
    base = ["infer", "--ledger", d["url"], "--key", str(d["tmp"] / "client.key"), "--model-id", MODEL, "--prompt", "A"]
    assert main([*base, "--nodes", "node-0,node-1,node-2", "--replicas", "2"]) == 2
    assert "needs a multiple of 2 nodes, got 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: 1..8
        main([*base, "--nodes", "node-0,node-1", "--replicas", "9"])
    assert exc.value.code == 2 and "must be 1..8" in capsys.readouterr().err
    assert d["led"].size() == size
