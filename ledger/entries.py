"""Ledger entries: kinds, body schemas, canonical encoding, Ed25519 signing and verification.

An entry is a deterministic-CBOR map (RFC 8949 section 4.2.1 via
mpc_core.encoding) with exactly the keys
    {"v": 1, "kind": str, "author": str, "time": uint ms, "body": map, "sig": bytes(64)}
The signature is Ed25519 over LEDGER_ENTRY_SIG || canonical_cbor(entry without "sig").
The Merkle leaf is the full encoded entry. Formats: specs/ledger.md.
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ledger.errors import (
    BadSignature,
    EntryTooLarge,
    MalformedEntry,
    SchemaError,
    UnknownKind,
    UnsupportedVersion,
)
from ledger.keys import BLS_PUB, BLS_SIG, ED25519_PUB, ED25519_SIG, Identity, ed25519_verify
from mpc_core import domains
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.errors import EncodingError

SCHEMA_VERSION = 1
MAX_ENTRY_BYTES = 64 * 1024
MAX_ID = 128  # node ids, job ids, model ids
MAX_LIST = 4096
ROLES = ("node", "owner", "client", "dealer", "verifier", "log", "witness")
OUTCOMES = ("pass", "fail", "incomplete", "error")
U64 = (1 << 64) - 1

# Kind names (the "kind" field).
REGISTER = "node.register"
MODEL = "model.publish"
JOB_OPEN = "job.open"
JOB_ASSIGN = "job.assign"
DEALER_COMMIT = "dealer.commit"
STEP_COMMIT = "step.commit"
JOB_ROOT = "node.job_root"
CHALLENGE = "challenge"
OPENING = "opening"
VERDICT = "verdict"
CHECKPOINT = "checkpoint"
REFRESH = "model.refresh"  # the owner's commitments to one job's refreshed weight shares
REVEAL = "challenge.reveal"  # a participant's beacon value, revealed after the seal (protocol.challenge)
RELEASE = "dealer.release"  # the dealer's release of the opened parties' seeds (and corrections)
HEARTBEAT = "node.heartbeat"  # a daemon says it is live and which models it holds (author = body.node)
JOB_FAIL = "job.fail"  # the job's opener closes a job that failed, with a reason
JOB_RESUME = "job.resume"  # the job's opener hands a lost share index to a standby node (specs/node-daemon.md 8)
COSIGN = "checkpoint.cosign"  # a witness's BLS cosignature of a checkpoint it checked (ledger.witness)
BLOB_REQUEST = "blob.request"  # an auditor asks for a blob that a node serves itself to be put on the ledger
BLOB_PROVIDE = "blob.provide"  # the node puts such a blob on the ledger (answering a request)


# --- a small schema language -----------------------------------------------
class _Field:
    """Validator for one value; `blob` marks a blob-digest reference."""

    def __init__(self, check: Callable[[Any, str], None], blob: bool = False, sub: "dict[str, _Spec] | None" = None):
        self.check = check
        self.blob = blob
        self.sub = sub


_Spec = tuple[_Field, bool]  # (validator, required)


def _fail(path: str, msg: str) -> None:
    raise SchemaError(f"{path}: {msg}")


def Str(max_len: int = MAX_ID, min_len: int = 1, choices: tuple[str, ...] | None = None) -> _Field:
    def check(v: Any, path: str) -> None:
        if not isinstance(v, str):
            _fail(path, f"expected str, got {type(v).__name__}")
        if not min_len <= len(v) <= max_len:
            _fail(path, f"length {len(v)} outside [{min_len}, {max_len}]")
        if choices is not None and v not in choices:
            _fail(path, f"{v!r} not one of {choices}")

    return _Field(check)


def Int(lo: int = 0, hi: int = U64) -> _Field:
    def check(v: Any, path: str) -> None:
        if not isinstance(v, int) or isinstance(v, bool):
            _fail(path, f"expected int, got {type(v).__name__}")
        if not lo <= v <= hi:
            _fail(path, f"{v} outside [{lo}, {hi}]")

    return _Field(check)


def Bytes(n: int | None = None, max_len: int = 1024) -> _Field:
    def check(v: Any, path: str) -> None:
        if not isinstance(v, bytes):
            _fail(path, f"expected bytes, got {type(v).__name__}")
        if n is not None and len(v) != n:
            _fail(path, f"expected {n} bytes, got {len(v)}")
        if len(v) > max_len:
            _fail(path, f"{len(v)} bytes > {max_len}")

    return _Field(check)


def Blob() -> _Field:
    """A 32-byte blake3 digest of a blob that must be in the blob store."""
    f = Bytes(32)
    return _Field(f.check, blob=True)


def List(item: _Field, min_len: int = 0, max_len: int = MAX_LIST) -> _Field:
    def check(v: Any, path: str) -> None:
        if not isinstance(v, list):
            _fail(path, f"expected list, got {type(v).__name__}")
        if not min_len <= len(v) <= max_len:
            _fail(path, f"list length {len(v)} outside [{min_len}, {max_len}]")
        for i, x in enumerate(v):
            item.check(x, f"{path}[{i}]")

    return _Field(check, blob=item.blob, sub={"*": (item, True)})


def Record(spec: "dict[str, _Spec]") -> _Field:
    def check(v: Any, path: str) -> None:
        validate_map(v, spec, path)

    return _Field(check, sub=spec)


def Any_() -> _Field:
    """Any canonical-CBOR value (its structure is checked by the typed body in protocol.bodies)."""
    return _Field(lambda v, path: None)


def AnyMap() -> _Field:
    """Free-form str-keyed map (extensions); canonical CBOR already bans floats."""

    def check(v: Any, path: str) -> None:
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            _fail(path, "expected a map with str keys")

    return _Field(check)


def validate_map(v: Any, spec: "dict[str, _Spec]", path: str) -> None:
    """Check `v` is a map with exactly the fields of `spec` (required ones present, no others)."""
    if not isinstance(v, dict):
        _fail(path, f"expected map, got {type(v).__name__}")
    for k in v:
        if k not in spec:
            _fail(path, f"unexpected field {k!r}")
    for k, (f, required) in spec.items():
        if k in v:
            f.check(v[k], f"{path}.{k}")
        elif required:
            _fail(path, f"missing field {k!r}")


def _req(f: _Field) -> _Spec:
    return (f, True)


def _opt(f: _Field) -> _Spec:
    return (f, False)


_META = {"meta": _opt(AnyMap())}
_JOB = {"job_id": _req(Str())}

SCHEMAS: dict[str, dict[str, _Spec]] = {
    REGISTER: {
        "node_id": _req(Str()),
        "roles": _req(List(Str(32, choices=ROLES), 1, len(ROLES))),
        "ed25519": _req(Bytes(ED25519_PUB)),
        "bls": _req(Bytes(BLS_PUB)),
        "bls_pop": _req(Bytes(BLS_SIG)),
        "x25519": _opt(Bytes(32)),
        "endpoint": _opt(Str(256, min_len=0)),
        "operator": _opt(Str()),  # who runs the node (default: the node itself); protocol.job_view
        **_META,
    },
    MODEL: {
        "model_id": _req(Str()),
        "manifest": _req(Blob()),
        "n_shares": _req(Int(1, 1 << 16)),
        "commitments": _req(Bytes(32)),
        **_META,
    },
    JOB_OPEN: {
        **_JOB,
        "model_id": _req(Str()),
        "n_parties": _req(Int(1, 1 << 16)),
        "replicas": _req(Int(1, 1 << 16)),
        "stages": _req(Int(1, 1 << 16)),
        "dealer": _req(Str()),
        "client": _opt(Str()),
        "params": _opt(AnyMap()),
        **_META,
    },
    JOB_ASSIGN: {
        **_JOB,
        "assignments": _req(
            List(
                Record(
                    {
                        "node": _req(Str()),
                        "party": _req(Int(0, 1 << 16)),
                        "replica": _req(Int(0, 1 << 16)),
                        "stage": _req(Int(0, 1 << 16)),
                    }
                ),
                1,
            )
        ),
        **_META,
    },
    DEALER_COMMIT: {
        **_JOB,
        "seeds": _req(List(Record({"party": _req(Int(0, 1 << 16)), "commitment": _req(Bytes(32))}), 1)),
        "beacon": _req(Bytes(32)),
        # the seed of a standby's share index, sealed to it (prover.channels): it resumes that index if lost
        "standby": _opt(List(Record({"node": _req(Str()), "party": _req(Int(0, 1 << 16)),
                                     "sealed": _req(Bytes(max_len=4096))}))),
        **_META,
    },
    STEP_COMMIT: {
        **_JOB,
        "node": _req(Str()),
        "party": _req(Int(0, 1 << 16)),
        "replica": _opt(Int(0, 1 << 16)),
        "stage": _opt(Int(0, 1 << 16)),
        "first_step": _req(Int()),
        "count": _req(Int(1)),
        "root": _req(Bytes(32)),
        "label": _opt(Str(256)),
        "digests": _opt(Blob()),
        **_META,
    },
    JOB_ROOT: {
        **_JOB,
        "node": _req(Str()),
        "party": _req(Int(0, 1 << 16)),
        "replica": _req(Int(0, 1 << 16)),
        "stage": _opt(Int(0, 1 << 16)),
        "root": _req(Bytes(32)),
        "n_steps": _req(Int()),
        "bls_sig": _req(Bytes(BLS_SIG)),
        "views_root": _req(Bytes(32)),
        "opened_root": _req(Bytes(32)),
        "beacon": _req(Bytes(32)),
        "receipts": _opt(List(Any_())),
        "disputes": _opt(List(Int(0, 1 << 16))),
        "corrections": _opt(Bytes(32)),
        **_META,
    },
    REVEAL: {
        **_JOB,
        "party": _opt(Int(0, 1 << 16)),  # absent: the dealer's slot
        "value": _req(Bytes(32)),
        **_META,
    },
    RELEASE: {
        **_JOB,
        "challenge": _req(Int()),
        "data": _opt(Blob()),  # stored on the ledger, or served by the dealer (protocol.bodies.DealerRelease)
        "data_hash": _opt(Bytes(32)),
        "url": _opt(Str(256)),
        **_META,
    },
    CHALLENGE: {
        **_JOB,
        "checkpoint_size": _req(Int()),
        "checkpoint_root": _req(Bytes(32)),
        "seed": _req(Bytes(32)),
        "parties": _req(List(Int(0, 1 << 16))),
        "steps": _opt(List(Int())),
        "lambda": _opt(Int(0, 1024)),
        **_META,
    },
    OPENING: {
        **_JOB,
        "node": _req(Str()),
        "party": _req(Int(0, 1 << 16)),
        "challenge": _req(Int()),
        "data": _opt(Blob()),  # the party's own opening (protocol/opening.py), stored on the ledger
        "public": _opt(Blob()),  # the public values it saw, one blob per job when the parties agree
        # or the same two blobs served by the node itself, by digest (protocol.bodies.Opening)
        "data_hash": _opt(Bytes(32)),
        "public_hash": _opt(Bytes(32)),
        "url": _opt(Str(256)),  # where the node serves them: http://HOST:PORT (GET /v1/blobs/<hex digest>)
        **_META,
    },
    BLOB_REQUEST: {
        **_JOB,
        "digest": _req(Bytes(32)),
        **_META,
    },
    BLOB_PROVIDE: {
        **_JOB,
        "data": _req(Blob()),
        **_META,
    },
    VERDICT: {
        **_JOB,
        "outcome": _req(Str(32, choices=OUTCOMES)),
        "accused": _req(List(Str())),
        "reason": _req(Str(4096, min_len=0)),
        "evidence": _opt(List(Blob())),
        "soundness_bits": _opt(Int(0, 4096)),
        "defaulted": _opt(List(Str())),
        **_META,
    },
    REFRESH: {
        **_JOB,
        "model_id": _req(Str()),
        "commitments": _req(Blob()),  # canonical CBOR {tensor name: [commitment of party i's refreshed share]}
        **_META,
    },
    HEARTBEAT: {
        "node": _req(Str()),
        "models": _req(List(Str())),  # ids of the published models whose share this node holds
        **_META,
    },
    JOB_FAIL: {
        **_JOB,
        "reason": _req(Str(4096)),
        **_META,
    },
    JOB_RESUME: {
        **_JOB,
        "party": _req(Int(0, 1 << 16)),  # the share index every replica of which was lost
        "standby": _req(Str()),  # the node that takes it over (named in job.open params.standby)
        "lost": _req(Str()),  # the node it replaces
        **_META,
    },
    CHECKPOINT: {
        "checkpoint": _req(AnyMap()),  # a SignedCheckpoint object, checked by ledger.checkpoints
        **_META,
    },
    COSIGN: {
        "size": _req(Int()),
        "root": _req(Bytes(32)),
        "sig": _req(Bytes(BLS_SIG)),  # BLS over Checkpoint(origin, size, root, hash).message()
        **_META,
    },
}
KINDS = tuple(SCHEMAS)


def _collect_blobs(v: Any, spec: "dict[str, _Spec]", out: list[bytes]) -> None:
    for k, (f, _req_) in spec.items():
        if k not in v:
            continue
        x = v[k]
        if f.blob and isinstance(x, bytes):
            out.append(x)
        elif f.sub is not None:
            if "*" in f.sub and isinstance(x, list):
                item = f.sub["*"][0]
                for y in x:
                    if item.blob and isinstance(y, bytes):
                        out.append(y)
                    elif item.sub is not None and isinstance(y, dict):
                        _collect_blobs(y, item.sub, out)
            elif isinstance(x, dict):
                _collect_blobs(x, f.sub, out)


# --- the entry -------------------------------------------------------------
def now_ms() -> int:
    """Wall-clock time in integer milliseconds (no floats in signed data)."""
    return _time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Entry:
    """One signed ledger entry."""

    kind: str
    author: str
    time: int
    body: dict
    sig: bytes = b""
    v: int = SCHEMA_VERSION

    def unsigned_obj(self) -> dict:
        return {"v": self.v, "kind": self.kind, "author": self.author, "time": self.time, "body": self.body}

    def tbs(self) -> bytes:
        """The bytes the author signs: LEDGER_ENTRY_SIG || canonical_cbor(entry without sig)."""
        try:
            return domains.LEDGER_ENTRY_SIG + canonical_cbor(self.unsigned_obj())
        except EncodingError as exc:
            raise MalformedEntry(str(exc)) from exc

    def encode(self) -> bytes:
        """Canonical CBOR of the signed entry (the Merkle leaf data)."""
        try:
            return canonical_cbor({**self.unsigned_obj(), "sig": self.sig})
        except EncodingError as exc:
            raise MalformedEntry(str(exc)) from exc

    def signed(self, identity: Identity) -> "Entry":
        """A copy signed by `identity` (whose node id must be the author)."""
        if identity.node_id != self.author:
            raise BadSignature(f"identity {identity.node_id!r} cannot sign for author {self.author!r}")
        return Entry(self.kind, self.author, self.time, self.body, identity.sign(self.tbs()), self.v)

    def verify_sig(self, ed25519_pub: bytes) -> bool:
        """True iff the signature verifies under `ed25519_pub`. Never raises."""
        try:
            return ed25519_verify(ed25519_pub, self.tbs(), self.sig)
        except Exception:  # noqa: BLE001
            return False

    @property
    def job_id(self) -> str | None:
        j = self.body.get("job_id")
        return j if isinstance(j, str) else None

    @property
    def node(self) -> str:
        """The node an entry is about: body.node if present, else the author."""
        n = self.body.get("node")
        return n if isinstance(n, str) else self.author

    def served_refs(self) -> list[bytes]:
        """Digests of blobs this entry names but that are served elsewhere (a node's served opening):
        never required on the ledger, but self-authenticating wherever they are carried (evidence)."""
        if self.kind not in (OPENING, RELEASE) or not isinstance(self.body, dict):
            return []
        return [v for k in ("data_hash", "public_hash") if isinstance(v := self.body.get(k), bytes)]

    def blob_refs(self) -> list[bytes]:
        """Blob digests this entry refers to."""
        out: list[bytes] = []
        spec = SCHEMAS.get(self.kind)
        if spec is not None and isinstance(self.body, dict):
            _collect_blobs(self.body, spec, out)
        return out


def validate(entry: Entry) -> None:
    """Check version, kind, author, time and body schema (raises an EntryError)."""
    if entry.v != SCHEMA_VERSION:
        raise UnsupportedVersion(f"entry schema version {entry.v!r} not supported (this code: {SCHEMA_VERSION})")
    if not isinstance(entry.kind, str) or entry.kind not in SCHEMAS:
        raise UnknownKind(f"unknown entry kind {entry.kind!r}")
    Str().check(entry.author, "author")
    Int().check(entry.time, "time")
    validate_map(entry.body, SCHEMAS[entry.kind], "body")
    if entry.kind == REGISTER and entry.body["node_id"] != entry.author:
        raise SchemaError("body.node_id: a registration must be authored by the node it registers")
    if not isinstance(entry.sig, bytes) or len(entry.sig) != ED25519_SIG:
        raise BadSignature("missing or malformed signature (need 64 bytes)")


def make_entry(identity: Identity, kind: str, body: Mapping[str, Any], time: int | None = None) -> Entry:
    """Build, validate and sign an entry of `kind` authored by `identity`."""
    e = Entry(kind, identity.node_id, now_ms() if time is None else time, dict(body), b"\x00" * ED25519_SIG)
    validate(e)
    e = e.signed(identity)
    if len(e.encode()) > MAX_ENTRY_BYTES:
        raise EntryTooLarge(f"entry is {len(e.encode())} bytes > {MAX_ENTRY_BYTES}")
    return e


def registration(
    identity: Identity,
    roles: Iterable[str] = ("node",),
    endpoint: str | None = None,
    x25519: bytes | None = None,
    time: int | None = None,
    meta: Mapping[str, Any] | None = None,
    operator: str | None = None,
) -> Entry:
    """A self-signed node.register entry carrying the identity's public keys and BLS proof of possession,
    and the operator that runs the node when it is declared (None: the node is its own operator)."""
    body: dict[str, Any] = {
        "node_id": identity.node_id,
        "roles": list(roles),
        "ed25519": identity.ed25519_pub,
        "bls": identity.bls_pub,
        "bls_pop": identity.bls_pop,
    }
    if endpoint is not None:
        body["endpoint"] = endpoint
    if x25519 is not None:
        body["x25519"] = x25519
    if operator is not None:
        body["operator"] = operator
    if meta:
        body["meta"] = dict(meta)
    return make_entry(identity, REGISTER, body, time)


def registered_operator(entry: Entry) -> str:
    """The operator a `node.register` entry declares: its `operator` field, else the node's own id (a node
    that declares none is its own operator). Raises SchemaError for an entry of another kind."""
    if entry.kind != REGISTER or not isinstance(entry.body, dict):
        raise SchemaError(f"a {entry.kind} entry declares no operator (only {REGISTER} does)")
    op = entry.body.get("operator")
    return op if isinstance(op, str) else entry.author


def decode_entry(data: bytes) -> Entry:
    """Parse and validate an encoded entry (raises an EntryError; never AssertionError)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedEntry(f"entry must be bytes, got {type(data).__name__}")
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryTooLarge(f"entry is {len(data)} bytes > {MAX_ENTRY_BYTES}")
    try:
        obj = decode_cbor(bytes(data))
    except EncodingError as exc:
        raise MalformedEntry(f"entry is not canonical CBOR: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedEntry("entry must be a CBOR map")
    keys = set(obj)
    want = {"v", "kind", "author", "time", "body", "sig"}
    if "v" in obj and obj["v"] != SCHEMA_VERSION:
        raise UnsupportedVersion(f"entry schema version {obj['v']!r} not supported (this code: {SCHEMA_VERSION})")
    if keys != want:
        if "sig" not in keys and keys == want - {"sig"}:
            raise BadSignature("entry has no signature")
        raise MalformedEntry(f"entry keys {sorted(map(str, keys))} != {sorted(want)}")
    e = Entry(obj["kind"], obj["author"], obj["time"], obj["body"], obj["sig"], obj["v"])
    validate(e)
    return e


def job_root_message(job_id: str, node: str, party: int, replica: int, root: bytes, n_steps: int) -> bytes:
    """What a node BLS-signs for its job root (aggregated per job by the verifier)."""
    return domains.LEDGER_JOB_ROOT + canonical_cbor(
        {"job_id": job_id, "node": node, "party": party, "replica": replica, "root": root, "n_steps": n_steps}
    )


def job_roots_aggregate_ok(job_roots: Iterable[Entry], bls_keys: Mapping[str, bytes]) -> bool:
    """One aggregate BLS check over the `node.job_root` entries of a job: every node's
    `bls_sig` over `job_root_message(...)` under its registered BLS key. Never raises."""
    from ledger.keys import bls_aggregate, bls_aggregate_verify

    try:
        pks, msgs, sigs = [], [], []
        for e in job_roots:
            b = e.body
            if e.kind != JOB_ROOT or e.author not in bls_keys:
                return False
            pks.append(bls_keys[e.author])
            msgs.append(job_root_message(b["job_id"], b["node"], b["party"], b["replica"], b["root"], b["n_steps"]))
            sigs.append(b["bls_sig"])
        return bool(pks) and bls_aggregate_verify(pks, msgs, bls_aggregate(sigs))
    except Exception:  # noqa: BLE001
        return False
