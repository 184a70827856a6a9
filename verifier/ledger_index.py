"""What a ledger holds, summarised for auditors: jobs, nodes, one job in detail, the log itself
(`verify jobs|nodes|show|report` and `verify browse`; specs/browse.md).

It reads the ledger once, page by page (`Ledger.rows`), and only through the typed bodies and the
authorship rules of protocol/: a job through `protocol.job_view.read_job`, its seal and challenge
through `challenge_state_of`, its verdicts through `counted_verdicts`, heartbeats through
`counted_heartbeat`. An entry that does not count never changes a summary (it shows as noise).
`LedgerIndex.update()` reads only what was appended since its last call and recomputes only the
jobs that it touched, so a browser can poll it every second.

Integrity, while reading: the Merkle tree is recomputed over the rows read and its root at every
stored checkpoint's size compared with that checkpoint; the latest checkpoint's signature is
verified under the pinned log key (one BLS verification). A row that does not decode, a gap, a
root that differs or a checkpoint not signed by the pinned key makes `LogState.ok` False: "the log
does not verify" (`verify ledger-check` finds the first bad entry). A job's seal, in listings, is
the first stored checkpoint covering its commitments whose root is that of the tree the verified
latest checkpoint signs; `job(..., strict=True)` also verifies the seal's own signature.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ledger import entries as E
from ledger import merkle
from ledger.checkpoints import SignedCheckpoint, checkpoint_from_obj
from ledger.errors import LedgerError
from protocol import bodies as B
from protocol.errors import JobError
from protocol.job_view import (ChallengeState, Counted, JobView, challenge_state_of, counted_heartbeat,
                               counted_verdicts, read_job)
from verifier.summary_terms import JOB_STATUSES, PARTY_STATUSES, VERDICTS  # noqa: F401 - re-exported
from verifier.summary_terms import UNRESPONSIVE_REASONS

AUDITOR_ROLE = "verifier"


class IndexError_(Exception):
    """Base of this module's errors."""


class UnknownJob(IndexError_):
    """No valid `job.open` for this id on the ledger."""


class UnknownNode(IndexError_):
    """No registration for this node id on the ledger."""


def evidence_name(job_id: str, node: str) -> str:
    """The file name `verify audit` gives the evidence bundle against `node` in `job_id`."""
    return f"evidence-{job_id}-{node}.cbor"


def fingerprint(key: bytes | None) -> str:
    """A public key's short form: its first 16 hex digits (as `prover keygen` and key reprs print it)."""
    return key.hex()[:16] if key else "-"


@dataclass(frozen=True)
class _Leaf:
    index: int
    entry: E.Entry


@dataclass(frozen=True)
class PartyOutcome:
    """What the counted verdicts say about one share index."""

    party: int
    node: str
    status: str  # one of PARTY_STATUSES
    reason: str = ""
    step: int | None = None  # the first step where a cheater deviated (from the verdict's reason)
    op: str = ""  # that step's op kind and layer ("matmul in h.0.attn"), where the reason names them

    def as_dict(self) -> dict:
        return {"party": self.party, "node": self.node, "status": self.status, "reason": self.reason,
                "step": self.step, "op": self.op}


@dataclass
class JobSummary:
    """One row of `verify jobs`."""

    job_id: str
    model_id: str
    n_parties: int
    nodes: dict[int, str]  # share index -> node (replica 0, stage 0)
    participants: list[B.Assignment]  # the counted job.assign's rows
    dealer: str
    client: str
    tokens: int | None  # new tokens asked for (job.open params.steps), when known
    prompt_len: int | None
    started_ms: int  # the job.open entry's time
    open_index: int
    status: str  # one of JOB_STATUSES
    verdict: str  # one of VERDICTS
    accused: list[str] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)
    parties: list[PartyOutcome] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    closed: int | None = None
    fail_reason: str = ""
    last_index: int = -1

    def involves(self, node: str) -> bool:
        return node == self.dealer or any(p.node == node for p in self.participants)

    def matches(self, text: str) -> bool:
        """Whether `text` (case-insensitive) occurs in the id, model, nodes, dealer, status or verdict."""
        t = text.lower()
        hay = [self.job_id, self.model_id, self.dealer, self.client, self.status, self.verdict,
               *(p.node for p in self.participants), *self.accused]
        return any(t in h.lower() for h in hay)

    def as_dict(self) -> dict:
        return {"job_id": self.job_id, "model_id": self.model_id, "n_parties": self.n_parties,
                "nodes": {str(k): v for k, v in sorted(self.nodes.items())},
                "participants": [{"party": p.party, "node": p.node, "replica": p.replica, "stage": p.stage}
                                 for p in self.participants], "dealer": self.dealer,
                "client": self.client, "tokens": self.tokens, "prompt_len": self.prompt_len,
                "started_ms": self.started_ms, "open_index": self.open_index, "status": self.status,
                "verdict": self.verdict, "accused": self.accused, "defaulted": self.defaulted,
                "opened": self.opened, "closed": self.closed, "fail_reason": self.fail_reason,
                "parties": [p.as_dict() for p in self.parties]}


