"""Typed bodies of the job protocol's ledger entries (specs/ledger.md, "Entry kinds").

One class per kind, in the style of python-tuf's metadata classes: `from_entry` checks the
kind, the ledger schema (ledger.entries.SCHEMAS: required fields, types, sizes) and the
structure the schema leaves open, and returns an object with named, typed fields; anything
else raises BodyError. `to_body` gives the body to sign. Nothing after parsing reads a raw dict.
Who may write each kind is not checked here but in protocol.job_view (the authorship table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ledger import entries as E
from ledger.errors import SchemaError
from protocol.errors import BodyError


def _checked(entry: E.Entry, kind: str) -> dict:
    if entry.kind != kind:
        raise BodyError(f"expected a {kind} entry, got {entry.kind}")
    try:
        E.validate_map(entry.body, E.SCHEMAS[kind], "body")
    except SchemaError as exc:
        raise BodyError(f"{kind}: {exc}") from None
    return entry.body


def _with_meta(body: dict, meta: dict) -> dict:
    if meta:
        body["meta"] = dict(meta)
    return body


@dataclass(frozen=True)
class JobOpen:
    """`job.open`: the client opens a job (model, share count, dealer, parameters)."""

    KIND: ClassVar[str] = E.JOB_OPEN
    job_id: str
    model_id: str
    n_parties: int
    dealer: str
    client: str | None = None
    replicas: int = 1
    stages: int = 1
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "JobOpen":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["model_id"], b["n_parties"], b["dealer"], b.get("client"), b["replicas"],
                   b["stages"], dict(b.get("params") or {}), dict(b.get("meta") or {}))

    def to_body(self) -> dict:
        body = {"job_id": self.job_id, "model_id": self.model_id, "n_parties": self.n_parties,
                "replicas": self.replicas, "stages": self.stages, "dealer": self.dealer, "params": dict(self.params)}
        if self.client is not None:
            body["client"] = self.client
        return _with_meta(body, self.meta)

    @property
    def standby(self) -> tuple[str, ...]:
        """The standby nodes the opener named (`params.standby`, node ids; malformed: none), in order."""
        v = self.params.get("standby")
        if not isinstance(v, list) or len(v) > E.MAX_LIST or not all(isinstance(x, str) and x for x in v):
            return ()
        return tuple(dict.fromkeys(v))

    @property
    def open_deadline(self) -> int:
        """How many signed checkpoints after a challenge (or a seal) a participant has to answer."""
        v = self.params.get("open_deadline", DEFAULT_OPEN_DEADLINE)
        return v if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 20 else DEFAULT_OPEN_DEADLINE


DEFAULT_OPEN_DEADLINE = 120  # checkpoints; `shardproof ledger serve` signs at most one per --interval (1 s)


@dataclass(frozen=True)
class Assignment:
    node: str
    party: int
    replica: int = 0
    stage: int = 0


@dataclass(frozen=True)
class JobAssign:
    """`job.assign`: which node holds which share index (replica, stage)."""

    KIND: ClassVar[str] = E.JOB_ASSIGN
    job_id: str
    assignments: tuple[Assignment, ...]

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "JobAssign":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], tuple(Assignment(a["node"], a["party"], a["replica"], a["stage"])
                                      for a in b["assignments"]))

    def to_body(self) -> dict:
        return {"job_id": self.job_id, "assignments": [
            {"node": a.node, "party": a.party, "replica": a.replica, "stage": a.stage} for a in self.assignments]}

    def nodes_by_party(self) -> dict[int, str]:
        """The node of each share index (replica 0, stage 0)."""
        out: dict[int, str] = {}
        for a in self.assignments:
            if a.replica == 0 and a.stage == 0:
                out.setdefault(a.party, a.node)
        return out


@dataclass(frozen=True)
class DealerCommit:
    """`dealer.commit`: the dealer's commitments to every party's seed, and its challenge beacon."""

    KIND: ClassVar[str] = E.DEALER_COMMIT
    job_id: str
    seeds: dict[int, bytes]
    beacon: bytes
    standby: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # node -> (its index, its sealed seed)

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "DealerCommit":
        b = _checked(entry, cls.KIND)
        seeds: dict[int, bytes] = {}
        for s in b["seeds"]:
            if s["party"] in seeds:
                raise BodyError(f"dealer.commit: party {s['party']} committed twice")
            seeds[s["party"]] = s["commitment"]
        standby: dict[str, tuple[int, bytes]] = {}
        for x in b.get("standby") or []:
            if x["node"] in standby:
                raise BodyError(f"dealer.commit: standby {x['node']!r} sealed twice")
            standby[x["node"]] = (x["party"], x["sealed"])
        return cls(b["job_id"], seeds, b["beacon"], standby)

    def to_body(self) -> dict:
        body = {"job_id": self.job_id, "beacon": self.beacon,
                "seeds": [{"party": p, "commitment": c} for p, c in sorted(self.seeds.items())]}
        if self.standby:
            body["standby"] = [{"node": nd, "party": p, "sealed": s} for nd, (p, s) in sorted(self.standby.items())]
        return body


@dataclass(frozen=True)
class Receipt:
    """A broadcast receipt a node heard from a peer: [sender, count, chain head, Ed25519 signature]."""

    sender: int
    count: int
    head: bytes
    sig: bytes

    def to_list(self) -> list:
        return [self.sender, self.count, self.head, self.sig]


def _receipt(v: Any) -> Receipt:
    if (not isinstance(v, list) or len(v) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v[:2])
            or not all(isinstance(x, bytes) for x in v[2:]) or len(v[2]) != 32 or len(v[3]) != 64):
        raise BodyError("node.job_root: a receipt must be [sender, count, head(32), signature(64)]")
    return Receipt(v[0], v[1], v[2], v[3])


@dataclass(frozen=True)
class JobRoot:
    """`node.job_root`: a node's signed commitment to its transcript, its beacon commitment and the
    receipts it holds."""

    KIND: ClassVar[str] = E.JOB_ROOT
    job_id: str
    node: str
    party: int
    replica: int
    root: bytes
    n_steps: int
    bls_sig: bytes
    views_root: bytes
    opened_root: bytes
    beacon: bytes
    receipts: tuple[Receipt, ...] = ()
    disputes: tuple[int, ...] = ()
    corrections: bytes | None = None  # the last party's Merkle root over the corrections it received

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "JobRoot":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["node"], b["party"], b["replica"], b["root"], b["n_steps"], b["bls_sig"],
                   b["views_root"], b["opened_root"], b["beacon"], tuple(_receipt(r) for r in b.get("receipts", [])),
                   tuple(b.get("disputes", [])), b.get("corrections"))

    def to_body(self) -> dict:
        body = {"job_id": self.job_id, "node": self.node, "party": self.party, "replica": self.replica,
                "root": self.root, "n_steps": self.n_steps, "bls_sig": self.bls_sig, "views_root": self.views_root,
                "opened_root": self.opened_root, "beacon": self.beacon}
        if self.receipts:
            body["receipts"] = [r.to_list() for r in self.receipts]
        if self.disputes:
            body["disputes"] = list(self.disputes)
        if self.corrections is not None:
            body["corrections"] = self.corrections
        return body


@dataclass(frozen=True)
class Reveal:
    """`challenge.reveal`: a participant's beacon value (party None: the dealer's slot)."""

    KIND: ClassVar[str] = E.REVEAL
    job_id: str
    party: int | None
    value: bytes

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "Reveal":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b.get("party"), b["value"])

    def to_body(self) -> dict:
        body: dict = {"job_id": self.job_id, "value": self.value}
        if self.party is not None:
            body["party"] = self.party
        return body


@dataclass(frozen=True)
class Challenge:
    """`challenge`: a record of the derived challenge (anyone may post it; only a derived one counts)."""

    KIND: ClassVar[str] = E.CHALLENGE
    job_id: str
    checkpoint_size: int
    checkpoint_root: bytes
    seed: bytes
    parties: tuple[int, ...]
    lam: int | None = None

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "Challenge":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["checkpoint_size"], b["checkpoint_root"], b["seed"], tuple(b["parties"]),
                   b.get("lambda"))

    def to_body(self) -> dict:
        body = {"job_id": self.job_id, "checkpoint_size": self.checkpoint_size, "checkpoint_root": self.checkpoint_root,
                "seed": self.seed, "parties": list(self.parties)}
        if self.lam is not None:
            body["lambda"] = self.lam
        return body


@dataclass(frozen=True)
class Opening:
    """`opening`: a node's opening of its share index for a challenge: its own blob (`data`) and the
    public-values blob it references (`public`; None: inline in `data`), protocol/opening.py. Either
    stored on the ledger, or served by the node itself (`served`: the body holds their digests as
    `data_hash` / `public_hash` and the `url` to fetch them from; an auditor who cannot fetch them
    posts a `blob.request`, which the node answers with a `blob.provide` before the deadline)."""

    KIND: ClassVar[str] = E.OPENING
    job_id: str
    node: str
    party: int
    challenge: int
    data: bytes
    public: bytes | None = None
    served: bool = False
    url: str | None = None

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "Opening":
        b = _checked(entry, cls.KIND)
        stored = "data" in b or "public" in b
        served = "data_hash" in b or "public_hash" in b or "url" in b
        if stored == served or ("data" if stored else "data_hash") not in b:
            raise BodyError("an opening holds its blobs either stored (data, public) or served (data_hash, "
                            "public_hash, url), with data or data_hash")
        if served:
            url = b.get("url")
            return cls(b["job_id"], b["node"], b["party"], b["challenge"], b["data_hash"], b.get("public_hash"),
                       True, url)
        return cls(b["job_id"], b["node"], b["party"], b["challenge"], b["data"], b.get("public"))

    def to_body(self) -> dict:
        body = {"job_id": self.job_id, "node": self.node, "party": self.party, "challenge": self.challenge}
        if self.served:
            body["data_hash"] = self.data
            if self.public is not None:
                body["public_hash"] = self.public
            if self.url is not None:
                body["url"] = self.url
            return body
        body["data"] = self.data
        if self.public is not None:
            body["public"] = self.public
        return body

    @property
    def blobs(self) -> tuple[bytes, bytes | None]:
        """The blob digests of this opening, (data, public): two openings differ iff these do."""
        return (self.data, self.public)


@dataclass(frozen=True)
class BlobRequest:
    """`blob.request`: anyone asks that a blob of a job's served opening (or release) be put on the ledger;
    counted for the first request of a digest that a counted answer of the job serves (protocol.job_view)."""

    KIND: ClassVar[str] = E.BLOB_REQUEST
    job_id: str
    digest: bytes

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "BlobRequest":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["digest"])

    def to_body(self) -> dict:
        return {"job_id": self.job_id, "digest": self.digest}


@dataclass(frozen=True)
class BlobProvide:
    """`blob.provide`: the participant that served an opening (or release) puts one of its blobs on the
    ledger (`data`, a ledger blob digest); counted only from that answer's author (protocol.job_view)."""

    KIND: ClassVar[str] = E.BLOB_PROVIDE
    job_id: str
    data: bytes

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "BlobProvide":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["data"])

    def to_body(self) -> dict:
        return {"job_id": self.job_id, "data": self.data}


