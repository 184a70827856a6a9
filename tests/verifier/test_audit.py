"""End-to-end audits of in-process jobs: honest jobs stay clean, every cheat kind is caught and attributed."""
import pytest

from sim.adversary import KINDS, NETWORK_ONLY, Cheat, CheatSpecError
from sim.local_job import run_job
from models import GPTConfig
from verifier.audit import Unresponsive, audit, closed_party
from sim.local_audit import audit_local_job

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]


def _job(model_dir, tmp_path, seed, cheats=None, tokens=3):
    return run_job(model_dir, PROMPT, tokens, workdir=tmp_path / f"job{seed}", seed=seed, cheats=cheats or {})


@pytest.mark.parametrize("jobs", [pytest.param(6, id="quick"), pytest.param(50, marks=pytest.mark.soak, id="fifty")])
def test_honest_audits_accuse_nobody(model_dir, tmp_path, jobs):
    """`jobs` honest jobs (make test: 6, and on until every share index was closed once; make soak: 50)."""
    closed = set()
    seed = 0
    while seed < jobs or (closed != {0, 1, 2} and seed < max(jobs, 30)):
        job = _job(model_dir, tmp_path, seed, tokens=2)
        seed += 1
        v = audit_local_job(job, lam=8)
        assert v.clean and v.cheaters == [] and v.unresponsive == [], v.as_dict()
        opened = [p.party for p in v.parties if p.status == "clean"]
        assert len(opened) == 2 and v.closed_party not in opened  # never all N share indices
        closed.add(v.closed_party)
    assert closed == {0, 1, 2}  # the challenge moves the closed index around


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in NETWORK_ONLY])
def test_every_cheat_kind_is_caught_and_attributed(model_dir, tmp_path, kind):
    step = {"matmul-random": 40, "matmul-2^63": 40, "trunc": 60, "zeros": 40, "bad-opening": 40}.get(kind, 0)
    for cheater in (0, 1, 2):
        for seed in range(12):
            job = _job(model_dir, tmp_path / f"cheater{cheater}", 100 + seed, {cheater: Cheat(kind, step)})  # own spill dirs
            challenge = job.challenge().seed
            if closed_party(challenge, 3) != cheater:
                break
        v = audit_local_job(job)
        assert v.cheaters == [cheater], v.as_dict()
        assert not v.unresponsive
        honest = [p for p in v.parties if p.party != cheater and p.status != "not opened"]
        assert all(p.status == "clean" for p in honest)
        bad = next(p for p in v.parties if p.party == cheater)
        if kind in ("matmul-random", "matmul-2^63", "zeros", "trunc"):
            assert bad.replay.finding.step == job.parties[cheater].fired["step"]
        if kind == "refuse":
            assert "refused" in bad.reason


@pytest.mark.parametrize("kind", ["bad-opening", "weights", "refuse", "trunc"])
def test_exact_mode_names_the_cheater_too(model_dir, tmp_path, kind):
    """--exact recomputes products; an opened output that does not match its commitment is still a cheat."""
    for seed in range(12):
        job = _job(model_dir, tmp_path, 300 + seed, {1: Cheat(kind, 40 if kind != "trunc" else 60)})
        if closed_party(job.challenge().seed, 3) != 1:
            break
    v = audit_local_job(job, mode="exact")
    assert v.cheaters == [1], v.as_dict()
    if kind == "bad-opening":
        assert "opened output does not match its commitment" in v.parties[1].reason


def test_exact_mode_catches_a_single_2_pow_63_error(model_dir, tmp_path):
    job = _job(model_dir, tmp_path, 7, {0: Cheat("matmul-2^63", 40)})
    challenge = job.challenge().seed
    v = audit_local_job(job, mode="exact")
    if closed_party(challenge, 3) == 0:
        assert v.clean
    else:
        assert v.cheaters == [0] and v.parties[0].replay.finding.what == "out"


def test_tampered_records_and_unresponsive_nodes(model_dir, tmp_path):
    job = _job(model_dir, tmp_path, 3)
    commitments = [job.parties[p].commitment for p in range(3)]
    from sim.local_job import opening, party_program

    def get_opening(p):
        if p == 0:
            raise Unresponsive("timed out")
        records, salts, opened, outs = opening(job.parties[p])
        if p == 1:
            salts = salts[:-1] + [bytes(32)]  # an opening that no longer matches the committed root
        return records, salts, opened, outs

    v = audit(job.job_id, commitments, challenge=job.challenge(), n_parties=3, get_opening=get_opening,
              get_program=lambda p: party_program(job.model_dir, p, job.parties[p].token_shares),
              get_seed=job.seed, get_corrections=job.corrections, lam=8)
    status = {p.party: p.status for p in v.parties}
    assert status[v.closed_party] == "not opened"
    if v.closed_party != 0:
        assert status[0] == "unresponsive" and 0 in v.unresponsive and 0 not in v.cheaters
    if v.closed_party != 1:
        assert status[1] == "cheated" and "committed roots" in v.parties[1].reason


def test_cheat_spec_parsing():
    assert Cheat.parse("trunc@12") == Cheat("trunc", 12)
    with pytest.raises(CheatSpecError):
        Cheat.parse("nonsense")
