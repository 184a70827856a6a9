"""Evidence bundles: entries + inclusion proofs + a signed checkpoint + the authors' registrations
+ referenced blobs, in one CBOR file that verifies offline, without the database.

Verification uses only RFC 9162 section 2.1.3.2 inclusion checks against the
checkpoint root, the checkpoint's BLS signature (pinned to a known log key
when the caller has one), Ed25519 entry signatures under the registered keys,
and blake3 blob digests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ledger import entries as E
from ledger import merkle
from ledger.blobs import blob_digest
from ledger.checkpoints import SignedCheckpoint, checkpoint_from_obj
from ledger.errors import EvidenceError, LedgerError
from ledger.keys import bls_pop_verify
from mpc_core.encoding import canonical_cbor, decode_cbor

if TYPE_CHECKING:
    from ledger.log import Ledger

BUNDLE_TYPE = "shardproof/ledger-evidence"
BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 1 << 30


def export_bundle(ledger: "Ledger", indexes: Sequence[int], checkpoint: SignedCheckpoint | None = None,
                  window: tuple[int, int] | None = None, tree_heads: Sequence[int] = (),
                  omit_blobs: Sequence[bytes] = (), proofs: Sequence[bytes] = (),
                  served: dict[bytes, bytes] | None = None) -> bytes:
    """Build the bundle for `indexes` under `checkpoint` (default: the latest stored checkpoint
    covering them, or a fresh one if this handle holds the log key).

    With `window=(start, stop)` the bundle also carries every leaf at indexes start..stop-1 with
    its inclusion proof (no registrations needed): a complete stretch of the log, so that a
    verifier can check what is absent from it (an answer that never came). With `tree_heads`, the
    bundle carries the root of the log at each of those sizes with a consistency proof to the
    checkpoint (e.g. the checkpoint that sealed a job). Blobs whose digests are in `omit_blobs` are left
    out (a verifier that needs one cannot decide); `proofs` are opaque attachments for the application's
    checker (one-step proofs of deviation, verifier.step_proof), carried as they are. `served` holds the
    bytes of blobs that entries name but nodes serve themselves (Entry.served_refs), fetched by the
    exporter; each one an exported entry names (and not omitted) is carried like a ledger blob."""
    if not indexes:
        raise EvidenceError("no entries to export")
    need = max([*indexes, *([window[1] - 1] if window else [])]) + 1
    if checkpoint is None:
        checkpoint = ledger.latest_checkpoint()
        if checkpoint is None or checkpoint.size < need:
            if ledger.identity is None:
                raise EvidenceError(f"no signed checkpoint covers index {need - 1}; the log must make one first")
            checkpoint = ledger.checkpoint()
    if checkpoint.size < need:
        raise EvidenceError(f"checkpoint size {checkpoint.size} does not cover index {need - 1}")
    size = checkpoint.size

    def item(i: int) -> tuple[dict, E.Entry]:
        le = ledger.get(i)
        return {"index": i, "data": le.data, "proof": ledger.inclusion_proof(i, size)}, le.entry

    items, regs, blobs, seen_regs = [], [], {}, set()
    omit = {bytes(d) for d in omit_blobs}
    for i in dict.fromkeys(indexes):
        it, entry = item(i)
        items.append(it)
        for d in entry.blob_refs():
            if d not in omit:
                blobs[d] = ledger.get_blob(d)
        for d in entry.served_refs():
            if d not in omit and served is not None and d in served:
                blobs[d] = served[d]
        if entry.author not in seen_regs:
            seen_regs.add(entry.author)
            reg = ledger.registration(entry.author)
            if reg is None:
                raise EvidenceError(f"author {entry.author!r} is not registered")
            regs.append(item(reg.index)[0])
    bundle = {
        "type": BUNDLE_TYPE,
        "v": BUNDLE_VERSION,
        "origin": ledger.origin,
        "hash": ledger.hash_name,
        "checkpoint": checkpoint.to_obj(),
        "entries": items,
        "registrations": regs,
        "blobs": list(blobs.values()),
    }
    if proofs:
        bundle["proofs"] = [bytes(p) for p in proofs]
    if tree_heads:
        bundle["tree_heads"] = [{"size": m, "root": ledger.root(m), "proof": ledger.consistency_proof(m, size)}
                                for m in sorted(set(tree_heads))]
    if window is not None:
        start, stop = window
        bundle["window"] = [{"index": i, "data": ledger.get(i).data, "proof": ledger.inclusion_proof(i, size)}
                            for i in range(start, stop)]
    return canonical_cbor(bundle)


@dataclass
class EvidenceReport:
    """Outcome of offline verification. `ok` is True only if every check passed."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    entries: list[tuple[int, E.Entry]] = field(default_factory=list)
    checkpoint: SignedCheckpoint | None = None
    log_key_pinned: bool = False
    blobs: dict[bytes, bytes] = field(default_factory=dict)
    window: list[tuple[int, bytes]] = field(default_factory=list)  # a complete, included stretch of leaves
    tree_heads: dict[int, bytes] = field(default_factory=dict)  # size -> root, consistent with the checkpoint
    keys: dict[str, bytes] = field(default_factory=dict)  # node id -> Ed25519 key, from verified registrations
    registrations: dict[str, tuple[int, E.Entry]] = field(default_factory=dict)  # node id -> (index, its node.register)
    missing_blobs: set[bytes] = field(default_factory=set)  # referenced by an entry but left out of the bundle
    proofs: list[bytes] = field(default_factory=list)  # the application's attachments, unchecked here


