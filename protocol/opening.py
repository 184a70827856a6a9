"""The opening a node reveals for a challenged share index, as two deterministic-CBOR blobs.

The party's own blob (the `opening` entry's `data`):
{"records": [[index, kind, scope, [[name, shape, digest], ...], [ops, refs]], ...],
 "salts": [salt, ...],
 "outs": {step: tensor} for matmul steps, "weights": {name: tensor}, "tokens": [tensor, ...],
 "weight_salts": {name: salt}}
and the public-values blob (the entry's `public`): {step: {name: tensor}}, the job's public openings as
this party saw them. Every honest party sees the same public values, so their public blobs are
byte-identical and the content-addressed blob store keeps one per job. An opening entry without
`public` carries them inline under "public" in its own blob (the form before the split).
tensor = [shape, int64-le bytes].
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ledger import merkle
from mpc_core.domains import CORRECTIONS_LEAF
from mpc_core.encoding import canonical_cbor, decode_cbor, tensor_bytes, tensor_from_bytes
from mpc_core.transcript import StepRecord

MATMUL_KINDS = ("beaver_matmul", "fixed_matmul")


def enc_tensor(t: torch.Tensor) -> list:
    return [list(t.shape), tensor_bytes(t)]


def dec_tensor(v) -> torch.Tensor:
    shape, data = v
    return tensor_from_bytes(bytes(data), tuple(int(d) for d in shape))


def public_values(records: list[StepRecord], load: Callable[[int], dict[str, torch.Tensor]]) -> dict:
    """The job's public openings {step: {name: tensor}} as seen by this party."""
    out = {}
    for r in records:
        names = [n for n in r.digests if n.startswith("opened.")]
        if names:
            data = load(r.index)
            out[r.index] = {n: enc_tensor(data[n]) for n in names}
    return out


class OpeningBlobs(NamedTuple):
    """An opening as posted: the party's own blob (`data`) and the public-values blob it references
    (`public`; None for an opening that carries them inline, or a refusal)."""

    data: bytes
    public: bytes | None = None


def encode_opening(records: list[StepRecord], salts: list[bytes],
                   load: Callable[[int], dict[str, torch.Tensor]], weights: dict[str, torch.Tensor],
                   tokens: list[torch.Tensor], weight_salts: dict[str, bytes] | None = None) -> OpeningBlobs:
    """The two blobs of an opening: the party's records, salts, matmul outputs, weight share (with the
    salts of its commitment) and input shares; and the public values it saw."""
    outs = {r.index: enc_tensor(load(r.index)["out"]) for r in records if r.kind in MATMUL_KINDS}
    own = canonical_cbor({
        "records": encode_records(records),
        "salts": list(salts),
        "outs": outs,
        "weights": {n: enc_tensor(t) for n, t in weights.items()},
        "tokens": [enc_tensor(t) for t in tokens],
        "weight_salts": dict(weight_salts or {}),
    })
    return OpeningBlobs(own, encode_public(public_values(records, load)))


def encode_public(public: dict) -> bytes:
    """The public-values blob of an opening: {step: {name: tensor}} (tensors encoded by enc_tensor)."""
    return canonical_cbor(public)


def decode_public(obj) -> dict[int, dict[str, torch.Tensor]]:
    """Public values {step: {name: tensor}} from their decoded CBOR map; raises on garbage."""
    if not isinstance(obj, dict):
        raise TypeError(f"public values must be a map, got {type(obj).__name__}")
    return {int(k): {str(n): dec_tensor(v) for n, v in d.items()} for k, d in obj.items()}


# --- step records: the one codec (openings, and a node's own job state with spill offsets) ------------
def encode_records(records: list[StepRecord], *, with_offsets: bool = False) -> list:
    """Step records as CBOR lists: each record's body, [index, kind, scope, [[name, shape, digest], ...],
    [ops, refs]] (names sorted); `with_offsets` adds each tensor's spill offset to its field (-1 if not
    spilled), for a node's own state (never in an opening)."""
    if not with_offsets:
        return [r.body() for r in records]
    return [[r.index, r.kind, r.scope,
             [[n, r.shapes[n], r.digests[n], r.offsets.get(n, -1)] for n in sorted(r.digests)], [r.ops, r.refs]]
            for r in records]


def decode_records(body: list, *, with_offsets: bool = False) -> list[StepRecord]:
    """The step records `encode_records` wrote (with the same `with_offsets`); raises on garbage
    (ValueError, TypeError, KeyError: openings are attacker-controlled)."""
    recs = []
    for index, kind, scope, fields, (ops, refs) in body:
        r = StepRecord(int(index), str(kind), str(scope), {}, {}, ops=[[int(op), _plain(req)] for op, req in ops],
                       refs=[int(k) for k in refs])
        for field in fields:
            if with_offsets:
                n, sh, dg, off = field
            else:
                n, sh, dg = field
                off = -1
            r.shapes[str(n)] = [int(d) for d in sh]
            r.digests[str(n)] = bytes(dg)
            if int(off) >= 0:
                r.offsets[str(n)] = int(off)
        recs.append(r)
    return recs