@dataclass
class JobDetail:
    """Everything `verify show` prints about one job."""

    summary: JobSummary
    dealer_commit: int | None
    owner_refresh: dict | None  # {"index", "author"}
    roots: list[dict]  # {"party", "replica", "node", "index", "root", "n_steps", "counts_for_index"}
    reveals: dict[str, int]  # slot ("0", "1", ..., "dealer") -> entry index
    seal: dict | None  # {"size", "root", "signers", "signature_verified"}
    challenge: dict  # {"state", "index", "opened", "closed", "problem"}
    openings: list[dict]  # {"party", "node", "index"}
    conflicting: list[dict]
    release: int | None
    verdicts: list[dict]  # one per auditor that counts
    ignored_verdicts: list[dict]  # verdict entries that do not count (not an auditor, a later one)
    noise: list[dict]
    evidence: dict[str, str]  # accused node -> the bundle's file name (`verify audit` writes it)

    def as_dict(self) -> dict:
        return {**self.summary.as_dict(), "dealer_commit": self.dealer_commit, "owner_refresh": self.owner_refresh,
                "roots": self.roots, "reveals": self.reveals, "seal": self.seal, "challenge": self.challenge,
                "openings": self.openings, "conflicting_openings": self.conflicting, "release": self.release,
                "verdicts": self.verdicts, "ignored_verdicts": self.ignored_verdicts, "noise": self.noise,
                "evidence": self.evidence}


@dataclass(frozen=True)
class NodeJob:
    """One line of a node's history."""

    job_id: str
    role: str  # "party N" or "dealer"
    job_status: str
    verdict: str
    outcome: str  # the node's own: a PARTY_STATUSES value ("clean" = audited and passed)
    started_ms: int

    def as_dict(self) -> dict:
        return {"job_id": self.job_id, "role": self.role, "job_status": self.job_status, "verdict": self.verdict,
                "outcome": self.outcome, "started_ms": self.started_ms}


@dataclass
class NodeSummary:
    """One row of `verify nodes` (and, with `jobs`, a node's history)."""

    node_id: str
    roles: list[str]
    ed25519: bytes
    bls: bytes
    x25519: bytes | None
    endpoint: str
    registered_index: int
    registered_ms: int
    last_heartbeat_ms: int | None = None
    models: list[str] = field(default_factory=list)
    jobs_served: int = 0
    audits_passed: int = 0
    accusations: int = 0  # jobs where a counted verdict says it cheated
    defaulted: int = 0  # jobs where a counted fail verdict names it defaulted (withheld past the deadline)
    unresponsive: int = 0  # jobs where its outcome is defaulted or unresponsive (specs/browse.md)
    jobs: list[NodeJob] = field(default_factory=list)  # newest first
    operator: str = ""  # who runs it, as its registration declares (else the node itself)

    def as_dict(self, history: bool = True) -> dict:
        d = {"node_id": self.node_id, "operator": self.operator or self.node_id, "roles": self.roles, "ed25519": self.ed25519.hex(), "bls": self.bls.hex(),
             "x25519": self.x25519.hex() if self.x25519 else None, "endpoint": self.endpoint,
             "registered_index": self.registered_index, "registered_ms": self.registered_ms,
             "last_heartbeat_ms": self.last_heartbeat_ms, "models": self.models, "jobs_served": self.jobs_served,
             "audits_passed": self.audits_passed, "accusations": self.accusations, "defaulted": self.defaulted,
             "unresponsive": self.unresponsive}
        if history:
            d["jobs"] = [j.as_dict() for j in self.jobs]
        return d


