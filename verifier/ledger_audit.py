"""`verify audit <job-id>`: audit a job from the ledger alone (specs/audit.md).

1. Read the job's entries; every one must carry a valid Ed25519 signature by its registered
   author and be included under the sealing signed checkpoint (RFC 9162 inclusion proofs),
   and the nodes' job roots must pass one aggregate BLS check.
2. Broadcast consistency: every node's opened_root (inside its signed job root) is equal, and
   the broadcast receipts the nodes publish show no sender that signed two different chains
   (verifier.broadcast: equivocation is proven by the receipts alone).
3. Challenge: seed = BLAKE3(CHALLENGE || cbor([job, checkpoint size, checkpoint root, roots])),
   a function of the sealed ledger only; posted as a `challenge` entry naming the N-1 opened
   share indices (never all N: the audit privacy budget, enforced here and by the nodes).
4. Openings (nodes) and the seed release (dealer) arrive as `opening` entries; each node's
   records must reproduce its committed roots, then its program is replayed.
5. A signed `verdict` entry, and for each cheater an evidence bundle that `verify evidence`
   checks offline.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import blake3
import torch

from ledger import Identity, Ledger, merkle
from ledger import entries as E
from mpc_core import Session, SharedTensor
from mpc_core.dealer import Request
from mpc_core.domains import CHALLENGE
from mpc_core.encoding import canonical_cbor, decode_cbor
from protocol.commitments import JobCommitment, verify_records
from sim.local_network import combined_root, decode_release, read_manifest_blob
from models.gpt_mpc import SharedGPT
from models.publish import commit_tensor, manifest_config
from protocol.opening import dec_tensor, decode_opening
from prover.owner_service import job_refresh, refreshed_manifest
from verifier.audit import DEFAULT_LAMBDA, PartyVerdict, Verdict, first_unfaithful_output, replay_verdict
from verifier.broadcast import check_receipts
from verifier.replay import replay_parties


class AuditIncomplete(Exception):
    """The audit cannot reach a verdict from what is on the ledger."""


@dataclass
class LedgerAudit:
    verdict: Verdict
    challenge_index: int | None = None
    verdict_index: int | None = None
    evidence: dict[int, bytes] = field(default_factory=dict)  # party -> bundle
    checks: dict[str, bool] = field(default_factory=dict)


def _job_entries(led: Ledger, job_id: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for e in led.by_job(job_id):
        out.setdefault(e.kind, []).append(e)
    return out


def challenge_seed(job_id: str, size: int, root: bytes, roots: list[bytes]) -> bytes:
    return blake3.blake3(CHALLENGE + canonical_cbor([job_id, size, root, roots])).digest()


def _included(led: Ledger, entries: list, scp) -> bool:
    try:
        return all(merkle.verify_inclusion(e.data, e.index, scp.size, led.inclusion_proof(e.index, scp.size), scp.root)
                   for e in entries if e.index < scp.size)
    except Exception:
        return False


def party_program_from_opening(manifest: dict, weights: dict[str, torch.Tensor], tokens: list[torch.Tensor]) -> Callable:
    def program(s: Session) -> None:
        ws = {n: SharedTensor.from_shares(s, weights[n].unsqueeze(0)) for n in sorted(manifest["tensors"])}
        model = SharedGPT(s, manifest_config(manifest), ws)
        for onehot in tokens:
            model.forward(onehot.unsqueeze(0), all_logits=False)
    return program


def joint_program_from_openings(manifest: dict, weights: list[dict[str, torch.Tensor]],
                                tokens: list[list[torch.Tensor]]) -> Callable:
    """`party_program_from_opening` for several parties on one session: their opened weight shares and
    one-hot input shares stacked on the party axis (in the order given)."""
    if len(weights) != len(tokens) or len({len(t) for t in tokens}) > 1:
        raise ValueError("the parties' opened inputs do not line up")

    def stack(ts: list) -> torch.Tensor:
        if any(not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.shape != ts[0].shape for t in ts):
            raise ValueError("the parties' opened tensors differ in type or shape")
        return torch.stack(ts)

    def program(s: Session) -> None:
        ws = {n: SharedTensor.from_shares(s, stack([w[n] for w in weights])) for n in sorted(manifest["tensors"])}
        model = SharedGPT(s, manifest_config(manifest), ws)
        for onehots in zip(*tokens):
            model.forward(stack(list(onehots)), all_logits=False)
    return program


def _corrections_fn(blob) -> Callable[[Request, int], dict[str, torch.Tensor]]:
    items = decode_cbor(blob) if isinstance(blob, (bytes, bytearray)) else blob

    def fetch(req: Request, op_index: int) -> dict[str, torch.Tensor]:
        desc, comps = items[op_index]
        if desc != req.describe():
            raise ValueError(f"dealer release: request #{op_index} is {desc}, replay asks {req.describe()}")
        return {k: dec_tensor(v) for k, v in comps.items()}
    return fetch


def audit_on_ledger(led: Ledger, job_id: str, verifier: Identity | None, *, lam: int = DEFAULT_LAMBDA, mode: str = "freivalds",
                    respond: Callable[[int, list[int]], None] | None = None, post: bool = True,
                    wait_s: float = 0.0) -> LedgerAudit:
    """Audit `job_id`; `respond(challenge_index, parties)` lets in-process nodes answer (deployed nodes
    watch the ledger instead). Raises AuditIncomplete when no verdict is possible."""
    t0 = time.perf_counter()
    ents = _job_entries(led, job_id)
    if E.JOB_OPEN not in ents:
        raise AuditIncomplete(f"no job {job_id!r} on this ledger")
    job_open = ents[E.JOB_OPEN][0].entry.body
    n = job_open["n_parties"]
    roots = sorted(ents.get(E.JOB_ROOT, []), key=lambda e: e.entry.body["party"])
    checks: dict[str, bool] = {}
    # The challenge comes from the FIRST signed checkpoint that seals every job root, so that
    # auditing again (later, or by someone else) derives the same challenge and never opens
    # a different set of share indices: the audit privacy budget holds across audits.
    need = max((e.index for e in roots), default=-1) + 1
    scp = next((c for c in led.checkpoints() if c.size >= need), None)
    if scp is None or not scp.verify(led.log_key):
        raise AuditIncomplete("no valid signed checkpoint seals the job roots yet")
    sealed = [e for es in ents.values() for e in es]
    checks["inclusion"] = _included(led, sealed, scp) and all(e.index < scp.size for e in roots)
    regs = led.registrations()
    ed = {r.node_id: r.ed25519 for r in regs}
    checks["entry_signatures"] = all(e.entry.author in ed and e.entry.verify_sig(ed[e.entry.author]) for e in sealed)
    bls = {r.node_id: r.bls for r in regs}
    checks["job_roots_bls_aggregate"] = E.job_roots_aggregate_ok([e.entry for e in roots], bls)
    commitments = []
    for e in roots:
        b = e.entry.body
        meta = b.get("meta", {})
        vr, orr = meta.get("views_root", b""), meta.get("opened_root", b"")
        if combined_root(vr, orr) != b["root"]:
            checks["job_root_meta"] = False
        commitments.append(JobCommitment(b["party"], b["n_steps"], vr, orr))
    checks.setdefault("job_root_meta", True)
    opened_roots = {c.opened_root for c in commitments}
    assignment = {a["party"]: a["node"] for a in ents[E.JOB_ASSIGN][0].entry.body["assignments"]}
    bcast = check_receipts(job_id, [e.entry.body for e in roots], assignment, ed)
    checks["broadcast_receipts"] = bcast.consistent
    seed = challenge_seed(job_id, scp.size, scp.root, [e.entry.body["root"] for e in roots])
    closed = int.from_bytes(seed[:8], "little") % n
    parties = [p for p in range(n) if p != closed]
    verdict = Verdict(job_id, mode, lam, closed, len(opened_roots) == 1 and len(commitments) == n and bcast.consistent)
    out = LedgerAudit(verdict, checks=checks)
    earlier = led.by_job(job_id, kind=E.CHALLENGE)
    if earlier:
        out.challenge_index = earlier[0].index
        if bytes(earlier[0].entry.body["seed"]) != seed:
            raise AuditIncomplete("the recorded challenge does not follow from the sealed commitments")
    elif post and verifier is not None:
        out.challenge_index = led.append(E.make_entry(verifier, E.CHALLENGE, {
            "job_id": job_id, "checkpoint_size": scp.size, "checkpoint_root": scp.root, "seed": seed,
            "parties": parties, "lambda": lam}))
    else:
        raise AuditIncomplete("no challenge recorded for this job (an auditor key is needed to post one)")
    if respond is not None:
        respond(out.challenge_index, parties)
    deadline = time.monotonic() + wait_s
    while wait_s > 0 and time.monotonic() < deadline and not _all_answered(led, job_id, parties):
        time.sleep(0.2)
    openings, conflicting = {}, set()
    for e in led.by_job(job_id, kind=E.OPENING):
        b = e.entry.body
        if b.get("meta", {}).get("role") == "dealer" or b["node"] != assignment.get(b["party"]):
            continue
        if b["party"] in openings and openings[b["party"]].entry.body["data"] != b["data"]:
            conflicting.add(b["party"])  # two different openings for one challenge: equivocation
        openings.setdefault(b["party"], e)
    release_e = [e for e in led.by_job(job_id, kind=E.OPENING) if e.entry.body.get("meta", {}).get("role") == "dealer"]
    release = decode_release(led.get_blob(release_e[-1].entry.body["data"])) if release_e else {"seeds": {}}
    model_id = job_open["model_id"]
    manifest = read_manifest_blob(led, model_id)
    refresh_e = job_refresh(led, job_id, model_id)
    pub_meta = next((e.entry.body.get("meta") or {} for e in led.query(kind=E.MODEL)
                     if e.entry.body["model_id"] == model_id), {})
    if refresh_e is not None:  # this job's fresh sharing: openings are checked against the owner's per-job commitments
        try:
            manifest = refreshed_manifest(manifest, led.get_blob(refresh_e.entry.body["commitments"]))
        except Exception as exc:
            raise AuditIncomplete(f"the owner's refresh commitments for {job_id} are malformed: {exc}") from None
    elif pub_meta.get("refresh"):
        raise AuditIncomplete(f"model {model_id} refreshes its shares per job, and job {job_id} has no refresh entry")
    by_party = {c.party: c for c in commitments}
    for p in range(n):
        if p in bcast.equivocators:  # proven by the peers' receipts, opened or not
            verdict.parties.append(PartyVerdict(p, "cheated", bcast.equivocators[p]))
        elif p in bcast.disputes:  # a peer says p's receipt was bad: unproven, so not an accusation
            verdict.parties.append(PartyVerdict(p, "unresponsive", "no valid broadcast receipt according to party "
                                                + ", ".join(str(r) for r in bcast.disputes[p])))
        elif p == closed:
            verdict.parties.append(PartyVerdict(p, "not opened", "closed by the challenge"))
        elif p not in by_party:
            verdict.parties.append(PartyVerdict(p, "unresponsive", "no job root"))
        elif p not in openings:
            verdict.parties.append(PartyVerdict(p, "unresponsive", "no opening posted"))
        elif p in conflicting:
            verdict.parties.append(PartyVerdict(p, "cheated", "posted two different openings for one challenge"))
        elif p not in release["seeds"]:
            verdict.parties.append(PartyVerdict(p, "unresponsive", "the dealer did not release this party's seed"))
        elif p == n - 1 and not release.get("corrections"):
            verdict.parties.append(PartyVerdict(p, "unresponsive", "the dealer did not release its corrections"))
        else:
            verdict.parties.append(p)  # judged below, with the other opened parties
    judge_parties(verdict.parties, n, job_id, by_party, {p: led.get_blob(openings[p].entry.body["data"])
                                                           for p in verdict.parties if isinstance(p, int)},
                  release, manifest, seed, lam, mode)
    verdict.seconds = time.perf_counter() - t0
    if post and verifier is not None:
        accused = [assignment[p] for p in verdict.cheaters]
        outcome = "fail" if accused else ("pass" if verdict.clean else "incomplete")
        reason = "; ".join(f"party {pv.party}: {pv.reason}" for pv in verdict.parties if pv.status in ("cheated", "unresponsive"))
        out.verdict_index = led.append(E.make_entry(verifier, E.VERDICT, {
            "job_id": job_id, "outcome": outcome, "accused": accused, "reason": reason[:4096],
            "soundness_bits": lam if mode == "freivalds" else 64}))
        for p in verdict.cheaters:
            idx = [e.index for e in ents[E.JOB_OPEN] + ents[E.JOB_ASSIGN] + ents.get(E.DEALER_COMMIT, []) + roots]
            idx += [openings[p].index] if p in openings else []
            idx += [release_e[-1].index] if release_e else []
            idx += [out.challenge_index, out.verdict_index]
            idx += [e.index for e in led.query(kind=E.MODEL) if e.entry.body["model_id"] == model_id]
            idx += [refresh_e.index] if refresh_e is not None else []
            idx += [e.index for e in led.query(kind=E.REGISTER, author=assignment[p], limit=1)]
            out.evidence[p] = led.export_evidence(sorted(set(idx)))
    return out


def _all_answered(led: Ledger, job_id: str, parties: list[int]) -> bool:
    """Has every challenged party posted an opening (or refusal), and the dealer its release?"""
    es = led.by_job(job_id, kind=E.OPENING)
    nodes = {e.entry.body["party"] for e in es if e.entry.body.get("meta", {}).get("role") != "dealer"}
    return nodes >= set(parties) and any(e.entry.body.get("meta", {}).get("role") == "dealer" for e in es)


def _read_opening(p: int, commitment: JobCommitment, raw: bytes) -> PartyVerdict | dict:
    """A party's decoded opening once its records open its commitment and its product outputs open
    their steps' digests, else the verdict it earned. Never raises."""
    try:
        obj = decode_cbor(raw)
        if isinstance(obj, dict) and "refused" in obj:
            return PartyVerdict(p, "cheated", f"refused to open a valid challenge: {obj['refused']}")
        op = decode_opening(raw)
    except Exception as exc:
        return PartyVerdict(p, "cheated", f"malformed opening: {type(exc).__name__}: {exc}")
    if not verify_records(op["records"], op["salts"], commitment):
        return PartyVerdict(p, "cheated", "opened records do not match the committed roots")
    bad = first_unfaithful_output(op["records"], op["outs"].get)
    if bad is not None:  # checked in both modes: exact replay recomputes products and would never look
        return PartyVerdict(p, "cheated", f"step {bad}: opened output does not match its commitment")
    return op


