"""A job of the shipped model behind a 5 ms one-way loopback delay, in a network namespace of its own.

The deployment (log operator, dealer, three `prover serve` nodes, client) runs inside the namespace
through bench/network.py's worker part, as the benchmark runs it; sim/netns.py creates the namespace,
delays its loopback and deletes it at the end, whether the test passes or not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer
from sim.netns import LoopbackNamespace, NamespaceError, unavailable_reason

REPO = Path(__file__).resolve().parents[2]
PROMPT = "And the LORD said unto Moses,"  # bench/network.py's prompt
DELAY_MS = 5.0
TOKENS = 2

pytestmark = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").is_file(), reason="no shipped model")


@pytest.fixture
def namespace():
    """A fresh namespace whose loopback can be delayed; deleted afterwards, also when the test fails."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"network namespaces cannot be created here: {reason}")
    ns = LoopbackNamespace(f"sp-test-{os.getpid()}")
    try:
        ns.create()
    except NamespaceError as exc:
        pytest.skip(f"network namespaces cannot be created here: `ip netns add` failed: {exc}")
    try:
        try:  # can its loopback be delayed? (netem, or the NFQUEUE delayer with iptables)
            ns.shape(DELAY_MS)
            ns.unshape()
        except NamespaceError as exc:
            pytest.skip(f"the namespace's loopback cannot be delayed here: {exc}")
        yield ns
    finally:
        ns.delete()


@pytest.mark.slow  # about 80 s on 2 busy cores today: ~1800 rounds, each waiting on a few 5 ms trips
def test_job_behind_5ms_delay_matches_plaintext(namespace, tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "network.py"), "--worker", "--namespace", namespace.name,
           "--workdir", str(tmp_path), "--model", "tiny", "--delays", f"{DELAY_MS:g}", "--tokens", str(TOKENS), "--no-warmup", "--timeout", "120"]
    p = subprocess.run(namespace.command(cmd), cwd=REPO, capture_output=True, text=True, timeout=480)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert p.returncode == 0 and line is not None, p.stderr[-4000:]
    (row,) = json.loads(line[len("RESULT "):])["rows"]

    model, tok = load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR)
    ids = tok.encode(PROMPT)
    ref = model.generate(torch.tensor([ids]), TOKENS, temperature=0)[0, len(ids):].tolist()
    assert row["tokens_out"] == ref
    # the delay was on: a TCP handshake took about one round trip (2 x 5 ms), and the job ran behind it
    assert row["rtt_ms_measured"] >= 2 * DELAY_MS * 0.9, row
    assert row.get("delayer_alive_at_end", True), row
    assert row["rounds"] > 0 and row["rounds"] == row["receipt_rounds"] == row["program_rounds"], row
    assert row["online_s"] >= row["rounds"] * DELAY_MS / 1e3, row  # each round waited at least one delay
