"""Additive secret sharing over Z_2^64 (specs/protocols.md, "Sharing").

One splitting rule everywhere (inputs, one-hot tokens, published weights):
parties 0..N-2 read their shares from the owner's PRG stream, the last party's
share is the value minus their sum, so any N-1 shares are uniformly random and
the split is reproducible from the owner's seed.
"""
from __future__ import annotations

import torch

from mpc_core import prg
from mpc_core.errors import PartyError
from mpc_core.ring import check_ring


def additive_split(values: torch.Tensor, n_parties: int, seed: bytes, job: bytes, stream: prg.StreamId) -> list[torch.Tensor]:
    """N additive shares of int64 ring values: N-1 from stream(seed, job, stream, p, "share"), the last corrected."""
    check_ring(values, "additive_split values")
    if n_parties < 2:
        raise PartyError(f"MPC needs at least 2 parties, got {n_parties}")
    shape = tuple(values.shape)
    shares = [prg.ring_tensor(seed, job, stream, p, "share", shape) for p in range(n_parties - 1)]
    last = values.clone()
    for s in shares:
        last -= s
    return shares + [last]


def reconstruct(shares: list[torch.Tensor]) -> torch.Tensor:
    """The shared value: the sum of all shares modulo 2^64."""
    out = shares[0].clone()
    for s in shares[1:]:
        out += s
    return out
