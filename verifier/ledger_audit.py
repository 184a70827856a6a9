"""`verify audit <job-id>`: audit a job from the ledger alone (specs/audit.md).

1. Read the job through protocol.job_view: only entries from the author entitled to write them
   count (the authorship table); everything else is reported as noise and never counted against
   anyone. Every counted entry must be included under the sealing signed checkpoint (RFC 9162
   inclusion proofs, under the pinned log key), and the nodes' job roots must pass one aggregate
   BLS check.
2. Broadcast consistency: every node's opened_root is equal, and the broadcast receipts show no
   sender that signed two different chains (verifier.broadcast).
3. Challenge: derived by protocol.challenge from the sealing checkpoint, the job roots and every
   participant's revealed beacon; the first posted `challenge` entry equal to the derivation
   counts (anyone may post it; this auditor does if none exists). A participant that has not
   revealed by the deadline is "defaulted".
4. Openings (nodes) and the seed release (dealer) answer the counted challenge; an opened node
   that has not answered by the deadline (the job's `open_deadline` checkpoints after the
   challenge) is "defaulted", with evidence. Each opening's records must reproduce the committed
   roots, then its program (protocol.program) is replayed.
5. A signed `verdict` entry (one per auditor and job), and for each accused node an evidence
   bundle that `verify evidence` checks offline.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ledger import Identity, Ledger, merkle
from ledger import entries as E
from ledger.evidence import export_bundle
from mpc_core import prg
from mpc_core.dealer import Request
from mpc_core.encoding import decode_cbor
from protocol import bodies as B
from protocol.challenge import derive
from protocol.commitments import JobCommitment, job_root, verify_records
from protocol.errors import JobError
from protocol.job_view import (ChallengeState, JobView, challenge_state, deadline_index, read_job)
from protocol.opening import OpeningBlobs, corrections_head, dec_tensor, decode_opening, decode_release
from protocol.program import program_for_parties
from protocol.weight_refresh import refreshed_manifest
from models.publish import commit_tensor, manifest_config
from verifier.audit import DEFAULT_LAMBDA, PartyVerdict, Verdict, first_unfaithful_output, replay_verdict
from verifier.broadcast import check_receipts
from verifier.replay import replay_parties
from verifier.step_proof import StepProofCheck, build_step_proof, check_step_proof, step_proof_party
from verifier.summary_terms import DISPUTED_RECEIPT, NO_JOB_ROOT  # the index reads them back (ledger_index)


class AuditIncomplete(Exception):
    """The audit cannot reach a verdict from what is on the ledger (yet)."""


@dataclass
class LedgerAudit:
    verdict: Verdict
    challenge_index: int | None = None
    verdict_index: int | None = None
    evidence: dict[str, bytes] = field(default_factory=dict)  # accused node id -> bundle
    checks: dict[str, bool] = field(default_factory=dict)
    existing_verdict: int | None = None  # this auditor's verdict posted before (not posted again)
    missing_evidence: list[str] = field(default_factory=list)  # accused nodes whose bundle needs a later checkpoint


class BlobSource:
    """The blobs an audit reads: from the ledger, and a node's served opening blobs from the ledger (once
    provided there) or else from the URL its opening names, each checked against its digest. Keeps what
    it fetched (`fetched`: the evidence carries it) and what it could not (`unreachable`: asked for on
    the ledger with a blob.request)."""

    def __init__(self, get_blob: Callable[[bytes], bytes], fetch: bool = True, timeout_s: float = 30.0):
        self.get_blob, self.fetch, self.timeout_s = get_blob, fetch, timeout_s
        self.fetched: dict[bytes, bytes] = {}
        self.unreachable: dict[bytes, str] = {}

    def __call__(self, digest: bytes) -> bytes:
        return self.get_blob(digest)

    def served(self, digest: bytes, url: str | None) -> bytes:
        """A served opening blob; raises LookupError when neither the ledger nor the node gives it."""
        try:
            return self.get_blob(digest)
        except Exception:  # noqa: BLE001 - not on the ledger (not provided yet): the node's URL
            pass
        if digest in self.fetched:
            return self.fetched[digest]
        if digest in self.unreachable or not self.fetch or not url:
            raise LookupError(self.unreachable.get(digest) or f"blob {digest.hex()[:16]} is not on the ledger")
        try:
            data = _http_blob(url, digest, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - an unreachable or lying node
            self.unreachable[digest] = f"cannot fetch blob {digest.hex()[:16]} from {url[:100]}: {exc}"
            raise LookupError(self.unreachable[digest]) from None
        self.fetched[digest] = data
        return data


MAX_SERVED_BLOB = 1 << 30


def _http_blob(url: str, digest: bytes, timeout_s: float) -> bytes:
    """GET url/v1/blobs/<hex> (prover.blob_server), checked against `digest`; raises on anything else."""
    import urllib.request

    from ledger.blobs import blob_digest

    if not url.startswith(("http://", "https://")):
        raise ValueError("not an http(s) URL")
    with urllib.request.urlopen(f"{url.rstrip('/')}/v1/blobs/{digest.hex()}", timeout=timeout_s) as resp:
        data = resp.read(MAX_SERVED_BLOB + 1)
    if len(data) > MAX_SERVED_BLOB or blob_digest(data) != digest:
        raise ValueError("the node answered bytes that do not match the digest")
    return data


def _served_default(view: JobView, answer, deadline_after: Callable[[int], int | None] | None) -> str:
    """Why the author of a served `answer` (an opening or the release) defaulted on it ("" if it did
    not): a blob of it was requested on the ledger and not put there before the request's deadline."""
    o = answer.body
    if not o.served or deadline_after is None:
        return ""
    for d in o.blobs:
        r = view.requests.get(d) if d is not None else None
        if r is None:
            continue
        dl = deadline_after(r.index)
        prov = view.provides.get(d)
        if dl is not None and (prov is None or prov.index > dl):
            return (f"did not put its served opening blob {d.hex()[:16]} on the ledger before the deadline "
                    f"(checkpoint entry #{dl}) of request #{r.index}")
    return ""


