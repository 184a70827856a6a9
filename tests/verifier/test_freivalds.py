"""Freivalds checks over Z_2^64: completeness, soundness rates against the stated bounds, batching, errors."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_core.prg import master_from_int
from verifier.errors import CheckDTypeError, CheckParameterError, CheckShapeError, MalformedCheckError, VerificationError
from verifier.freivalds import (FreivaldsContext, Term, challenge_matrix, detection_probability, exact_check,
                                fold_coefficients, freivalds_batch, freivalds_check, miss_bits, miss_probability,
                                two_adic_valuation)

SEED = master_from_int(7, "tests/verifier")


def ring(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy(rng.integers(-2**63, 2**63 - 1, size=shape, dtype=np.int64, endpoint=True))


def beaver(rng, m=3, d=4, n=5, party0=True):
    """A party's Beaver matmul output and its terms: z = c + e b + a f (+ e f)."""
    a, b, c, e, f = ring(rng, m, d), ring(rng, d, n), ring(rng, m, n), ring(rng, m, d), ring(rng, d, n)
    terms = [c, (e, b), (a, f)] + ([(e, f)] if party0 else [])
    z = c + e @ b + a @ f + (e @ f if party0 else 0)
    return z, terms


def ctx(step=0, party=1):
    return FreivaldsContext(b"job", step, party)


def rate_ok(misses: int, trials: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(misses / trials - p) <= sigmas * math.sqrt(p * (1 - p) / trials) + 1e-9


def miss_count(z, terms, err_value, lam, trials, v_entry=(1, 2)):
    bad = z.clone()
    bad[v_entry] += err_value
    return sum(freivalds_check(bad, terms, lam, seed=SEED, context=ctx(step=t)).ok for t in range(trials))


# --- completeness -----------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**32),
       st.booleans())
def test_honest_outputs_always_pass(m, d, n, lam, s, party0):
    rng = np.random.default_rng(s)
    z, terms = beaver(rng, m, d, n, party0)
    assert freivalds_check(z, terms, lam, seed=SEED, context=ctx(s)).ok
    assert exact_check(z, terms).ok


def test_masked_weight_step_and_explicit_r():
    rng = np.random.default_rng(1)
    a, F, e, b, c = ring(rng, 4, 6), ring(rng, 6, 3), ring(rng, 4, 6), ring(rng, 6, 3), ring(rng, 4, 3)
    z = c + a @ F + e @ b + e @ F
    terms = [Term.plain(c), Term.product(a, F), Term.product(e, b), Term.product(e, F)]
    r = ring(rng, 3, 5)
    res = freivalds_check(z, terms, 5, r=r)
    assert res.ok and res.lam == 5 and res.failing_column is None and res.residual.shape == (4, 5)
    assert torch.equal(res.residual, torch.zeros(4, 5, dtype=torch.int64))


def test_batched_3d_and_broadcasting():
    rng = np.random.default_rng(2)
    a, b, c = ring(rng, 2, 3, 4, 5), ring(rng, 5, 6), ring(rng, 6)  # c: a bias over the last dim
    a2, b2 = ring(rng, 4, 5), ring(rng, 3, 5, 6)  # left broadcasts over the batch of the right
    col = ring(rng, 2, 3, 4, 1)  # broadcast along the last dim
    z = a @ b + c + a2 @ b2 + col
    terms = [(a, b), c, (a2, b2), col]
    assert freivalds_check(z, terms, 3, seed=SEED, context=ctx()).ok
    assert exact_check(z, terms).ok
    bad = z.clone()
    bad[1, 2, 3, 4] += 1
    res = freivalds_check(bad, terms, 3, seed=SEED, context=ctx())
    assert not res.ok and res.failing_index == (1, 2, 3) and res.residual.shape == (2, 3, 4, 3)
    ex = exact_check(bad, terms)
    assert not ex.ok and ex.failing_index == (1, 2, 3) and ex.failing_column == 4 and ex.miss_bound == 0.0


# --- soundness --------------------------------------------------------------------------------
def test_random_errors_are_caught():
    rng = np.random.default_rng(3)
    for t in range(200):
        z, terms = beaver(rng)
        bad = z + ring(rng, *z.shape)
        res = freivalds_check(bad, terms, 1, seed=SEED, context=ctx(t))
        assert not res.ok and res.failing_column == 0
        assert not exact_check(bad, terms).ok


def test_top_bit_error_passes_one_column_half_the_time():
    rng = np.random.default_rng(4)
    z, terms = beaver(rng)
    misses = miss_count(z, terms, -2**63, 1, 2000)
    assert 0.45 <= misses / 2000 <= 0.55, misses


@pytest.mark.parametrize("lam,trials", [pytest.param(4, 1000, id="lambda4"),
                                         pytest.param(8, 4000, marks=pytest.mark.soak, id="lambda8")])
