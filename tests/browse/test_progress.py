"""Progress bars: on a terminal only (cli.progress), fed by the steps that report progress."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

from ledger import Ledger


def test_ledger_check_reports_progress_per_entry(audited):
    seen: list[int] = []
    rep = Ledger.open(audited.url, create=False).check(progress=seen.append)
    assert rep.ok and seen and seen[-1] == rep.entries == audited.n_entries


def _in_pty(code: str) -> str:
    """Run python `code` with stdin, stdout and stderr on a pseudo-terminal; what it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"})
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(master)
    return out.decode(errors="replace")


def test_a_bar_on_a_terminal_and_none_otherwise():
    code = ("import time\nfrom cli.progress import on_terminal, progress_bar\n"
            "print('terminal' if on_terminal() else 'no terminal')\n"
            "with progress_bar('counting sheep', 3, on_terminal()) as advance:\n"
            "    for i in range(3):\n        advance(i + 1); time.sleep(0.2)\n"
            "print('done')\n")
    shown = _in_pty(code)
    assert "terminal" in shown and "no terminal" not in shown and "counting sheep" in shown and "done" in shown
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert plain.stdout == "no terminal\ndone\n" and plain.stderr == ""
    as_json = _in_pty(code.replace("on_terminal()", "on_terminal(True)"))
    assert "counting sheep" not in as_json


def test_audit_reports_progress_over_the_replayed_steps(audited):
    """verify audit's bar: the replay reports (steps done, steps committed) as it goes, up to the end."""
    from verifier.ledger_audit import audit_on_ledger
    from verifier.replay import PROGRESS_EVERY

    led = Ledger.open(audited.url, create=False)
    seen: list[tuple[int, int]] = []
    res = audit_on_ledger(led, audited.honest, None, post=False, progress=lambda d, t: seen.append((d, t)))
    assert res.verdict.clean
    n_steps = max(e.entry.body["n_steps"] for e in led.by_job(audited.honest, kind="node.job_root"))
    assert len(seen) > 1 and {t for _, t in seen} == {n_steps}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] == 0 and n_steps - done[-1] <= PROGRESS_EVERY
