"""Joint replay: the opened parties replayed in one session judge each party exactly as replaying it alone,
and a cheat (or a malformed opening) of one party is attributed to that party only."""
import copy

import pytest
import torch

from sim.adversary import KINDS, NETWORK_ONLY, Cheat
from sim.local_job import party_program, run_job
from models import GPTConfig
from verifier import replay as R
from verifier.audit import audit, closed_party
from sim.local_audit import audit_local_job, joint_party_program, local_opening

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]


def _job(model_dir, tmp_path, cheater=None, cheat=None, tokens=3, first_seed=0):
    for seed in range(first_seed, first_seed + 40):
        job = run_job(model_dir, PROMPT, tokens, workdir=tmp_path / f"job{seed}", seed=seed,
                      cheats={cheater: cheat} if cheat else {})
        if cheater is None or closed_party(job.challenge().seed,
                                           3) != cheater:
            return job
    raise AssertionError("no seed opens the cheater")  # pragma: no cover


def _single_audit(job, **kw):
    """The audit with every party replayed on its own (no joint program)."""
    return audit(job.job_id, [job.parties[p].commitment for p in range(3)], challenge=job.challenge(), n_parties=3,
                 get_opening=lambda p: local_opening(job.parties[p]),
                 get_program=lambda p: party_program(job.model_dir, p, job.parties[p].token_shares),
                 get_seed=job.seed, get_corrections=job.corrections, frac_bits=job.session.frac_bits, **kw)


def _plain(v):
    out = []
    for p in v.parties:
        r = p.replay.as_dict() if p.replay else None
        if r:
            r.pop("seconds"), r.pop("joint")
        out.append((p.party, p.status, p.reason, r))
    return out


@pytest.mark.parametrize("mode", ["freivalds", "exact"])
def test_joint_and_single_replays_agree_on_honest_jobs(model_dir, tmp_path, mode):
    for seed in range(3):
        job = _job(model_dir, tmp_path / f"{mode}{seed}", first_seed=seed, tokens=2)
        joint, single = audit_local_job(job, mode=mode, lam=8), _single_audit(job, mode=mode, lam=8)
        assert joint.clean and _plain(joint) == _plain(single)
        assert [p.replay.joint for p in joint.parties if p.replay] == [2, 2]


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in NETWORK_ONLY])
def test_a_cheat_is_attributed_to_its_party_only_in_the_joint_replay(model_dir, tmp_path, kind):
    step = {"matmul-random": 40, "matmul-2^63": 40, "trunc": 60, "zeros": 40, "bad-opening": 40}.get(kind, 0)
    cheater = KINDS.index(kind) % 3
    job = _job(model_dir, tmp_path, cheater, Cheat(kind, step), first_seed=100)
    v = audit_local_job(job, lam=8)
    assert v.cheaters == [cheater], v.as_dict()
    assert all(p.status == "clean" for p in v.parties if p.party not in (cheater, v.closed_party))
    assert _plain(v) == _plain(_single_audit(job, lam=8))
    bad = v.parties[cheater]
    if kind in ("matmul-random", "matmul-2^63", "zeros", "trunc"):
        assert bad.replay.finding.step == job.parties[cheater].fired["step"] and bad.replay.joint == 2


def _inputs(job, parties):
    ops = {p: local_opening(job.parties[p]) for p in parties}
    return dict(n_parties=3, job=job.job_id, seeds={p: job.seed(p) for p in parties},
                records={p: ops[p][0] for p in parties}, opened={p: ops[p][2] for p in parties},
                outs={p: ops[p][3] for p in parties}, corrections=job.corrections(2),
                lam=8, frac_bits=job.session.frac_bits)


def _program_for(job):
    def program_for(ps):
        if len(ps) == 1:
            return party_program(job.model_dir, ps[0], job.parties[ps[0]].token_shares)
        return joint_party_program(job.model_dir, ps, [job.parties[p].token_shares for p in ps])
    return program_for


def _strip(r):
    d = r.as_dict()
    d.pop("seconds"), d.pop("joint")
    return d


def test_a_party_with_different_openings_is_replayed_alone(model_dir, tmp_path):
    job = _job(model_dir, tmp_path, tokens=2)
    parties = (0, 1, 2)  # the replay itself does not enforce the audit budget
    kw = _inputs(job, parties)
    # party 1 claims a different public value at one opening (its record carries the matching digest)
    recs = copy.deepcopy(kw["records"][1])
    k = next(r.index for r in recs if r.kind == "beaver_mul" and r.index > 20)
    honest_open = kw["opened"][1]
    other = {n: v + 1 for n, v in honest_open(k).items()}
    for n, v in other.items():
        recs[k].digests[n] = R.step_digest(n, v)
    kw["records"][1] = recs
    kw["opened"][1] = lambda i: other if i == k else honest_open(i)
    joint = R.replay_parties(_program_for(job), parties=parties, **kw)
    assert [r.ok for r in joint] == [True, False, True]
    assert joint[1].finding.step == k and joint[1].joint == 1 and joint[0].joint == 3
    single = [R.replay_parties(_program_for(job), parties=(p,), **kw)[0] for p in parties]
    assert [_strip(r) for r in joint] == [_strip(r) for r in single]


@pytest.mark.parametrize("fault", ["missing-opening", "wrong-dtype", "short-records", "garbage-out"])
def test_a_malformed_opening_of_one_party_leaves_the_others_judged_alone(model_dir, tmp_path, fault):
    job = _job(model_dir, tmp_path, tokens=2)
    parties = (0, 1, 2)
    kw = _inputs(job, parties)
    victim = 2
    honest_open, honest_out = kw["opened"][victim], kw["outs"][victim]
    k = next(r.index for r in kw["records"][victim] if r.kind == "fixed_matmul" and r.index > 10)
    if fault == "missing-opening":
        kw["opened"][victim] = lambda i: {} if i == k else honest_open(i)
    elif fault == "wrong-dtype":
        kw["opened"][victim] = lambda i: ({n: v.to(torch.int32) for n, v in honest_open(i).items()} if i == k
                                          else honest_open(i))
    elif fault == "short-records":
        kw["records"][victim] = kw["records"][victim][:k]
    else:
        kw["outs"][victim] = lambda i: "not a tensor" if i == k else honest_out(i)
    joint = R.replay_parties(_program_for(job), parties=parties, **kw)
    assert joint[0].ok and joint[1].ok and not joint[victim].ok
    assert (joint[victim].finding.step if joint[victim].finding else joint[victim].steps_checked) == k
    single = [R.replay_parties(_program_for(job), parties=(p,), **kw)[0] for p in parties]
    assert [_strip(r) for r in joint] == [_strip(r) for r in single]


def test_a_joint_replay_that_cannot_run_falls_back_to_single_replays(model_dir, tmp_path):
    job = _job(model_dir, tmp_path, tokens=2)
    kw = _inputs(job, (0, 1))

    def program_for(ps):
        if len(ps) > 1:
            def broken(s):
                raise RuntimeError("inputs do not stack")
            return broken
        return _program_for(job)(ps)
    got = R.replay_parties(program_for, parties=(0, 1), **kw)
    assert all(r.ok and r.joint == 1 for r in got)
