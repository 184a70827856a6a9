"""The textual app of `verify browse` (cli/browse.py has the command and the screens' description).

Screens: JobsScreen, JobScreen, NodesScreen, NodeScreen, LogScreen, HelpScreen; every one reads
verifier.ledger_index through BrowseApp.index, which a worker thread keeps up to date.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

HELP = """[b]keys[/b]
  1  jobs      2  nodes      3  log      ?  this help      q  quit
  arrows or j/k  move        enter  open        escape  back (or clear the filters)
[b]jobs[/b]   s  cycle status filter    v  cycle verdict filter
         /  search: free text, or status:X verdict:X node:ID (several allowed)
[b]job[/b]    e  check the accused node's evidence bundle offline    o  open the node's history
[b]log[/b]    c  run the full ledger check (as `verify ledger-check`)
The mouse works: click a row to move there, click it again to open it."""


MAX_ROWS = 1000  # jobs shown at once (newest first); filters and search reach the others


class KeyTable(DataTable):
    """A DataTable that also moves with j/k."""

    BINDINGS = [Binding("j", "cursor_down", "down", show=False), Binding("k", "cursor_up", "up", show=False)]


class BrowseApp(App):
    """The auditor's terminal (see the module doc)."""

    TITLE = "shardproof: the auditor's terminal"
    CSS = """
    #banner { height: auto; padding: 0 1; }
    #banner.bad { background: $error; color: $text; }
    #filters { height: 1; padding: 0 1; color: $text-muted; }
    #search { display: none; }
    #search.shown { display: block; }
    #result { height: auto; padding: 0 1; }
    HelpScreen { align: center middle; }
    #help { width: 90; height: auto; border: round $accent; padding: 1 2; background: $surface; }
    """
    BINDINGS = [Binding("q", "quit", "quit"), Binding("question_mark", "help", "help"),
                Binding("1", "jobs", "jobs"), Binding("2", "nodes", "nodes"), Binding("3", "log", "log")]

    def __init__(self, led, log_key: bytes | None, key_source: str, *, evidence_dir: Path = Path("."),
                 poll: float = 1.0, filters: dict | None = None, monitor_state: Path | None = None) -> None:
        super().__init__()
        from verifier.ledger_index import LedgerIndex

        self.led = led
        self.log_key = log_key
        self.key_source = key_source
        self.evidence_dir = Path(evidence_dir)
        self.poll_s = poll
        self.filters = dict(filters or {})
        self.monitor_state = monitor_state
        self.index = LedgerIndex(led, log_key, key_source)
        self.lock = threading.Lock()
        self.loaded = False
        self.load_error = ""
        self.seen_before: tuple[int, bytes] | None = None
        self.seen_problem = ""

    # --- data ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from verifier.monitor_state import MonitorStateError, last_seen

        try:
            self.seen_before = last_seen(self.led.origin, self.monitor_state)
        except MonitorStateError as exc:
            self.seen_problem = str(exc)
        self.push_screen(JobsScreen())
        self.run_worker(self._update, thread=True, exclusive=True, group="update")
        self.set_interval(self.poll_s, self._poll)

    def _poll(self) -> None:
        if self.loaded:
            self.run_worker(self._update, thread=True, exclusive=True, group="update")

    def _update(self) -> None:
        """Read what is new (a worker thread); refresh the screen when something was."""
        try:
            with self.lock:
                n = self.index.update()
                self.index.jobs()  # summarise here, off the UI thread (cached until new entries touch a job)
                first = not self.loaded
                self.loaded = True
                self._save_head()
        except Exception as exc:  # noqa: BLE001 - an unreachable ledger: say so in the app, keep it running
            self.load_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            self.loaded = True
            self.call_from_thread(self.refresh_screen)
            return
        if self.load_error:
            self.load_error = ""
            first = True
        if n or first:
            self.call_from_thread(self.refresh_screen)

    def _save_head(self) -> None:
        """Save the latest checkpoint as seen, when the log verifies and extends the head seen before."""
        from verifier.monitor_state import MonitorStateError, save_seen

        log = self.index.log()
        if not log.ok or not log.latest_verified or log.latest is None:
            return
        if self.index.consistent_with(self.seen_before)[0] is False:
            return
        try:
            save_seen(log.origin, log.latest.size, log.latest.root, self.monitor_state)
        except MonitorStateError as exc:
            self.seen_problem = str(exc)

    def refresh_screen(self) -> None:
        scr = self.screen
        if hasattr(scr, "refresh_data"):
            scr.refresh_data()

    def banner(self) -> tuple[str, bool]:
        """One line on the log (and whether it is bad), for the top of every screen."""
        from cli.verify_reports import log_line

        if self.load_error:
            return f"cannot read the ledger: {self.load_error}", True
        if not self.loaded:
            return f"reading the ledger {self.led.url} ...", False
        with self.lock:
            log = self.index.log()
        if not log.ok:
            return "THE LOG DOES NOT VERIFY: " + "; ".join(log.findings), True
        return log_line(log), False

    # --- navigation ------------------------------------------------------------------------
    def action_jobs(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def action_nodes(self) -> None:
        self.action_jobs()
        self.push_screen(NodesScreen())

    def action_log(self) -> None:
        self.action_jobs()
        self.push_screen(LogScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


class _Base(Screen):
    BINDINGS = [Binding("escape", "back", "back")]

    def compose_banner(self) -> ComposeResult:
        yield Header()
        yield Static(id="banner")

    def show_banner(self) -> None:
        text, bad = self.app.banner()
        b = self.query_one("#banner", Static)
        b.update(Text(text))
        b.set_class(bad, "bad")

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def on_screen_resume(self) -> None:
        self.refresh_data()

    def refresh_data(self) -> None:
        self.show_banner()


class _TextScreen(_Base):
    """A screen of rendered text: the banner, a scrolling body (`#BODY_ID`, then `#result` for the
    output of a key's action) and the footer."""

    BODY_ID = "detail"

    def compose(self) -> ComposeResult:
        yield from self.compose_banner()
        with VerticalScroll(id="body"):
            yield Static(id=self.BODY_ID)
            yield Static(id="result")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#body").focus()
        self.refresh_data()


class JobsScreen(_Base):
    """Every job, newest first, with filters and search."""

    BINDINGS = [Binding("escape", "clear", "clear filters"), Binding("slash", "search", "search"),
                Binding("s", "cycle_status", "status"), Binding("v", "cycle_verdict", "verdict")]

    def compose(self) -> ComposeResult:
        yield from self.compose_banner()
        yield Static(id="filters")
        yield Input(placeholder="search: text, status:X verdict:X node:ID  (enter to apply, escape to cancel)",
                    id="search")
        t = KeyTable(id="jobs", cursor_type="row", zebra_stripes=True)
        t.add_columns("job", "model", "nodes per share index", "tokens", "started", "status", "verdict")
        yield t
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#jobs").focus()
        self.refresh_data()

    def refresh_data(self) -> None:
        from cli.verify_reports import STATUS_STYLE, VERDICT_STYLE, nodes_cell, when

        self.show_banner()
        app: BrowseApp = self.app  # type: ignore[assignment]
        f = app.filters
        shown = [f"{k}: {v}" for k, v in f.items() if v]
        info = "filters: " + (", ".join(shown) if shown else "none") + "   (s status, v verdict, / search, escape clear)"
        self.query_one("#filters", Static).update(Text(info))
        if not app.loaded:
            return
        with app.lock:
            jobs = app.index.jobs(status=f.get("status"), verdict=f.get("verdict"), node=f.get("node"),
                                  search=f.get("search"))
        t = self.query_one("#jobs", KeyTable)
        keep = None
        if t.row_count:
            try:
                keep = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
            except Exception:  # noqa: BLE001 - no row under the cursor
                keep = None
        t.clear()
        for s in jobs[:MAX_ROWS]:
            verdict = s.verdict + (f" ({', '.join(s.accused)})" if s.accused else "")
            t.add_row(s.job_id, s.model_id[:12], nodes_cell(s), "-" if s.tokens is None else str(s.tokens),
                      when(s.started_ms), Text(s.status, style=STATUS_STYLE.get(s.status, "")),
                      Text(verdict, style=VERDICT_STYLE.get(s.verdict, "")), key=s.job_id)
        if keep is not None:
            try:
                t.move_cursor(row=t.get_row_index(keep))
            except Exception:  # noqa: BLE001 - the row is filtered out now
                pass
        if len(jobs) > MAX_ROWS:
            info += f"; showing the newest {MAX_ROWS} of {len(jobs)} jobs"
        if not jobs:
            info = "no jobs on this ledger yet" if not any(f.values()) else "no job matches the filters (escape clears)"
        self.query_one("#filters", Static).update(Text(info))

    def _cycle(self, name: str, values: tuple[str, ...]) -> None:
        f = self.app.filters  # type: ignore[attr-defined]
        order = (None, *values)
        f[name] = order[(order.index(f.get(name)) + 1) % len(order)]
        self.refresh_data()

    def action_cycle_status(self) -> None:
        from verifier.ledger_index import JOB_STATUSES

        self._cycle("status", JOB_STATUSES)

    def action_cycle_verdict(self) -> None:
        from verifier.ledger_index import VERDICTS

        self._cycle("verdict", VERDICTS)

    def action_clear(self) -> None:
        inp = self.query_one("#search", Input)
        if inp.has_class("shown"):
            inp.remove_class("shown")
            self.query_one("#jobs").focus()
            return
        self.app.filters = {}  # type: ignore[attr-defined]
        self.refresh_data()

    def action_search(self) -> None:
        inp = self.query_one("#search", Input)
        inp.add_class("shown")
        inp.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        f: dict[str, Any] = {"status": None, "verdict": None, "node": None, "search": None}
        words = []
        for w in event.value.split():
            k, sep, v = w.partition(":")
            if sep and k in ("status", "verdict", "node") and v:
                f[k] = v
            else:
                words.append(w)
        f["search"] = " ".join(words) or None
        self.app.filters = f  # type: ignore[attr-defined]
        event.input.remove_class("shown")
        self.query_one("#jobs").focus()
        self.refresh_data()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(JobScreen(str(event.row_key.value)))



class JobScreen(_TextScreen):
    """One job (as `verify show`), with the offline evidence check."""

    BINDINGS = [Binding("escape", "back", "back"), Binding("e", "evidence", "check evidence"),
                Binding("o", "node", "node history")]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.detail = None
        self.check_text: Any = Text("")
        self.evidence_results: dict[str, Any] = {}  # accused node -> its bundle's EvidenceCheck

    def refresh_data(self) -> None:
        from cli.verify_reports import job_renderables
        from verifier.ledger_index import UnknownJob

        self.show_banner()
        app: BrowseApp = self.app  # type: ignore[assignment]
        if not app.loaded:
            return
        try:
            with app.lock:
                self.detail = app.index.job(self.job_id)
                log = app.index.log()
        except UnknownJob as exc:
            self.query_one("#detail", Static).update(Text(str(exc), style="red"))
            return
        self.query_one("#detail", Static).update(Group(*job_renderables(self.detail, log, app.evidence_dir)))
        self.query_one("#result", Static).update(self.check_text)

    def bundles(self) -> list[tuple[str, Path]]:
        """The accused nodes' evidence bundles present in --evidence-dir."""
        if self.detail is None:
            return []
        app: BrowseApp = self.app  # type: ignore[assignment]
        return [(n, app.evidence_dir / f) for n, f in self.detail.evidence.items() if (app.evidence_dir / f).is_file()]

    def action_evidence(self) -> None:
        found = self.bundles()
        if not found:
            why = ("nobody is accused in this job" if self.detail is None or not self.detail.evidence else
                   "no evidence bundle for " + ", ".join(self.detail.evidence) + f" in {self.app.evidence_dir}")  # type: ignore[attr-defined]
            self._result(Text(f"evidence: {why}", style="yellow"))
            return
        self._result(Text(f"checking {', '.join(str(p) for _, p in found)} offline (replaying) ...", style="yellow"))
        self.run_worker(lambda: self._check(found), thread=True, exclusive=True, group="evidence")

    def _check(self, found: list[tuple[str, Path]]) -> None:
        from verifier.ledger_audit import check_evidence

        app: BrowseApp = self.app  # type: ignore[assignment]
        parts: list = []
        results = {}
        for node, path in found:
            try:
                c = check_evidence(path.read_bytes(), app.log_key)
            except OSError as exc:
                parts.append(Text(f"{path}: cannot read: {exc}", style="yellow"))
                continue
            results[node] = c
            style = "bold red" if c.ok else "yellow"
            head = (f"evidence {path.name}: PROVEN: {', '.join(c.accused)} cheated or defaulted" if c.ok
                    else f"evidence {path.name}: {c.status}")
            lines = [head, f"  checked against the log key ({app.key_source})"]
            for p in c.parties:
                lines.append(f"  party {p.party} ({p.node}): {p.status}: {p.reason}")
                f = p.replay.finding if p.replay is not None else None
                if f is not None:
                    lines.append(f"    first failing step {f.step}: {f.kind} in {f.scope or 'top level'}; {f.what} "
                                 f"differs (committed {f.committed[:16]}..., recomputed {f.recomputed[:16]}...)"
                                 + (f"; {f.detail}" if f.detail else ""))
            lines += [f"  {r}" for r in c.reasons]
            parts.append(Text("\n".join(lines), style=style))
        self.app.call_from_thread(self._evidence_done, results, Group(*parts))

    def _evidence_done(self, results: dict, renderable: Any) -> None:
        self.evidence_results = results
        self._result(renderable)

    def _result(self, renderable: Any) -> None:
        self.check_text = renderable
        self.query_one("#result", Static).update(renderable)

    def action_node(self) -> None:
        if self.detail is None:
            return
        s = self.detail.summary
        node = s.accused[0] if s.accused else (s.parties[0].node if s.parties else s.dealer)
        self.app.push_screen(NodeScreen(node))


class NodesScreen(_Base):
    """Every registered node."""

    BINDINGS = [Binding("escape", "back", "back")]

    def compose(self) -> ComposeResult:
        yield from self.compose_banner()
        t = KeyTable(id="nodes", cursor_type="row", zebra_stripes=True)
        t.add_columns("node", "roles", "ed25519", "bls", "endpoint", "registered", "last heartbeat", "jobs",
                      "passed", "accused", "defaulted", "unresponsive")
        yield t
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#nodes").focus()
        self.refresh_data()

    def refresh_data(self) -> None:
        from cli.verify_reports import when
        from verifier.ledger_index import fingerprint

        self.show_banner()
        app: BrowseApp = self.app  # type: ignore[assignment]
        if not app.loaded:
            return
        with app.lock:
            nodes = app.index.nodes()
        t = self.query_one("#nodes", KeyTable)
        row = t.cursor_row
        t.clear()
        for n in nodes:
            t.add_row(n.node_id, ",".join(n.roles), fingerprint(n.ed25519), fingerprint(n.bls), n.endpoint or "-",
                      f"#{n.registered_index} {when(n.registered_ms)}", when(n.last_heartbeat_ms), str(n.jobs_served),
                      str(n.audits_passed), Text(str(n.accusations), style="bold red" if n.accusations else ""),
                      Text(str(n.defaulted), style="bold red" if n.defaulted else ""),
                      Text(str(n.unresponsive), style="yellow" if n.unresponsive else ""), key=n.node_id)
        if nodes:
            t.move_cursor(row=min(row, len(nodes) - 1))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(NodeScreen(str(event.row_key.value)))



class NodeScreen(_Base):
    """One node and its job history."""

    BINDINGS = [Binding("escape", "back", "back")]

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def compose(self) -> ComposeResult:
        yield from self.compose_banner()
        yield Static(id="node")
        t = KeyTable(id="history", cursor_type="row", zebra_stripes=True)
        t.add_columns("job", "role", "started", "job status", "verdict", "this node")
        yield t
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#history").focus()
        self.refresh_data()

    def refresh_data(self) -> None:
        from cli.verify_reports import PARTY_STYLE, VERDICT_STYLE, when
        from verifier.ledger_index import UnknownNode

        self.show_banner()
        app: BrowseApp = self.app  # type: ignore[assignment]
        if not app.loaded:
            return
        try:
            with app.lock:
                n = app.index.nodes(self.node_id)[0]
        except UnknownNode as exc:
            self.query_one("#node", Static).update(Text(str(exc), style="red"))
            return
        hb = when(n.last_heartbeat_ms) + (f" (models {', '.join(m[:12] for m in n.models)})" if n.models else "")
        self.query_one("#node", Static).update(Text(
            f"node {n.node_id}  operator {n.operator or n.node_id}  roles {','.join(n.roles)}  "
            f"endpoint {n.endpoint or '-'}\n"
            f"ed25519 {n.ed25519.hex()}\nbls     {n.bls.hex()}\n"
            f"registered #{n.registered_index} at {when(n.registered_ms)}; last heartbeat {hb}\n"
            f"jobs {n.jobs_served}, audits passed {n.audits_passed}, accusations {n.accusations}, "
            f"defaulted {n.defaulted}, unresponsive {n.unresponsive}"))
        t = self.query_one("#history", KeyTable)
        row = t.cursor_row
        t.clear()
        for j in n.jobs:
            t.add_row(j.job_id, j.role, when(j.started_ms), j.job_status,
                      Text(j.verdict, style=VERDICT_STYLE.get(j.verdict, "")),
                      Text(j.outcome, style=PARTY_STYLE.get(j.outcome, "")), key=j.job_id)
        if n.jobs:
            t.move_cursor(row=min(row, len(n.jobs) - 1))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(JobScreen(str(event.row_key.value)))



class LogScreen(_TextScreen):
    """The log: size, checkpoints, cosignatures, consistency with what was seen, the full check."""

    BODY_ID = "log"

    BINDINGS = [Binding("escape", "back", "back"), Binding("c", "check", "ledger check")]

    def __init__(self) -> None:
        super().__init__()
        self.check_text: Any = Text("c runs the full ledger check (every leaf, node, root, signature, checkpoint, blob)")
        self.check_report: Any = None  # the last ledger.check.CheckReport

    def refresh_data(self) -> None:
        from rich.table import Table

        from cli.verify_reports import when

        self.show_banner()
        app: BrowseApp = self.app  # type: ignore[assignment]
        if not app.loaded:
            return
        with app.lock:
            log = app.index.log()
            seen = app.seen_before
            consistent, why = app.index.consistent_with(seen)
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold")
        head.add_column(overflow="fold")
        latest = log.latest
        rows = [("origin", log.origin), ("hash", log.hash_name), ("tree size", str(log.size)),
                ("log key", f"{log.log_key.hex() if log.log_key else '-'} ({log.key_source})"),
                ("latest checkpoint", "none yet" if latest is None else
                 f"size {latest.size}, root {latest.root.hex()}, {latest.cosignatures} witness cosignature(s), "
                 f"signature {'verified' if log.latest_verified else 'DOES NOT VERIFY'}"),
                ("entries not yet under a checkpoint", str(log.unsealed)),
                ("status", log.verdict),
                ("last seen by this auditor", "nothing saved yet (first visit)" if seen is None else
                 f"size {seen[0]}, root {seen[1].hex()[:16]}...: "
                 + {True: "consistent (the log extends it)", False: f"NOT CONSISTENT: {why}", None: why}[consistent])]
        if app.seen_problem:
            rows.append(("monitor state", app.seen_problem))
        for k, v in rows:
            head.add_row(k, Text(v, style="bold red" if ("NOT" in v or "DOES NOT" in v) else ""))
        cps = Table(title=f"latest checkpoints (of {len(log.checkpoints)})", title_justify="left")
        for c in ("size", "root", "signers", "witness cosignatures", "logged as entry", "time", "root matches the log"):
            cps.add_column(c)
        for c in reversed(log.checkpoints[-10:]):
            cps.add_row(str(c.size), c.root.hex()[:16] + "...", str(c.signers), str(c.cosignatures),
                        "-" if c.entry_index is None else f"#{c.entry_index}", when(c.time_ms),
                        Text("yes" if c.consistent else "NO", style="" if c.consistent else "bold red"))
        parts: list = [head, cps]
        if log.findings:
            parts.append(Text("findings:\n" + "\n".join(f"  {f}" for f in log.findings), style="bold red"))
        self.query_one("#log", Static).update(Group(*parts))
        self.query_one("#result", Static).update(self.check_text)

    def action_check(self) -> None:
        self._result(Text("running the ledger check ...", style="yellow"))
        self.run_worker(self._check, thread=True, exclusive=True, group="check")

    def _check(self) -> None:
        app: BrowseApp = self.app  # type: ignore[assignment]
        total = max(1, app.led.size())

        def progress(n: int) -> None:
            app.call_from_thread(self._result, Text(f"running the ledger check ... {n}/{total} entries", style="yellow"))

        try:
            rep = app.led.check(log_key=app.log_key, progress=progress)
        except Exception as exc:  # noqa: BLE001 - could not run: say so, keep the app
            app.call_from_thread(self._result, Text(f"ledger check could not run: {type(exc).__name__}: {exc}",
                                                    style="yellow"))
            return
        if rep.ok:
            text = Text(f"ledger check OK: {rep.entries} entries, {rep.checkpoints} checkpoints, {rep.blobs} blobs; "
                        f"every leaf, node, root, signature, checkpoint and blob verifies ({rep.seconds:.2f} s)",
                        style="green")
        else:
            text = Text(f"ledger check: BAD LEDGER: first bad index {rep.first_bad_index}: {rep.reason}"
                        + (f" ({len(rep.findings)} findings)" if len(rep.findings) > 1 else ""), style="bold red")
        app.call_from_thread(self._check_done, rep, text)

    def _check_done(self, rep: Any, text: Any) -> None:
        self.check_report = rep
        self._result(text)

    def _result(self, renderable: Any) -> None:
        self.check_text = renderable
        self.query_one("#result", Static).update(renderable)


class HelpScreen(ModalScreen):
    """The keys."""

    BINDINGS = [Binding("escape", "close", "close"), Binding("question_mark", "close", "close"),
                Binding("q", "close", "close")]

    def compose(self) -> ComposeResult:
        yield Static(Text.from_markup(HELP), id="help")

    def action_close(self) -> None:
        self.app.pop_screen()
