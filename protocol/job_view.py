"""A job as the ledger shows it, with the authorship rules applied: the one place that decides
which entries count (specs/ledger.md, "Who may write what").

| kind               | counts only if written by                         | and only if it references            |
|--------------------|---------------------------------------------------|--------------------------------------|
| job.open           | anyone (the ledger refuses a second one per id)   | -                                    |
| job.assign         | the job's opener; the first valid one             | every (index 0..N-1, replica         |
|                    |                                                   | 0..R-1) once (R = job.open replicas),|
|                    |                                                   | distinct nodes, none the dealer, no  |
|                    |                                                   | operator given two indices (any      |
|                    |                                                   | replica or stage; `operator_problem`)|
| dealer.commit      | the job's dealer (job.open); the first            | a seed commitment for every index    |
| node.job_root      | the node assigned to (`party`, `replica`)         | the first per (party, replica); the   |
|                    | (author = body.node)                              | first per party is the index's root  |
| challenge.reveal   | the participant of the slot (a node of the index, | a value opening its beacon; posted   |
|                    | any replica; or the dealer)                       |                                      |
|                    |                                                   | after the seal; the first valid one   |
| challenge          | anyone                                            | equal to the derivation (the first)  |
| opening            | a node assigned to `party`, any replica           | the counted challenge; the first     |
|                    | (author = body.node)                              |                                      |
| dealer.release     | the job's dealer                                  | the counted challenge; the first     |
| blob.request       | anyone; the first per digest                      | a blob a counted opening or release  |
|                    |                                                   | serves (data_hash...), after it      |
| blob.provide       | the author of the counted opening or release      | that blob, after the answer; the     |
|                    | that serves the blob                              | first per digest                     |
| model.publish      | anyone; the first per model id is the model       | -                                    |
| model.refresh      | the model's publisher; the first for the job      | the job's model                      |
| verdict            | any auditor (one per auditor counts: the first;   | -                                    |
|                    | an auditor is registered with the verifier role;  |                                      |
|                    | `counted_verdicts`)                               |                                      |
| job.fail           | the job's opener; the first                       | - (the job is closed: nodes stop     |
|                    |                                                   | waiting for it)                      |
| job.resume         | the job's opener; the first per index, before     | a standby named in job.open that the |
|                    | the index has a root and before any job.fail      | publication delivered that index to, |
|                    | (`_resume_problem`)                               | holding no index of the job; `lost`  |
|                    |                                                   | = the index's replica-0 node;        |
|                    |                                                   | operator rule                        |
| node.heartbeat     | the node itself (author = body.node); not a job   | - (the latest one: `last_heartbeat`) |
|                    | entry                                             |                                      |

Every other entry with the job's id is noise: never counted against anyone, reported apart.
Entry signatures are checked before (by the ledger on append, or by ledger.evidence for a
bundle); this module checks who may write what.

A node's operator is the `operator` its first `node.register` declares, if that registration is
in the log before the job.assign; otherwise (none declared, registered later, or no registration
given to `read_job`) the node is its own operator (specs/threat-model.md, "Replicas and operators").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Iterable, Protocol, TypeVar

from ledger import entries as E
from mpc_core.replicas import MAX_REPLICAS
from protocol import bodies as B
from protocol import challenge as C
from protocol.errors import BodyError, JobError, NotRevealed, NotSealed

T = TypeVar("T")


class _Logged(Protocol):
    index: int
    entry: E.Entry


@dataclass(frozen=True)
class Counted(Generic[T]):
    """An entry that counts: its ledger index, the signed entry and its typed body."""

    index: int
    entry: E.Entry
    body: T

    @property
    def author(self) -> str:
        return self.entry.author


@dataclass(frozen=True)
class Noise:
    """An entry that does not count, and why."""

    index: int
    kind: str
    author: str
    reason: str

    def as_dict(self) -> dict:
        return {"index": self.index, "kind": self.kind, "author": self.author, "reason": self.reason}


@dataclass
class JobView:
    """The counted entries of one job (see the module table)."""

    job_id: str
    open: Counted[B.JobOpen]
    publish: Counted[B.ModelPublish] | None = None
    assign: Counted[B.JobAssign] | None = None
    dealer_commit: Counted[B.DealerCommit] | None = None
    refresh: Counted[B.ModelRefresh] | None = None
    roots: dict[int, Counted[B.JobRoot]] = field(default_factory=dict)  # per index: the first root of any replica
    replica_roots: dict[tuple[int, int], Counted[B.JobRoot]] = field(default_factory=dict)  # (party, replica)
    reveals: dict[int | str, Counted[B.Reveal]] = field(default_factory=dict)
    challenges: list[Counted[B.Challenge]] = field(default_factory=list)  # every well-formed one, in log order
    openings: dict[int, Counted[B.Opening]] = field(default_factory=dict)  # per index: see judge_answers
    conflicting: dict[int, Counted[B.Opening]] = field(default_factory=dict)  # a second, different opening
    replica_openings: dict[tuple[int, str], Counted[B.Opening]] = field(default_factory=dict)  # (party, node)
    release: Counted[B.DealerRelease] | None = None
    # served openings: the first request per served digest, and the serving node's answer per digest
    requests: dict[bytes, Counted[B.BlobRequest]] = field(default_factory=dict)
    provides: dict[bytes, Counted[B.BlobProvide]] = field(default_factory=dict)
    verdicts: list[Counted[B.Verdict]] = field(default_factory=list)
    fail: Counted[B.JobFail] | None = None  # the opener closed the job as failed
    resumes: dict[int, Counted[B.JobResume]] = field(default_factory=dict)  # index -> the standby's take-over
    noise: list[Noise] = field(default_factory=list)
    _pending: list = field(default_factory=list, repr=False)  # entries that need the challenge to be judged

    # --- the job's fixed facts ---------------------------------------------------------
    @property
    def n_parties(self) -> int:
        return self.open.body.n_parties

    @property
    def dealer(self) -> str:
        return self.open.body.dealer

    @property
    def opener(self) -> str:
        return self.open.author

    @property
    def nodes(self) -> dict[int, str]:
        """party -> assigned node (empty before a valid assignment)."""
        return self.assign.body.nodes_by_party() if self.assign is not None else {}

    def node_party(self, node: str) -> int | None:
        """The share index `node` is assigned to (any replica), or None."""
        return next((p for (p, _), n in self.replica_nodes.items() if n == node), None)

    @property
    def replicas(self) -> int:
        return self.open.body.replicas

    @property
    def replica_nodes(self) -> dict[tuple[int, int], str]:
        """(party, replica) -> assigned node, stage 0 (empty before a valid assignment)."""
        if self.assign is None:
            return {}
        out = {(a.party, a.replica): a.node for a in self.assign.body.assignments if a.stage == 0}
        out.update({(p, 0): r.body.standby for p, r in self.resumes.items()})  # a counted resumption replaces
        return out

    @property
    def replaced(self) -> dict[tuple[int, int], str]:
        """(party, replica) -> the node a counted job.resume replaced (lost mid-job: unresponsive, never accused)."""
        return {(p, 0): r.body.lost for p, r in self.resumes.items()}

    def nodes_of(self, party: int) -> list[str]:
        """Every replica's node of share index `party`, replica 0 first."""
        rn = self.replica_nodes
        return [rn[(party, r)] for r in range(self.replicas) if (party, r) in rn]

    def sealed_divergent(self, size: int) -> list[int]:
        """The indices whose replicas posted different roots among the first `size` log entries (the
        sealing checkpoint's): the challenge never closes them (protocol.challenge)."""
        return sorted(p for p, rs in self.divergent.items()
                      if len({(r.body.root, r.body.n_steps) for r in rs if r.index < size}) > 1)

    @property
    def divergent(self) -> dict[int, list[Counted[B.JobRoot]]]:
        """Share indices whose replicas posted different job roots (honest replicas of an index commit to
        bit-identical transcripts with the same salts, so their roots are equal): index -> those roots."""
        by_party: dict[int, list[Counted[B.JobRoot]]] = {}
        for (p, _), r in sorted(self.replica_roots.items()):
            by_party.setdefault(p, []).append(r)
        return {p: rs for p, rs in by_party.items()
                if len({(r.body.root, r.body.n_steps) for r in rs}) > 1}

    def beacon(self, slot: int | str) -> bytes | None:
        """The beacon commitment of a slot (party index, or "dealer"), if its committing entry counts."""
        if slot == C.DEALER_SLOT:
            return self.dealer_commit.body.beacon if self.dealer_commit is not None else None
        r = self.roots.get(slot)  # type: ignore[arg-type]
        return r.body.beacon if r is not None else None

    @property
    def slots(self) -> list[int | str]:
        return [*range(self.n_parties), C.DEALER_SLOT]

    @property
    def committed(self) -> bool:
        """Every party's job root and the dealer's commitment count."""
        return self.dealer_commit is not None and len(self.roots) == self.n_parties

    @property
    def seal_size(self) -> int:
        """The least checkpoint size that seals every commitment of the job."""
        idx = [r.index for r in self.roots.values()] + ([self.dealer_commit.index] if self.dealer_commit else [])
        return max(idx, default=-1) + 1

    # --- the challenge -----------------------------------------------------------------
    def missing_reveals(self) -> list[int | str]:
        return [s for s in self.slots if s not in self.reveals]

    def derive_challenge(self, seal) -> C.Challenge:
        """The job's challenge under `seal` (the first valid signed checkpoint covering `seal_size`).
        Raises NotSealed or NotRevealed."""
        if not self.committed or seal is None or seal.size < self.seal_size:
            raise NotSealed(f"job {self.job_id}: no signed checkpoint seals every commitment yet")
        missing = self.missing_reveals()
        if missing:
            raise NotRevealed(f"job {self.job_id}: no beacon reveal yet from slot(s) {missing}")
        return C.derive(self.job_id, self.n_parties, seal.size, seal.root,
                        [self.roots[p].body.root for p in range(self.n_parties)],
                        [self.reveals[s].body.value for s in self.slots], self.sealed_divergent(seal.size))

    def counted_challenge(self, derived: C.Challenge) -> Counted[B.Challenge] | None:
        """The first posted `challenge` entry equal to the derivation (every other one is noise)."""
        for c in self.challenges:
            b = c.body
            if (b.seed == derived.seed and b.checkpoint_size == derived.checkpoint_size
                    and b.checkpoint_root == derived.checkpoint_root and list(b.parties) == derived.opened):
                return c
        return None

    def judge_answers(self, challenge_index: int) -> None:
        """Count openings and the dealer's release that answer the counted challenge: the first valid
        opening per (party, node) (a second, different one by the same node is kept as conflicting);
        an index's opening is the first by a replica whose root equals the index's root (honest
        replicas' roots are equal, so a twin answers for a lost replica; a divergent replica's
        opening is kept in `replica_openings` only)."""
        self.openings, self.conflicting, self.release = {}, {}, None
        self.replica_openings = {}
        self.requests, self.provides = {}, {}
        roots_of = {node: r for (p, rep), r in self.replica_roots.items()
                    if (node := self.replica_nodes.get((p, rep))) is not None}
        for le, typed in self._pending:
            b = typed
            if isinstance(b, B.Opening):
                key = (b.party, le.entry.author)
                if b.challenge != challenge_index or le.index < challenge_index:
                    self.noise.append(Noise(le.index, le.entry.kind, le.entry.author, "not for the counted challenge"))
                elif key in self.replica_openings:
                    if self.replica_openings[key].body.blobs != b.blobs and b.party not in self.conflicting:
                        self.conflicting[b.party] = Counted(le.index, le.entry, b)
                else:
                    self.replica_openings[key] = Counted(le.index, le.entry, b)
                    own, index_root = roots_of.get(le.entry.author), self.roots.get(b.party)
                    if b.party not in self.openings and (self.replicas == 1 or (
                            own is not None and index_root is not None and own.body.root == index_root.body.root)):
                        self.openings[b.party] = Counted(le.index, le.entry, b)
            elif isinstance(b, B.DealerRelease):
                if b.challenge != challenge_index or le.index < challenge_index:
                    self.noise.append(Noise(le.index, le.entry.kind, le.entry.author, "not for the counted challenge"))
                elif self.release is None:
                    self.release = Counted(le.index, le.entry, b)
        # served blobs: digest -> (index of the counted answer that serves it, its author)
        answers = [*self.openings.values(), *([self.release] if self.release is not None else [])]
        served = {d: (a.index, a.author) for a in answers if a.body.served for d in a.body.blobs if d is not None}
        for le, typed in self._pending:
            b = typed
            if isinstance(b, B.BlobRequest):
                a = served.get(b.digest)
                if a is None or le.index < a[0]:
                    self.noise.append(Noise(le.index, le.entry.kind, le.entry.author,
                                            "requests no blob served by a counted answer before it"))
                elif b.digest not in self.requests:
                    self.requests[b.digest] = Counted(le.index, le.entry, b)
            elif isinstance(b, B.BlobProvide):
                a = served.get(b.data)
                if a is None or le.index < a[0] or le.entry.author != a[1]:
                    self.noise.append(Noise(le.index, le.entry.kind, le.entry.author,
                                            "provides no blob that its author's counted answer serves"))
                elif b.data not in self.provides:
                    self.provides[b.data] = Counted(le.index, le.entry, b)



