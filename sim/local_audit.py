"""Audits of jobs run in this process (sim.local_job): the nodes' side (openings from their
transcripts, honouring a node's cheat) and the auditor's call (verifier.audit.audit)."""
from __future__ import annotations

from typing import Callable

from models.publish import load_party_share, read_manifest
from protocol.opening import MATMUL_KINDS
from protocol.program import program_for_parties
from sim.adversary import altered, bad_opening_step
from sim.local_job import party_program
from verifier.audit import DEFAULT_LAMBDA, Refused, Verdict, audit


def joint_party_program(model_dir, parties: tuple[int, ...], token_shares: list[list]) -> Callable:
    """The program the parties `parties` ran (protocol.program.program_for_parties), on one session holding
    them all: their published weight shares and one-hot input shares stacked on the party axis, in that order."""
    if len(token_shares) != len(parties) or len({len(t) for t in token_shares}) > 1:
        raise ValueError("the parties' input shares do not line up")

    def program(s) -> None:
        manifest = read_manifest(model_dir)
        shares = [load_party_share(model_dir, p, manifest) for p in parties]  # checked against the manifest
        program_for_parties(manifest, shares, token_shares)(s)
    return program


def local_opening(state) -> tuple:
    """What node `state.party` of an in-process job reveals when challenged: its records and salts, and its
    public openings and matmul outputs read from its transcript once (the node's work, not the auditor's).
    Honours a `refuse` or `bad-opening` cheat of that node."""
    if state.cheat is not None and state.cheat.kind == "refuse":
        raise Refused(f"party {state.party} declined")
    t = state.transcript
    records = list(t.records)
    public: dict[int, dict] = {}
    outs: dict[int, object] = {}
    for r in records:
        wants_public = any(n.startswith("opened.") for n in r.digests)
        if not wants_public and r.kind not in MATMUL_KINDS:
            continue
        data = t.load(r.index)
        if wants_public:
            public[r.index] = {n: v for n, v in data.items() if n.startswith("opened.")}
        if r.kind in MATMUL_KINDS and "out" in data:
            outs[r.index] = data["out"]
    if state.cheat is not None and state.cheat.kind == "bad-opening":
        target = bad_opening_step(records, state.cheat)
        outs[target] = altered(outs[target])
    return records, list(state.salts), (lambda k: public.get(k, {})), outs.get


def local_openings(job, parties=None) -> dict[int, object]:
    """Every challenged node's answer (`local_opening`, or the Refused it raised), by party: the
    nodes' side of an audit, so that a benchmark can time it apart from the auditor's replay."""
    if parties is None:
        parties = job.challenge().opened
    out: dict[int, object] = {}
    for p in parties:
        try:
            out[p] = local_opening(job.parties[p])
        except Refused as exc:
            out[p] = exc
    return out


def audit_local_job(job, *, mode: str = "freivalds", lam: int = DEFAULT_LAMBDA,
                    openings: dict[int, object] | None = None) -> Verdict:
    """Audit a job run in this process (sim.local_job.run_job), honouring its parties' cheats at opening time.

    `openings` (from `local_openings`) are the nodes' answers prepared beforehand; without them each
    challenged node answers when the audit asks."""
    def get_opening(p: int):
        got = openings[p] if openings is not None and p in openings else local_opening(job.parties[p])
        if isinstance(got, Exception):
            raise got
        return got

    commitments = [job.parties[p].commitment for p in range(job.n_parties)]
    return audit(job.job_id, commitments, challenge=job.challenge(), n_parties=job.n_parties, get_opening=get_opening,
                 get_program=lambda p: party_program(job.model_dir, p, job.parties[p].token_shares),
                 get_seed=job.seed, get_corrections=job.corrections, mode=mode, lam=lam,
                 frac_bits=job.session.frac_bits,
                 get_joint_program=lambda ps: joint_party_program(job.model_dir, ps,
                                                                  [job.parties[p].token_shares for p in ps]))