def _corrections_fn(blob) -> Callable[[Request, int], dict[str, torch.Tensor]]:
    items = decode_cbor(blob) if isinstance(blob, (bytes, bytearray)) else blob

    def fetch(req: Request, op_index: int) -> dict[str, torch.Tensor]:
        desc, comps = items[op_index]
        if desc != req.describe():
            raise ValueError(f"dealer release: request #{op_index} is {desc}, replay asks {req.describe()}")
        return {k: dec_tensor(v) for k, v in comps.items()}
    return fetch


def _included(led: Ledger, indexes: list[int], scp) -> bool:
    try:
        return all(merkle.verify_inclusion(led.get(i).data, i, scp.size, led.inclusion_proof(i, scp.size), scp.root)
                   for i in indexes if i < scp.size)
    except Exception:  # noqa: BLE001
        return False


def _manifest(view: JobView, get_blob: Callable[[bytes], bytes]) -> dict:
    """The job's model manifest, with the job's refreshed commitments when the model refreshes per job."""
    if view.publish is None:
        raise AuditIncomplete(f"model {view.open.body.model_id} is not published on this ledger")
    manifest = json.loads(get_blob(view.publish.body.manifest))
    if view.refresh is not None:
        try:
            return refreshed_manifest(manifest, get_blob(view.refresh.body.commitments))
        except Exception as exc:  # noqa: BLE001
            raise AuditIncomplete(f"the owner's refresh commitments for {view.job_id} are malformed: {exc}") from None
    if view.publish.body.refresh:
        raise AuditIncomplete(f"model {view.publish.body.model_id} refreshes its shares per job, and job "
                              f"{view.job_id} has no refresh entry by its publisher")
    return manifest


def _commitments(view: JobView) -> tuple[dict[int, JobCommitment], bool]:
    """Each counted job root's commitment, and whether every root binds its two Merkle roots."""
    out, ok = {}, True
    for p, r in view.roots.items():
        b = r.body
        ok &= job_root(b.views_root, b.opened_root) == b.root
        out[p] = JobCommitment(p, b.n_steps, b.views_root, b.opened_root)
    return out, ok


def _release(view: JobView, get_blob: Callable[[bytes], bytes],
             deadline_after: Callable[[int], int | None] | None = None) -> tuple[dict | None, str, bool | str]:
    """The dealer's decoded release, checked against its seed commitments, or (None, why not); the flag
    says the release's blob could not be read: True when the ledger cannot give it (pruned, say: nobody's
    fault, the audit cannot decide), "pending" when the dealer serves it and it could not be fetched (it is
    asked for on the ledger), "defaulted" when the dealer did not put it on the ledger when asked."""
    if view.release is None:
        return None, "no seed release", False
    body = view.release.body
    why = _served_default(view, view.release, deadline_after)
    if why:
        return None, why, "defaulted"
    try:
        served = getattr(get_blob, "served", None)
        raw = served(body.data, body.url) if body.served and served is not None else get_blob(body.data)
    except Exception as exc:  # noqa: BLE001 - a blob the ledger cannot give (pruned): could not decide
        if body.served:
            return None, f"the dealer's served release is not available ({exc}); it is asked for on the ledger", \
                "pending"
        return None, f"seed release blob unavailable: {exc}", True
    try:
        rel = decode_release(raw)
    except Exception as exc:  # noqa: BLE001
        return None, f"malformed seed release: {type(exc).__name__}: {exc}", False
    commits = view.dealer_commit.body.seeds if view.dealer_commit is not None else {}
    for p, seed in rel["seeds"].items():
        if p not in commits or prg.seed_commitment(seed, view.job_id.encode(), p) != commits[p]:
            return None, f"released seed of party {p} does not open the dealer's commitment", False
    last = view.roots.get(view.n_parties - 1)
    if rel["corrections"] is not None and last is not None and last.body.corrections is not None:
        try:
            head = corrections_head(decode_cbor(rel["corrections"]))
        except Exception as exc:  # noqa: BLE001
            return None, f"malformed corrections in the release: {type(exc).__name__}: {exc}", False
        if head != last.body.corrections:
            return None, "released corrections differ from the ones the last party signed for in its job root", False
    return rel, "", False