def _typed(cls, le: _Logged, view: JobView | None):
    try:
        return cls.from_entry(le.entry)
    except BodyError as exc:
        if view is not None:
            view.noise.append(Noise(le.index, le.entry.kind, le.entry.author, f"malformed: {exc}"))
        return None


RegistrationLookup = Callable[[str], "_Logged | None"]
"""A node id -> the first `node.register` entry of that node in the log (with its index), or None."""


def operator_problem(assignments: Iterable[B.Assignment], operator_of: Callable[[str], str]) -> str:
    """Why `assignments` give one operator two share indices of a job ("" if they do not): every row
    counts, whatever its replica or stage (replicas of one index hold the same share; two indices
    together are a step towards all of them). The first conflict in the rows' order is named."""
    held: dict[str, dict[int, str]] = {}  # operator -> share index -> the first node of it holding that index
    for a in assignments:
        op = operator_of(a.node)
        parties = held.setdefault(op, {})
        parties.setdefault(a.party, a.node)
        if len(parties) > 1:
            (p0, n0), (p1, n1) = list(parties.items())[:2]
            return (f"operator {op!r} is given two share indices: {p0} (node {n0!r}) and {p1} (node {n1!r}); "
                    f"one operator may hold one share index of a job")
    return ""


def _operators(registration: RegistrationLookup | None, before: int) -> Callable[[str], str]:
    """node id -> its operator: what its first registration declares if that registration is in the log
    before index `before` (the job.assign), else the node itself."""
    def operator_of(node: str) -> str:
        le = registration(node) if registration is not None else None
        if le is None or le.index >= before or le.entry.kind != E.REGISTER or le.entry.author != node:
            return node
        return E.registered_operator(le.entry)
    return operator_of