@dataclass(frozen=True)
class CheckpointInfo:
    size: int
    root: bytes
    signers: int  # the log first, then witnesses
    entry_index: int | None  # where the log logged it (a checkpoint entry), if it did
    time_ms: int | None  # that entry's time
    consistent: bool  # its root is the root of the rows read, at its size
    by_pinned_key: bool  # signers[0] is the pinned log key

    @property
    def cosignatures(self) -> int:
        return max(0, self.signers - 1)

    def as_dict(self) -> dict:
        return {"size": self.size, "root": self.root.hex(), "signers": self.signers, "cosignatures": self.cosignatures,
                "entry_index": self.entry_index, "time_ms": self.time_ms, "consistent": self.consistent,
                "by_pinned_key": self.by_pinned_key}


@dataclass
class LogState:
    """The log as this index read it: size, checkpoints, whether it verifies."""

    origin: str
    hash_name: str
    size: int
    log_key: bytes | None
    key_source: str  # where the key came from: "--log-key", "pinned", "the ledger's own (not pinned)"
    checkpoints: list[CheckpointInfo]  # by size, newest last
    latest_verified: bool | None  # None: no checkpoint yet
    findings: list[str]
    unsealed: int  # entries after the latest checkpoint (not yet under a signature)

    @property
    def latest(self) -> CheckpointInfo | None:
        return self.checkpoints[-1] if self.checkpoints else None

    @property
    def ok(self) -> bool:
        """No finding, and the latest checkpoint (if any) verifies under the key."""
        return not self.findings and self.latest_verified is not False

    @property
    def verdict(self) -> str:
        if not self.ok:
            return "does not verify"
        return "verifies" if self.latest_verified else "no signed checkpoint yet"

    def as_dict(self, last: int = 5) -> dict:
        return {"origin": self.origin, "hash": self.hash_name, "size": self.size,
                "log_key": self.log_key.hex() if self.log_key else None, "key_source": self.key_source,
                "ok": self.ok, "status": self.verdict, "latest_verified": self.latest_verified,
                "findings": self.findings, "unsealed": self.unsealed, "checkpoints_total": len(self.checkpoints),
                "checkpoints": [c.as_dict() for c in self.checkpoints[-last:]]}


_PARTY_RE = re.compile(r"party (\d+)( replica \d+)? \(([^)]*)\): ")
_STEP_RE = re.compile(r"^step (\d+)(?: \(([^)]*)\))?")


def reason_segments(reason: str) -> dict[int, str]:
    """A verdict entry's reason split per share index ("party P (node): why; ...", as
    verifier.ledger_audit writes it)."""
    ms = list(_PARTY_RE.finditer(reason))
    out: dict[int, str] = {}
    for k, m in enumerate(ms):
        end = ms[k + 1].start() if k + 1 < len(ms) else len(reason)
        if m.group(2) is None:  # "party P replica R (node): ..." segments are about one replica, not the index
            out.setdefault(int(m.group(1)), reason[m.end():end].rstrip().rstrip(";").rstrip())
    return out


def marks_unresponsive(segment: str) -> bool:
    """Whether a verdict's reason for one share index (a `reason_segments` value) says that its node did
    not answer: no job root, or a peer disputed its broadcast receipt (verifier.ledger_audit's words)."""
    return segment.startswith(UNRESPONSIVE_REASONS)


def _step(segment: str) -> tuple[int | None, str]:
    m = _STEP_RE.match(segment)
    return (int(m.group(1)), m.group(2) or "") if m else (None, "")


def _int_param(params: dict, name: str) -> int | None:
    v = params.get(name)
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


@dataclass
class _Reg:
    index: int
    time: int
    roles: list[str]
    endpoint: str
    ed25519: bytes
    bls: bytes
    x25519: bytes | None
    leaf: _Leaf  # the node.register entry itself (its operator counts for job.assign: protocol.job_view)
    operator: str


