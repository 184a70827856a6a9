"""mpc_core: a deterministic N-party secret-shared tensor engine over Z_2^64.

Public API:
  simulate(fn, *plain_inputs, parties=3, seed=0) -> (float result, RunStats)
  Session, SharedTensor, MaskedWeight, TrustedDealer, SeededDealerClient,
  InProcessCommunicator, encode, decode, MPCError and its subclasses.
"""
from mpc_core.communicator import Communicator, InProcessCommunicator
from mpc_core.dealer import SeededDealerClient, TrustedDealer
from mpc_core.errors import (DealerError, DTypeError, EncodingError, MPCError, PartyError, PeerDisconnected,
                             PeerTimeout, ShapeError, TranscriptError, TransportError)
from mpc_core.ring import decode, encode
from mpc_core.session import Session
from mpc_core.simulate import RunStats, simulate
from mpc_core.tensor import MaskedCache, MaskedWeight, SharedTensor

__all__ = [
    "simulate", "RunStats", "Session", "SharedTensor", "MaskedWeight", "MaskedCache", "TrustedDealer", "SeededDealerClient",
    "Communicator", "InProcessCommunicator", "encode", "decode", "MPCError", "EncodingError", "ShapeError",
    "PartyError", "DTypeError", "DealerError", "TransportError", "PeerTimeout", "PeerDisconnected", "TranscriptError",
]
