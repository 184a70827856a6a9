"""`verify jobs | nodes | show | report`: what the ledger holds, for auditors, scripts and sharing.

  jobs   [--status running|done|failed] [--verdict clean|cheated|incomplete|unaudited] [--node ID]
         [--search TEXT] [--limit N] [--json]
         Every job, newest first: id, model, node per share index, tokens, started (ledger time),
         status, verdict.
  nodes  [NODE] [--json]
         Every registered node: roles, key fingerprints, endpoint, registered at, last heartbeat, jobs
         served, audits passed, accusations, times defaulted, times unresponsive (defaulted, or marked
         unresponsive by a counted verdict: no job root, a disputed broadcast receipt); with NODE, its
         job history too.
  show   JOB [--json]
         One job: participants per share index, dealer, owner refresh, job roots, the sealing
         checkpoint, the challenge (opened and closed indices), openings, the verdict of every
         auditor and per share index (for a cheater: the step where it deviated), evidence files.
  report JOB [--format text|json|markdown] [--evidence-dir DIR]
         A whole audit report of one job, from the ledger's entries and verdicts (no replay).

The ledger is read only through the protocol's typed bodies and authorship rules (an entry by the
wrong author never changes a summary) and checked on the way: the tree is recomputed and compared
with every stored checkpoint, and the latest checkpoint's signature is verified under --log-key, else
the key pinned for the log in the known-logs file, else the ledger's own key (said so).
Exit 0: printed, the log verifies (or has no checkpoint yet). Exit 1: printed, but the log does not
verify (the reports say so). Exit 2: could not run (no ledger, unknown job or node, bad input).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, add_ledger_argument

STATUS_STYLE = {"running": "yellow", "done": "green", "failed": "magenta"}
VERDICT_STYLE = {"clean": "green", "cheated": "bold red", "incomplete": "yellow", "unaudited": "dim"}
PARTY_STYLE = {"clean": "green", "cheated": "bold red", "defaulted": "bold red", "unresponsive": "yellow",
               "not opened": "dim", "unresolved": "yellow", "incomplete": "yellow", "unaudited": "dim"}


class ReportError(Exception):
    """Ends a report command with a one-line message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_INCOMPLETE) -> None:
        super().__init__(message)
        self.code = code


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from verifier.summary_terms import JOB_STATUSES, VERDICTS

    helps = {"jobs": "list the jobs on the ledger (newest first) with status and verdict",
             "nodes": "list the registered nodes with their jobs, audits passed and accusations",
             "show": "one job: participants, roots, seal, challenge, openings, verdicts",
             "report": "a whole audit report of one job as text, JSON or Markdown"}
    p = sub.add_parser(name, help=helps[name], description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if name in ("show", "report"):
        p.add_argument("job_id", metavar="JOB", help="the job id")
    if name == "nodes":
        p.add_argument("node", nargs="?", default=None, metavar="NODE", help="only this node, with its job history")
    add_ledger_argument(p)
    add_log_key_argument(p)
    if name == "jobs":
        p.add_argument("--status", choices=JOB_STATUSES, default=None, help="only jobs in this status")
        p.add_argument("--verdict", choices=VERDICTS, default=None, help="only jobs with this verdict")
        p.add_argument("--node", default=None, metavar="ID", help="only jobs this node (or dealer) took part in")
        p.add_argument("--search", default=None, metavar="TEXT", help="only jobs whose id, model or nodes contain TEXT")
        p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N jobs (the newest)")
    if name == "report":
        p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                       help="text (default), json or markdown")
        p.add_argument("--evidence-dir", type=Path, default=Path("."), metavar="DIR",
                       help="where `verify audit` wrote evidence bundles (default: .): the report says which exist")
    else:
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=lambda a: _guarded(a, name))


def add_log_key_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-key", default=None, metavar="HEX",
                   help="the log's BLS public key (`shardproof ledger info`); default: the key pinned for the log in "
                        "the known-logs file, else the ledger's own key (not pinned)")


# --- opening --------------------------------------------------------------------------------
def resolve_log_key(led, log_key_hex: str | None) -> tuple[bytes | None, str]:
    """The key to check the log against and where it came from: --log-key, the pinned one, else the
    ledger's own. Raises ReportError on a malformed key or known-logs file."""
    from verifier.known_logs import KnownLogsError, pinned_key

    if log_key_hex:
        try:
            key = bytes.fromhex(log_key_hex)
        except ValueError:
            raise ReportError("--log-key is not hex") from None
        if len(key) != 48:
            raise ReportError("--log-key must be 48 bytes of hex")
        return key, "--log-key"
    try:
        key = pinned_key(led.origin)
    except KnownLogsError as exc:
        raise ReportError(str(exc)) from None
    if key is not None:
        return key, "pinned"
    return led.log_key, "the ledger's own (not pinned)"