def first_registration(led, node: str) -> _Logged | None:
    """The first `node.register` of `node` on the ledger `led` (the one that counts), or None."""
    found = led.query(kind=E.REGISTER, author=node, limit=1)
    return found[0] if found else None


def read_job(job_id: str, entries: Iterable[_Logged], models: Iterable[_Logged] = (),
             registration: RegistrationLookup | None = None) -> JobView:
    """Apply the authorship table to a job's entries (log order; any mix of kinds; entries of other
    jobs are skipped), with the `model.publish` entries of the ledger (or bundle) in `models` and
    `registration` finding a node's first `node.register` (its operator; None: every node is its own
    operator). Raises JobError if there is no valid `job.open`."""
    ordered = sorted(entries, key=lambda le: le.index)
    mine = [le for le in ordered if le.entry.job_id == job_id]
    opens = [le for le in mine if le.entry.kind == E.JOB_OPEN]
    jo = next((x for x in (( le, _typed(B.JobOpen, le, None)) for le in opens) if x[1] is not None), None)
    if jo is None:
        raise JobError(f"no valid job.open for {job_id!r}")
    view = JobView(job_id, Counted(jo[0].index, jo[0].entry, jo[1]))
    n = view.n_parties
    for le in sorted(models, key=lambda le: le.index):
        if le.entry.kind == E.MODEL and le.entry.body.get("model_id") == view.open.body.model_id:
            pub = _typed(B.ModelPublish, le, None)
            if pub is not None:
                view.publish = Counted(le.index, le.entry, pub)
                break

    def noise(le: _Logged, why: str) -> None:
        view.noise.append(Noise(le.index, le.entry.kind, le.entry.author, why))

    for le in mine:
        e, kind = le.entry, le.entry.kind
        if le.index == view.open.index:
            continue
        if kind == E.JOB_OPEN:
            noise(le, "a second job.open for this id")
        elif kind == E.JOB_ASSIGN:
            a = _typed(B.JobAssign, le, view)
            if a is None:
                continue
            if e.author != view.opener:
                noise(le, f"job.assign by {e.author}, not by the job's opener {view.opener}")
            elif view.assign is not None:
                noise(le, "a later job.assign")
            else:
                why = _assignment_problem(a, n, view.dealer, _operators(registration, le.index), view.replicas)
                if why:
                    noise(le, why)
                else:
                    view.assign = Counted(le.index, e, a)
        elif kind == E.DEALER_COMMIT:
            d = _typed(B.DealerCommit, le, view)
            if d is None:
                continue
            if e.author != view.dealer:
                noise(le, f"dealer.commit by {e.author}, not by the job's dealer {view.dealer}")
            elif view.dealer_commit is not None:
                noise(le, "a later dealer.commit")
            elif sorted(d.seeds) != list(range(n)):
                noise(le, "dealer.commit does not commit to every party's seed")
            else:
                view.dealer_commit = Counted(le.index, e, d)
        elif kind == E.JOB_ROOT:
            r = _typed(B.JobRoot, le, view)
            if r is None:
                continue
            if view.assign is None or view.replica_nodes.get((r.party, r.replica)) != e.author or r.node != e.author:
                noise(le, f"node.job_root for party {r.party} replica {r.replica} by {e.author}, who is not "
                          f"assigned to it")
            elif (r.party, r.replica) in view.replica_roots:
                noise(le, "a later job root for this party and replica")
            else:
                view.replica_roots[(r.party, r.replica)] = Counted(le.index, e, r)
                view.roots.setdefault(r.party, view.replica_roots[(r.party, r.replica)])
        elif kind == E.REVEAL:
            rv = _typed(B.Reveal, le, view)
            if rv is None:
                continue
            slot: int | str = C.DEALER_SLOT if rv.party is None else rv.party
            replicas = view.nodes_of(rv.party) if slot != C.DEALER_SLOT else []  # type: ignore[arg-type]
            entitled = view.dealer if slot == C.DEALER_SLOT else (e.author if e.author in replicas else None)
            beacon = view.beacon(slot)
            if e.author != entitled:
                noise(le, f"reveal for slot {slot} by {e.author}, who is not that participant")
            elif slot in view.reveals:
                noise(le, "a later reveal for this slot")
            elif not view.committed or le.index < view.seal_size:
                noise(le, "a reveal posted before the job's commitments were sealed")
            elif beacon is None or not C.opens(view.job_id, slot, rv.value, beacon):
                noise(le, f"reveal for slot {slot} does not open its beacon commitment")
            else:
                view.reveals[slot] = Counted(le.index, e, rv)
        elif kind == E.CHALLENGE:
            c = _typed(B.Challenge, le, view)
            if c is not None:
                view.challenges.append(Counted(le.index, e, c))
        elif kind == E.OPENING:
            o = _typed(B.Opening, le, view)
            if o is None:
                continue
            if e.author not in view.nodes_of(o.party) or o.node != e.author:
                noise(le, f"opening of party {o.party} by {e.author}, who is not assigned to it")
            else:
                view._pending.append((le, o))
        elif kind in (E.BLOB_REQUEST, E.BLOB_PROVIDE):
            typed_blob = _typed(B.BlobRequest if kind == E.BLOB_REQUEST else B.BlobProvide, le, view)
            if typed_blob is not None:
                view._pending.append((le, typed_blob))  # judged against the counted openings
        elif kind == E.RELEASE:
            rl = _typed(B.DealerRelease, le, view)
            if rl is None:
                continue
            if e.author != view.dealer:
                noise(le, f"dealer.release by {e.author}, not by the job's dealer {view.dealer}")
            else:
                view._pending.append((le, rl))
        elif kind == E.REFRESH:
            rf = _typed(B.ModelRefresh, le, view)
            if rf is None:
                continue
            if view.publish is None or e.author != view.publish.author or rf.model_id != view.open.body.model_id:
                noise(le, "model.refresh not by the model's publisher")
            elif view.refresh is not None:
                noise(le, "a later model.refresh")
            else:
                view.refresh = Counted(le.index, e, rf)
        elif kind == E.VERDICT:
            v = _typed(B.Verdict, le, view)
            if v is not None:
                view.verdicts.append(Counted(le.index, e, v))
        elif kind == E.JOB_RESUME:
            rs = _typed(B.JobResume, le, view)
            if rs is None:
                continue
            why = _resume_problem(view, rs, e.author, _operators(registration, le.index))
            if why:
                noise(le, why)
            else:
                view.resumes[rs.party] = Counted(le.index, e, rs)
        elif kind == E.JOB_FAIL:
            jf = _typed(B.JobFail, le, view)
            if jf is None:
                continue
            if e.author != view.opener:
                noise(le, f"job.fail by {e.author}, not by the job's opener {view.opener}")
            elif view.fail is not None:
                noise(le, "a later job.fail")
            else:
                view.fail = Counted(le.index, e, jf)
        else:
            noise(le, f"{kind} is not part of the job protocol")
    return view


