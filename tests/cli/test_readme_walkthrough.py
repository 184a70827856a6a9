"""README's walkthrough, run verbatim: init a ledger, serve it, keygen and register three nodes, an owner,
a dealer, a client and an auditor, publish, serve, infer (job id printed), audit clean, restart one node
with --cheat, run jobs until its share index is opened, the audit names it by id and writes evidence,
`verify evidence` proves it against the key from `shardproof ledger info`."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def walkthrough_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("### Walkthrough", 1)[1]
    m = re.search(r"```bash\n(.*?)```", section, re.S)
    if m is None:
        raise ValueError("README has no ```bash block under '### Walkthrough'")
    return m.group(1)


def test_readme_walkthrough_runs_verbatim(tmp_path):
    block = walkthrough_block()
    assert "shardproof ledger init" in block and "--cheat" in block and "verify evidence" in block
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SHARDPROOF_KNOWN_LOGS": str(tmp_path / "known_logs"), "PYTHONUNBUFFERED": "1"}
    env.pop("SHARDPROOF_LEDGER", None)
    env.pop("SHARDPROOF_KEY", None)
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\n" + block)
    log = tmp_path / "walkthrough.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=1500)
        finally:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # the daemons the block started in the background
            except ProcessLookupError:
                pass
    text = log.read_text(errors="replace")
    assert rc == 0, text[-6000:]
    assert "job: job-1" in text, text[-3000:]
    evidence = sorted(tmp_path.glob("evidence-job-*-node-1.cbor"))
    assert evidence and "proven" in text, text[-3000:]