def open_ledger(url: str):
    """The ledger at `url` (ReportError, exit 2, when there is none or it cannot be reached)."""
    from ledger import Ledger
    from ledger.errors import LedgerError

    try:
        return Ledger.open(url, create=False)
    except LedgerError as exc:
        msg = str(exc)
        if "no ledger" in msg:
            msg = f"no ledger at {url} (create one with `shardproof ledger init`)"
        raise ReportError(f"cannot open the ledger: {' '.join(msg.split())}") from None
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver: could not run
        raise ReportError(f"cannot open the ledger {url}: {type(exc).__name__}: {exc}") from None


def load_index(led, log_key_hex: str | None, show_progress: bool):
    """A LedgerIndex over `led`, read in full (a progress bar on a terminal for a large log)."""
    from cli.progress import progress_bar
    from verifier.ledger_index import LedgerIndex

    key, source = resolve_log_key(led, log_key_hex)
    index = LedgerIndex(led, key, source)
    size = led.size()
    with progress_bar("reading the ledger", size, show_progress and size > 20000) as advance:
        index.update(lambda done, _total: advance(done))
    return index


def _guarded(args: argparse.Namespace, name: str) -> int:
    from ledger.errors import LedgerError
    from verifier.ledger_index import IndexError_

    led = None
    try:
        led = open_ledger(args.ledger)
        return {"jobs": run_jobs, "nodes": run_nodes, "show": run_show, "report": run_report}[name](args, led)
    except ReportError as exc:
        msg, code = str(exc), exc.code
    except IndexError_ as exc:
        msg, code = str(exc), EXIT_INCOMPLETE
    except (LedgerError, OSError, ValueError) as exc:
        msg, code = f"{type(exc).__name__}: {exc}", EXIT_INCOMPLETE
    finally:
        if led is not None:
            led.close()
    msg = " ".join(msg.split())
    if getattr(args, "json", False) or getattr(args, "format", None) == "json":
        print(json.dumps({"ok": False, "error": msg}))
    print(f"verify {name}: {msg}", file=sys.stderr)
    return code


def _exit(log) -> int:
    return EXIT_OK if log.ok else EXIT_FAILED


def _warn_log(log) -> None:
    """On stderr: the log does not verify (the tables above are what the rows say, not proven)."""
    if log.ok:
        return
    from rich.console import Console
    from rich.panel import Panel

    Console(stderr=True).print(Panel("\n".join(log.findings) or "the latest checkpoint does not verify",
                                     title="THE LOG DOES NOT VERIFY: what is shown is unproven", style="red"))