def _leaf(obj: Any, what: str) -> tuple[int, bytes, list[bytes]]:
    if not isinstance(obj, dict) or set(obj) != {"index", "data", "proof"}:
        raise EvidenceError(f"{what}: expected {{index, data, proof}}")
    i, d, p = obj["index"], obj["data"], obj["proof"]
    if not isinstance(i, int) or isinstance(i, bool) or i < 0 or not isinstance(d, bytes) or not isinstance(p, list):
        raise EvidenceError(f"{what}: bad field types")
    return i, d, p


def bundle_origin(data: bytes) -> str | None:
    """The log origin a bundle claims (to look up its pinned key), or None if unreadable. Never raises."""
    try:
        obj = decode_cbor(bytes(data))
        origin = obj.get("origin") if isinstance(obj, dict) else None
        return origin if isinstance(origin, str) else None
    except Exception:  # noqa: BLE001 - attacker-controlled input
        return None


def verify_bundle(data: bytes, log_key: bytes | None = None) -> EvidenceReport:
    """Check a bundle offline. Pass the log's BLS key to pin the checkpoint signer
    (without it the signature is checked against the key inside the bundle and
    `log_key_pinned` is False). Never raises."""
    rep = EvidenceReport(ok=False)
    try:
        _verify(data, log_key, rep)
    except (LedgerError, Exception) as exc:  # noqa: BLE001 - attacker-controlled input
        rep.reasons.append(f"malformed bundle: {exc}")
    rep.ok = not rep.reasons
    return rep