def judge_job(view: JobView, challenge_index: int | None, seed: bytes, closed: int, deadline: int | None,
              get_blob: Callable[[bytes], bytes], reg_keys: dict[str, bytes], *, lam: int, mode: str,
              judge: frozenset[int] | None = None, progress: Callable[[int, int], None] | None = None,
              deadline_after: Callable[[int], int | None] | None = None) -> Verdict:
    """The verdict on every party and the dealer from the counted entries of `view` (answers counted
    for `challenge_index`). `deadline` is the index of the deadline checkpoint entry, None while the
    log has not reached it. With `judge`, only those parties are replayed (evidence checks). Never
    raises on what participants supplied."""
    n = view.n_parties
    commitments, _ = _commitments(view)
    R = view.replicas
    rank_nodes = {p + r * n: node for (p, r), node in view.replica_nodes.items()}
    bcast = check_receipts(view.job_id, [view.replica_roots[k].entry.body for k in sorted(view.replica_roots)],
                           rank_nodes, reg_keys, n if R > 1 else None)
    equivocators = {rank % n: (rank_nodes.get(rank), why) for rank, why in sorted(bcast.equivocators.items())}
    disputed = {}
    for rank, by in sorted(bcast.disputes.items()):
        disputed.setdefault(rank % n, (rank_nodes.get(rank), by))
    opened_roots = {c.opened_root for c in commitments.values()}
    v = Verdict(view.job_id, mode, lam, closed, len(opened_roots) == 1 and len(commitments) == n and bcast.consistent,
                dealer=view.dealer, noise=[x.as_dict() for x in view.noise])
    release, release_problem, release_state = _release(view, get_blob, deadline_after)
    release_unavailable = release_state is True
    release_pending = release_state == "pending"

    def late(c) -> bool:
        return c is None or (deadline is not None and c.index > deadline)

    dealer_fault, dealer_kind = "", "defaulted"
    if release_state == "defaulted":
        dealer_fault = release_problem
    elif release is None and view.release is not None and not release_state:  # malformed or not opening: provable
        dealer_fault, dealer_kind = release_problem, "cheated"
    slots: list = []
    for p in range(n):
        node = index_node(view, p)
        op = view.openings.get(p)
        if p in equivocators:  # proven by the peers' receipts, opened or not
            slots.append(PartyVerdict(p, "cheated", equivocators[p][1], node=equivocators[p][0]))
        elif p in disputed:  # a peer says p's receipt was bad: unproven, so not an accusation
            slots.append(PartyVerdict(p, "unresponsive", f"{DISPUTED_RECEIPT} "
                                      + ", ".join(str(r) for r in disputed[p][1]), node=disputed[p][0]))
        elif p == closed:
            slots.append(PartyVerdict(p, "not opened", "closed by the challenge", node=node))
        elif p not in commitments:
            slots.append(PartyVerdict(p, "unresponsive", NO_JOB_ROOT, node=node))
        elif p in view.conflicting:
            slots.append(PartyVerdict(p, "cheated", "posted two different openings for one challenge",
                                      node=view.conflicting[p].author))
        elif late(op):
            if deadline is None:
                slots.append(PartyVerdict(p, "pending", "no opening yet; the deadline has not passed", node=node))
            else:
                slots.append(PartyVerdict(p, "defaulted", f"no opening before the deadline (checkpoint entry "
                                          f"#{deadline}) for challenge #{challenge_index}", node=node))
        elif release_unavailable:
            slots.append(PartyVerdict(p, "error", release_problem, node=node))
        elif release_pending:
            slots.append(PartyVerdict(p, "pending", release_problem, node=node))
        elif release is None or p not in release["seeds"] or (p == n - 1 and not release.get("corrections")):
            why = release_problem or ("the dealer did not release this party's seed" if release is None
                                      or p not in release["seeds"] else "the dealer did not release its corrections")
            if late(view.release) and deadline is not None and not dealer_fault:
                dealer_fault = dealer_fault or f"withheld the release for party {p} past the deadline"
            status = "unresponsive" if (dealer_fault or deadline is not None) else "pending"
            slots.append(PartyVerdict(p, status, why, node=node))
        elif judge is not None and p not in judge:
            slots.append(PartyVerdict(p, "not opened", "not judged here", node=node))
        else:
            slots.append(p)  # judged below, with the other opened parties
    if dealer_fault:
        v.dealer_status, v.dealer_reason = dealer_kind, dealer_fault
    try:
        manifest = _manifest(view, get_blob)
    except AuditIncomplete as exc:
        slots = [PartyVerdict(s, "error", str(exc), node=index_node(view, s)) if isinstance(s, int) else s
                 for s in slots]
        v.parties = slots
        v.replicas = replica_findings(view, bcast.minority)
        return v
    raws = {}
    served = getattr(get_blob, "served", None)
    for k, s in enumerate(slots):
        if not isinstance(s, int):
            continue
        body = view.openings[s].body
        why = _served_default(view, view.openings[s], deadline_after)
        if why:
            slots[k] = PartyVerdict(s, "defaulted", why, node=index_node(view, s))
            continue
        if body.served:
            get = (lambda d, url=body.url: served(d, url)) if served is not None else get_blob
            try:
                raws[s] = OpeningBlobs(get(body.data), None if body.public is None else get(body.public))
            except Exception as exc:  # noqa: BLE001 - not fetched: asked for on the ledger, pending meanwhile
                req = next((view.requests[d] for d in body.blobs if d in view.requests), None)
                slots[k] = PartyVerdict(s, "pending", f"its served opening is not available ({exc}); "
                                        + (f"requested on the ledger at #{req.index}" if req is not None
                                           else "to be requested on the ledger"), node=index_node(view, s))
            continue
        try:  # the party's blob, and the public-values blob it references (stored once per job)
            raws[s] = OpeningBlobs(get_blob(body.data), None if body.public is None else get_blob(body.public))
        except Exception as exc:  # noqa: BLE001 - a blob the ledger cannot give (pruned): could not decide
            slots[k] = PartyVerdict(s, "error", f"opening blob unavailable: {exc}", node=index_node(view, s))
    judge_parties(slots, n, view.job_id, commitments, raws, release or {"seeds": {}}, manifest, seed, lam, mode,
                  prompt_len=_prompt_len(view), progress=progress)
    for pv in slots:
        if pv.node is None or pv.status not in ("cheated", "unresponsive"):
            pv.node = index_node(view, pv.party)
    v.parties = slots
    v.replicas = replica_findings(view, bcast.minority)
    if view.divergent and release is not None:
        _judge_divergent(view, v, closed, deadline, late, commitments, release, manifest, get_blob, served, seed, lam,
                         mode, judge)
    return v


