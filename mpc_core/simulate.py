"""`simulate`: run a function on secret-shared inputs with all parties in this process."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from mpc_core.counters import Counters
from mpc_core.prg import master_from_int
from mpc_core.session import Session
from mpc_core.tensor import SharedTensor


@dataclass
class RunStats(Counters):
    """Counters plus wall-clock split: online = total - dealer."""

    seconds: float = 0.0
    online_seconds: float = 0.0
    parties: int = 0
    transcript_digests: dict[int, bytes] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = super().as_dict()
        d.update(seconds=self.seconds, online_seconds=self.online_seconds, parties=self.parties,
                 transcript_digests={str(k): v.hex() for k, v in self.transcript_digests.items()})
        return d


def simulate(fn: Callable[..., SharedTensor], *plain_inputs: Any, parties: int = 3, seed: int = 0,
             frac_bits: int = 16, record: bool = True, job: bytes = b"simulate") -> tuple[torch.Tensor, RunStats]:
    """Share float tensors among in-process parties, run `fn` on the shared tensors, reveal.

    Non-tensor arguments are passed through unchanged. Returns the reconstructed float64
    result and the run's counters (rounds, bytes per party, dealer and online seconds).
    """
    session = Session.in_process(parties, master_from_int(seed), job=job, frac_bits=frac_bits, record=record)
    args = [SharedTensor.from_plain(session, x) if isinstance(x, torch.Tensor) else x for x in plain_inputs]
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    before = session.counters.snapshot()
    if not isinstance(out, SharedTensor):
        raise TypeError(f"simulate: fn must return a SharedTensor, got {type(out).__name__}")
    result = out.reveal()
    c = before
    stats = RunStats(c.rounds, c.bytes_per_party, c.dealer_requests, c.dealer_seconds, c.steps, c.by_op,
                     seconds=seconds, online_seconds=seconds - c.dealer_seconds, parties=parties,
                     transcript_digests={p: t.chain_digest() for p, t in session.transcripts.items()})
    session.close()
    return result, stats