def test_top_bit_error_at_lambda_is_within_the_bound(lam, trials):
    """make test: lambda 4 over 1000 trials (expected 62.5 misses); make soak: lambda 8 over 4000 (expected 15.6)."""
    rng = np.random.default_rng(5)
    z, terms = beaver(rng)
    misses = miss_count(z, terms, -2**63, lam, trials)
    assert misses <= 3 * trials * 2**-lam, misses  # the stated bound is exact (2^-lambda)
    assert misses >= 2  # and attained, not better (lambda 8: P[misses < 2] ~ 1e-5)
    if lam < 8:
        assert rate_ok(misses, trials, 2.0**-lam), misses


@pytest.mark.parametrize("v,lam", [(63, 1), (63, 2), (62, 1), (62, 2)])
def test_miss_rate_matches_the_valuation_formula(v, lam):
    rng = np.random.default_rng(6 + v + lam)
    z, terms = beaver(rng)
    err = (2**v * 3) if v < 62 else ((2**v) if v == 62 else -2**63)
    bad = z.clone()
    bad[0, 1] += err
    assert two_adic_valuation(bad - z) == v
    p = miss_probability(lam, v)
    assert p == 2.0 ** -(lam * (64 - v))
    trials = 2000
    misses = sum(freivalds_check(bad, terms, lam, seed=SEED, context=ctx(step=f"v{v}:{t}")).ok for t in range(trials))
    assert rate_ok(misses, trials, p), (misses, p)


def test_soundness_helpers():
    assert detection_probability(1) == 0.5 and detection_probability(40) == 1 - 2.0**-40
    assert miss_bits(40, 63) == 40 and miss_bits(1, 0) == 64 and miss_bits(3, 60) == 12
    assert two_adic_valuation(torch.zeros(3, dtype=torch.int64)) is None
    assert two_adic_valuation(torch.tensor([12, 8, -16])) == 2
    assert two_adic_valuation(torch.tensor([-2**63])) == 63
    with pytest.raises(CheckParameterError):
        miss_bits(1, 64)


# --- batching ---------------------------------------------------------------------------------
def _batch(rng, k=21, shared_b=True):
    """k fixed-weight steps z_k = c_k + a_k F + e_k b that share F and b (as an audit of one layer)."""
    F, b = ring(rng, 6, 5), ring(rng, 6, 5)
    checks = []
    for _ in range(k):
        a, e, c = ring(rng, 2, 6), ring(rng, 2, 6), ring(rng, 2, 5)
        checks.append((c + a @ F + e @ b, [c, (a, F), (e, b if shared_b else b.clone())]))
    return checks


@pytest.mark.parametrize("mode", ["stack", "fold-odd"])
def test_batch_honest_and_random_errors(mode):
    rng = np.random.default_rng(10)
    checks = _batch(rng)
    res = freivalds_batch(checks, 2, SEED, ctx(), mode=mode)
    assert res.ok and res.failing_checks == () and res.first_failure is None
    for t in range(50):
        k = t % len(checks)
        bad = list(checks)
        bad[k] = (checks[k][0] + ring(rng, 2, 5), checks[k][1])
        r = freivalds_batch(bad, 1, SEED, ctx(t), mode=mode)
        assert not r.ok and k in r.failing_checks
        if mode == "stack":
            assert r.failing_checks == (k,)


@pytest.mark.parametrize("trials", [pytest.param(300, id="300"), pytest.param(2000, marks=pytest.mark.soak, id="2000")])
@pytest.mark.parametrize("mode", ["stack", "fold-odd"])
def test_one_cheating_step_among_20_keeps_the_single_check_bound(mode, trials):
    rng = np.random.default_rng(11)
    checks = _batch(rng)
    bad = list(checks)
    bad[7] = (checks[7][0].clone(), checks[7][1])
    bad[7][0][1, 3] += -2**63
    misses = sum(freivalds_batch(bad, 1, SEED, ctx(f"b{t}"), mode=mode).ok for t in range(trials))
    # not more than 1/2 (odd alpha keeps the valuation); 2000 trials: within 0.45..0.55, 300: within 5 sigma
    assert (0.45 <= misses / trials <= 0.55) if trials >= 2000 else rate_ok(misses, trials, 0.5), misses


@pytest.mark.parametrize("trials", [pytest.param(60, id="60"), pytest.param(300, marks=pytest.mark.soak, id="300")])
def test_two_cancelling_steps_defeat_the_odd_fold_but_not_stacking(trials):
    """Every odd alpha is 1 mod 2: the same 2^63 error in two steps cancels in any odd fold."""
    rng = np.random.default_rng(12)
    checks = _batch(rng)
    bad = list(checks)
    for k in (3, 9):
        bad[k] = (checks[k][0].clone(), checks[k][1])
        bad[k][0][0, 0] += -2**63
    fold_misses = sum(freivalds_batch(bad, 8, SEED, ctx(t), mode="fold-odd").ok for t in range(trials))
    stack_misses = sum(freivalds_batch(bad, 8, SEED, ctx(t), mode="stack").ok for t in range(trials))
    assert fold_misses == trials
    assert stack_misses <= 3
    stack_1 = sum(freivalds_batch(bad, 1, SEED, ctx(t), mode="stack").ok for t in range(trials))
    # shared column: both rows carry the same 2^63 r_0 term, missed w.p. 1/2 (300 trials: at most 0.6;
    # 60 trials: at most 5 sigma above 1/2 -- a stacking that cancelled too would miss every time)
    assert stack_1 / trials <= (0.6 if trials >= 300 else 0.5 + 5 * math.sqrt(0.25 / trials)), stack_1


