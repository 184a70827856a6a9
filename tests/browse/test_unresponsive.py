"""Times unresponsive per node (specs/browse.md, "A node's counts"), on a ledger where nodes really did
not answer (the `unresponsive` fixture of conftest.py): the index, `verify nodes` (table and --json)
and the app's Nodes screen, field by field."""
from __future__ import annotations

import asyncio
import json

import pytest

from ledger import Ledger
from verifier.ledger_index import LedgerIndex, marks_unresponsive
from verifier.summary_terms import DISPUTED_RECEIPT, NO_JOB_ROOT

NODES = ("node-0", "node-1", "node-2")
JOBS = ("disputed", "silent", "no-release", "no-root")


def expected_outcomes(u) -> dict[tuple[str, str], str]:
    """(job, node) -> the node's outcome, from what the fixture made each participant do (not from the index)."""
    out = {}
    for job in JOBS:
        for p, node in enumerate(NODES):
            if job == "no-root":
                o = "unaudited"  # never sealed, never audited: counts for nobody
            elif job == "disputed" and p == u.disputed:
                o = "unresponsive"
            elif job == "silent" and p == u.withheld:
                o = "defaulted"
            elif p == u.closed[job]:
                o = "not opened"
            elif job == "disputed":
                o = "incomplete"  # opened, but an incomplete verdict vouches for nobody
            elif job == "no-release":
                o = "unresolved"  # marked unresponsive in the dealer's words: the dealer withheld, not the node
            else:
                o = "clean"
            out[job, node] = o
        out[job, u.dealer] = {"no-release": "defaulted", "no-root": "unaudited"}.get(job, "clean")
    return out


def expected_counts(u) -> dict[str, dict]:
    outcomes = expected_outcomes(u)
    counts = {}
    for node in (*NODES, u.dealer):
        mine = [o for (_, n), o in outcomes.items() if n == node]
        counts[node] = {"jobs_served": len(mine),
                        "audits_passed": sum(o == "clean" for o in mine) if node != u.dealer else 0,
                        "accusations": 0, "defaulted": mine.count("defaulted"),
                        "unresponsive": mine.count("defaulted") + mine.count("unresponsive")}
    return counts


@pytest.fixture(scope="module")
def index(unresponsive) -> LedgerIndex:
    ix = LedgerIndex(Ledger.open(unresponsive.url, create=False), unresponsive.log_key)
    ix.update()
    return ix


def test_the_fixture_is_what_it_says(unresponsive):
    u = unresponsive
    assert u.withheld != u.closed["silent"] and u.no_root == 1 and u.disputed == 2
    counts = expected_counts(u)
    # someone really was unresponsive in each way: a disputed receipt, a default, the dealer's default
    assert counts[f"node-{u.disputed}"]["unresponsive"] >= 1 and counts[f"node-{u.withheld}"]["defaulted"] == 1
    assert counts[u.dealer] == {"jobs_served": 4, "audits_passed": 0, "accusations": 0, "defaulted": 1,
                                "unresponsive": 1}


def test_job_outcomes_and_verdicts(index, unresponsive):
    u = unresponsive
    by = {j.job_id: j for j in index.jobs()}
    assert {j: (by[j].status, by[j].verdict) for j in JOBS} == {
        "disputed": ("done", "incomplete"), "silent": ("done", "cheated"), "no-release": ("done", "cheated"),
        "no-root": ("failed", "unaudited")}
    assert by["silent"].accused == by["silent"].defaulted == [f"node-{u.withheld}"]
    assert by["no-release"].accused == by["no-release"].defaulted == [u.dealer]
    assert by["disputed"].accused == [] and by["disputed"].defaulted == []
    outcomes = expected_outcomes(u)
    for j in JOBS:
        assert {p.node: p.status for p in by[j].parties} == {n: outcomes[j, n] for n in NODES}, j
    seg = by["disputed"].parties[u.disputed].reason
    assert seg == f"{DISPUTED_RECEIPT} 0" and marks_unresponsive(seg)
    assert all(not marks_unresponsive(p.reason) for p in by["no-release"].parties)
    d = index.job("disputed")
    assert [(v["outcome"], v["accused"], v["defaulted"]) for v in d.verdicts] == [("incomplete", [], [])]