def _judge_divergent(view: JobView, v: Verdict, closed: int, deadline: int | None, late, commitments, release: dict,
                     manifest: dict, get_blob, served, seed: bytes, lam: int, mode: str,
                     judge: frozenset[int] | None) -> None:
    """Each `divergent` replica of an opened index is judged on its own opening against its own root (the
    index's verdict already judged the index root's author): a replica whose transcript replays is
    `clean` (its twin deviated), one that does not is `cheated`, one that did not open is `pending`
    or, past the deadline, `defaulted` (specs/audit.md section 7). Never raises."""
    n = view.n_parties
    for f in v.replicas:
        p = f["party"]
        if not f.get("own_root") or p == closed or (judge is not None and p not in judge):
            continue
        root = view.replica_roots[(p, f["replica"])]
        op = view.replica_openings.get((p, f["node"]))
        if late(op):
            f["status"], f["reason"] = ("pending", "no opening of its own yet") if deadline is None else (
                "defaulted", f"no opening of its own before the deadline (checkpoint entry #{deadline})")
            continue
        if p not in release.get("seeds", {}) or (p == n - 1 and not release.get("corrections")):
            f["reason"] += "; the dealer did not release this index's material: undecided"
            continue
        body = op.body
        try:
            get = (lambda d, url=body.url: served(d, url)) if body.served and served is not None else get_blob
            raw = OpeningBlobs(get(body.data), None if body.public is None else get(body.public))
        except Exception as exc:  # noqa: BLE001 - could not decide
            f["status"], f["reason"] = "error", f"its opening is not available: {exc}"
            continue
        b = root.body
        pv = judge_party(p, n, view.job_id, JobCommitment(p, b.n_steps, b.views_root, b.opened_root), raw, release,
                         manifest, seed, lam, mode, prompt_len=_prompt_len(view))
        f["status"] = pv.status
        f["reason"] = (f"its own opening against its own root: {pv.reason}" if pv.reason else
                       "its own opening replays against its own root")


def index_node(view: JobView, party: int) -> str | None:
    """The node a verdict on share index `party` names: the author of the index's counted root (with
    replicas, the first replica that posted one), else the index's replica-0 node."""
    root = view.roots.get(party)
    return root.author if root is not None else view.nodes.get(party)


def replica_findings(view: JobView, outvoted: dict[int, str] | None = None) -> list[dict]:
    """With replicas, what the job roots and receipts say about each replica beyond its index's counted
    root: a replica with no root while its index has one is `unresponsive` (lost mid-job: never an
    accusation); a replica whose root differs from its index's is `divergent` (its twins and it
    disagree: an audit of that index decides which deviated); so is a replica that `outvoted` names
    (rank -> why: three or more replicas' receipts, verifier.broadcast). A node a standby replaced
    (job.resume) is `unresponsive`. Empty for a job without replicas or resumptions."""
    out = [{"party": p, "replica": r, "node": lost, "status": "unresponsive",
            "reason": f"lost mid-job; standby {view.replica_nodes[(p, r)]} resumed its index (job.resume, entry "
                      f"#{view.resumes[p].index})"} for (p, r), lost in sorted(view.replaced.items())]
    if view.replicas == 1:
        return out
    divergent = view.divergent
    n = view.n_parties
    for (p, r), node in sorted(view.replica_nodes.items()):
        root = view.replica_roots.get((p, r))
        if root is not None and (outvoted or {}).get(r * n + p) and not (
                p in divergent and (root.body.root, root.body.n_steps) != (view.roots[p].body.root,
                                                                          view.roots[p].body.n_steps)):
            out.append({"party": p, "replica": r, "node": node, "status": "divergent", "reason": outvoted[r * n + p]})
            continue
        if root is None:
            if p in view.roots:
                out.append({"party": p, "replica": r, "node": node, "status": "unresponsive",
                            "reason": NO_JOB_ROOT + " (its index finished without it)"})
        elif p in divergent and (root.body.root, root.body.n_steps) != (view.roots[p].body.root,
                                                                        view.roots[p].body.n_steps):
            out.append({"party": p, "replica": r, "node": node, "status": "divergent", "own_root": True,
                        "reason": f"its job root differs from that of {view.roots[p].author} (entry "
                                  f"#{view.roots[p].index}), replica of the same index"})
    return out