def _assignment_problem(a: B.JobAssign, n: int, dealer: str, operator_of: Callable[[str], str],
                        replicas: int = 1) -> str:
    """Why an assignment cannot count ("" if it can); `operator_of` maps a node id to its operator."""
    if not 1 <= replicas <= MAX_REPLICAS:
        return f"job.open asks for {replicas} replicas per share index; a job has 1..{MAX_REPLICAS}"
    rows = [x for x in a.assignments if x.stage == 0]
    if sorted((x.party, x.replica) for x in rows) != [(p, r) for p in range(n) for r in range(replicas)]:
        return (f"job.assign does not name exactly one node per share index 0..{n - 1}"
                + (f" and replica 0..{replicas - 1}" if replicas > 1 else ""))
    nodes = [x.node for x in rows]
    if len(set(nodes)) != len(nodes):
        return "job.assign gives one node two share indices" + (" or replicas" if replicas > 1 else "")
    if dealer in nodes:
        return "job.assign names the job's dealer as a node"
    why = operator_problem(a.assignments, operator_of)
    return f"job.assign: {why}" if why else ""


def _resume_problem(view: JobView, rs: B.JobResume, author: str, operator_of: Callable[[str], str]) -> str:
    """Why a job.resume cannot count at this point of the log ("" if it can): specs/node-daemon.md section 8."""
    n = view.n_parties
    if author != view.opener:
        return f"job.resume by {author}, not by the job's opener {view.opener}"
    if view.fail is not None:
        return "job.resume after the job was closed (job.fail)"
    if view.assign is None:
        return "job.resume before a counted job.assign"
    if not 0 <= rs.party < n:
        return f"job.resume of share index {rs.party}, outside 0..{n - 1}"
    if rs.party in view.roots:
        return f"job.resume of share index {rs.party}, which already finished (its job root is on the ledger)"
    if rs.party in view.resumes:
        return f"a later job.resume of share index {rs.party}"
    if rs.standby not in view.open.body.standby:
        return f"job.resume names {rs.standby!r}, which job.open does not name as a standby"
    current = view.replica_nodes
    if rs.lost != current.get((rs.party, 0)):
        return (f"job.resume says {rs.lost!r} was lost, but share index {rs.party}'s replica 0 is "
                f"{current.get((rs.party, 0))!r}'s")
    if rs.standby in current.values():
        return f"job.resume names {rs.standby!r}, which already holds a share index of the job"
    if view.publish is None or view.publish.body.delivered_index(rs.standby) != rs.party:
        return f"job.resume names {rs.standby!r}, which holds no share of index {rs.party} (no delivery to it)"
    rows = [B.Assignment(node, p, r) for (p, r), node in current.items() if (p, r) != (rs.party, 0)]
    why = operator_problem([*rows, B.Assignment(rs.standby, rs.party, 0)], operator_of)
    return f"job.resume: {why}" if why else ""


