"""Per-job re-randomisation of the weight shares (specs/threat-model.md, specs/audit.md section 3).

At publication the owner deals every pair of parties i < j a seed s_ij and every party a salt
key k_i (in party i's sealed delivery, `refresh.cbor`). For job t, party i computes

    W_i^t = W_i + sum_{j > i} PRG(s_ij; t, name) - sum_{j < i} PRG(s_ji; t, name)     (mod 2^64)
    salt_i^t[name] = BLAKE3(WEIGHT_REFRESH_SALT || k_i || cbor([t, name]))

The pairwise terms cancel in the sum, so W^t is a fresh uniform sharing of W; the owner, who
knows every W_i and seed, posts the salted commitments of the W_i^t (`model.refresh`) before
the job. An audit opens W_i^t and checks it against those commitments: the shares opened in
different jobs are independent, so no number of audited jobs reveals W.
"""
from __future__ import annotations

from pathlib import Path

import blake3
import torch

from mpc_core import prg
from mpc_core.domains import WEIGHT_REFRESH, WEIGHT_REFRESH_SALT
from mpc_core.encoding import canonical_cbor, decode_cbor
from protocol.errors import ProtocolError

from models.refresh_keys import FORMAT, REFRESH_FILE, deal_keys, write_keys  # noqa: F401 (the key files)


class RefreshError(ProtocolError):
    """Refresh keys missing or malformed, or a refresh that does not match its commitments."""


def read_keys(party_dir: str | Path, party: int, n_parties: int) -> dict:
    """Party `party`'s refresh keys from its publication directory; raises RefreshError."""
    f = Path(party_dir) / REFRESH_FILE
    try:
        keys = decode_cbor(f.read_bytes())
    except Exception as exc:
        raise RefreshError(f"no readable refresh keys in {party_dir}: {exc}") from exc
    if (not isinstance(keys, dict) or keys.get("format") != FORMAT or keys.get("party") != party
            or keys.get("n_parties") != n_parties
            or sorted(keys.get("pairs", {})) != sorted(str(j) for j in range(n_parties) if j != party)):
        raise RefreshError(f"{f} is not party {party}'s refresh keys for {n_parties} parties")
    return keys


def delta(keys: dict, job_id: str, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Party keys["party"]'s refresh term for tensor `name` in job `job_id` (the terms of all parties sum to 0)."""
    i = keys["party"]
    out = torch.zeros(shape, dtype=torch.int64)
    for js, seed in keys["pairs"].items():
        j = int(js)
        term = prg.ring_tensor(bytes(seed), job_id.encode(), f"weight:{name}", 0, WEIGHT_REFRESH, tuple(shape))
        out = out + term if j > i else out - term
    return out


def refreshed(share: dict[str, torch.Tensor], keys: dict, job_id: str) -> dict[str, torch.Tensor]:
    """W_i^t for every tensor of party i's share."""
    return {name: t + delta(keys, job_id, name, tuple(t.shape)) for name, t in share.items()}


def job_salts(keys: dict, job_id: str, names) -> dict[str, bytes]:
    """The salts of party i's per-job commitments."""
    k = bytes(keys["salt_key"])
    return {name: blake3.blake3(WEIGHT_REFRESH_SALT + k + canonical_cbor([job_id, name])).digest() for name in names}


def refreshed_manifest(manifest: dict, refresh_blob: bytes) -> dict:
    """A copy of `manifest` whose per-party commitments are the job's refreshed ones (for the weight check)."""
    table = decode_cbor(refresh_blob)
    if not isinstance(table, dict) or set(table) != set(manifest["tensors"]):
        raise RefreshError("the refresh commitments do not name the manifest's tensors")
    out = dict(manifest)
    out["tensors"] = {}
    for name, meta in manifest["tensors"].items():
        row = table[name]
        if not isinstance(row, list) or len(row) != manifest["n_parties"]:
            raise RefreshError(f"refresh commitments of {name} are malformed")
        out["tensors"][name] = {**meta, "commitments": [bytes(c).hex() for c in row]}
    return out