@dataclass(frozen=True)
class DealerRelease:
    """`dealer.release`: the dealer's release of the opened parties' seeds for a challenge (a blob), stored
    on the ledger or served by the dealer (`served`: `data` is the digest of what `url` serves), as an
    opening is (specs/audit.md section 3)."""

    KIND: ClassVar[str] = E.RELEASE
    job_id: str
    challenge: int
    data: bytes
    served: bool = False
    url: str | None = None

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "DealerRelease":
        b = _checked(entry, cls.KIND)
        if ("data" in b) == ("data_hash" in b) or ("data" in b and "url" in b):
            raise BodyError("a release holds its blob either stored (data) or served (data_hash, url)")
        if "data_hash" in b:
            return cls(b["job_id"], b["challenge"], b["data_hash"], True, b.get("url"))
        return cls(b["job_id"], b["challenge"], b["data"])

    @property
    def blobs(self) -> tuple[bytes]:
        return (self.data,)

    def to_body(self) -> dict:
        if self.served:
            body = {"job_id": self.job_id, "challenge": self.challenge, "data_hash": self.data}
            if self.url is not None:
                body["url"] = self.url
            return body
        return {"job_id": self.job_id, "challenge": self.challenge, "data": self.data}


@dataclass(frozen=True)
class ModelPublish:
    """`model.publish`: the owner's manifest (blob) and commitment root; meta says whether shares refresh."""

    KIND: ClassVar[str] = E.MODEL
    model_id: str
    manifest: bytes
    n_shares: int
    commitments: bytes
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "ModelPublish":
        b = _checked(entry, cls.KIND)
        return cls(b["model_id"], b["manifest"], b["n_shares"], b["commitments"], dict(b.get("meta") or {}))

    def to_body(self) -> dict:
        return _with_meta({"model_id": self.model_id, "manifest": self.manifest, "n_shares": self.n_shares,
                           "commitments": self.commitments}, self.meta)

    def delivered_index(self, node: str) -> int | None:
        """The share index this publication delivers to `node` (`meta.deliveries`), or None."""
        deliveries = self.meta.get("deliveries")
        for d in deliveries if isinstance(deliveries, list) else []:
            if isinstance(d, dict) and d.get("node") == node:
                p = d.get("party")
                return p if isinstance(p, int) and not isinstance(p, bool) and 0 <= p < self.n_shares else None
        return None

    @property
    def refresh(self) -> str | None:
        """The per-job refresh scheme of this publication, if any."""
        v = self.meta.get("refresh")
        return v if isinstance(v, str) else None