def job_failed(led, job_id: str) -> B.JobFail | None:
    """The counted `job.fail` of a job (written by its opener), or None; cheap enough to poll."""
    fails = led.query(job_id=job_id, kind=E.JOB_FAIL)
    if not fails:
        return None
    opens = led.query(job_id=job_id, kind=E.JOB_OPEN, limit=1)
    if not opens:
        return None
    for le in fails:
        if le.entry.author == opens[0].entry.author:
            jf = _typed(B.JobFail, le, None)
            if jf is not None:
                return jf
    return None


def counted_heartbeat(le: _Logged) -> Counted[B.Heartbeat] | None:
    """`le` as a counted `node.heartbeat` (well formed, written by the node it names), else None."""
    if le.entry.kind != E.HEARTBEAT:
        return None
    hb = _typed(B.Heartbeat, le, None)
    if hb is None or hb.node != le.entry.author:
        return None
    return Counted(le.index, le.entry, hb)


def last_heartbeat(led, node: str) -> Counted[B.Heartbeat] | None:
    """The latest `node.heartbeat` that counts for `node`: written by the node itself (author = body.node)."""
    for le in reversed(led.query(kind=E.HEARTBEAT, node=node, author=node)):
        hb = counted_heartbeat(le)
        if hb is not None and hb.body.node == node:
            return hb
    return None


