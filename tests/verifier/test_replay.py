"""The audit replay's shortcuts: digests, record roots, inputs checked through their messages, deferred
product checks (exact or stacked Freivalds), and that a cheat is still named at the step where it struck."""
import pytest
import torch

from mpc_core import Session, SharedTensor
from mpc_core.prg import master_from_int
from mpc_core.protocols import arithmetic as A
from mpc_core.protocols import binary as Bn
from mpc_core.transcript import tensor_digest
from sim.adversary import Cheat, tamper_steps
from protocol.commitments import verify_records
from sim.local_job import run_job
from models import GPTConfig, random_model
from models.gpt_mpc import SharedGPT, share_tokens
from verifier import replay as R
from verifier.audit import closed_party, records_match
from sim.local_audit import audit_local_job, local_openings
from verifier.freivalds import Term

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]


def _opened_job(model_dir, tmp_path, cheater, cheat, tokens=3):
    """A job where `cheater` is among the opened parties (seeds tried in order)."""
    for seed in range(40):
        job = run_job(model_dir, PROMPT, tokens, workdir=tmp_path / f"job{seed}", seed=seed,
                      cheats={cheater: cheat} if cheat else {})
        challenge = job.challenge().seed
        if closed_party(challenge, 3) != cheater:
            return job
    raise AssertionError("no seed opens the cheater")  # pragma: no cover


# --- digests and roots ----------------------------------------------------------------------
def test_step_digest_is_the_transcript_digest():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-2**62, 2**62, (5, 7), generator=g, dtype=torch.int64)
    cases = [("out", x), ("in.w", x.t()), ("opened.e", x[:, 2:5]), ("sent.c", torch.tensor(3)),
             ("in.x", x.reshape(7, 5)), ("out", x.t()), ("out", x[::2])]
    for name, t in cases:
        assert R.step_digest(name, t) == tensor_digest(name, t)
        assert R.step_digest(name, t) == tensor_digest(name, t)  # with the cached header
    assert R.step_digest("out", x) != R.step_digest("in.x", x)
    with pytest.raises(Exception):
        R.step_digest("out", x.to(torch.int32))


def test_records_match_agrees_with_verify_records(model_dir, tmp_path):
    job = run_job(model_dir, PROMPT, 2, workdir=tmp_path / "j", seed=5)
    st = job.parties[1]
    recs, salts, c = list(st.transcript.records), list(st.salts), st.commitment
    assert records_match(recs, salts, c) and verify_records(recs, salts, c)
    bad_salts = salts[:-1] + [bytes(32)]
    assert not records_match(recs, bad_salts, c) and not verify_records(recs, bad_salts, c)
    import copy
    tampered = copy.deepcopy(recs)
    name = sorted(tampered[7].digests)[0]
    tampered[7].digests[name] = bytes(32)
    assert not records_match(tampered, salts, c) and not verify_records(tampered, salts, c)
    odd = copy.deepcopy(recs)
    odd[3].index = True  # not a plain int: falls back to the reference check (which refuses it)
    assert records_match(odd, salts, c) == verify_records(odd, salts, c)
    assert not records_match(recs[:-1], salts[:-1], c)


# --- inputs checked through their messages --------------------------------------------------
_RELATIONS = {  # (input, message): what the party's own material of the step must be
    ("beaver_mul", "in.x", "sent.e"): lambda i, s, m, p0: torch.equal(i - s, m["a"]),
    ("beaver_mul", "in.y", "sent.f"): lambda i, s, m, p0: torch.equal(i - s, m["b"]),
    ("beaver_matmul", "in.x", "sent.e"): lambda i, s, m, p0: torch.equal(i - s, m["a"]),
    ("beaver_matmul", "in.y", "sent.f"): lambda i, s, m, p0: torch.equal(i - s, m["b"]),
    ("mask_weight", "in.w", "sent.f"): lambda i, s, m, p0: torch.equal(i - s, m["b"]),
    ("fixed_matmul", "in.x", "sent.e"): lambda i, s, m, p0: torch.equal(i - s, m["a"]),
    ("trunc", "in.x", "sent.c"): lambda i, s, m, p0: torch.equal(s - i - p0 * (1 << 62), m["r"]),
    ("and", "in.x", "sent.d"): lambda i, s, m, p0: torch.equal(i ^ s, m["a"]),
    ("and", "in.y", "sent.e"): lambda i, s, m, p0: torch.equal(i ^ s, m["b"]),
    ("and_many", "in.x", "sent.d"): lambda i, s, m, p0: torch.equal(i ^ s, m["a"]),
    ("a2b_open", "in.x", "sent.c"): lambda i, s, m, p0: torch.equal(s - i, m["r"]),
    ("lookup_open", "in.x", "sent.c"): lambda i, s, m, p0: torch.equal(s - i, m["r"]),
}


