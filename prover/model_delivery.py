"""Model owner -> node: each node's weight share delivered sealed through the ledger (specs/channels.md).

The owner packs party i's published files (share tensors and their commitment salts)
as canonical CBOR, seals them for node i's registered X25519 key on the private
channel (purpose `owner.weights`, the model id as context, one message per chunk of
at most 32 MiB with consecutive counters), stores the sealed chunks as ledger blobs
and names them in its `model.publish` entry (`meta.deliveries`). A node fetches,
opens and unpacks its own delivery, and keeps it only if every tensor opens the
manifest's salted commitment. The blobs are public; only node i can open its chunks,
and only the owner can have sealed them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ledger import Ledger
from ledger import entries as E
from mpc_core.encoding import canonical_cbor, decode_cbor
from prover.channels import PURPOSE_WEIGHTS, ReplayGuard, open_, seal
from models.errors import ModelsError
from prover.errors import ProverError
from prover.keys import NodeKeys, lookup_peer
from prover.local_files import safe_id
from models.publish import MANIFEST_FILE, load_party_share, read_manifest

CHUNK_BYTES = 32 << 20
REFRESH_SCHEME = "pairwise/v1"  # jobs of this model use per-job refreshed shares (protocol.weight_refresh)
PACK_FORMAT = "shardproof/share-delivery/v1"


class DeliveryError(ProverError):
    """A model delivery that cannot be made or accepted (unregistered node, missing or forged chunk, bad share)."""


def publish_and_deliver(led: Ledger, owner: NodeKeys, published_dir: str | os.PathLike, node_ids: list[str],
                        progress: Callable[[int, int], None] | None = None) -> str:
    """Post the manifest and a `model.publish` entry whose deliveries give party i's files to node_ids[i] sealed
    (with more nodes than parties, a multiple of N: party i mod N's files to node i, so that replicas of
    an index, mpc_core.replicas, hold its share); `progress(done, total)` is called after each node's
    delivery is stored.

    Returns the model id."""
    src = Path(published_dir)
    manifest = read_manifest(src)
    model_id = manifest["model_id"]
    n = manifest["n_parties"]
    if not node_ids or len(node_ids) % n or len(set(node_ids)) != len(node_ids):
        raise DeliveryError(f"{len(node_ids)} nodes for a {n}-party publication (a multiple of {n}, each once)")
    peers = [lookup_peer(led, nid) for nid in node_ids]
    for nid, peer in zip(node_ids, peers):
        if peer is None or peer.x25519 is None:
            raise DeliveryError(f"node {nid!r} is not registered with an X25519 key")
    deliveries = []
    for i, (nid, peer) in enumerate(zip(node_ids, peers)):
        p = i % n
        files = {f.name: f.read_bytes() for f in sorted((src / f"party{p}").iterdir()) if f.is_file()}
        data = canonical_cbor({"format": PACK_FORMAT, "model_id": model_id, "party": p, "files": files})
        chunks = [led.put_blob(seal(owner, peer.x25519, nid, model_id, PURPOSE_WEIGHTS, data[i:i + CHUNK_BYTES], k))
                  for k, i in enumerate(range(0, len(data), CHUNK_BYTES))]
        deliveries.append({"party": p, "node": nid, "bytes": len(data), "chunks": chunks})
        if progress is not None:
            progress(i + 1, len(node_ids))
    digest = led.put_blob((src / MANIFEST_FILE).read_bytes())
    led.append(E.make_entry(owner.identity, E.MODEL, {
        "model_id": model_id, "manifest": digest, "n_shares": manifest["n_parties"],
        "commitments": bytes.fromhex(model_id), "meta": {"deliveries": deliveries, "refresh": REFRESH_SCHEME}}))
    return model_id


def fetch_share(led: Ledger, keys: NodeKeys, model_id: str, model_dir: str | os.PathLike) -> int:
    """Fetch, open and check this node's delivery of `model_id` into `model_dir`; returns its party index.

    Nothing is written unless every chunk authenticates and every tensor opens its commitment."""
    safe_id(model_id, "model id")
    pubs = [e for e in led.query(kind=E.MODEL) if e.entry.body["model_id"] == model_id]
    if not pubs:
        raise DeliveryError(f"no model {model_id!r} on the ledger")
    pub = pubs[0]  # the first publication of an id is the one jobs and audits use
    mine = [d for d in (pub.entry.body.get("meta") or {}).get("deliveries", []) if d.get("node") == keys.node_id]
    if not mine:
        raise DeliveryError(f"model {model_id} has no delivery for {keys.node_id}")
    d = mine[0]
    owner = lookup_peer(led, pub.entry.author)
    if owner is None or owner.x25519 is None:
        raise DeliveryError(f"the model's owner {pub.entry.author!r} has no registered X25519 key")
    guard = ReplayGuard()
    parts = []
    for k, digest in enumerate(d["chunks"]):
        opened = open_(keys, led.get_blob(digest), owner.x25519, sender=pub.entry.author, job=model_id,
                       purpose=PURPOSE_WEIGHTS, replay=guard)
        if opened.counter != k:
            raise DeliveryError(f"chunk #{k} carries counter {opened.counter}")
        parts.append(opened.payload)
    pack = decode_cbor(b"".join(parts))
    p = d["party"]
    if (not isinstance(pack, dict) or pack.get("format") != PACK_FORMAT or pack.get("model_id") != model_id
            or pack.get("party") != p):
        raise DeliveryError("the delivery is not this model's share for this party")
    manifest_bytes = led.get_blob(pub.entry.body["manifest"])
    dest = Path(model_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".delivery-", dir=dest.parent))
    try:
        (tmp / MANIFEST_FILE).write_bytes(manifest_bytes)
        (tmp / f"party{p}").mkdir()
        for name, blob in pack["files"].items():
            if "/" in name or name in ("", ".", ".."):
                raise DeliveryError(f"bad file name {name!r} in the delivery")
            (tmp / f"party{p}" / name).write_bytes(blob)
            os.chmod(tmp / f"party{p}" / name, 0o600)
        try:
            load_party_share(tmp, p, read_manifest(tmp))  # raises unless every tensor opens its commitment
        except ModelsError as exc:
            raise DeliveryError(f"the delivered share does not open the manifest's commitments: {exc}") from exc
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return p