def _replayed_verdict(p: int, result, manifest: dict, op: dict) -> PartyVerdict:
    pv = replay_verdict(p, result)
    if pv.status == "clean" and not _published_weights(manifest, op["weights"], op["weight_salts"], p):
        return PartyVerdict(p, "cheated", "weight share differs from the published commitment", result)
    return pv


def judge_parties(slots: list, n: int, job_id: str, commitments: dict[int, JobCommitment], raws: dict[int, bytes],
                  release: dict, manifest: dict, seed: bytes, lam: int, mode: str) -> None:
    """Judge the opened parties standing as ints in `slots` (replaced by their verdicts): every one whose
    opening decodes and opens its commitments is replayed with the others in one joint replay; the rest
    keep the verdict of the check they failed. Never raises on what the nodes supplied."""
    ops: dict[int, dict] = {}
    for k, p in enumerate(slots):
        if isinstance(p, int):
            got = _read_opening(p, commitments[p], raws[p])
            if isinstance(got, PartyVerdict):
                slots[k] = got
            else:
                ops[p] = got
    parties = tuple(ops)
    if not parties:
        return
    corr = _corrections_fn(release["corrections"]) if n - 1 in ops and release.get("corrections") else None

    def program_for(ps: tuple[int, ...]) -> Callable:
        if len(ps) == 1:
            return party_program_from_opening(manifest, ops[ps[0]]["weights"], ops[ps[0]]["tokens"])
        return joint_program_from_openings(manifest, [ops[p]["weights"] for p in ps], [ops[p]["tokens"] for p in ps])

    results = replay_parties(program_for, parties=parties, n_parties=n, job=job_id.encode(),
                             seeds={p: release["seeds"][p] for p in parties},
                             records={p: ops[p]["records"] for p in parties},
                             opened={p: (lambda k, op=ops[p]: op["public"].get(k, {})) for p in parties},
                             outs={p: (lambda k, op=ops[p]: op["outs"].get(k)) for p in parties},
                             corrections=corr, mode=mode, lam=lam, challenge_seed=seed, frac_bits=manifest["frac_bits"])
    by_party = {p: _replayed_verdict(p, r, manifest, ops[p]) for p, r in zip(parties, results)}
    for k, p in enumerate(slots):
        if isinstance(p, int):
            slots[k] = by_party[p]