class _Probe(Session):
    """Checks, at every record, that each skipped input is its message minus (or XOR) this step's material."""

    seen: set

    def material(self, kind, *params):
        self.last = super().material(kind, *params)
        return self.last

    def record(self, kind, local, public=None, refs=None):
        for inp, sent in R.IMPLIED_INPUTS.get(kind, {}).items():
            rel = _RELATIONS[(kind, inp, sent)]
            p0 = self.party0(local[inp].dim() - 1)
            assert local[inp].shape == local[sent].shape, (kind, inp)
            assert rel(local[inp], local[sent], self.last, p0), (kind, inp, sent)
            self.seen.add(kind)
        return super().record(kind, local, public, refs)


def test_skipped_inputs_are_bijective_images_of_their_messages():
    assert {(k, i, s) for k, d in R.IMPLIED_INPUTS.items() for i, s in d.items()} == set(_RELATIONS)
    s = _Probe.in_process(3, master_from_int(3), record=False)
    s.seen = set()
    model = SharedGPT.from_plain_model(s, random_model(CFG, seed=1))
    model.forward(share_tokens(s, PROMPT, CFG.vocab_size))
    x = SharedTensor.from_plain(s, torch.randn(2, 3, 4)).data
    y = SharedTensor.from_plain(s, torch.randn(2, 4, 5)).data
    A.beaver_matmul(s, x, y)
    Bn.and_(s, x, x)  # the 2-input AND: the model's comparisons use and_many now
    Bn.a2b(s, x)  # the model's small comparisons are lookups now; large ones decompose bits (a2b_open, and_many)
    assert s.seen == set(R.IMPLIED_INPUTS)


# --- deferred product checks ----------------------------------------------------------------
def test_cost_choice_prefers_freivalds_only_when_right_operands_are_shared_enough():
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-2**62, 2**62, (256, 256), generator=g, dtype=torch.int64)

    def check(rows):
        a = torch.randint(-2**62, 2**62, (1, rows, 256), generator=g, dtype=torch.int64)
        return R._Pending(0, "fixed_matmul", "", "", a @ w, [Term(a, w)])

    e1, f1 = R._costs([check(16)], 40)
    assert e1 < f1  # one check: recomputing is cheaper than w R
    e, f = R._costs([check(16) for _ in range(200)], 40)
    assert f < e  # w R paid once for 200 checks


@pytest.mark.parametrize("branch", ["freivalds", "exact", "flush-each"])
@pytest.mark.parametrize("kind", ["matmul-random", "matmul-2^63", "zeros", "bad-opening"])
def test_deferred_checks_name_the_cheating_step(model_dir, tmp_path, monkeypatch, branch, kind):
    if branch == "freivalds":
        monkeypatch.setattr(R, "_costs", lambda checks, lam: (1.0, 0.0))
    elif branch == "exact":
        monkeypatch.setattr(R, "_costs", lambda checks, lam: (0.0, 1.0))
    else:
        monkeypatch.setattr(R, "PENDING_BYTES_LIMIT", 0)
    job = _opened_job(model_dir, tmp_path, 1, Cheat(kind, 30))
    v = audit_local_job(job, lam=8)
    assert v.cheaters == [1], v.as_dict()
    bad = v.parties[1].replay
    if kind == "bad-opening":
        from sim.adversary import bad_opening_step
        assert bad.finding.step == bad_opening_step(job.parties[1].transcript.records, Cheat(kind, 30))
        assert bad.finding.what == "out"  # the opened output does not open its commitment
        return
    assert bad.finding.step == job.parties[1].fired["step"]
    assert bad.finding.what == {"freivalds": "freivalds", "exact": "out"}.get(branch, bad.finding.what)
    if branch == "freivalds":
        assert bad.freivalds_batches >= 1
    honest = [p for p in v.parties if p.party != 1 and p.status != "not opened"]
    assert all(p.status == "clean" and p.replay.matmul_checks > 0 for p in honest)


