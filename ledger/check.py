"""Integrity check of a whole ledger, pure over its rows (the database adapter is `Ledger.check`).

Recomputes every leaf hash and the tree from the stored entries (RFC 9162
section 2.1.1), re-verifies every entry (canonical CBOR, schema, Ed25519
signature under the key of an earlier registration), every blob digest,
every stored tree node, every checkpoint signature and every checkpoint root.
Reports every finding with the first bad leaf index it implicates; the report's
`first_bad_index` is the smallest.
"""
from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple

from ledger import entries as E
from ledger import merkle
from ledger.blobs import BlobCodecError, blob_digest, unpack_blob
from ledger.checkpoints import SignedCheckpoint, checkpoint_from_obj, decode_checkpoint
from ledger.errors import LedgerError
from ledger.keys import bls_pop_verify
from ledger.retention import RetentionIndex


class EntryRow(NamedTuple):
    idx: int
    kind: str
    author: str
    job_id: str | None
    node: str
    data: bytes


@dataclass(frozen=True)
class Finding:
    index: int | None  # first leaf index implicated; None when no index applies
    reason: str


@dataclass
class CheckReport:
    """Outcome of `check_rows`: ok, or the first bad index with its reason."""

    ok: bool = True
    origin: str = ""
    hash_name: str = "blake3"
    size: int = 0
    root: bytes = b""
    entries: int = 0
    signatures: int = 0
    registrations: int = 0
    checkpoints: int = 0
    blobs: int = 0
    pruned_blobs: int = 0  # referenced blobs deleted by retention (ledger.retention), not damage
    pruned_bytes: int = 0
    tree_nodes: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    first_bad_index: int | None = None
    reason: str | None = None

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "origin": self.origin,
            "hash": self.hash_name,
            "size": self.size,
            "root": self.root.hex(),
            "entries": self.entries,
            "signatures": self.signatures,
            "registrations": self.registrations,
            "checkpoints": self.checkpoints,
            "blobs": self.blobs,
            "pruned_blobs": self.pruned_blobs,
            "pruned_bytes": self.pruned_bytes,
            "tree_nodes": self.tree_nodes,
            "seconds": round(self.seconds, 3),
            "first_bad_index": self.first_bad_index,
            "reason": self.reason,
            "findings": [{"index": f.index, "reason": f.reason} for f in self.findings],
        }


def _merge_leaves(
    entry_rows: Iterable[EntryRow], leaf_rows: Iterable[tuple[int, bytes]]
) -> Iterator[tuple[int, EntryRow | None, bytes | None]]:
    """Join entries and stored level-0 nodes on index, yielding every index either has."""
    ei, li = iter(entry_rows), iter(leaf_rows)
    e, lf = next(ei, None), next(li, None)
    while e is not None or lf is not None:
        ie = e.idx if e is not None else None
        il = lf[0] if lf is not None else None
        if il is None or (ie is not None and ie < il):
            yield ie, e, None  # type: ignore[misc]
            e = next(ei, None)
        elif ie is None or il < ie:
            yield il, None, bytes(lf[1])  # type: ignore[index]
            lf = next(li, None)
        else:
            yield ie, e, bytes(lf[1])  # type: ignore[index]
            e, lf = next(ei, None), next(li, None)