@dataclass(frozen=True)
class ModelRefresh:
    """`model.refresh`: the owner's commitments to one job's refreshed weight shares (a blob)."""

    KIND: ClassVar[str] = E.REFRESH
    job_id: str
    model_id: str
    commitments: bytes

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "ModelRefresh":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["model_id"], b["commitments"])

    def to_body(self) -> dict:
        return {"job_id": self.job_id, "model_id": self.model_id, "commitments": self.commitments}


@dataclass(frozen=True)
class Verdict:
    """`verdict`: an auditor's signed outcome for a job."""

    KIND: ClassVar[str] = E.VERDICT
    job_id: str
    outcome: str
    accused: tuple[str, ...]
    reason: str
    soundness_bits: int | None = None
    defaulted: tuple[str, ...] = ()

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "Verdict":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["outcome"], tuple(b["accused"]), b["reason"], b.get("soundness_bits"),
                   tuple(b.get("defaulted", [])))

    def to_body(self) -> dict:
        body = {"job_id": self.job_id, "outcome": self.outcome, "accused": list(self.accused),
                "reason": self.reason[:4096]}
        if self.soundness_bits is not None:
            body["soundness_bits"] = self.soundness_bits
        if self.defaulted:
            body["defaulted"] = list(self.defaulted)
        return body