def judge_party(p: int, n: int, job_id: str, commitment: JobCommitment, raw: bytes, release: dict, manifest: dict,
                seed: bytes, lam: int, mode: str) -> PartyVerdict:
    """Judge one opened party from its opening blob; never raises on what the node supplied."""
    slots: list = [p]
    judge_parties(slots, n, job_id, {p: commitment}, {p: raw}, release, manifest, seed, lam, mode)
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
    ok: bool  # the bundle verifies and proves that `accused` cheated
    accused: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    parties: list[PartyVerdict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "accused": self.accused, "reasons": self.reasons,
                "parties": [p.as_dict() for p in self.parties]}


def check_evidence(bundle: bytes, log_key: bytes | None = None) -> EvidenceCheck:
    """Check an evidence bundle offline: ledger proofs and signatures, the challenge's derivation,
    and a fresh replay of every accused party. Never raises."""
    from ledger import verify_bundle

    out = EvidenceCheck(False)
    rep = verify_bundle(bundle, log_key)
    if not rep.ok:
        out.reasons = ["bundle does not verify: " + r for r in rep.reasons]
        return out
    try:
        by_kind: dict[str, list] = {}
        for i, e in rep.entries:
            by_kind.setdefault(e.kind, []).append(e)
        job = by_kind[E.JOB_OPEN][0].body
        job_id, n = job["job_id"], job["n_parties"]
        assignment = {a["party"]: a["node"] for a in by_kind[E.JOB_ASSIGN][0].body["assignments"]}
        roots = sorted(by_kind[E.JOB_ROOT], key=lambda e: e.body["party"])
        ch = by_kind[E.CHALLENGE][0].body
        verdict = by_kind[E.VERDICT][0].body
        seed = challenge_seed(job_id, ch["checkpoint_size"], ch["checkpoint_root"], [e.body["root"] for e in roots])
        if seed != bytes(ch["seed"]):
            out.reasons.append("the challenge does not follow from the sealed job roots")
            return out
        model = next(e for e in by_kind[E.MODEL] if e.body["model_id"] == job["model_id"])
        import json
        manifest = json.loads(rep.blobs[model.body["manifest"]])
        refreshes = [e for e in by_kind.get(E.REFRESH, []) if e.author == model.author and e.body["job_id"] == job_id]
        if refreshes:
            manifest = refreshed_manifest(manifest, rep.blobs[refreshes[0].body["commitments"]])
        release_e = [e for e in by_kind.get(E.OPENING, []) if e.body.get("meta", {}).get("role") == "dealer"]
        release = decode_release(rep.blobs[release_e[-1].body["data"]]) if release_e else {"seeds": {}}
        openings = {e.body["party"]: e for e in by_kind.get(E.OPENING, []) if e.body.get("meta", {}).get("role") != "dealer"}
        commitments = {}
        for e in roots:
            m = e.body.get("meta", {})
            if combined_root(m.get("views_root", b""), m.get("opened_root", b"")) != e.body["root"]:
                out.reasons.append(f"job root of party {e.body['party']} does not bind its two roots")
                return out
            commitments[e.body["party"]] = JobCommitment(e.body["party"], e.body["n_steps"], m["views_root"], m["opened_root"])
        node_party = {v: k for k, v in assignment.items()}
        keys = {e.author: bytes(e.body["ed25519"]) for e in by_kind.get(E.REGISTER, [])}
        bcast = check_receipts(job_id, [e.body for e in roots], assignment, keys)
        for node in verdict["accused"]:
            p = node_party[node]
            if p in bcast.equivocators:
                out.parties.append(PartyVerdict(p, "cheated", bcast.equivocators[p]))
                out.accused.append(node)
                continue
            if p not in openings:
                out.reasons.append(f"{node}: no opening in the bundle")
                continue
            pv = judge_party(p, n, job_id, commitments[p], rep.blobs[openings[p].body["data"]], release, manifest,
                             seed, ch.get("lambda", DEFAULT_LAMBDA), "exact")
            out.parties.append(pv)
            if pv.status == "cheated":
                out.accused.append(node)
            else:
                out.reasons.append(f"{node}: the replay does not confirm cheating ({pv.reason})")
        out.ok = bool(out.accused) and not out.reasons
    except Exception as exc:  # attacker-controlled bundle
        out.reasons.append(f"malformed evidence: {type(exc).__name__}: {exc}")
        out.ok = False
    return out