def _prompt_len(view: JobView) -> int | None:
    v = view.open.body.params.get("prompt_len")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def audit_on_ledger(led: Ledger, job_id: str, verifier: Identity | None, *, lam: int = DEFAULT_LAMBDA,
                    mode: str = "freivalds", respond: Callable[[int, list[int]], None] | None = None,
                    post: bool = True, wait_s: float = 0.0, log_key: bytes | None = None,
                    force: bool = False, progress: Callable[[int, int], None] | None = None) -> LedgerAudit:
    """Audit `job_id` against the log key `log_key` (default: the one the ledger stores; an auditor
    pins its own). `respond(challenge_index, parties)` lets in-process nodes answer (deployed nodes
    watch the ledger instead); the audit waits up to `wait_s` for the answers. A verdict is posted
    (with `post` and a `verifier` identity) only when it is decided, and once per auditor and job
    unless `force`; `progress(steps done, steps committed)` follows the replay. Raises AuditIncomplete
    when no verdict is possible yet."""
    t0 = time.perf_counter()
    key = led.log_key if log_key is None else bytes(log_key)

    def state() -> ChallengeState:
        try:
            return challenge_state(led, job_id, key)
        except JobError as exc:
            raise AuditIncomplete(str(exc)) from None

    st = state()
    deadline_t = time.monotonic() + wait_s
    while (st.seal is None or st.derived is None) and time.monotonic() < deadline_t:
        time.sleep(0.2)  # the log seals the job, then the participants reveal their beacons
        st = state()
    view = st.view
    if view.assign is None:
        raise AuditIncomplete(f"job {job_id} has no valid job.assign by its opener")
    if st.seal is None:
        raise AuditIncomplete(st.problem or "no valid signed checkpoint seals the job's commitments yet")
    k = view.open.body.open_deadline
    reg_keys = {r.node_id: r.ed25519 for r in led.registrations()}
    out = LedgerAudit(Verdict(job_id, mode, lam, -1, False))
    if st.derived is None:  # some participant has not revealed its beacon
        dl = deadline_index(led, st.seal.size - 1, k, key)
        if dl is None:
            raise AuditIncomplete(f"{st.problem} (pending: the deadline is {k} checkpoints after the seal)")
        v = Verdict(job_id, mode, lam, -1, False, dealer=view.dealer, noise=[x.as_dict() for x in view.noise])
        missing = view.missing_reveals()
        for p in range(view.n_parties):
            if p in missing:
                v.parties.append(PartyVerdict(p, "defaulted", f"withheld its challenge beacon past the deadline "
                                              f"(checkpoint entry #{dl})", node=index_node(view, p)))
            else:
                v.parties.append(PartyVerdict(p, "not opened", "no challenge could be derived", node=index_node(view, p)))
        if "dealer" in missing:
            v.dealer_status, v.dealer_reason = "defaulted", f"withheld its challenge beacon past the deadline (#{dl})"
        out.verdict = v
        _finish(led, out, view, st, verifier, post, force, lam, mode, window=(st.seal.size, dl + 1), t0=t0,
                until=deadline_t)
        return out
    if st.counted is None:
        if not (post and verifier is not None):
            raise AuditIncomplete("no challenge recorded for this job (an auditor key is needed to post one)")
        d = st.derived
        led.append(E.make_entry(verifier, E.CHALLENGE, B.Challenge(
            job_id, d.checkpoint_size, d.checkpoint_root, d.seed, tuple(d.opened), lam).to_body()))
        st = state()
        if st.counted is None:
            raise AuditIncomplete("the challenge entry just posted does not count (the ledger changed underneath)")
    out.challenge_index = st.counted.index
    if respond is not None:
        respond(out.challenge_index, st.opened)
    while time.monotonic() < deadline_t and not _all_answered(st):
        if deadline_index(led, out.challenge_index, k, key) is not None:
            break
        time.sleep(0.2)
        st = state()
    st = state()
    view = st.view
    dl = deadline_index(led, out.challenge_index, k, key)
    commitments, bound = _commitments(view)
    counted = [view.open.index, view.assign.index, view.dealer_commit.index, *[r.index for r in view.roots.values()]]
    out.checks = {
        "inclusion": _included(led, counted, st.seal) and all(i < st.seal.size for i in counted),
        "job_roots_bls_aggregate": E.job_roots_aggregate_ok([view.roots[p].entry for p in sorted(view.roots)],
                                                            {r.node_id: r.bls for r in led.registrations()}),
        "job_root_binding": bound,
    }
    source = BlobSource(led.get_blob)

    def deadline_after(i: int) -> int | None:
        return deadline_index(led, i, k, key)

    out.verdict = judge_job(view, out.challenge_index, st.derived.seed, st.derived.closed, dl, source, reg_keys,
                            lam=lam, mode=mode, progress=progress, deadline_after=deadline_after)
    asked = _request_unreachable(led, view, out.verdict, source, verifier if post else None)
    if asked:  # wait (up to wait_s) for the nodes to put what was asked for on the ledger, then judge again
        while time.monotonic() < deadline_t:
            st = state()
            view = st.view
            if all(d in view.provides or (d in view.requests and deadline_after(view.requests[d].index) is not None)
                   for d in asked):
                break
            time.sleep(0.2)
        st = state()
        view = st.view
        out.verdict = judge_job(view, out.challenge_index, st.derived.seed, st.derived.closed, dl, source, reg_keys,
                                lam=lam, mode=mode, progress=progress, deadline_after=deadline_after)
    window = None
    if dl is not None:
        ends = [dl] + [e for r in view.requests.values() if (e := deadline_after(r.index)) is not None]
        window = (out.challenge_index + 1, max(ends) + 1)
    _finish(led, out, view, st, verifier, post, force, lam, mode, window=window, t0=t0, until=deadline_t, source=source)
    return out


def _request_unreachable(led: Ledger, view: JobView, v: Verdict, source: BlobSource,
                         verifier: Identity | None) -> list[bytes]:
    """Ask on the ledger (`blob.request`, with the auditor's key) for every blob of a served opening or
    release that the audit could not fetch and nobody has asked for yet; the digests still awaited."""
    want = []
    answers = [view.openings.get(pv.party) for pv in v.parties if pv.status == "pending"]
    if any(pv.status == "pending" for pv in v.parties) and view.release is not None:
        answers.append(view.release)
    for o in answers:
        if o is None or not o.body.served:
            continue
        for d in o.body.blobs:
            if d is not None and d in source.unreachable and d not in view.provides:
                want.append(d)
                if d not in view.requests and verifier is not None:
                    led.append(E.make_entry(verifier, E.BLOB_REQUEST, B.BlobRequest(view.job_id, d).to_body()))
    return want


def _covering_checkpoint(led: Ledger, need: int, until: float):
    """The latest stored checkpoint of size >= `need`; signs one if this handle is the log; else waits for
    the log operator (`shardproof ledger serve`) to sign one until `until` (monotonic). None if none came."""
    while True:
        scp = next((c for c in reversed(led.checkpoints()) if c.size >= need), None)
        if scp is not None:
            return scp
        if led.identity is not None:
            return led.checkpoint()
        if time.monotonic() >= until:
            return None
        time.sleep(0.2)


def _all_answered(st: ChallengeState) -> bool:
    """Has every challenged party posted an opening, and the dealer its release?"""
    v = st.view
    return v.release is not None and all(p in v.openings for p in st.opened)