class LedgerIndex:
    """Job and node summaries of one ledger, kept up to date by `update()` (see the module doc)."""

    def __init__(self, led, log_key: bytes | None = None, key_source: str | None = None, page: int = 5000) -> None:
        self.led = led
        self.key = bytes(log_key) if log_key is not None else led.log_key
        self.key_source = key_source or ("--log-key" if log_key is not None else "the ledger's own (not pinned)")
        self.page = page
        self.size = 0
        self._frontier = merkle.MerkleFrontier(0, [], led.hash_name)
        self._leaves = bytearray()
        self._roots: dict[int, bytes] = {}
        self._gap = False
        self._bad_rows: list[str] = []
        self._jobs: dict[str, list[_Leaf]] = {}
        self._opened: dict[str, int] = {}  # job id -> index of its first job.open
        self._models: list[_Leaf] = []
        self._regs: dict[str, _Reg] = {}
        self._heartbeats: dict[str, Counted[B.Heartbeat]] = {}
        self._cp_entries: dict[int, int] = {}  # checkpoint size -> time of the log's checkpoint entry at that index
        self._checkpoints: list[SignedCheckpoint] = []
        self._sig_ok: dict[tuple, bool] = {}  # checkpoint -> its signature verifies under the key
        self._cp_state: dict[tuple, tuple[bool, bool]] = {}  # checkpoint -> (consistent, by the pinned key)
        self._cache: dict[str, tuple[JobSummary, JobView, ChallengeState, list]] = {}
        self._dirty: set[str] = set()

    # --- reading -------------------------------------------------------------------------
    def update(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Read the entries appended since the last call (all of them the first time) and the stored
        checkpoints; returns how many entries were read. `progress(done, total)` is called per page."""
        led = self.led
        size = led.size()
        if size < self.size:
            self._bad_rows.append(f"the log shrank from {self.size} to {size} entries")
            return 0
        cps = [c for c in led.checkpoints() if c.size <= size]
        new_cps = len(cps) != len(self._checkpoints)
        want = {c.size for c in cps}
        start, touched, rescan_all = self.size, set(), False
        h = merkle.hasher(led.hash_name)
        done = 0
        for idx, data in led.rows(start, size, self.page):
            if idx != self._frontier.size:
                if not self._gap:
                    self._bad_rows.append(f"entries {self._frontier.size}..{idx - 1} are missing")
                self._gap = True
            try:
                e = E.decode_entry(data)
            except LedgerError as exc:
                self._bad_rows.append(f"entry {idx} does not decode: {type(exc).__name__}: {exc}")
                e = None
            if not self._gap:
                if idx in want or (e is not None and e.kind == E.CHECKPOINT):
                    self._roots[idx] = self._frontier.root()
                lh = h(b"\x00" + data)
                self._frontier.append(lh)
                self._leaves += lh
            done += 1
            if progress is not None and done % self.page == 0:
                progress(done, size - start)
            if e is None:
                continue
            leaf = _Leaf(idx, e)
            kind = e.kind
            job = e.job_id
            if job is not None:
                self._jobs.setdefault(job, []).append(leaf)
                touched.add(job)
                if kind == E.JOB_OPEN:
                    self._opened.setdefault(job, idx)
            elif kind == E.REGISTER:
                b = e.body
                self._regs.setdefault(e.author, _Reg(idx, e.time, list(b["roles"]), b.get("endpoint", ""),
                                                     b["ed25519"], b["bls"], b.get("x25519"), leaf,
                                                     E.registered_operator(e)))
                rescan_all = True
            elif kind == E.MODEL:
                self._models.append(leaf)
                rescan_all = True
            elif kind == E.HEARTBEAT:
                hb = counted_heartbeat(leaf)
                if hb is not None:
                    self._heartbeats[hb.body.node] = hb
            elif kind == E.CHECKPOINT:
                try:
                    scp = checkpoint_from_obj(e.body["checkpoint"])
                    if scp.size == idx and e.author == led.log_node:
                        self._cp_entries.setdefault(idx, e.time)
                except LedgerError:
                    pass
        if not self._gap and size in want:
            self._roots[size] = self._frontier.root()
        self.size = size
        if progress is not None:
            progress(done, size - start)
        self._checkpoints = cps
        if rescan_all:
            self._dirty |= set(self._opened)
        else:
            self._dirty |= touched
            if new_cps:  # a new checkpoint may seal a job that was not sealed
                self._dirty |= {j for j, c in self._cache.items() if c[2].counted is None}
        return done

    def _root_at(self, size: int) -> bytes | None:
        if size in self._roots:
            return self._roots[size]
        if self._gap or size > len(self._leaves) // 32:
            return None
        f = merkle.MerkleFrontier(0, [], self.led.hash_name)
        for i in range(size):
            f.append(bytes(self._leaves[32 * i:32 * i + 32]))
        self._roots[size] = f.root()
        return self._roots[size]

    def _checkpoint_state(self, c: SignedCheckpoint) -> tuple[bool, bool]:
        k = (c.size, c.root, c.sig, c.signers)
        if k not in self._cp_state:
            self._cp_state[k] = (self._root_at(c.size) == c.root, self.key is not None and c.log_key == self.key)
        return self._cp_state[k]

    def _verified(self, c: SignedCheckpoint) -> bool:
        k = (c.size, c.root, c.sig, c.signers)
        if k not in self._sig_ok:
            self._sig_ok[k] = self.key is not None and c.verify(self.key)
        return self._sig_ok[k]

    def log(self) -> LogState:
        """The log as read: size, checkpoints, findings, whether its latest checkpoint verifies."""
        findings = list(self._bad_rows)
        infos = []
        for c in self._checkpoints:
            consistent, mine = self._checkpoint_state(c)
            infos.append(CheckpointInfo(c.size, c.root, len(c.signers), c.size if c.size in self._cp_entries else None,
                                        self._cp_entries.get(c.size), consistent, mine))
            if not mine:
                findings.append(f"the checkpoint of size {c.size} is not signed by the pinned log key")
            elif not consistent:
                findings.append(f"the root at size {c.size} differs from the signed checkpoint: entries before "
                                f"{c.size} were altered (`verify ledger-check` names the first)")
        latest = self._checkpoints[-1] if self._checkpoints else None
        verified = None if latest is None else self._verified(latest)
        if verified is False:
            findings.append(f"the latest checkpoint (size {latest.size}) does not verify under the log key")
        return LogState(self.led.origin, self.led.hash_name, self.size, self.key, self.key_source, infos, verified,
                        findings, self.size - (latest.size if latest else 0))

    def consistent_with(self, seen: tuple[int, bytes] | None) -> tuple[bool | None, str]:
        """Whether the log read still holds the head (size, root) an auditor saw before: (None, why) when
        there is no such head, (False, why) when the log forked or shrank, (True, "") when it extends it.
        Meaningful when `log().ok` (the rows read are then the ones the latest checkpoint signs)."""
        if seen is None:
            return None, "no checkpoint seen before (first visit)"
        size, root = seen
        if size > self.size:
            return False, f"the log has {self.size} entries, fewer than the {size} seen before"
        got = self._root_at(size)
        if got is None:
            return None, "the rows read have a gap: cannot recompute the root seen before"
        if got != root:
            return False, f"the root at size {size} differs from the one seen before: the log forked"
        return True, ""

    # --- jobs ------------------------------------------------------------------------------
    def _auditors(self) -> set[str]:
        return {n for n, r in self._regs.items() if AUDITOR_ROLE in r.roles}

    def _registration(self, node: str) -> _Leaf | None:
        """The first `node.register` of `node` read so far (protocol.job_view.RegistrationLookup), or None."""
        r = self._regs.get(node)
        return r.leaf if r is not None else None

    def _seal_valid(self, strict: bool) -> Callable[[object], bool]:
        latest = self._checkpoints[-1] if self._checkpoints else None
        tree_ok = latest is not None and not self._bad_rows and self._verified(latest) \
            and self._checkpoint_state(latest) == (True, True)

        def valid(c) -> bool:
            if not tree_ok or self._checkpoint_state(c) != (True, True):
                return False
            return self._verified(c) if strict else True
        return valid

    def _compute(self, job_id: str, strict: bool = False) -> tuple[JobSummary, JobView, ChallengeState, list]:
        view = read_job(job_id, self._jobs.get(job_id, []), self._models, self._registration)
        st = challenge_state_of(view, lambda: self._checkpoints, self._seal_valid(strict))
        verdicts = counted_verdicts(view, self._auditors())
        o = view.open.body
        status = "failed" if view.fail is not None else "done" if view.committed else "running"
        fails = [v for v in verdicts if v.body.outcome == "fail"]
        accused = list(dict.fromkeys(a for v in fails for a in v.body.accused))
        defaulted = list(dict.fromkeys(d for v in fails for d in v.body.defaulted))
        if not verdicts:
            verdict = "unaudited"
        elif fails:
            verdict = "cheated"
        elif any(v.body.outcome == "pass" for v in verdicts):
            verdict = "clean"
        else:
            verdict = "incomplete"
        primary = fails[0] if fails else (verdicts[0] if verdicts else None)
        segments = reason_segments(primary.body.reason) if primary is not None else {}
        opened = list(st.derived.opened) if st.derived is not None else []
        closed = st.derived.closed if st.derived is not None else None
        parties = []
        for p, node in sorted(view.nodes.items()):
            # With replicas, the index's row names the replica a verdict accused or found defaulted, if any.
            node = next((x for x in view.nodes_of(p) if x in defaulted or x in accused), node)
            seg = segments.get(p, "")
            step, op = _step(seg)
            if primary is None:
                status_p = "unaudited"
            elif node in defaulted:
                status_p = "defaulted"
            elif node in accused:
                status_p = "cheated"
            elif marks_unresponsive(seg):  # opened or not: a disputed receipt is judged before the challenge
                status_p = "unresponsive"
            elif p not in opened:
                status_p = "not opened"
            elif primary.body.outcome in ("pass", "fail"):
                status_p = "unresolved" if seg else "clean"
            else:
                status_p = "incomplete"
            parties.append(PartyOutcome(p, node, status_p, seg, step if status_p == "cheated" else None,
                                        op if status_p == "cheated" else ""))
        part = list(view.assign.body.assignments) if view.assign is not None else []
        entries = self._jobs.get(job_id, [])
        s = JobSummary(job_id, o.model_id, o.n_parties, view.nodes, part, o.dealer, view.opener,
                       _int_param(o.params, "steps"), _int_param(o.params, "prompt_len"), view.open.entry.time,
                       view.open.index, status, verdict, accused, defaulted, parties, opened, closed,
                       view.fail.body.reason if view.fail is not None else "",
                       entries[-1].index if entries else view.open.index)
        return s, view, st, verdicts

    def _summary(self, job_id: str) -> JobSummary:
        if job_id in self._dirty or job_id not in self._cache:
            try:
                self._cache[job_id] = self._compute(job_id)
            except JobError:
                self._opened.pop(job_id, None)  # no valid job.open: not a job
                self._cache.pop(job_id, None)
                raise
            self._dirty.discard(job_id)
        return self._cache[job_id][0]

    def jobs(self, status: str | None = None, node: str | None = None, verdict: str | None = None,
             search: str | None = None, limit: int | None = None) -> list[JobSummary]:
        """Job summaries, newest first (by their job.open's place in the log), filtered."""
        out = []
        for job_id in sorted(self._opened, key=self._opened.__getitem__, reverse=True):
            try:
                s = self._summary(job_id)
            except JobError:
                continue
            if ((status and s.status != status) or (verdict and s.verdict != verdict)
                    or (node and not s.involves(node)) or (search and not s.matches(search))):
                continue
            out.append(s)
            if limit is not None and len(out) >= limit:
                break
        return out

    def job(self, job_id: str, strict: bool = True) -> JobDetail:
        """One job in detail (raises UnknownJob); with `strict`, its seal's signature is verified too."""
        if job_id not in self._opened:
            raise UnknownJob(f"no job {job_id!r} on this ledger")
        try:
            s, view, st, verdicts = self._compute(job_id, strict=strict)
        except JobError as exc:
            raise UnknownJob(str(exc)) from None
        roots = [{"party": p, "replica": rep, "node": r.body.node, "index": r.index, "root": r.body.root.hex(),
                  "n_steps": r.body.n_steps, "counts_for_index": view.roots.get(p) is r}
                 for (p, rep), r in sorted(view.replica_roots.items())]
        seal = None if st.seal is None else {"size": st.seal.size, "root": st.seal.root.hex(),
                                             "signers": len(st.seal.signers),
                                             "signature_verified": self._verified(st.seal) if strict else None}
        if st.counted is not None:
            state = "counted"
        elif st.derived is not None:
            state = "derived, not posted yet"
        else:
            state = "none"
        challenge = {"state": state, "index": st.counted.index if st.counted is not None else None,
                     "opened": list(st.derived.opened) if st.derived else [],
                     "closed": st.derived.closed if st.derived else None,
                     "posted": [c.index for c in view.challenges], "problem": st.problem}
        counted_idx = {v.index for v in verdicts}
        auditors = self._auditors()

        def vdict(v: Counted[B.Verdict]) -> dict:
            return {"index": v.index, "auditor": v.author, "time_ms": v.entry.time, "outcome": v.body.outcome,
                    "accused": list(v.body.accused), "defaulted": list(v.body.defaulted), "reason": v.body.reason,
                    "soundness_bits": v.body.soundness_bits}

        ignored = []
        for v in view.verdicts:
            if v.index not in counted_idx:
                why = "not by a registered auditor" if v.author not in auditors else "a later verdict by this auditor"
                ignored.append({**vdict(v), "why": why})
        return JobDetail(
            s, view.dealer_commit.index if view.dealer_commit else None,
            {"index": view.refresh.index, "author": view.refresh.author} if view.refresh else None,
            roots, {str(k): v.index for k, v in view.reveals.items()}, seal, challenge,
            [{"party": p, "node": o.body.node, "index": o.index} for p, o in sorted(view.openings.items())],
            [{"party": p, "node": o.body.node, "index": o.index} for p, o in sorted(view.conflicting.items())],
            view.release.index if view.release else None, [vdict(v) for v in verdicts], ignored,
            [n.as_dict() for n in view.noise], {a: evidence_name(job_id, a) for a in s.accused})

    # --- nodes -----------------------------------------------------------------------------
    def nodes(self, node: str | None = None) -> list[NodeSummary]:
        """Every registered author (or only `node`; UnknownNode if it is not registered) with its
        counts and job history. A node's count of a job follows its outcome there (`NodeJob.outcome`):
        audits passed (clean, as a share index), accusations (cheated), defaulted, and unresponsive
        (defaulted or unresponsive: it did not answer; a job counts once however many auditors say so)."""
        if node is not None and node not in self._regs:
            raise UnknownNode(f"no node {node!r} is registered on this ledger")
        out: dict[str, NodeSummary] = {}
        for n, r in sorted(self._regs.items(), key=lambda kv: kv[1].index):
            if node is not None and n != node:
                continue
            hb = self._heartbeats.get(n)
            out[n] = NodeSummary(n, r.roles, r.ed25519, r.bls, r.x25519, r.endpoint, r.index, r.time,
                                 hb.entry.time if hb else None, list(hb.body.models) if hb else [],
                                 operator=r.operator)
        for s in self.jobs():
            roles = [(p.node, f"party {p.party}", p.party) for p in s.parties]
            roles.append((s.dealer, "dealer", None))
            for who, role, p in roles:
                ns = out.get(who)
                if ns is None:
                    continue
                if p is not None:
                    outcome = s.parties[[x.party for x in s.parties].index(p)].status
                elif who in s.defaulted:
                    outcome = "defaulted"
                elif who in s.accused:
                    outcome = "cheated"
                else:
                    outcome = "unaudited" if s.verdict == "unaudited" else "clean"
                ns.jobs_served += 1
                ns.audits_passed += outcome == "clean" and p is not None
                ns.accusations += outcome == "cheated"
                ns.defaulted += outcome == "defaulted"
                ns.unresponsive += outcome in ("defaulted", "unresponsive")
                ns.jobs.append(NodeJob(s.job_id, role, s.status, s.verdict, outcome, s.started_ms))
        return list(out.values())

    def node_ids(self) -> Iterable[str]:
        return list(self._regs)
