"""The refresh-key files the owner writes beside each party's share at publication.

Pairwise seeds between the share holders and a salt key per party, from the owner's publication
seed; protocol.weight_refresh turns them into each job's fresh sharing of the weights.
"""
from __future__ import annotations

from pathlib import Path

from mpc_core import prg
from mpc_core.encoding import canonical_cbor

REFRESH_FILE = "refresh.cbor"
FORMAT = "shardproof/refresh-keys/v1"


def deal_keys(owner_seed: bytes, n_parties: int) -> list[dict]:
    """Every party's refresh keys, derived from the owner's publication seed."""
    def pair(i: int, j: int) -> bytes:
        return prg.stream_bytes(owner_seed, b"publish", f"refresh-pair:{i}:{j}", 0, "refresh", 32)
    return [{"format": FORMAT, "party": i, "n_parties": n_parties,
             "pairs": {str(j): pair(min(i, j), max(i, j)) for j in range(n_parties) if j != i},
             "salt_key": prg.stream_bytes(owner_seed, b"publish", "refresh-salt", i, "refresh", 32)}
            for i in range(n_parties)]


def write_keys(party_dir: str | Path, keys: dict) -> None:
    (Path(party_dir) / REFRESH_FILE).write_bytes(canonical_cbor(keys))