def _two_faults(first_kind, first_step, second_kind, second_step):
    """An install() replacement: the party corrupts the first `first_kind` step at or after `first_step`
    and the first `second_kind` step at or after `second_step`, staying self-consistent."""
    targets = {"matmul": ("beaver_matmul", "fixed_matmul"), "trunc": ("trunc",)}

    def install(session, party, cheat):
        fired: dict = {}
        row = session.local_parties.index(party)

        def tamper(kind, index, local):
            for label, (k, at) in (("first", (first_kind, first_step)), ("second", (second_kind, second_step))):
                if label not in fired and index >= at and kind in targets[k]:
                    local["out"][row].view(-1)[0] += 1 << 40
                    fired[label] = index
                    if "step" not in fired:
                        fired["step"] = index
        tamper_steps(session, tamper)
        return fired
    return install


@pytest.mark.parametrize("order", ["matmul-then-trunc", "trunc-then-matmul"])
def test_an_earlier_deferred_failure_wins_over_a_later_difference(model_dir, tmp_path, monkeypatch, order):
    import sim.local_job as pj
    if order == "matmul-then-trunc":
        monkeypatch.setattr(pj, "install", _two_faults("matmul", 30, "trunc", 60))
    else:
        monkeypatch.setattr(pj, "install", _two_faults("trunc", 30, "matmul", 60))
    job = _opened_job(model_dir, tmp_path, 2, Cheat("matmul-random", 0))
    fired = job.parties[2].fired
    assert fired["first"] < fired["second"]
    for mode in ("freivalds", "exact"):
        v = audit_local_job(job, mode=mode, lam=8)
        assert v.cheaters == [2]
        assert v.parties[2].replay.finding.step == fired["first"], (mode, fired, v.parties[2].replay.finding)


def test_local_openings_are_what_the_audit_would_fetch(model_dir, tmp_path):
    job = _opened_job(model_dir, tmp_path, 0, None)
    ops = local_openings(job)
    assert set(ops) == {p for p in range(3) if p != closed_party(
        job.challenge().seed, 3)}
    a = audit_local_job(job, lam=8, openings=ops)
    b = audit_local_job(job, lam=8)
    assert a.clean and b.clean
    assert [p.replay.steps_checked for p in a.parties if p.replay] == [p.replay.steps_checked for p in b.parties if p.replay]
    refused = run_job(model_dir, PROMPT, 2, workdir=tmp_path / "r", seed=1, cheats={0: Cheat("refuse")})
    ops = local_openings(refused, parties=[0])
    v = audit_local_job(refused, openings=ops)
    if v.closed_party != 0:
        assert v.cheaters == [0] and "refused" in v.parties[0].reason


def _lookup_fault(at: int, which: str):
    """An install() replacement: the party adds 2^40 to the output of the first lookup_open step at or after
    `at` whose table is a polynomial of a function (`which` = "poly") or a comparison's step table ("step")."""
    def install(session, party, cheat):
        fired: dict = {}
        row = session.local_parties.index(party)
        real = session.material

        def material(kind, *params):  # remember each lookup's tables, to tell the two kinds of step apart
            session.last_lookup = params[3] if kind == "lookup" else None
            return real(kind, *params)

        def tamper(kind, index, local):
            tables = getattr(session, "last_lookup", None)
            if fired or index < at or kind != "lookup_open" or not tables:
                return
            if (tables[0][0] == "step") == (which == "step"):
                local["out"][row].view(-1)[0] += 1 << 40
                fired["step"] = index
        session.material = material
        tamper_steps(session, tamper)
        return fired
    return install


@pytest.mark.parametrize("which", ["poly", "step"])
def test_a_tampered_lookup_is_named_at_its_step(model_dir, tmp_path, monkeypatch, which):
    """A party that alters what a lookup table gave it (a GeLU/exp/band value, or a comparison's bit) and
    carries the altered value on is accused, and the replay names that lookup_open step's output."""
    import sim.local_job as pj
    monkeypatch.setattr(pj, "install", _lookup_fault(30, which))
    job = _opened_job(model_dir, tmp_path, 1, Cheat("matmul-random", 0))
    fired = job.parties[1].fired
    assert "step" in fired
    v = audit_local_job(job, lam=8)
    assert v.cheaters == [1], v.as_dict()
    assert v.parties[1].replay.finding.step == fired["step"]
    assert v.parties[1].replay.finding.what == "out"