# --- formatting -----------------------------------------------------------------------------
def when(ms: int | None) -> str:
    """Ledger time (ms since the epoch) as UTC, to the second."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def nodes_cell(s) -> str:
    """Nodes per share index: "0:node-0 1:node-1 ..." (replicas and stages as p.r/s where present)."""
    extra = [p for p in s.participants if p.replica or p.stage]
    base = " ".join(f"{p}:{n}" for p, n in sorted(s.nodes.items()))
    return base + "".join(f" {p.party}.{p.replica}/{p.stage}:{p.node}" for p in extra)


def jobs_table(jobs: list, title: str = "jobs"):
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left")
    for c in ("job", "model", "nodes per share index", "tokens", "started", "status", "verdict"):
        t.add_column(c, justify="right" if c == "tokens" else "left", overflow="fold", no_wrap=c == "job")
    for s in jobs:
        verdict = s.verdict + (f" ({', '.join(s.accused)})" if s.accused else "")
        t.add_row(s.job_id, s.model_id[:12], nodes_cell(s), "-" if s.tokens is None else str(s.tokens),
                  when(s.started_ms), Text(s.status, style=STATUS_STYLE.get(s.status, "")),
                  Text(verdict, style=VERDICT_STYLE.get(s.verdict, "")))
    return t


def nodes_table(nodes: list):
    from rich.table import Table

    from verifier.ledger_index import fingerprint

    t = Table(title="nodes", title_justify="left")
    for c in ("node", "roles", "keys (ed25519 / bls)", "endpoint", "registered", "last heartbeat", "jobs",
              "audits passed", "accusations", "defaulted", "unresponsive"):
        t.add_column(c, justify="right" if c in ("jobs", "audits passed", "accusations", "defaulted", "unresponsive")
                     else "left", overflow="fold", no_wrap=c == "node")
    for n in nodes:
        op = n.operator or n.node_id
        t.add_row(n.node_id + (f" (operator {op})" if op != n.node_id else ""), ",".join(n.roles),
                  f"{fingerprint(n.ed25519)} / {fingerprint(n.bls)}", n.endpoint or "-",
                  f"#{n.registered_index} {when(n.registered_ms)}", when(n.last_heartbeat_ms), str(n.jobs_served),
                  str(n.audits_passed), str(n.accusations), str(n.defaulted), str(n.unresponsive))
    return t


def history_table(n):
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"jobs of {n.node_id}", title_justify="left")
    for c in ("job", "role", "started", "job status", "verdict", "this node"):
        t.add_column(c)
    for j in n.jobs:
        t.add_row(j.job_id, j.role, when(j.started_ms), j.job_status, Text(j.verdict, style=VERDICT_STYLE.get(j.verdict, "")),
                  Text(j.outcome, style=PARTY_STYLE.get(j.outcome, "")))
    return t


def log_line(log) -> str:
    """One line on the log: size, latest checkpoint, whether it verifies under which key."""
    latest = log.latest
    cp = f"latest checkpoint {latest.size}" if latest else "no checkpoint"
    return (f"log {log.origin}: {log.size} entries, {cp}; {log.verdict} "
            f"(key: {log.key_source}{', ' + log.log_key.hex()[:16] + '...' if log.log_key else ''})")


def job_renderables(d, log, evidence_dir: Path | None = None) -> list:
    """`verify show` as rich renderables (the browser's job screen shows the same)."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    s = d.summary
    out: list = []
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    ch = d.challenge
    for k, v in [
        ("job", s.job_id), ("model", s.model_id), ("client", s.client),
        ("started", f"{when(s.started_ms)} (job.open #{s.open_index})"),
        ("tokens", f"{'-' if s.tokens is None else s.tokens} new after a {'-' if s.prompt_len is None else s.prompt_len}-token prompt"),
        ("status", Text(s.status + (f": {s.fail_reason}" if s.fail_reason else ""), style=STATUS_STYLE.get(s.status, ""))),
        ("verdict", Text(s.verdict + (f": {', '.join(s.accused)} accused" if s.accused else ""),
                         style=VERDICT_STYLE.get(s.verdict, ""))),
        ("dealer", f"{s.dealer} (dealer.commit {_ix(d.dealer_commit)}, seed release {_ix(d.release)})"),
        ("owner refresh", f"#{d.owner_refresh['index']} by {d.owner_refresh['author']}" if d.owner_refresh else "none"),
        ("sealing checkpoint", "none yet" if d.seal is None else
         f"size {d.seal['size']}, root {d.seal['root'][:16]}..., {d.seal['signers']} signer(s), signature "
         + {True: "verified", False: "DOES NOT VERIFY", None: "not checked"}[d.seal["signature_verified"]]),
        ("challenge", f"{ch['state']}" + (f" (#{ch['index']})" if ch["index"] is not None else "")
         + (f": opened {ch['opened']}, closed {ch['closed']}" if ch["opened"] else "")
         + (f"; {ch['problem']}" if ch["problem"] else "")),
        ("log", log_line(log)),
    ]:
        head.add_row(k, v)
    out.append(Panel(head, title=f"job {s.job_id}"))
    t = Table(title="participants", title_justify="left")
    for c in ("share index", "node", "job root", "steps", "opening", "outcome", "step", "why"):
        t.add_column(c, overflow="fold")
    roots = {(r["party"], r.get("replica", 0)): r for r in d.roots}
    opens = {o["party"]: o for o in d.openings}
    by_party = {p.party: p for p in s.parties}
    for p in s.participants:
        if p.replica or p.stage:
            r = roots.get((p.party, p.replica)) if not p.stage else None
            index_root = next((x for x in d.roots if x["party"] == p.party and x.get("counts_for_index")), None)
            why = ("no job root (lost mid-job)" if r is None and index_root is not None else
                   "its job root differs from the index's (divergent)" if r and index_root and
                   r["root"] != index_root["root"] else "")
            t.add_row(f"{p.party} (replica {p.replica}" + (f", stage {p.stage})" if p.stage else ")"), p.node,
                      f"#{r['index']} {r['root'][:12]}..." if r else "-", str(r["n_steps"]) if r else "-",
                      "", "", "", why)
            continue
        r, o, pv = roots.get((p.party, 0)), opens.get(p.party), by_party.get(p.party)
        t.add_row(str(p.party), p.node, f"#{r['index']} {r['root'][:12]}..." if r else "-",
                  str(r["n_steps"]) if r else "-", f"#{o['index']}" if o else "-",
                  Text(pv.status, style=PARTY_STYLE.get(pv.status, "")) if pv else "-",
                  (f"{pv.step}" + (f" ({pv.op})" if pv.op else "")) if pv and pv.step is not None else "",
                  pv.reason if pv else "")
    out.append(t)
    if d.verdicts or d.ignored_verdicts:
        v = Table(title="verdicts", title_justify="left")
        for c in ("entry", "auditor", "time", "outcome", "accused", "defaulted", "counts", "reason"):
            v.add_column(c, overflow="fold")
        for x in d.verdicts:
            v.add_row(f"#{x['index']}", x["auditor"], when(x["time_ms"]), x["outcome"], ", ".join(x["accused"]) or "-",
                      ", ".join(x["defaulted"]) or "-", "yes", x["reason"] or "-")
        for x in d.ignored_verdicts:
            v.add_row(f"#{x['index']}", x["auditor"], when(x["time_ms"]), x["outcome"], ", ".join(x["accused"]) or "-",
                      ", ".join(x["defaulted"]) or "-", Text(f"no: {x['why']}", style="dim"), x["reason"] or "-")
        out.append(v)
    else:
        out.append(Text("no verdict yet (unaudited): `verify audit JOB` posts one"))
    for node, name in d.evidence.items():
        path = (evidence_dir or Path(".")) / name
        out.append(Text(f"evidence against {node}: {path} "
                        + ("(present; check offline: verify evidence " + str(path) + ")" if path.is_file()
                           else "(not in this directory: `verify audit` writes it)")))
    if d.noise:
        nt = Table(title=f"entries that do not count ({len(d.noise)})", title_justify="left")
        for c in ("entry", "kind", "author", "why"):
            nt.add_column(c, overflow="fold")
        for n in d.noise[:50]:
            nt.add_row(f"#{n['index']}", n["kind"], n["author"], n["reason"])
        out.append(nt)
    return out


def _ix(i: int | None) -> str:
    return "-" if i is None else f"#{i}"


def render_text(renderables: list, width: int = 110) -> str:
    """Rich renderables as plain text (no colour codes)."""
    from rich.console import Console

    buf = io.StringIO()
    con = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False)
    for r in renderables:
        con.print(r)
    return buf.getvalue()