def _finish(led: Ledger, out: LedgerAudit, view: JobView, st: ChallengeState, verifier: Identity | None, post: bool,
            force: bool, lam: int, mode: str, window: tuple[int, int] | None, t0: float, until: float = 0.0,
            source: BlobSource | None = None) -> None:
    """Post the verdict (once per auditor, only when decided) and export the accused nodes' evidence, under
    the first signed checkpoint that covers it (waiting for the log to sign one until `until`, monotonic)."""
    v = out.verdict
    v.seconds = time.perf_counter() - t0
    if v.pending or any(r["status"] == "pending" for r in v.replicas) or (v.errors and not v.accused_nodes):
        return  # nothing is posted that the auditor cannot stand behind (an answer still due, its own error)
    mine = [c for c in view.verdicts if verifier is not None and c.author == verifier.node_id]
    if mine and not force:
        out.existing_verdict = out.verdict_index = mine[0].index
    elif post and verifier is not None:
        reason = "; ".join([f"party {pv.party} ({pv.node}): {pv.reason}" for pv in v.parties
                            if pv.status not in ("clean", "not opened")]
                           + [f"party {r['party']} replica {r['replica']} ({r['node']}): {r['status']}: {r['reason']}"
                              for r in v.replicas if r["status"] != "clean"])
        if v.dealer_status != "ok":
            reason = f"dealer {v.dealer}: {v.dealer_reason}; " + reason
        defaulted = [pv.node for pv in v.parties if pv.status == "defaulted" and pv.node]
        defaulted += [r["node"] for r in v.replicas if r["status"] == "defaulted" and r["node"] not in defaulted]
        if v.dealer_status == "defaulted" and v.dealer:
            defaulted.append(v.dealer)
        out.verdict_index = led.append(E.make_entry(verifier, E.VERDICT, B.Verdict(
            view.job_id, v.outcome, tuple(v.accused_nodes), reason, lam if mode == "freivalds" else 64,
            tuple(defaulted)).to_body()))
    accused = v.accused_nodes
    if not accused:
        return
    base = [view.open.index, view.assign.index]
    base += [view.dealer_commit.index] if view.dealer_commit else []
    base += [r.index for r in view.replica_roots.values()] + [r.index for r in view.reveals.values()]
    base += [st.counted.index] if st.counted is not None else []
    base += [view.publish.index] if view.publish is not None else []
    base += [view.refresh.index] if view.refresh is not None else []
    base += [view.release.index] if view.release is not None else []
    base += [out.verdict_index] if out.verdict_index is not None else []
    for node in accused:
        idx = list(base)
        p = view.node_party(node)
        if p is not None and p in view.openings:
            idx.append(view.openings[p].index)
        if p is not None and p in view.conflicting:
            idx.append(view.conflicting[p].index)
        if p is not None and (p, node) in view.replica_openings:  # a divergent replica's own opening
            idx.append(view.replica_openings[(p, node)].index)
        reg = led.registration(node)
        if reg is not None and reg.index >= 0:
            idx.append(reg.index)
        need = max([*idx, *([window[1] - 1] if window else [])]) + 1
        scp = _covering_checkpoint(led, need, until)
        if scp is None:
            out.missing_evidence.append(node)  # the log has not signed a checkpoint covering it yet
            continue
        source = source or BlobSource(led.get_blob)
        compact = _one_step_evidence(view, v, p, source) if p is not None else None
        omit, proofs = compact if compact is not None else ((), ())
        out.evidence[node] = export_bundle(led, sorted(set(idx)), scp, window=window, tree_heads=[st.seal.size],
                                           omit_blobs=omit, proofs=proofs, served=source.fetched)


def _one_step_evidence(view: JobView, v: Verdict, p: int,
                       source: "BlobSource") -> tuple[list[bytes], list[bytes]] | None:
    """For a party convicted by a replay at one step that is inconsistent in itself: the blobs a bundle
    can leave out (its opening, the public values, the dealer's release) and the one-step proof that
    replaces them (verifier.step_proof), checked here before it is used; else None (full evidence).
    Never raises."""
    pv = next((x for x in v.parties if x.party == p), None)
    if pv is None or pv.status != "cheated" or pv.replay is None or pv.replay.finding is None:
        return None
    try:
        n, step = view.n_parties, pv.replay.finding.step
        manifest = _manifest(view, source)
        release, _, _ = _release(view, source)
        body = view.openings[p].body
        if release is None or view.release is None or p not in release["seeds"]:
            return None
        get = (lambda d: source.served(d, body.url)) if body.served else source
        op = decode_opening(get(body.data), None if body.public is None else get(body.public))
        items = decode_cbor(release["corrections"]) if p == n - 1 and release.get("corrections") else None
        data = build_step_proof(program_for_parties(manifest, [op["weights"]], [op["tokens"]]), party=p, n_parties=n,
                                job_id=view.job_id, seed=release["seeds"][p], records=op["records"], salts=op["salts"],
                                opened=lambda k: op["public"].get(k, {}), outs=op["outs"].get, corrections_items=items,
                                step=step, frac_bits=manifest["frac_bits"])
        if data is None or not _check_one_step(view, p, data).proven:
            return None
        omit = [body.data, view.release.body.data] + ([body.public] if body.public is not None else [])
        return omit, [data]
    except Exception:  # noqa: BLE001 - fall back to the full evidence
        return None


def _check_one_step(view: JobView, p: int, data: bytes) -> StepProofCheck:
    """check_step_proof against the counted job root of party `p`, the dealer's seed commitment and the
    last party's signed corrections root."""
    root = view.roots.get(p)
    n = view.n_parties
    if root is None or view.dealer_commit is None or p not in view.dealer_commit.body.seeds:
        return StepProofCheck(False, p, -1, reason="the party has no counted job root or seed commitment")
    b = root.body
    if job_root(b.views_root, b.opened_root) != b.root:
        return StepProofCheck(False, p, -1, reason="the party's job root does not bind its views root")
    last = view.roots.get(n - 1)
    return check_step_proof(data, job_id=view.job_id, n_parties=n, party=p, views_root=b.views_root,
                            n_steps=b.n_steps, seed_commitment=view.dealer_commit.body.seeds[p],
                            corrections_root=last.body.corrections if last is not None else None)


def _shape_problem(op: dict, manifest: dict, prompt_len: int | None) -> str:
    """Why an opening's inputs cannot be this job's inputs ("" if they can): every weight tensor of the
    manifest with its shape, and one-hot token shares of the vocabulary's width (the prompt, then one
    token per step). An opening that fails this is the node's fault, never the replay's."""
    tensors = manifest["tensors"]
    if set(op["weights"]) != set(tensors):
        return "the opened weight share names other tensors than the manifest"
    for name, meta in tensors.items():
        w = op["weights"][name]
        if w.dtype != torch.int64 or list(w.shape) != list(meta["shape"]):
            return f"opened weight {name} has shape {list(w.shape)}, the manifest says {meta['shape']}"
    vocab = manifest_config(manifest).vocab_size
    toks = op["tokens"]
    if not toks:
        return "the opening has no input shares"
    for i, t in enumerate(toks):
        rows = (prompt_len if prompt_len is not None else t.shape[0]) if i == 0 else 1
        if t.dtype != torch.int64 or t.dim() != 2 or list(t.shape) != [rows, vocab]:
            return f"input share #{i} has shape {list(t.shape)}, not [{rows}, {vocab}]"
    return ""


