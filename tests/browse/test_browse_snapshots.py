"""Snapshots of `verify browse` (pytest-textual-snapshot): the Jobs, Job and Nodes screens at a fixed
terminal size, on the ledger fixtures of conftest.py. Those ledgers are the same on every run (seeded
identities, model and jobs; entries stamped by a fixed clock), and the app is given a relative
evidence directory, so nothing on these screens depends on the time, a random draw or a temporary path.

A screen that changes on purpose: rerun with `--snapshot-update`, review the SVGs under
__snapshots__/test_browse_snapshots/ (on a failure the plugin writes snapshot_report.html with both
images side by side) and commit them. A change of the protocol's transcripts changes the roots,
steps and entry numbers the Job screen shows, so it needs an update too; so may another textual
version (these were drawn by textual 8.2.8)."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli.browse_app import BrowseApp, JobScreen, JobsScreen, NodesScreen
from ledger import Ledger
from ledger import entries as E

from .test_browse_app import until

SNAP_SIZE = (170, 48)  # wide enough for every column of the Nodes screen


@pytest.fixture
def browse(audited, tmp_path, monkeypatch):
    """A BrowseApp on the audited ledger, its evidence directory shown as the relative path `evidence`."""
    monkeypatch.chdir(audited.evidence_dir.parent)

    def make(url: str | None = None, log_key: bytes | None = None) -> BrowseApp:
        return BrowseApp(Ledger.open(url or audited.url, create=False), log_key or audited.log_key, "--log-key",
                         evidence_dir=Path(audited.evidence_dir.name), poll=3600,
                         monitor_state=tmp_path / "monitor.json")
    return make


async def _jobs_loaded(pilot) -> None:
    """Every job of the ledger is in the table (how many cheat attempts the fixture needed to open the
    cheater depends on the protocol's transcripts, so the count is read, not assumed)."""
    app = pilot.app
    n_jobs = len(app.led.query(kind=E.JOB_OPEN))
    await until(pilot, lambda: app.loaded and isinstance(app.screen, JobsScreen)
                and app.screen.query_one("#jobs").row_count == n_jobs)


def test_jobs_screen(browse, snap_compare):
    assert snap_compare(browse(), terminal_size=SNAP_SIZE, run_before=_jobs_loaded)


def test_job_screen_of_the_cheater(browse, snap_compare, audited):
    async def open_cheat(pilot) -> None:
        await _jobs_loaded(pilot)
        app = pilot.app
        row = app.screen.query_one("#jobs").get_row_index(audited.cheat)
        await pilot.press(*["j"] * row, "enter")
        await until(pilot, lambda: isinstance(app.screen, JobScreen) and app.screen.detail is not None)
        assert app.screen.job_id == audited.cheat

    assert snap_compare(browse(), terminal_size=SNAP_SIZE, run_before=open_cheat)


async def _nodes(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.loaded)
    await pilot.press("2")
    await until(pilot, lambda: isinstance(app.screen, NodesScreen) and app.screen.query_one("#nodes").row_count)


def test_nodes_screen(browse, snap_compare):
    assert snap_compare(browse(), terminal_size=SNAP_SIZE, run_before=_nodes)


def test_nodes_screen_with_unresponsive_nodes(browse, snap_compare, unresponsive):
    assert snap_compare(browse(unresponsive.url, unresponsive.log_key), terminal_size=SNAP_SIZE, run_before=_nodes)