def report_markdown(d, log, evidence_dir: Path) -> str:
    """The audit report of one job as Markdown."""
    s, ch = d.summary, d.challenge
    md = [f"# Audit report: job `{s.job_id}`", "",
          f"- **verdict**: {s.verdict}" + (f" ({', '.join(s.accused)} accused)" if s.accused else ""),
          f"- **status**: {s.status}" + (f" ({s.fail_reason})" if s.fail_reason else ""),
          f"- **model**: `{s.model_id}`", f"- **client**: {s.client}; **dealer**: {s.dealer}",
          f"- **started**: {when(s.started_ms)} (job.open #{s.open_index})",
          f"- **tokens**: {'-' if s.tokens is None else s.tokens} (prompt {'-' if s.prompt_len is None else s.prompt_len})",
          f"- **log**: {log_line(log)}", "",
          "## Participants", "", "| share index | node | job root | steps | opening | outcome | step | why |",
          "|---|---|---|---|---|---|---|---|"]
    roots = {r["party"]: r for r in d.roots if r.get("counts_for_index", True)}
    opens = {o["party"]: o for o in d.openings}
    for pv in s.parties:
        r, o = roots.get(pv.party), opens.get(pv.party)
        step = "" if pv.step is None else f"{pv.step}" + (f" ({pv.op})" if pv.op else "")
        md.append(f"| {pv.party} | {pv.node} | {'#' + str(r['index']) + ' `' + r['root'][:16] + '`' if r else '-'} | "
                  f"{r['n_steps'] if r else '-'} | {'#' + str(o['index']) if o else '-'} | {pv.status} | {step} | "
                  f"{_md(pv.reason)} |")
    md += ["", "## Commitments and challenge", "",
           f"- dealer.commit: {_ix(d.dealer_commit)}; seed release: {_ix(d.release)}",
           f"- owner refresh: {'#' + str(d.owner_refresh['index']) + ' by ' + d.owner_refresh['author'] if d.owner_refresh else 'none'}",
           "- sealing checkpoint: " + ("none yet" if d.seal is None else
                                       f"size {d.seal['size']}, root `{d.seal['root']}`, signature "
                                       + {True: "verified", False: "does NOT verify", None: "not checked"}[
                                           d.seal["signature_verified"]]),
           f"- challenge: {ch['state']}" + (f" (entry #{ch['index']})" if ch["index"] is not None else "")
           + (f"; opened share indices {ch['opened']}, closed {ch['closed']}" if ch["opened"] else "")
           + (f"; {ch['problem']}" if ch["problem"] else ""),
           "", "## Verdicts", ""]
    if not d.verdicts:
        md.append("No verdict yet (unaudited).")
    for x in d.verdicts:
        md.append(f"- #{x['index']} by **{x['auditor']}** at {when(x['time_ms'])}: **{x['outcome']}**; accused: "
                  f"{', '.join(x['accused']) or 'none'}; defaulted: {', '.join(x['defaulted']) or 'none'}"
                  + (f"; soundness 2^-{x['soundness_bits']}" if x["soundness_bits"] else "")
                  + (f"  \n  {_md(x['reason'])}" if x["reason"] else ""))
    for x in d.ignored_verdicts:
        md.append(f"- #{x['index']} by {x['auditor']}: {x['outcome']} (does not count: {x['why']})")
    if d.evidence:
        md += ["", "## Evidence", ""]
        for node, name in d.evidence.items():
            path = evidence_dir / name
            md.append(f"- against {node}: `{path}`" + (" (check offline: `verify evidence " + str(path) + "`)"
                                                        if path.is_file() else " (not found here)"))
    if d.noise:
        md += ["", f"## Entries that do not count ({len(d.noise)})", ""]
        md += [f"- #{n['index']} {n['kind']} by {n['author']}: {_md(n['reason'])}" for n in d.noise]
    if not log.ok:
        md += ["", "## The log does not verify", ""] + [f"- {f}" for f in log.findings]
    return "\n".join(md) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- the commands ---------------------------------------------------------------------------