def _read_opening(p: int, commitment: JobCommitment, raw: OpeningBlobs, manifest: dict | None = None,
                  prompt_len: int | None = None) -> PartyVerdict | dict:
    """A party's decoded opening (its own blob and the public-values blob it references) once its records
    open its commitment, its inputs have this job's shapes and its product outputs open their steps'
    digests, else the verdict it earned. Never raises."""
    try:
        obj = decode_cbor(raw.data)
        if isinstance(obj, dict) and "refused" in obj:
            return PartyVerdict(p, "cheated", f"refused to open a valid challenge: {obj['refused']}")
        op = decode_opening(raw.data, raw.public)
    except Exception as exc:
        return PartyVerdict(p, "cheated", f"malformed opening: {type(exc).__name__}: {exc}")
    if not verify_records(op["records"], op["salts"], commitment):
        return PartyVerdict(p, "cheated", "opened records do not match the committed roots")
    if manifest is not None:
        try:
            why = _shape_problem(op, manifest, prompt_len)
        except Exception as exc:  # noqa: BLE001 - the manifest is the owner's, checked when published
            return PartyVerdict(p, "error", f"cannot check the opening's shapes: {type(exc).__name__}: {exc}")
        if why:
            return PartyVerdict(p, "cheated", f"malformed opening: {why}")
    bad = first_unfaithful_output(op["records"], op["outs"].get)
    if bad is not None:  # checked in both modes: exact replay recomputes products and would never look
        return PartyVerdict(p, "cheated", f"step {bad}: opened output does not match its commitment")
    return op


def _replayed_verdict(p: int, result, manifest: dict, op: dict) -> PartyVerdict:
    pv = replay_verdict(p, result)
    if pv.status == "clean" and not _published_weights(manifest, op["weights"], op["weight_salts"], p):
        return PartyVerdict(p, "cheated", "weight share differs from the published commitment", result)
    return pv


def judge_parties(slots: list, n: int, job_id: str, commitments: dict[int, JobCommitment],
                  raws: dict[int, OpeningBlobs], release: dict, manifest: dict, seed: bytes, lam: int, mode: str,
                  prompt_len: int | None = None, progress: Callable[[int, int], None] | None = None) -> None:
    """Judge the opened parties standing as ints in `slots` (replaced by their verdicts): every one whose
    opening decodes and opens its commitments is replayed with the others in one joint replay; the rest
    keep the verdict of the check they failed. Never raises on what the nodes supplied."""
    ops: dict[int, dict] = {}
    for k, p in enumerate(slots):
        if isinstance(p, int):
            got = _read_opening(p, commitments[p], raws[p], manifest, prompt_len)
            if isinstance(got, PartyVerdict):
                slots[k] = got
            else:
                ops[p] = got
    parties = tuple(ops)
    if not parties:
        return
    corr = _corrections_fn(release["corrections"]) if n - 1 in ops and release.get("corrections") else None

    def program_for(ps: tuple[int, ...]) -> Callable:
        return program_for_parties(manifest, [ops[p]["weights"] for p in ps], [ops[p]["tokens"] for p in ps])

    results = replay_parties(program_for, parties=parties, n_parties=n, job=job_id.encode(),
                             seeds={p: release["seeds"][p] for p in parties},
                             records={p: ops[p]["records"] for p in parties},
                             opened={p: (lambda k, op=ops[p]: op["public"].get(k, {})) for p in parties},
                             outs={p: (lambda k, op=ops[p]: op["outs"].get(k)) for p in parties},
                             corrections=corr, mode=mode, lam=lam, challenge_seed=seed, frac_bits=manifest["frac_bits"],
                             progress=progress)
    by_party = {p: _replayed_verdict(p, r, manifest, ops[p]) for p, r in zip(parties, results)}
    for k, p in enumerate(slots):
        if isinstance(p, int):
            slots[k] = by_party[p]


def judge_party(p: int, n: int, job_id: str, commitment: JobCommitment, raw: OpeningBlobs, release: dict,
                manifest: dict, seed: bytes, lam: int, mode: str, prompt_len: int | None = None) -> PartyVerdict:
    """Judge one opened party from its opening blobs; never raises on what the node supplied."""
    slots: list = [p]
    judge_parties(slots, n, job_id, {p: commitment}, {p: raw}, release, manifest, seed, lam, mode, prompt_len)
    return slots[0]


def _published_weights(manifest: dict, weights: dict[str, torch.Tensor], salts: dict[str, bytes], party: int) -> bool:
    """Weight consistency: every opened weight tensor opens the owner's published salted commitment."""
    try:
        if set(weights) != set(manifest["tensors"]):
            return False
        for name, meta in manifest["tensors"].items():
            got = commit_tensor(name, weights[name], salts[name], manifest["frac_bits"]).hex()
            if got != meta["commitments"][party]:
                return False
        return True
    except Exception:
        return False


@dataclass
class EvidenceCheck:
    ok: bool  # the bundle verifies under the pinned log key and proves that `accused` cheated or defaulted
    accused: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    parties: list[PartyVerdict] = field(default_factory=list)
    status: str = "not proven"  # "proven", "not proven", "unpinned" (no log key to check against: could not decide)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "status": self.status, "accused": self.accused, "reasons": self.reasons,
                "parties": [p.as_dict() for p in self.parties]}


@dataclass(frozen=True)
class _Leaf:
    index: int
    entry: E.Entry