def check_rows(
    meta: dict[str, bytes],
    entry_rows: Iterable[EntryRow],
    leaf_rows: Iterable[tuple[int, bytes]],
    interior_rows: Iterable[tuple[int, bytes]],
    checkpoint_rows: Iterable[tuple[int, bytes, bytes]],
    blob_rows: Iterable[tuple[bytes, int, bytes]],
    registration_rows: Iterable[tuple[str, int, bytes, bytes]],
    log_key: bytes | None = None,
    max_findings: int = 1000,
    pruned_rows: Iterable[tuple[bytes, int, int]] = (),
) -> CheckReport:
    """Check a ledger given its rows.

    entry_rows: EntryRow by idx; leaf_rows: (idx, hash) of level-0 tree nodes by idx;
    interior_rows: (nid, hash) of tree nodes of level >= 1 by nid; checkpoint_rows:
    (size, root, data); blob_rows: (digest, size, data); registration_rows:
    (node_id, idx, ed25519, bls); pruned_rows: (digest, size, pruned_at) of the blobs
    deleted by retention. `log_key` pins the checkpoint signer (default: the key in the
    ledger metadata). A referenced blob that is missing is damage unless it was pruned
    and the retention rule (ledger.retention) releases it: then it is counted in
    `pruned_blobs`, never a finding.
    """
    t0 = time.perf_counter()
    rep = CheckReport()
    findings = rep.findings

    def bad(index: int | None, reason: str) -> None:
        if len(findings) < max_findings:
            findings.append(Finding(index, reason))

    hash_name = meta.get("hash", b"blake3").decode()
    rep.hash_name = hash_name
    rep.origin = meta.get("origin", b"").decode()
    if hash_name not in merkle.HASH_NAMES:
        bad(None, f"ledger metadata names unknown hash {hash_name!r}")
        return _finish(rep, t0)
    h = merkle.hasher(hash_name)
    log_key = log_key if log_key is not None else meta.get("log_key")
    log_node = meta["log_node"].decode() if "log_node" in meta else None
    if log_key is not None and meta.get("log_key") not in (None, log_key):
        bad(None, "ledger metadata log key differs from the pinned log key")

    # blobs
    blob_state: dict[bytes, str] = {}
    for digest, size, data in blob_rows:
        rep.blobs += 1
        digest = bytes(digest)
        try:
            data = unpack_blob(int(size), bytes(data))  # stored as it is or compressed (ledger.blobs)
        except BlobCodecError as exc:
            blob_state[digest] = f"stored bytes do not decode to its size: {exc}"
            continue
        if blob_digest(data) != digest:
            blob_state[digest] = "bytes do not match its digest"
        else:
            blob_state[digest] = ""
    referenced: set[bytes] = set()
    pruned = {bytes(d): int(size) for d, size, _at in pruned_rows}
    retention = RetentionIndex()
    pruned_refs: dict[bytes, int] = {}  # pruned and missing referenced blob -> first entry referring to it

    # entries, in index order, joined with the stored leaf hashes
    leaves = bytearray()
    seen: dict[int, int] = {}
    registry: dict[str, bytes] = {}
    reg_index: dict[str, tuple[int, bytes, bytes]] = {}
    cp_entries: list[tuple[int, SignedCheckpoint]] = []
    expected = 0
    tree_ok = True  # leaves[] is complete and trustworthy up to `expected`
    for idx, row, stored in _merge_leaves(entry_rows, leaf_rows):
        if idx != expected:
            bad(expected, f"entries {expected}..{idx - 1} and their tree nodes are missing (deleted)")
            tree_ok = False
            expected = idx
        expected += 1
        if row is None:
            bad(idx, "entry row is missing (deleted or truncated) but its tree node remains")
            tree_ok = False
            continue
        rep.entries += 1
        data = bytes(row.data)
        lh = h(b"\x00" + data)
        if stored is None:
            bad(idx, "stored tree node for this leaf is missing")
        elif stored != lh:
            bad(idx, "leaf hash of the stored entry differs from the stored tree (entry changed or rows reordered)")
        if tree_ok:
            leaves += lh
        key = int.from_bytes(lh[:8], "big")
        if tree_ok and key in seen and bytes(leaves[seen[key] * 32 : seen[key] * 32 + 32]) == lh:
            bad(idx, f"duplicate of entry {seen[key]}")
        seen.setdefault(key, idx)
        try:
            e = E.decode_entry(data)
        except LedgerError as exc:
            bad(idx, f"entry does not decode: {type(exc).__name__}: {exc}")
            continue
        if (row.kind, row.author, row.job_id, row.node) != (e.kind, e.author, e.job_id, e.node):
            bad(idx, "index columns (kind/author/job_id/node) disagree with the entry")
        if e.kind == E.REGISTER:
            rep.registrations += 1
            b = e.body
            if e.author in registry:
                bad(idx, f"second registration of {e.author!r}")
            elif not e.verify_sig(b["ed25519"]):
                bad(idx, "registration is not signed by the key it registers")
            elif not bls_pop_verify(b["bls"], b["bls_pop"]):
                bad(idx, "registration's BLS proof of possession does not verify")
            else:
                registry[e.author] = b["ed25519"]
                reg_index[e.author] = (idx, b["ed25519"], b["bls"])
            rep.signatures += 1
        else:
            key_ = registry.get(e.author)
            if key_ is None:
                bad(idx, f"author {e.author!r} is not registered before this entry")
            elif not e.verify_sig(key_):
                bad(idx, f"signature by {e.author!r} does not verify")
            rep.signatures += 1
        if e.kind == E.CHECKPOINT:
            if e.author != log_node:
                bad(idx, "checkpoint entry not authored by the log")
            try:
                cp_entries.append((idx, checkpoint_from_obj(e.body["checkpoint"])))
            except LedgerError as exc:
                bad(idx, f"checkpoint entry is malformed: {exc}")
        retention.add(e)
        for d in e.blob_refs():
            referenced.add(d)
            state = blob_state.get(d)
            if state is None and d in pruned:
                pruned_refs.setdefault(d, idx)  # judged below, once every entry is known
            elif state is None:
                bad(idx, f"refers to blob {d.hex()} which is missing")
            elif state:
                bad(idx, f"refers to blob {d.hex()} whose {state}")
    n = expected
    rep.size = n
    releasable = retention.prunable() if pruned_refs else set()
    for d, idx in sorted(pruned_refs.items(), key=lambda x: x[1]):
        if d in releasable:
            rep.pruned_blobs += 1
            rep.pruned_bytes += pruned[d]
        else:
            bad(idx, f"refers to blob {d.hex()} which is missing: recorded as pruned, but the retention rule "
                     "never releases it (only the openings and the dealer's release of a job with a verdict or job.fail)")
    for d, state in blob_state.items():
        if state and d not in referenced:
            bad(None, f"unreferenced blob {d.hex()}: {state}")

    # the derived registrations table must agree with the entries
    for node_id, ridx, ed, bls in registration_rows:
        want = reg_index.get(node_id)
        if want is None or want != (int(ridx), bytes(ed), bytes(bls)):
            bad(want[0] if want else int(ridx), f"registrations table row for {node_id!r} disagrees with the log")

    leaf_bad = sorted({f.index for f in findings if f.index is not None})

    def pinpoint(lo: int, hi: int) -> int:
        """The first leaf-level finding in [lo, hi) (it explains a bad node or root), else lo."""
        k = bisect.bisect_left(leaf_bad, lo)
        return leaf_bad[k] if k < len(leaf_bad) and leaf_bad[k] < hi else lo

    # all levels of the recomputed tree; compare the stored interior nodes
    levels = [bytes(leaves)] if tree_ok else []
    if tree_ok:
        cur = levels[0]
        while len(cur) >= 64:
            nxt = bytearray()
            for i in range(0, len(cur) - 63, 64):
                nxt += h(b"\x01" + cur[i : i + 64])
            cur = bytes(nxt)
            levels.append(cur)
    stored_counts: dict[int, int] = {}
    for nid, hv in interior_rows:
        rep.tree_nodes += 1
        level, i = merkle.node_level_idx(int(nid))
        stored_counts[level] = stored_counts.get(level, 0) + 1
        first = i << level
        if first + (1 << level) > n:
            bad(n, f"tree node ({level}, {i}) covers leaves beyond the log size {n} (log truncated)")
        elif tree_ok and (level >= len(levels) or levels[level][i * 32 : i * 32 + 32] != bytes(hv)):
            bad(pinpoint(first, first + (1 << level)), f"stored tree node ({level}, {i}) differs from the recomputed tree")
    if tree_ok:
        for level in range(1, len(levels)):
            want_count = n >> level
            if stored_counts.get(level, 0) < want_count:
                bad(None, f"{want_count - stored_counts.get(level, 0)} stored tree nodes of level {level} are missing")

    def root_at(size: int) -> bytes:
        if size == 0:
            return h(b"")
        hs = [levels[lv][i * 32 : i * 32 + 32] for lv, i in merkle.range_subtrees(0, size)]
        return merkle.fold_subtrees(hs, hash_name)

    if tree_ok:
        rep.root = root_at(n)

    # checkpoints: stored ones and those logged as entries
    cps: list[tuple[str, int | None, SignedCheckpoint]] = []
    for size, root, data in checkpoint_rows:
        try:
            scp = decode_checkpoint(bytes(data))
        except LedgerError as exc:
            bad(None, f"stored checkpoint does not decode: {exc}")
            continue
        if scp.size != size or scp.root != bytes(root):
            bad(None, f"checkpoints table columns disagree with the signed checkpoint of size {scp.size}")
        cps.append(("stored checkpoint", None, scp))
    cps += [("checkpoint entry", i, scp) for i, scp in cp_entries]
    good_sizes = [0]
    checked: list[tuple[str, int | None, SignedCheckpoint]] = []
    for what, at, scp in cps:
        rep.checkpoints += 1
        cp = scp.checkpoint
        where = f"{what} at index {at}" if at is not None else what
        if cp.origin != rep.origin or cp.hash != hash_name:
            bad(at, f"{where} is for origin {cp.origin!r} / {cp.hash}, not this ledger")
            continue
        if log_key is None or not scp.verify(log_key):
            bad(at, f"{where} of size {cp.size}: signature does not verify under the log key")
            continue
        if at is not None and cp.size > at:
            bad(at, f"{where} claims size {cp.size} but sits at index {at}")
            continue
        checked.append((where, at, scp))
    for where, at, scp in sorted(checked, key=lambda x: x[2].size):
        cp = scp.checkpoint
        if cp.size > n:
            bad(n, f"log truncated: {where} is signed for size {cp.size} but only {n} entries remain")
        elif not tree_ok:
            continue
        elif root_at(cp.size) != cp.root:
            g = max(s for s in good_sizes if s <= cp.size)
            g = pinpoint(g, cp.size)
            bad(g, f"root at size {cp.size} differs from the signed {where}: entries in [{g}, {cp.size}) were altered")
        else:
            good_sizes.append(cp.size)
    return _finish(rep, t0)


def _finish(rep: CheckReport, t0: float) -> CheckReport:
    rep.seconds = time.perf_counter() - t0
    rep.ok = not rep.findings
    indexed = [f for f in rep.findings if f.index is not None]
    if indexed:
        first = min(indexed, key=lambda f: f.index)  # type: ignore[arg-type,return-value]
        rep.first_bad_index, rep.reason = first.index, first.reason
    elif rep.findings:
        rep.reason = rep.findings[0].reason
    return rep
