"""Model publication: weights to fixed point to N additive shares, with a manifest of salted commitments.

Layout of a published model directory (specs/model-publication.md):
    manifest.json            public: config, encoding, per-tensor shapes and one commitment per party
    tokenizer.json           for the client
    party{i}/share.safetensors   party i's int64 shares (secret; sent to node i over a private channel)
    party{i}/salts.json          party i's commitment salts (secret until an audit opens a tensor)

commitment(name, party) = BLAKE3(canonical_cbor([COMMITMENT, salt, name, shape, frac_bits]) || int64-le bytes)
Salts come from the owner's seeded PRG, so publication is reproducible, and are
secret: a share of a low-entropy tensor must not be guessable from its hash.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Mapping

import blake3
import torch
from safetensors.torch import load_file, save_file

from mpc_core import prg
from mpc_core.domains import COMMITMENT
from mpc_core.encoding import canonical_cbor, tensor_bytes
from mpc_core.ring import DEFAULT_FRAC_BITS, encode
from mpc_core.shares import additive_split
from models.errors import CheckpointError
from models.refresh_keys import deal_keys, write_keys
from models.checkpoint import TOKENIZER_FILE, config_from_hf, config_to_hf
from models.gpt import GPT, GPTConfig
from models.gpt_mpc import state_dict_for_sharing

MANIFEST_FILE = "manifest.json"
SHARE_FILE = "share.safetensors"
SALTS_FILE = "salts.json"
FORMAT = "shardproof/model-shares/v1"


class ShareVerificationError(CheckpointError):
    """A party's share file does not match the published manifest."""


def commit_tensor(name: str, t: torch.Tensor, salt: bytes, frac_bits: int) -> bytes:
    """Salted commitment to one int64 tensor."""
    h = blake3.blake3(canonical_cbor([COMMITMENT, salt, name, list(t.shape), frac_bits]))
    h.update(tensor_bytes(t))
    return h.digest()


def manifest_id(manifest: Mapping) -> str:
    """The model id: BLAKE3 of the canonical CBOR of the manifest without its id."""
    body = {k: v for k, v in manifest.items() if k != "model_id"}
    return blake3.blake3(canonical_cbor(body)).hexdigest()


def split_tensor(enc: torch.Tensor, name: str, n_parties: int, owner_seed: bytes) -> list[torch.Tensor]:
    """N additive shares of an encoded tensor: N-1 from the owner's PRG, the last one corrected."""
    return additive_split(enc, n_parties, owner_seed, b"publish", f"tensor:{name}")


def publish_model(model: GPT, n_parties: int, out_dir: str | Path, owner_seed: bytes,
                  frac_bits: int = DEFAULT_FRAC_BITS, tokenizer_dir: str | Path | None = None) -> dict:
    """Split `model` into `n_parties` share files plus a public manifest; returns the manifest."""
    if n_parties < 2:
        raise CheckpointError(f"publishing needs at least 2 parties, got {n_parties}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = state_dict_for_sharing(model)
    per_party: list[dict[str, torch.Tensor]] = [{} for _ in range(n_parties)]
    salts: list[dict[str, str]] = [{} for _ in range(n_parties)]
    tensors = {}
    for name in sorted(sd):
        enc = encode(sd[name], frac_bits)
        shares = split_tensor(enc, name, n_parties, owner_seed)
        commits = []
        for p, sh in enumerate(shares):
            salt = prg.stream_bytes(owner_seed, b"publish", f"tensor:{name}", p, "salt", 32)
            per_party[p][name] = sh.contiguous()
            salts[p][name] = salt.hex()
            commits.append(commit_tensor(name, sh, salt, frac_bits).hex())
        tensors[name] = {"shape": list(enc.shape), "commitments": commits}
    manifest = {"format": FORMAT, "config": config_to_hf(model.config), "frac_bits": frac_bits,
                "n_parties": n_parties, "tensors": tensors}
    manifest["config"] = json.loads(json.dumps(manifest["config"]))
    manifest["model_id"] = manifest_id(_hashable(manifest))
    refresh_keys = deal_keys(owner_seed, n_parties)
    for p in range(n_parties):
        d = out / f"party{p}"
        d.mkdir(exist_ok=True)
        save_file(per_party[p], str(d / SHARE_FILE), metadata={"format": FORMAT, "party": str(p)})
        (d / SALTS_FILE).write_text(json.dumps(salts[p], indent=1, sort_keys=True))
        write_keys(d, refresh_keys[p])  # secret, like the share: per-job re-randomisation (protocol.weight_refresh)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if tokenizer_dir is not None and (Path(tokenizer_dir) / TOKENIZER_FILE).exists():
        shutil.copyfile(Path(tokenizer_dir) / TOKENIZER_FILE, out / TOKENIZER_FILE)
    return manifest


def _hashable(manifest: Mapping) -> dict:
    """The manifest with floats (layer_norm_epsilon) written as strings, so it has a canonical encoding."""
    def fix(v):
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return fix(dict(manifest))


def read_manifest(out_dir: str | Path) -> dict:
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"no {MANIFEST_FILE} in {out_dir}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown format {manifest.get('format')!r}")
    if manifest.get("model_id") != manifest_id(_hashable(manifest)):
        raise ShareVerificationError(f"{path}: model_id does not match the manifest's content")
    return manifest


def manifest_config(manifest: Mapping) -> GPTConfig:
    return config_from_hf(manifest["config"])


def load_party_share(out_dir: str | Path, party: int, manifest: Mapping | None = None) -> dict[str, torch.Tensor]:
    """Load party `party`'s share tensors and check each against the manifest's commitment."""
    manifest = manifest or read_manifest(out_dir)
    d = Path(out_dir) / f"party{party}"
    if not 0 <= party < manifest["n_parties"]:
        raise CheckpointError(f"no party {party} in a {manifest['n_parties']}-party publication")
    try:
        shares = load_file(str(d / SHARE_FILE))
        salts = json.loads((d / SALTS_FILE).read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"party {party}: missing share files in {d}") from exc
    if set(shares) != set(manifest["tensors"]):
        raise ShareVerificationError(f"party {party}: tensor names differ from the manifest")
    for name, meta in manifest["tensors"].items():
        t = shares[name]
        if t.dtype != torch.int64 or list(t.shape) != meta["shape"]:
            raise ShareVerificationError(f"party {party}: {name} has {t.dtype} {list(t.shape)}, manifest says int64 {meta['shape']}")
        got = commit_tensor(name, t, bytes.fromhex(salts[name]), manifest["frac_bits"]).hex()
        if got != meta["commitments"][party]:
            raise ShareVerificationError(f"party {party}: {name} does not match its commitment")
    return shares


def load_shared_model(session, out_dir: str | Path, manifest: Mapping | None = None):
    """A SharedGPT whose weights are this process's parties' published shares (each verified)."""
    from mpc_core import SharedTensor
    from models.gpt_mpc import SharedGPT

    manifest = manifest or read_manifest(out_dir)
    if manifest["n_parties"] != session.n_parties:
        raise CheckpointError(f"model published for {manifest['n_parties']} parties, session has {session.n_parties}")
    if manifest["frac_bits"] != session.frac_bits:
        raise CheckpointError(f"model encoded with f = {manifest['frac_bits']}, session uses f = {session.frac_bits}")
    shares = {p: load_party_share(out_dir, p, manifest) for p in session.local_parties}
    weights = {name: SharedTensor.from_shares(session, torch.stack([shares[p][name] for p in session.local_parties]))
               for name in sorted(manifest["tensors"])}
    return SharedGPT(session, manifest_config(manifest), weights)