def check_evidence(bundle: bytes, log_key: bytes | None = None) -> EvidenceCheck:
    """Check an evidence bundle offline against the pinned `log_key`: ledger proofs and signatures, the
    authorship rules (protocol.job_view), the challenge's derivation from the sealed commitments and
    the reveals, and for every accused node either a fresh exact replay of its party that fails, or
    its absence from a complete stretch of the log up to the deadline. Without a log key the
    result is "unpinned", never proven. Never raises."""
    from ledger import verify_bundle

    out = EvidenceCheck(False)
    if log_key is None:
        out.status = "unpinned"
        out.reasons = ["no log key to check the bundle against (pass --log-key, or audit the log once to pin it)"]
        return out
    rep = verify_bundle(bundle, log_key)
    if not rep.ok:
        out.reasons = ["bundle does not verify: " + r for r in rep.reasons]
        return out
    try:
        _check_evidence(rep, out, bytes(log_key))
    except Exception as exc:  # noqa: BLE001 - attacker-controlled bundle
        out.reasons.append(f"malformed evidence: {type(exc).__name__}: {exc}")
        out.accused = []
    out.ok = bool(out.accused) and not out.reasons
    out.status = "proven" if out.ok else "not proven"
    return out


def _check_evidence(rep, out: EvidenceCheck, log_key: bytes) -> None:
    entries = [_Leaf(i, e) for i, e in rep.entries]
    window: list[_Leaf] = []
    for i, data in rep.window:
        try:
            window.append(_Leaf(i, E.decode_entry(data)))
        except Exception:  # noqa: BLE001 - a leaf that is no entry answers nothing
            continue
    opens = [x for x in entries if x.entry.kind == E.JOB_OPEN]
    if not opens:
        out.reasons.append("the bundle has no job.open")
        return
    job_id = opens[0].entry.body.get("job_id")
    regs = rep.registrations  # verified and included: the operators the assignment rule reads
    view = read_job(job_id, [*entries, *[w for w in window if w.index not in {x.index for x in entries}]],
                    [x for x in entries if x.entry.kind == E.MODEL],
                    lambda node: _Leaf(*regs[node]) if node in regs else None)
    if view.assign is None:
        why = [n.reason for n in view.noise if n.kind == E.JOB_ASSIGN]
        out.reasons.append("the bundle holds no counted job.assign" + (f" ({why[0]})" if why else ""))
        return
    if not view.committed:
        out.reasons.append("the bundle does not hold the job's counted commitments")
        return
    k = view.open.body.open_deadline
    seal_sizes = sorted(s for s in rep.tree_heads if s >= view.seal_size)
    if not seal_sizes:
        out.reasons.append("the bundle has no tree head that seals the job's commitments")
        return
    seal_size = seal_sizes[0]
    seal_root = rep.tree_heads[seal_size]

    def deadline_after(after: int) -> int | None:
        cps = []
        for w in sorted(window, key=lambda w: w.index):
            if w.index <= after or w.entry.kind != E.CHECKPOINT:
                continue
            try:
                from ledger.checkpoints import checkpoint_from_obj
                scp = checkpoint_from_obj(w.entry.body["checkpoint"])
            except Exception:  # noqa: BLE001
                continue
            if scp.size == w.index and scp.log_key == log_key:
                cps.append(w.index)
        return cps[k - 1] if len(cps) >= k else None

    def window_covers(start: int, stop: int) -> bool:
        have = {w_i for w_i, _ in rep.window}
        return all(i in have for i in range(start, stop + 1))

    verdict_entries = [x for x in entries if x.entry.kind == E.VERDICT]
    claimed = set(verdict_entries[0].entry.body.get("accused", [])) if verdict_entries else set()
    missing = view.missing_reveals()
    if missing:  # no challenge could be derived: defaults on the reveal
        dl = deadline_after(seal_size - 1)
        if dl is None or not window_covers(seal_size, dl):
            out.reasons.append("reveals are missing but the bundle does not show the deadline passing")
            return
        for slot in missing:
            node = view.dealer if slot == "dealer" else index_node(view, slot)
            out.accused.append(node)
            out.parties.append(PartyVerdict(-1 if slot == "dealer" else slot, "defaulted",
                                            f"withheld its challenge beacon past checkpoint entry #{dl}", node=node))
    else:
        derived = derive(job_id, view.n_parties, seal_size, seal_root,
                         [view.roots[p].body.root for p in range(view.n_parties)],
                         [view.reveals[s].body.value for s in view.slots], view.sealed_divergent(seal_size))
        counted = view.counted_challenge(derived)
        if counted is None:
            out.reasons.append("the bundle's challenge does not follow from the sealed commitments and the reveals")
            return
        view.judge_answers(counted.index)
        dl = deadline_after(counted.index)
        if dl is not None and not window_covers(counted.index + 1, dl):
            dl = None
        wanted = {view.node_party(n) for n in claimed} - {None}
        def request_deadline(i: int) -> int | None:  # a data request's deadline, where the window shows it
            d = deadline_after(i)
            return d if d is not None and window_covers(i + 1, d) else None

        v = judge_job(view, counted.index, derived.seed, derived.closed, dl, lambda d: rep.blobs[d], rep.keys,
                      lam=counted.body.lam or DEFAULT_LAMBDA, mode="exact", judge=frozenset(wanted) if wanted else None,
                      deadline_after=request_deadline)
        out.accused = v.accused_nodes
        out.parties = [pv for pv in v.parties if pv.status in ("cheated", "defaulted")]
        for data in rep.proofs:  # one-step proofs stand in for the openings a bundle leaves out
            p = step_proof_party(data)
            node = index_node(view, p) if p is not None else None
            if p not in derived.opened or node is None:
                out.reasons.append(f"a one-step proof about party {p}, which this challenge did not open")
                continue
            if node in out.accused:
                continue
            res = _check_one_step(view, p, data)
            if not res.proven:
                out.reasons.append(f"party {p}'s one-step proof proves nothing: {res.reason}")
                continue
            out.accused.append(node)
            out.parties = [pv for pv in out.parties if pv.party != p]
            out.parties.append(PartyVerdict(p, "cheated", res.reason, node=node))
    for node in sorted(claimed - set(out.accused)):
        out.reasons.append(f"{node}: the bundle does not confirm the verdict against it")