def _verify(data: bytes, log_key: bytes | None, rep: EvidenceReport) -> None:
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_BUNDLE_BYTES:
        raise EvidenceError("bundle must be bytes under 1 GiB")
    obj = decode_cbor(bytes(data))
    keys = {"type", "v", "origin", "hash", "checkpoint", "entries", "registrations", "blobs"}
    if not isinstance(obj, dict) or set(obj) - {"window", "tree_heads", "proofs"} != keys:
        raise EvidenceError(f"bundle must be a map with keys {sorted(keys)}")
    if obj["type"] != BUNDLE_TYPE or obj["v"] != BUNDLE_VERSION:
        raise EvidenceError(f"not a v{BUNDLE_VERSION} {BUNDLE_TYPE} bundle")
    hash_name = obj["hash"]
    if hash_name not in merkle.HASH_NAMES:
        raise EvidenceError(f"unknown hash {hash_name!r}")
    scp = checkpoint_from_obj(obj["checkpoint"])
    rep.checkpoint = scp
    cp = scp.checkpoint
    if cp.origin != obj["origin"] or cp.hash != hash_name:
        rep.reasons.append("checkpoint origin/hash differ from the bundle's")
    rep.log_key_pinned = log_key is not None
    if not scp.verify(log_key):
        rep.reasons.append("checkpoint signature does not verify" + (" under the pinned log key" if log_key else ""))

    def included(i: int, d: bytes, p: list[bytes], what: str) -> bool:
        if not merkle.verify_inclusion(d, i, cp.size, p, cp.root, hash_name):
            rep.reasons.append(f"{what} at index {i}: inclusion proof does not verify against the checkpoint")
            return False
        return True

    regs: dict[str, bytes] = {}
    for r in obj["registrations"]:
        i, d, p = _leaf(r, "registration")
        try:
            e = E.decode_entry(d)
        except LedgerError as exc:
            rep.reasons.append(f"registration at index {i}: {exc}")
            continue
        if e.kind != E.REGISTER:
            rep.reasons.append(f"registration at index {i} is a {e.kind} entry")
            continue
        if not included(i, d, p, "registration"):
            continue
        if not e.verify_sig(e.body["ed25519"]) or not bls_pop_verify(e.body["bls"], e.body["bls_pop"]):
            rep.reasons.append(f"registration at index {i}: self-signature or BLS proof of possession invalid")
            continue
        regs[e.author] = e.body["ed25519"]
        rep.keys[e.author] = e.body["ed25519"]
        rep.registrations.setdefault(e.author, (i, e))
    refs: set[bytes] = set()
    served_refs: set[bytes] = set()  # named by entries, served by nodes: carried if the exporter had them
    if not obj["entries"]:
        rep.reasons.append("bundle has no entries")
    for r in obj["entries"]:
        i, d, p = _leaf(r, "entry")
        try:
            e = E.decode_entry(d)
        except LedgerError as exc:
            rep.reasons.append(f"entry at index {i}: {exc}")
            continue
        rep.entries.append((i, e))
        included(i, d, p, "entry")
        key = regs.get(e.author)
        if key is None:
            rep.reasons.append(f"entry at index {i}: author {e.author!r} has no verified registration in the bundle")
        elif not e.verify_sig(key):
            rep.reasons.append(f"entry at index {i}: signature does not verify under {e.author!r}'s registered key")
        refs.update(e.blob_refs())
        served_refs.update(e.served_refs())
    if not isinstance(obj["blobs"], list) or not all(isinstance(b, bytes) for b in obj["blobs"]):
        raise EvidenceError("blobs must be a list of byte strings")
    for b in obj["blobs"]:
        d = blob_digest(b)
        if d not in refs and d not in served_refs:
            rep.reasons.append(f"blob {d.hex()} is not referenced by any entry (or its bytes were altered)")
        rep.blobs[d] = b
    rep.missing_blobs = {d for d in refs if d not in rep.blobs}  # a checker that needs one cannot decide
    proofs = obj.get("proofs", [])
    if not isinstance(proofs, list) or not all(isinstance(p, bytes) for p in proofs):
        raise EvidenceError("proofs must be a list of byte strings")
    rep.proofs = list(proofs)
    for th in obj.get("tree_heads", []):
        if not isinstance(th, dict) or set(th) != {"size", "root", "proof"}:
            raise EvidenceError("tree head: expected {size, root, proof}")
        if merkle.verify_consistency(th["size"], cp.size, th["root"], cp.root, th["proof"], hash_name):
            rep.tree_heads[th["size"]] = th["root"]
        else:
            rep.reasons.append(f"tree head at size {th['size']}: consistency proof does not verify")
    if "window" in obj:
        if not isinstance(obj["window"], list):
            raise EvidenceError("window must be a list of leaves")
        for k, r in enumerate(obj["window"]):
            i, d, p = _leaf(r, "window leaf")
            if k and i != rep.window[-1][0] + 1:
                rep.reasons.append(f"window leaf at index {i} does not follow index {rep.window[-1][0]}")
            if included(i, d, p, "window leaf"):
                rep.window.append((i, d))
