"""Rich rendering of audit verdicts (shared by `verify audit` and `shardproof demo`)."""
from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from verifier.audit import Verdict


def render_verdict(console: Console, v: Verdict, nodes: dict[int, str] | None = None, checks: dict | None = None,
                   title: str = "audit") -> None:
    t = Table(title=f"{title}: job {v.job_id}")
    for c in ("party", "node", "status", "steps checked", "matmuls (Freivalds)", "why"):
        t.add_column(c, justify="right" if c in ("party", "steps checked", "matmuls (Freivalds)") else "left")
    style = {"clean": "green", "cheated": "bold red", "defaulted": "bold red", "unresponsive": "yellow",
             "pending": "yellow", "error": "magenta", "not opened": "dim"}
    for p in v.parties:
        r = p.replay
        t.add_row(str(p.party), p.node or (nodes or {}).get(p.party, "-"), Text(p.status, style=style.get(p.status, "")),
                  str(r.steps_checked) if r else "-", str(r.matmul_checks) if r else "-", Text(p.reason))
    console.print(t)
    for p in v.parties:
        f = p.replay.finding if p.replay is not None else None
        if f is not None:
            console.print(Panel(f"step {f.step} ({f.kind} in {f.scope or 'top level'}): {f.what} differs\n"
                                f"committed:  {f.committed}\nrecomputed: {f.recomputed}\n{f.detail}",
                                title=f"first failing step of party {p.party} ({(nodes or {}).get(p.party, '-')})",
                                border_style="red"))
    miss = f"2^-{v.lam} per cheating matmul (Freivalds, {v.lam} columns over Z_2^64)" if v.mode == "freivalds" \
        else "0 (exact recomputation)"
    outcome = {"pass": "[green]clean[/]", "fail": "[bold red]accused[/]", "error": "[magenta]could not decide[/]"}.get(
        v.outcome, "[yellow]incomplete[/]")
    lines = [f"verdict: {outcome}; accused: {', '.join(v.accused_nodes) or 'none'}; "
             f"cheated: {v.cheaters or 'none'}; defaulted: {v.defaulted or 'none'}; "
             f"unresponsive: {v.unresponsive or 'none'}; pending: {v.pending or 'none'}; errors: {v.errors or 'none'}",
             f"dealer {v.dealer or '-'}: {v.dealer_status}{' (' + v.dealer_reason + ')' if v.dealer_reason else ''}",
             f"broadcast consistency (equal opened roots): {'yes' if v.broadcast_consistent else 'NO'}",
             f"opened share indices: {[p.party for p in v.parties if p.status != 'not opened']}, "
             f"left closed: {v.closed_party} (never all N)",
             f"worst-case miss probability: {miss}", f"audit time: {v.seconds:.2f} s"]
    for status, what in (("unresponsive", "nodes lost mid-job (unresponsive, not accused)"),
                         ("divergent", "replicas whose job root differs from their index's (divergent)")):
        named = [f"{r['node']} (index {r['party']}, replica {r['replica']})" for r in v.replicas if r["status"] == status]
        if named:
            lines.append(f"{what}: {', '.join(named)}")
    lines += [f"resumed: {r['reason']}" for r in v.replicas if "resumed its index" in r.get("reason", "")]
    if v.noise:
        lines.append(f"entries that did not count (noise): {len(v.noise)}")
    if checks:
        lines.append("ledger checks: " + ", ".join(f"{k} {'ok' if ok else 'FAILED'}" for k, ok in checks.items()))
    console.print(Panel("\n".join(lines), title="verdict"))
