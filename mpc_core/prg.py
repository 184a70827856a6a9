"""The specified PRG: BLAKE3 in keyed XOF mode (see specs/prg.md).

stream(seed, job, stream_id, party, purpose) is the XOF output of
    BLAKE3-keyed(key = seed, input = canonical_cbor([PRG_STREAM, job, stream_id, party, purpose]))
read as little-endian 64-bit words. Nothing in a protocol draws randomness from
anywhere else, so any party's material can be regenerated from its seed.
"""
from __future__ import annotations

from typing import Union

import blake3
import cbor2
import numpy as np
import torch

from mpc_core.domains import PRG_STREAM, SEED_COMMIT, SEED_DERIVE
from mpc_core.encoding import canonical_cbor
from mpc_core.errors import DealerError

StreamId = Union[int, str]

SEED_BYTES = 32


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        raise DealerError(f"PRG seeds are {SEED_BYTES} bytes, got {type(seed).__name__} of length {len(seed) if hasattr(seed, '__len__') else '?'}")


def context(job: bytes, stream_id: StreamId, party: int, purpose: str) -> bytes:
    """The canonical input bytes that domain-separate one PRG stream."""
    if not isinstance(stream_id, (int, str)) or isinstance(stream_id, bool) or not isinstance(purpose, str):
        raise DealerError(f"bad PRG context: stream id {stream_id!r}, purpose {purpose!r}")
    # The element types are fixed above, so the generic float check of canonical_cbor is skipped (hot path).
    return cbor2.dumps([PRG_STREAM, bytes(job), stream_id, int(party), purpose], canonical=True)


def stream_bytes(seed: bytes, job: bytes, stream_id: StreamId, party: int, purpose: str, nbytes: int) -> bytes:
    """`nbytes` of XOF output for one (job, stream, party, purpose)."""
    _check_seed(seed)
    return blake3.blake3(context(job, stream_id, party, purpose), key=bytes(seed)).digest(length=nbytes)


def ring_tensor(seed: bytes, job: bytes, stream_id: StreamId, party: int, purpose: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform ring elements (int64) of the given shape from the stream."""
    n = int(np.prod(shape)) if len(shape) else 1
    raw = stream_bytes(seed, job, stream_id, party, purpose, 8 * n)
    arr = np.frombuffer(raw, dtype="<i8").reshape(shape)
    return torch.from_numpy(arr.copy())


def bit_tensor(seed: bytes, job: bytes, stream_id: StreamId, party: int, purpose: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform bits (int64 0/1): the least significant bit of each stream word."""
    return ring_tensor(seed, job, stream_id, party, purpose, shape) & 1


def derive_party_seed(master: bytes, job: bytes, party: int) -> bytes:
    """Party seed = BLAKE3-keyed(master, canonical_cbor([SEED_DERIVE, job, party]))[:32]."""
    _check_seed(master)
    return blake3.blake3(canonical_cbor([SEED_DERIVE, bytes(job), int(party)]), key=bytes(master)).digest(length=SEED_BYTES)


def seed_commitment(seed: bytes, job: bytes, party: int) -> bytes:
    """Public commitment to a party seed: BLAKE3(canonical_cbor([SEED_COMMIT, job, party, seed]))."""
    _check_seed(seed)
    return blake3.blake3(canonical_cbor([SEED_COMMIT, bytes(job), int(party), bytes(seed)])).digest()


def master_from_int(seed: int, label: str = "shardproof/simulate") -> bytes:
    """A 32-byte master seed from a small integer (tests, simulation, benchmarks)."""
    return blake3.blake3(canonical_cbor([label, int(seed)])).digest()
