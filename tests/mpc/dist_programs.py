"""Party programs for the multi-process tests (top-level so spawned processes can import them)."""
import os
import time

import torch

from mpc_core import SharedTensor


def inputs():
    g = torch.Generator().manual_seed(123)
    return (torch.randn(4, 16, generator=g, dtype=torch.float64),
            torch.randn(16, 16, generator=g, dtype=torch.float64) * 0.3)


def block(session):
    """A transformer-shaped block: masked-weight matmul, softmax attention, GeLU, LayerNorm."""
    x_plain, w_plain = inputs()
    x = SharedTensor.from_plain(session, x_plain)
    w = SharedTensor.from_plain(session, w_plain).mask("w")
    h = x @ w
    att = (h @ h.transpose(0, 1) * 0.25).softmax(-1) @ h
    out = (att + h.gelu()).layer_norm() + (x < 0.0)
    rows = {p: t.digests() for p, t in session.transcripts.items()}
    return {"shares": out.data, "digests": rows, "rounds": session.counters.rounds,
            "bytes": session.counters.bytes_per_party, "plain": out.reveal()}


def dies_midway(session):
    """Party 1 disappears after a few rounds; the others must fail fast with a transport error."""
    x = SharedTensor.from_plain(session, torch.ones(8, dtype=torch.float64))
    y = x * x
    if session.local_parties == (1,):
        os._exit(17)
    for _ in range(50):
        y = y * x
    return y.reveal()


def stalls(session):
    """Party 0 stops answering for longer than the timeout."""
    x = SharedTensor.from_plain(session, torch.ones(8, dtype=torch.float64))
    if session.local_parties == (0,):
        time.sleep(12)
    return (x * x).reveal()