def test_batch_shares_the_right_operand_product_and_matches_single_checks():
    rng = np.random.default_rng(13)
    checks = _batch(rng, 5)
    res = freivalds_batch(checks, 4, SEED, ctx(9))
    single = [freivalds_check(z, t, 4, seed=SEED, context=ctx(9)) for z, t in checks]
    assert res.ok and all(s.ok for s in single)
    assert all(torch.equal(a.residual, b.residual) for a, b in zip(res.results, single))
    mixed = checks + [beaver(rng, 2, 3, 7)]  # another output width gets its own R
    assert freivalds_batch(mixed, 4, SEED, ctx(9)).ok
    assert freivalds_batch(mixed, 4, SEED, ctx(9), mode="fold-odd").ok


# --- determinism and the PRG layout -----------------------------------------------------------
def test_challenges_are_deterministic_and_domain_separated():
    r = challenge_matrix(SEED, ctx(3), 7, 5)
    assert r.shape == (7, 5) and r.dtype == torch.int64
    assert torch.equal(r, challenge_matrix(SEED, ctx(3), 7, 5))
    assert torch.equal(r[:, :2], challenge_matrix(SEED, ctx(3), 7, 2))  # fewer columns: a prefix
    for other in (ctx(4), ctx(3, party=2), FreivaldsContext(b"job2", 3, 1)):
        assert not torch.equal(r, challenge_matrix(SEED, other, 7, 5))
    assert not torch.equal(r, challenge_matrix(master_from_int(8), ctx(3), 7, 5))
    assert not torch.equal(r[:6], challenge_matrix(SEED, ctx(3), 6, 5))
    alpha = fold_coefficients(SEED, ctx(3), 10)
    assert bool((alpha & 1 == 1).all()) and torch.equal(alpha, fold_coefficients(SEED, ctx(3), 10))
    rng = np.random.default_rng(14)
    z, terms = beaver(rng)
    a = freivalds_check(z + 1, terms, 3, seed=SEED, context=ctx(3))
    b = freivalds_check(z + 1, terms, 3, r=challenge_matrix(SEED, ctx(3), 5, 3))
    assert torch.equal(a.residual, b.residual)


# --- malformed calls raise typed errors; values never do ----------------------------------------
def test_malformed_calls_raise_typed_errors():
    rng = np.random.default_rng(15)
    z, terms = beaver(rng)
    cases = [
        (CheckDTypeError, lambda: freivalds_check(z.float(), terms, 1, seed=SEED, context=ctx())),
        (CheckDTypeError, lambda: freivalds_check(z, [terms[0].int()], 1, seed=SEED, context=ctx())),
        (CheckShapeError, lambda: freivalds_check(z, [(terms[1][0], terms[1][1].t())], 1, seed=SEED, context=ctx())),
        (CheckShapeError, lambda: freivalds_check(z, [ring(rng, 4, 5)], 1, seed=SEED, context=ctx())),
        (CheckShapeError, lambda: freivalds_check(z, [(ring(rng, 2, 3, 4), ring(rng, 3, 4, 5))], 1, seed=SEED,
                                                  context=ctx())),
        (CheckShapeError, lambda: exact_check(z[:, :4], terms)),
        (CheckParameterError, lambda: freivalds_check(z, terms, 0, seed=SEED, context=ctx())),
        (CheckParameterError, lambda: freivalds_check(z, terms, 2)),
        (CheckParameterError, lambda: freivalds_check(z, terms, 2, r=ring(rng, 5, 3))),
        (CheckParameterError, lambda: freivalds_check(z, terms, 2, seed=b"short", context=ctx())),
        (CheckParameterError, lambda: freivalds_check(z, terms + ["x"], 2, seed=SEED, context=ctx())),
        (CheckParameterError, lambda: freivalds_batch([], 2, SEED, ctx())),
        (CheckParameterError, lambda: freivalds_batch([(z, terms)], 2, SEED, ctx(), mode="sum")),
        (CheckShapeError, lambda: freivalds_batch([(z, terms), (z[:2], terms)], 2, SEED, ctx())),
    ]
    for exc, call in cases:
        with pytest.raises(exc) as info:
            call()
        assert isinstance(info.value, MalformedCheckError) and isinstance(info.value, VerificationError)


def test_extreme_values_are_results_not_exceptions():
    n = 4
    big = torch.full((3, n), -2**63, dtype=torch.int64)
    terms = [(torch.full((3, 2), -1, dtype=torch.int64), torch.full((2, n), 2**62 + 1, dtype=torch.int64))]
    for z in (big, big + 1, torch.zeros(3, n, dtype=torch.int64)):
        assert isinstance(freivalds_check(z, terms, 2, seed=SEED, context=ctx()).ok, bool)
        assert isinstance(exact_check(z, terms).ok, bool)