def _plain(v):
    """A decoded request descriptor as plain lists, ints and strings (what Request.describe() gives)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise TypeError(f"a request descriptor holds ints, strings and lists, not {type(v).__name__}")
    return v


def decode_opening(data: bytes, public: bytes | None = None) -> dict:
    """Parse an opening: the party's blob `data` and its public-values blob `public` (None: the values are
    inline in `data`, the form before the split). Raises on garbage, an opening with both or neither
    (the auditor turns that into a verdict)."""
    obj = decode_cbor(data)
    if not isinstance(obj, dict):
        raise TypeError(f"an opening must be a map, got {type(obj).__name__}")
    if public is None:
        pub = obj["public"]
    elif "public" in obj:
        raise ValueError("an opening that references a public-values blob must not carry them inline")
    else:
        pub = decode_cbor(public)
    return {
        "records": decode_records(obj["records"]),
        "salts": [bytes(s) for s in obj["salts"]],
        "public": decode_public(pub),
        "outs": {int(k): dec_tensor(v) for k, v in obj["outs"].items()},
        "weights": {str(n): dec_tensor(v) for n, v in obj["weights"].items()},
        "tokens": [dec_tensor(v) for v in obj["tokens"]],
        "weight_salts": {str(k): bytes(v) for k, v in obj.get("weight_salts", {}).items()},
    }


def node_opening(transcript, salts: list[bytes], model_dir, party: int, tokens: list[torch.Tensor],
                 refresh_job: str | None = None) -> OpeningBlobs:
    """What node `party` reveals for a challenge: its transcript (`records` and `load(step)`), step salts,
    its weight share with the salts of its commitment, and input shares.

    With `refresh_job` the weight share is the job's refreshed share W_i^t with its per-job salts
    (protocol.weight_refresh), never the published W_i."""
    import json
    from pathlib import Path

    from models.publish import SALTS_FILE, load_party_share

    load = transcript.load
    share = load_party_share(model_dir, party)
    if refresh_job is not None:
        from models.publish import read_manifest
        from protocol.weight_refresh import job_salts, read_keys, refreshed

        keys = read_keys(Path(model_dir) / f"party{party}", party, read_manifest(model_dir)["n_parties"])
        return encode_opening(transcript.records, salts, load, refreshed(share, keys, refresh_job), tokens,
                              job_salts(keys, refresh_job, share))
    wsalts = json.loads((Path(model_dir) / f"party{party}" / SALTS_FILE).read_text())
    return encode_opening(transcript.records, salts, load, share, tokens,
                          {k: bytes.fromhex(v) for k, v in wsalts.items()})


# --- the dealer's release -----------------------------------------------------------------------
def correction_items(dealer, requests) -> list:
    """The last party's correction shares for every request of the job, in op order:
    [[request descriptor, {component: tensor}], ...] (the replay checks each descriptor)."""
    out = []
    for op_index, req in enumerate(requests):
        corr = dealer.correction(req, op_index)
        out.append([req.describe(), {k: enc_tensor(v) for k, v in sorted(corr.items())}])
    return out


def encode_release(seeds: dict[int, bytes], corrections: list | None) -> bytes:
    """The blob of a `dealer.release`: {"seeds": {str(party): seed}, "corrections": cbor(items)?}."""
    release: dict = {"seeds": {str(p): bytes(s) for p, s in sorted(seeds.items())}}
    if corrections is not None:
        release["corrections"] = canonical_cbor(corrections)
    return canonical_cbor(release)


def decode_release(data: bytes) -> dict:
    """Parse a release blob: {"seeds": {party: seed}, "corrections": bytes | None}; raises on garbage."""
    obj = decode_cbor(data)
    seeds = {int(k): bytes(v) for k, v in obj["seeds"].items()}
    corr = obj.get("corrections")
    if corr is not None and not isinstance(corr, bytes):
        raise ValueError("release: corrections must be a CBOR byte string")
    return {"seeds": seeds, "corrections": corr}


def corrections_leaf(op_index: int, item: list) -> bytes:
    """The leaf of correction message `item` = [descriptor, {component: tensor}] for op `op_index`."""
    return canonical_cbor([CORRECTIONS_LEAF, op_index, item])


def corrections_head(items: list) -> bytes:
    """The RFC 9162 Merkle root over the correction messages [[descriptor, {component: tensor}], ...] in op
    order (leaves `corrections_leaf(k, item_k)`). The last party commits to the root of what it received in
    its job root, so a release that differs is the dealer's fault, provably (specs/audit.md section 3), and
    one correction can be shown to be the k-th with an inclusion proof (a one-step evidence bundle)."""
    return merkle.root_hash([corrections_leaf(k, item) for k, item in enumerate(items)])