def test_node_counts_field_by_field(index, unresponsive):
    u = unresponsive
    nodes = {n.node_id: n for n in index.nodes()}
    outcomes = expected_outcomes(u)
    for node, want in expected_counts(u).items():
        n = nodes[node]
        got = {k: getattr(n, k) for k in want}
        assert got == want, (node, got, want)
        assert {(j.job_id, j.outcome) for j in n.jobs} == {(j, outcomes[j, node]) for j in JOBS}, node
        assert n.as_dict()["unresponsive"] == want["unresponsive"]
    # the one who never posted its job root is not counted (the ledger cannot tell who stalled the group)
    no_root = nodes[f"node-{u.no_root}"]
    assert {j.job_id: (j.job_status, j.outcome) for j in no_root.jobs}["no-root"] == ("failed", "unaudited")
    for who in ("verifier", "owner", "client", "log"):
        assert nodes[who].unresponsive == 0 and nodes[who].jobs_served == 0


def test_verify_nodes_json_and_table(unresponsive, capsys, monkeypatch):
    from cli.verify import main

    monkeypatch.setenv("COLUMNS", "200")  # the table as on a wide terminal, not wrapped at 80
    u = unresponsive
    key = u.log_key.hex()
    assert main(["nodes", "--ledger", u.url, "--log-key", key, "--json"]) == 0
    got = {n["node_id"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    for node, want in expected_counts(u).items():
        assert {k: got[node][k] for k in want} == want, node
    assert main(["nodes", f"node-{u.withheld}", "--ledger", u.url, "--log-key", key, "--json"]) == 0
    (only,) = json.loads(capsys.readouterr().out)["nodes"]
    assert only["unresponsive"] == expected_counts(u)[f"node-{u.withheld}"]["unresponsive"]
    assert {j["job_id"]: j["outcome"] for j in only["jobs"]}["silent"] == "defaulted"
    assert main(["nodes", "--ledger", u.url, "--log-key", key]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    columns = [c.strip() for c in header.strip("┃").split("┃")]
    assert columns[-5:] == ["jobs", "audits passed", "accusations", "defaulted", "unresponsive"], columns
    rows = {}
    for line in lines:
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = dict(zip(columns, cells))
    names = {"audits_passed": "audits passed", "jobs_served": "jobs"}
    for node, want in expected_counts(u).items():
        assert {k: rows[node][names.get(k, k)] for k in want} == {k: str(v) for k, v in want.items()}, node


def test_the_nodes_screen_shows_it(unresponsive, tmp_path):
    from cli.browse_app import BrowseApp, NodesScreen

    from .test_browse_app import SIZE, until

    u = unresponsive
    app = BrowseApp(Ledger.open(u.url, create=False), u.log_key, "--log-key", monitor_state=tmp_path / "m.json")

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("2")
            await until(pilot, lambda: isinstance(app.screen, NodesScreen) and app.screen.query_one("#nodes").row_count)
            t = app.screen.query_one("#nodes")
            labels = [str(c.label) for c in t.columns.values()]
            assert labels[-4:] == ["passed", "accused", "defaulted", "unresponsive"]
            for node, want in expected_counts(u).items():
                row = [str(c) for c in t.get_row(node)]
                assert row[-4:] == [str(want[k]) for k in ("audits_passed", "accusations", "defaulted",
                                                           "unresponsive")], (node, row)
            await pilot.press("q")

    asyncio.run(drive())


def test_reasons_that_mark_a_node_unresponsive():
    assert marks_unresponsive(NO_JOB_ROOT) and marks_unresponsive(f"{DISPUTED_RECEIPT} 0, 1")
    for other in ("the dealer did not release this party's seed", "the dealer did not release its corrections",
                  "opening blob unavailable: gone", "step 3 (matmul in h.0.attn): out differs", ""):
        assert not marks_unresponsive(other), other