def run_jobs(args: argparse.Namespace, led) -> int:
    from cli.progress import on_terminal

    if args.limit is not None and args.limit < 1:
        raise ReportError("--limit must be at least 1")
    index = load_index(led, args.log_key, on_terminal(args.json))
    log = index.log()
    jobs = index.jobs(status=args.status, node=args.node, verdict=args.verdict, search=args.search, limit=args.limit)
    if args.json:
        print(json.dumps({"log": log.as_dict(), "jobs": [s.as_dict() for s in jobs]}))
    else:
        from rich.console import Console

        con = Console()
        con.print(jobs_table(jobs, f"jobs ({len(jobs)})"))
        con.print(log_line(log), highlight=False)
        _warn_log(log)
    return _exit(log)


def run_nodes(args: argparse.Namespace, led) -> int:
    from cli.progress import on_terminal

    index = load_index(led, args.log_key, on_terminal(args.json))
    log = index.log()
    nodes = index.nodes(args.node)
    if args.json:
        print(json.dumps({"log": log.as_dict(), "nodes": [n.as_dict(history=args.node is not None) for n in nodes]}))
    else:
        from rich.console import Console

        con = Console()
        con.print(nodes_table(nodes))
        if args.node is not None:
            con.print(history_table(nodes[0]))
        con.print(log_line(log), highlight=False)
        _warn_log(log)
    return _exit(log)


def run_show(args: argparse.Namespace, led) -> int:
    from cli.progress import on_terminal

    index = load_index(led, args.log_key, on_terminal(args.json))
    d = index.job(args.job_id)
    log = index.log()
    if args.json:
        print(json.dumps({**d.as_dict(), "log": log.as_dict()}))
    else:
        from rich.console import Console

        con = Console()
        for r in job_renderables(d, log):
            con.print(r)
        _warn_log(log)
    return _exit(log)


def run_report(args: argparse.Namespace, led) -> int:
    from cli.progress import on_terminal

    index = load_index(led, args.log_key, on_terminal(args.format == "json"))
    d = index.job(args.job_id)
    log = index.log()
    if args.format == "json":
        data: dict[str, Any] = {**d.as_dict(), "log": log.as_dict(),
                                "evidence_files": {n: str(args.evidence_dir / f) for n, f in d.evidence.items()
                                                   if (args.evidence_dir / f).is_file()}}
        print(json.dumps(data, indent=1))
    elif args.format == "markdown":
        sys.stdout.write(report_markdown(d, log, args.evidence_dir))
    else:
        sys.stdout.write(render_text(job_renderables(d, log, args.evidence_dir)))
        if not log.ok:
            sys.stdout.write("THE LOG DOES NOT VERIFY:\n" + "".join(f"  {f}\n" for f in log.findings))
    return _exit(log)
