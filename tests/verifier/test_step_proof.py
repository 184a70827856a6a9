"""One-step proofs (verifier.step_proof): a cheater's failing step proves the deviation on its own, in a
small proof that checks fast; an honest party's steps, of every kind and for the last party too, never
prove anything; a proof that does not open the party's commitments proves nothing."""
from __future__ import annotations

import time

import pytest

from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.prg import seed_commitment
from protocol.opening import correction_items, corrections_head, enc_tensor
from sim.cheat_spec import Cheat
from sim.local_audit import audit_local_job, local_opening
from sim.local_job import party_program, run_job
from verifier.step_proof import build_step_proof, check_step_proof

PROMPT = [1, 2, 3, 4]


def _job(model_dir, tmp_path, seed, cheats=None, tokens=3):
    return run_job(model_dir, PROMPT, tokens, workdir=tmp_path / f"job{seed}", seed=seed, cheats=cheats or {})


def _prove(job, p: int, step: int) -> bytes | None:
    records, salts, opened, outs = local_opening(job.parties[p])
    items = correction_items(job.session.dealer, job.session.request_log) if p == job.n_parties - 1 else None
    return build_step_proof(party_program(job.model_dir, p, job.parties[p].token_shares), party=p,
                            n_parties=job.n_parties, job_id=job.job_id.decode(), seed=job.seed(p), records=records,
                            salts=salts, opened=opened, outs=outs, corrections_items=items, step=step)


def _check(job, p: int, data: bytes):
    c = job.parties[p].commitment
    items = correction_items(job.session.dealer, job.session.request_log)
    return check_step_proof(data, job_id=job.job_id.decode(), n_parties=job.n_parties, party=p,
                            views_root=c.views_root, n_steps=c.steps,
                            seed_commitment=seed_commitment(job.seed(p), job.job_id, p),
                            corrections_root=corrections_head(items) if p == job.n_parties - 1 else None)


def test_honest_steps_of_every_kind_prove_nothing(model_dir, tmp_path):
    """The first and last step of every kind (fixed_matmul on weights and on grown KV caches included),
    of party 0 and of the last party (whose material includes the dealer's corrections): each proof
    opens every commitment and the step re-executes faithfully, so it proves nothing."""
    job = _job(model_dir, tmp_path, 0)
    records = job.parties[0].transcript.records
    picks: dict[str, list[int]] = {}
    for r in records:
        picks.setdefault(r.kind, []).append(r.index)
    kinds = {k for k in picks if k != "reveal"}
    assert {"beaver_mul", "fixed_matmul", "mask_weight", "trunc", "lookup_open"} <= kinds
    cache_steps = [r.index for r in records if r.kind == "fixed_matmul" and len(r.refs) > 1]
    assert cache_steps, "no product with a grown KV cache in the job"
    for p in (0, job.n_parties - 1):
        for kind in sorted(kinds):
            for step in {picks[kind][0], picks[kind][-1], *(cache_steps[-1:] if kind == "fixed_matmul" else [])}:
                data = _prove(job, p, step)
                assert data is not None, (p, kind, step)
                res = _check(job, p, data)
                assert not res.proven and res.step == step and "faithfully" in res.reason, (p, kind, step, res)


@pytest.mark.parametrize("kind", ["matmul-random", "matmul-2^63", "zeros", "trunc"])
@pytest.mark.parametrize("party", [0, 2])
def test_a_cheaters_failing_step_proves_it(model_dir, tmp_path, kind, party):
    """The audit's failing step of a cheater, alone, proves the deviation: under 1 MB, checked in under 5 s."""
    seed = 0
    while True:  # a job whose challenge opens the cheater
        job = _job(model_dir, tmp_path, seed, {party: Cheat(kind, step=40)}, tokens=2)
        if job.challenge().closed != party:
            break
        seed += 1
    v = audit_local_job(job, lam=16)
    pv = next(x for x in v.parties if x.party == party)
    assert pv.status == "cheated" and pv.replay is not None and pv.replay.finding is not None, pv
    step = pv.replay.finding.step
    assert step == job.parties[party].fired["step"]
    data = _prove(job, party, step)
    assert data is not None and len(data) < 1 << 20, len(data or b"")
    t0 = time.perf_counter()
    res = _check(job, party, data)
    assert res.proven and res.step == step and res.finding.what == "out", res
    assert time.perf_counter() - t0 < 5.0
    # The same proof about another party, or with any part altered, proves nothing.
    assert not _check(job, (party + 1) % job.n_parties, data).proven
    obj = decode_cbor(data)
    for mutate in (
        lambda o: o["inputs"].update({n: enc_tensor(_bump(o["inputs"][n])) for n in list(o["inputs"])[:1]}),
        lambda o: o.update(seed=bytes(32)),
        lambda o: o.update(salt=bytes(32)),
        lambda o: o["public"].update({n: enc_tensor(_bump(o["public"][n])) for n in list(o["public"])[:1]}),
        lambda o: o.update(n_steps=o["n_steps"] + 1),
    ):
        o = decode_cbor(data)
        mutate(o)
        bad = _check(job, party, canonical_cbor(o))
        assert not bad.proven, bad
    assert obj["party"] == party


def _bump(v):
    from protocol.opening import dec_tensor
    t = dec_tensor(v).clone()
    t.view(-1)[0] += 1
    return t