def counted_verdicts(view: JobView, auditors: Iterable[str]) -> list[Counted[B.Verdict]]:
    """The verdicts of a job that count: one per auditor (its first), an auditor being an author
    registered with the `verifier` role (`auditors`: their node ids); in log order. A verdict by
    anyone else is a claim that counts for nothing."""
    allowed, seen, out = set(auditors), set(), []
    for v in view.verdicts:
        if v.author in allowed and v.author not in seen and v.body.job_id == view.job_id:
            seen.add(v.author)
            out.append(v)
    return out


def read_job_from_ledger(led, job_id: str) -> JobView:
    """`read_job` over a ledger (its job entries, model publications and the assigned nodes' registrations)."""
    return read_job(job_id, led.by_job(job_id), led.query(kind=E.MODEL), lambda node: first_registration(led, node))


def resume_problem(led, rs: B.JobResume, author: str) -> str:
    """Why `rs`, if `author` appended it to the ledger now, would not count ("" if it would): the same rule
    `read_job` applies (`_resume_problem`), for a client that must not post a job.resume that cannot count."""
    view = read_job_from_ledger(led, rs.job_id)
    return _resume_problem(view, rs, author, _operators(lambda node: first_registration(led, node), led.size()))


def first_sealing_checkpoint(led, view: JobView):
    """The first stored signed checkpoint (valid under the ledger's log key) that seals the job, or None."""
    if not view.committed:
        return None
    need = view.seal_size
    scp = next((c for c in led.checkpoints() if c.size >= need), None)
    if scp is None or not scp.verify(led.log_key):
        return None
    return scp