@dataclass(frozen=True)
class Heartbeat:
    """`node.heartbeat`: a daemon (node or dealer) says it is live, and which published models it holds.
    Its time is the entry's time; it counts only when written by `node` itself (protocol.job_view)."""

    KIND: ClassVar[str] = E.HEARTBEAT
    node: str
    models: tuple[str, ...] = ()

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "Heartbeat":
        b = _checked(entry, cls.KIND)
        return cls(b["node"], tuple(b["models"]))

    def to_body(self) -> dict:
        return {"node": self.node, "models": list(self.models)}


@dataclass(frozen=True)
class JobResume:
    """`job.resume`: the job's opener hands share index `party`, every replica of which was lost, to the
    standby node `standby` in place of `lost` (specs/node-daemon.md section 8)."""

    KIND: ClassVar[str] = E.JOB_RESUME
    job_id: str
    party: int
    standby: str
    lost: str

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "JobResume":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["party"], b["standby"], b["lost"])

    def to_body(self) -> dict:
        return {"job_id": self.job_id, "party": self.party, "standby": self.standby, "lost": self.lost}


@dataclass(frozen=True)
class JobFail:
    """`job.fail`: the job's opener closes a job that failed (the group never formed, a node died...)."""

    KIND: ClassVar[str] = E.JOB_FAIL
    job_id: str
    reason: str

    @classmethod
    def from_entry(cls, entry: E.Entry) -> "JobFail":
        b = _checked(entry, cls.KIND)
        return cls(b["job_id"], b["reason"])

    def to_body(self) -> dict:
        return {"job_id": self.job_id, "reason": self.reason[:4096] or "failed"}
