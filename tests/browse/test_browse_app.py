"""`verify browse`: the textual app driven by its Pilot on the audited ledger fixture."""
from __future__ import annotations

import asyncio
import time

import pytest

from cli.browse_app import BrowseApp, HelpScreen, JobScreen, JobsScreen, LogScreen, NodeScreen, NodesScreen
from ledger import Ledger
from ledger import entries as E
from protocol import bodies as B

from .conftest import CHEATER

SIZE = (150, 50)


async def until(pilot, cond, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(0.05)


def _app(url: str, audited, tmp_path, **kw) -> BrowseApp:
    led = Ledger.open(url, create=False)
    return BrowseApp(led, audited.log_key, "--log-key", evidence_dir=audited.evidence_dir,
                     monitor_state=tmp_path / "monitor.json", **kw)


def shown(widget) -> str:
    """The text a Static shows (its content rendered without colour)."""
    from cli.verify_reports import render_text

    return render_text([widget.content], width=SIZE[0])


def _rows(table) -> list[str]:
    return [str(k.value) for k in table.rows]


def test_jobs_filter_job_evidence_node_history_and_log(audited, tmp_path):
    app = _app(audited.url, audited, tmp_path, poll=0.2)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded and app.screen.query_one("#jobs").row_count > 0)
            jobs = app.screen.query_one("#jobs")
            assert isinstance(app.screen, JobsScreen) and set(_rows(jobs)) >= {"honest", audited.cheat, "pending"}
            assert "verifies" in shown(app.screen.query_one("#banner"))
            # filter for cheated: `v` cycles clean -> cheated
            await pilot.press("v", "v")
            assert app.filters["verdict"] == "cheated" and _rows(jobs) == [audited.cheat]
            await pilot.press("escape")
            assert len(_rows(jobs)) > 1
            # `/` searches with the same filter words
            await pilot.press("slash", *"verdict:cheated", "enter")
            await until(pilot, lambda: _rows(jobs) == [audited.cheat])
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, JobScreen) and app.screen.detail is not None)
            job = app.screen
            s = job.detail.summary
            assert s.job_id == audited.cheat and s.accused == [f"node-{CHEATER}"]
            failing = s.parties[CHEATER]
            assert failing.status == "cheated" and failing.step is not None
            text = shown(job.query_one("#detail"))
            assert f"node-{CHEATER}" in text and str(failing.step) in text and "cheated" in text
            # the offline evidence check of the accused node's bundle, in the app
            await pilot.press("e")
            await until(pilot, lambda: job.evidence_results, timeout=180)
            res = job.evidence_results[f"node-{CHEATER}"]
            assert res.ok and res.accused == [f"node-{CHEATER}"]
            assert "PROVEN" in shown(job.query_one("#result"))
            # the accused node's history
            await pilot.press("o")
            await until(pilot, lambda: isinstance(app.screen, NodeScreen))
            hist = app.screen.query_one("#history")
            assert app.screen.node_id == f"node-{CHEATER}" and audited.cheat in _rows(hist)
            # back to the job, back to the jobs
            await pilot.press("escape")
            assert isinstance(app.screen, JobScreen)
            await pilot.press("escape")
            assert isinstance(app.screen, JobsScreen)
            # nodes, j/k and enter
            await pilot.press("2")
            await until(pilot, lambda: isinstance(app.screen, NodesScreen))
            nodes = app.screen.query_one("#nodes")
            await until(pilot, lambda: nodes.row_count > 0)
            await pilot.press("j", "j", "k")
            assert nodes.cursor_row == 1
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, NodeScreen))
            # the log: size, checkpoints, the head seen, the full ledger check
            await pilot.press("3")
            await until(pilot, lambda: isinstance(app.screen, LogScreen))
            log_text = shown(app.screen.query_one("#log"))
            assert str(audited.n_entries) in log_text and "latest checkpoint" in log_text
            await pilot.press("c")
            await until(pilot, lambda: app.screen.check_report is not None, timeout=120)
            assert app.screen.check_report.ok and "ledger check OK" in shown(app.screen.query_one("#result"))
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape", "1")
            assert isinstance(app.screen, JobsScreen)
            await pilot.press("q")

    asyncio.run(drive())
    # the monitor state now holds the latest checkpoint this auditor saw
    from verifier.monitor_state import last_seen

    seen = last_seen("shardproof/local", tmp_path / "monitor.json")
    assert seen is not None and seen[0] <= audited.n_entries


def test_live_update_and_a_forked_head(audited, tmp_path):
    """New entries show up while the app runs; a saved head the log does not extend is reported."""
    from pathlib import Path

    from verifier.monitor_state import save_seen

    from .conftest import copy_db

    copy_db(Path(audited.before_noise.removeprefix("sqlite:///")), tmp_path / "l.db")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    save_seen("shardproof/local", 5, bytes(32), tmp_path / "monitor.json")  # not this log's root at size 5
    app = _app(url, audited, tmp_path, poll=0.2)
    writer = Ledger.open(url, create=False)
    from ledger.keys import Identity
    from mpc_core import prg

    verifier = Identity("verifier", prg.master_from_int(0, "identity:verifier"))  # sim.local_network's auditor

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded and app.screen.query_one("#jobs").row_count > 0)
            await pilot.press("v")  # clean
            jobs = app.screen.query_one("#jobs")
            assert "pending" not in _rows(jobs)
            writer.append(E.make_entry(verifier, E.VERDICT, B.Verdict("pending", "pass", (), "").to_body()))
            await until(pilot, lambda: "pending" in _rows(jobs), timeout=30)
            await pilot.press("3")
            await until(pilot, lambda: isinstance(app.screen, LogScreen))
            assert "NOT CONSISTENT" in shown(app.screen.query_one("#log"))

    asyncio.run(drive())
    from verifier.monitor_state import last_seen

    assert last_seen("shardproof/local", tmp_path / "monitor.json") == (5, bytes(32))  # a fork is never saved over


@pytest.mark.parametrize("which", ["tampered", "empty"])
def test_a_bad_or_empty_ledger_says_so(audited, tmp_path, which):
    app = _app(getattr(audited, which), audited, tmp_path)

    async def drive() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.pause(0.2)
            banner = shown(app.screen.query_one("#banner"))
            filters = shown(app.screen.query_one("#filters"))
            if which == "tampered":
                assert "THE LOG DOES NOT VERIFY" in banner and app.screen.query_one("#banner").has_class("bad")
            else:
                assert "no jobs on this ledger yet" in filters and "no signed checkpoint yet" in banner
            await pilot.press("q")

    asyncio.run(drive())


def test_browse_refuses_without_a_terminal_or_a_ledger(audited, tmp_path, capsys):
    from cli.verify import main

    assert main(["browse", "--ledger", audited.url]) == 2  # stdout is not a terminal under pytest
    assert "needs a terminal" in capsys.readouterr().err