def _checkpoint_entries_after(led, after: int, log_key: bytes | None) -> list:
    """Log-authored `checkpoint` entries at indexes > `after` whose checkpoint is the log's (signers[0]
    is the log key) and sits at its own size, in log order."""
    from ledger.checkpoints import checkpoint_from_obj

    out = []
    for le in led.query(kind=E.CHECKPOINT, start=after + 1):
        try:
            scp = checkpoint_from_obj(le.entry.body["checkpoint"])
        except Exception:  # noqa: BLE001 - not a checkpoint we can count
            continue
        if scp.size == le.index and (log_key is None or scp.log_key == bytes(log_key)):
            out.append(le)
    return out


def deadline_index(led, after: int, k: int, log_key: bytes | None) -> int | None:
    """The ledger index of the k-th checkpoint entry after index `after` (the deadline of an answer
    due from `after` on: specs/audit.md section 6), or None while the log has not reached it."""
    cps = _checkpoint_entries_after(led, after, log_key)
    return cps[k - 1].index if len(cps) >= k else None


@dataclass
class ChallengeState:
    """Where a job's challenge stands on a ledger: the counted entries, the seal, the derivation."""

    view: JobView
    seal: object | None = None  # SignedCheckpoint
    derived: C.Challenge | None = None
    counted: Counted[B.Challenge] | None = None
    problem: str = ""  # why there is no derived challenge yet

    @property
    def opened(self) -> list[int]:
        return self.derived.opened if self.derived is not None else []


