"""mpc_core: a deterministic N-party secret-shared tensor engine over Z_2^64.

Public API:
  simulate(fn, *plain_inputs, parties=3, seed=0) -> (float result, RunStats)
  Session, SharedTensor, MaskedWeight, TrustedDealer, SeededDealerClient,
  InProcessCommunicator, encode, decode, MPCError and its subclasses.

The names load their modules on first use (PEP 562): importing a torch-free module such as
`mpc_core.domains` (the ledger's key code does) does not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from mpc_core.lazy import lazy_attributes

_LAZY = {
    "Communicator": "mpc_core.communicator", "InProcessCommunicator": "mpc_core.communicator",
    "SeededDealerClient": "mpc_core.dealer", "TrustedDealer": "mpc_core.dealer",
    "DealerError": "mpc_core.errors", "DTypeError": "mpc_core.errors", "EncodingError": "mpc_core.errors",
    "MPCError": "mpc_core.errors", "PartyError": "mpc_core.errors", "PeerDisconnected": "mpc_core.errors",
    "PeerTimeout": "mpc_core.errors", "ShapeError": "mpc_core.errors", "TranscriptError": "mpc_core.errors",
    "TransportError": "mpc_core.errors",
    "decode": "mpc_core.ring", "encode": "mpc_core.ring",
    "Session": "mpc_core.session",
    "RunStats": "mpc_core.simulate", "simulate": "mpc_core.simulate",
    "MaskedCache": "mpc_core.tensor", "MaskedWeight": "mpc_core.tensor", "SharedTensor": "mpc_core.tensor",
}

if TYPE_CHECKING:
    from mpc_core.communicator import Communicator, InProcessCommunicator
    from mpc_core.dealer import SeededDealerClient, TrustedDealer
    from mpc_core.errors import (DealerError, DTypeError, EncodingError, MPCError, PartyError, PeerDisconnected,
                                 PeerTimeout, ShapeError, TranscriptError, TransportError)
    from mpc_core.ring import decode, encode
    from mpc_core.session import Session
    from mpc_core.simulate import RunStats, simulate
    from mpc_core.tensor import MaskedCache, MaskedWeight, SharedTensor


__getattr__ = lazy_attributes('mpc_core', _LAZY, globals())


__all__ = list(_LAZY)