def challenge_state(led, job_id: str, log_key: bytes | None = None) -> ChallengeState:
    """Read the job, find its sealing checkpoint (under `log_key`, default the ledger's), derive the
    challenge if every reveal is in, and count the answers to the first posted derived challenge.
    Raises JobError when the ledger has no valid job.open for `job_id`."""
    key = led.log_key if log_key is None else log_key
    return challenge_state_of(read_job_from_ledger(led, job_id), led.checkpoints, lambda c: c.verify(key))


def challenge_state_of(view: JobView, checkpoints: Callable[[], Iterable], valid: Callable[[object], bool]
                       ) -> ChallengeState:
    """`challenge_state` over a job already read: the seal is the first of `checkpoints()` (signed
    checkpoints by size, read only once the job is committed) covering the job's commitments for
    which `valid(checkpoint)` holds (its signature verifies under the pinned log key)."""
    st = ChallengeState(view)
    if not view.committed:
        st.problem = "the job's commitments are not all on the ledger"
        return st
    need = view.seal_size
    st.seal = next((c for c in checkpoints() if c.size >= need and valid(c)), None)
    try:
        st.derived = view.derive_challenge(st.seal)
    except (NotSealed, NotRevealed) as exc:
        st.problem = str(exc)
        return st
    st.counted = view.counted_challenge(st.derived)
    if st.counted is not None:
        view.judge_answers(st.counted.index)
    return st


def publication(led, model_id: str) -> B.ModelPublish:
    """The first `model.publish` of `model_id` on the ledger (the model); raises JobError."""
    for le in led.query(kind=E.MODEL):
        if le.entry.body.get("model_id") == model_id:
            try:
                return B.ModelPublish.from_entry(le.entry)
            except BodyError as exc:
                raise JobError(f"model {model_id}: unreadable publication: {exc}") from None
    raise JobError(f"model {model_id} is not published on this ledger")


def published_manifest(led, model_id: str) -> dict:
    """The manifest of the first `model.publish` of `model_id` on the ledger; raises JobError."""
    import json

    try:
        return json.loads(led.get_blob(publication(led, model_id).manifest))
    except ValueError as exc:
        raise JobError(f"model {model_id}: unreadable publication: {exc}") from None
