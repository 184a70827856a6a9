"""Protocol-level properties: truncation, comparison exactness, masked weights, linear ops, counters."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_core import Session, SharedTensor, encode, simulate
from mpc_core.prg import master_from_int
from mpc_core.protocols.arithmetic import truncate
from mpc_core.protocols.binary import a2b, and_many, prefix_or_down
from mpc_core.protocols.nonlinear import max_last
from mpc_core.ring import lshr, shift_word

from .helpers import ULP, quantize


def _session(n=3, seed=0):
    return Session.in_process(n, master_from_int(seed), record=False)


@given(st.lists(st.integers(-(2**62) + 1, 2**62 - 1), min_size=1, max_size=32), st.integers(1, 40),
       st.integers(2, 5), st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_truncation_is_floor_or_floor_plus_one(values, m, n, seed):
    s = _session(n, seed)
    x = torch.tensor(values, dtype=torch.int64)
    shares = s.public_to_shares(x) + 0
    # re-randomise so shares are not trivial
    r = torch.stack([torch.full_like(x, 12345 * (i + 1)) for i in range(n)])
    r[-1] = -r[:-1].sum(0)
    y = truncate(s, shares + r, m).sum(0)
    floor = torch.div(x, 2**m, rounding_mode="floor")
    diff = y - floor
    assert bool(((diff == 0) | (diff == 1)).all()), (x, y, floor)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=16), st.integers(2, 5), st.integers(0, 99))
@settings(max_examples=40, deadline=None)
def test_a2b_gives_the_same_word(words, n, seed):
    s = _session(n, seed)
    x = torch.tensor(words, dtype=torch.int64)
    xb = a2b(s, s.public_to_shares(x))
    acc = xb[0].clone()
    for i in range(1, n):
        acc ^= xb[i]
    assert torch.equal(acc, x)


def _xor_open(xb):
    acc = xb[0].clone()
    for i in range(1, xb.shape[0]):
        acc ^= xb[i]
    return acc


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=3, max_size=12), st.integers(2, 5), st.integers(0, 99))
@settings(max_examples=30, deadline=None)
def test_and_many_is_the_and_of_its_shifted_factors(words, n, seed):
    s = _session(n, seed)
    k = len(words) // 3
    xs = torch.tensor(words[:3 * k], dtype=torch.int64).reshape(3, k)
    mons = (((0, 0, 0), (1, 5, 1)), ((0, -7, 1), (1, 0, 0), (2, 63, 0)), ((0, 0, 0), (1, 1, 0), (2, -1, 1), (2, 2, 0)))
    z = _xor_open(and_many(s, s.public_to_shares(xs), mons))
    for i, mono in enumerate(mons):
        want = None
        for j, sh, neg in mono:
            v = shift_word(xs[j], sh) ^ (-1 if neg else 0)
            want = v if want is None else want & v
        assert torch.equal(z[i], want), mono


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=16), st.integers(2, 4), st.integers(0, 99))
@settings(max_examples=30, deadline=None)
def test_prefix_or_down_sets_every_bit_at_and_below_the_leading_one(words, n, seed):
    s = _session(n, seed)
    x = torch.tensor(words + [0, 1, -1, 1 << 40], dtype=torch.int64)
    z = _xor_open(prefix_or_down(s, s.public_to_shares(x)))
    want = x.clone()
    for sh in range(1, 64):
        want |= lshr(x, sh)
    assert torch.equal(z, want)


def test_comparison_exact_from_2_pow_minus16_to_2_pow_30():
    mags = torch.tensor([2.0**k for k in range(-16, 31)], dtype=torch.float64)
    mags = torch.cat([mags, mags * 1.5, mags * (1 - 2**-10)])
    mags = mags[mags < 2**30 + 1]
    x = torch.cat([mags, -mags, torch.zeros(1, dtype=torch.float64)])
    lt, _ = simulate(lambda a: a < 0, x)
    gt, _ = simulate(lambda a: a > 0, x)
    q = quantize(x)
    assert torch.equal(lt, (q < 0).double())
    assert torch.equal(gt, (q > 0).double())


def test_comparison_between_shared_values_is_exact_at_one_ulp_apart():
    a = torch.linspace(-5, 5, 101, dtype=torch.float64)
    b = a + ULP
    out, _ = simulate(lambda x, y: x < y, a, b)
    assert bool((out == 1).all())
    out, _ = simulate(lambda x, y: y < x, a, b)
    assert bool((out == 0).all())


def test_masked_weight_matmul_equals_beaver_matmul_and_opens_weights_once():
    s = _session(3, 5)
    g = torch.Generator().manual_seed(0)
    w = SharedTensor.from_plain(s, torch.randn(16, 8, generator=g, dtype=torch.float64))
    mw = w.mask("layer0.mlp")
    bytes_after_mask = s.counters.bytes_per_party
    outs = []
    for t in range(3):
        x = SharedTensor.from_plain(s, torch.randn(1, 16, generator=g, dtype=torch.float64))
        before = s.counters.bytes_per_party
        y = x @ mw
        per_call = s.counters.bytes_per_party - before
        assert per_call == (16 + 8) * 8 * 2  # opens e (1x16) then truncation (1x8): activation-sized
        outs.append((y.reveal(), (x @ w).reveal()))
    assert bytes_after_mask == 16 * 8 * 8 * 2
    for a, b in outs:
        assert float((a - b).abs().max()) <= 2 * ULP


def test_public_operands_and_linear_ops():
    x = torch.tensor([[1.5, -2.0, 3.25], [0.5, 4.0, -1.0]], dtype=torch.float64)
    w = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    out, st_ = simulate(lambda a: (a * 2 + 1.5 - a * 0.25) @ w, x)
    ref = (x * 2 + 1.5 - x * 0.25) @ w
    assert float((out - ref).abs().max()) <= 3 * ULP
    out, _ = simulate(lambda a: a.transpose(0, 1).reshape(2, 3)[1:, ::2].sum(1), x)
    assert torch.allclose(out, x.transpose(0, 1).reshape(2, 3)[1:, ::2].sum(1), atol=2 * ULP)
    out, _ = simulate(lambda a: SharedTensor.cat([a, -a], dim=1).mean(-1), x)
    assert float(out.abs().max()) <= 2 * ULP


def test_counters_mul_is_two_rounds_with_known_bytes():
    for n in (2, 3, 5):
        _, stats = simulate(lambda a: a * a, torch.ones(10, dtype=torch.float64), parties=n)
        assert stats.by_op["mul"].rounds == 2
        # Beaver opens e and f (2 x 10 words), truncation opens c (10 words), each sent to N-1 peers.
        assert stats.by_op["mul"].bytes_per_party == (20 + 10) * 8 * (n - 1)
        assert stats.dealer_requests == 2


def test_same_seed_same_everything_different_seed_different_shares():
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fn = lambda a: (a @ a.transpose(0, 1)).softmax(-1)  # noqa: E731
    o1, s1 = simulate(fn, x, seed=3)
    o2, s2 = simulate(fn, x, seed=3)
    o3, s3 = simulate(fn, x, seed=4)
    assert torch.equal(o1, o2) and s1.transcript_digests == s2.transcript_digests
    assert s1.transcript_digests != s3.transcript_digests
    assert float((o1 - o3).abs().max()) <= 4 * ULP  # different randomness, same function


def test_encode_is_what_shares_hold():
    s = _session()
    x = torch.tensor([0.1, -0.2], dtype=torch.float64)
    assert torch.equal(SharedTensor.from_plain(s, x).data.sum(0), encode(x))


@given(st.integers(1, 80), st.integers(1, 3), st.integers(2, 4), st.integers(0, 10**6), st.booleans())
@settings(max_examples=40, deadline=None)
def test_max_is_exact_with_ties_at_every_row_length(n, rows, parties, seed, ties):
    """max_last equals the max of the held integers for rows of 1..80 entries (one level up to 16, then
    levels of groups of 16), with repeated values and the extremes it supports (abs(x) < 2^61)."""
    s = _session(parties, seed)
    g = torch.Generator().manual_seed(seed)
    lim = 2**61 - 1
    x = torch.randint(-lim, lim, (rows, n), generator=g, dtype=torch.int64)
    if ties:  # few distinct values: many ties, the maximum among them
        x = x[:, :1].repeat(1, n) if n < 3 else x[:, torch.randint(0, 3, (n,), generator=g)]
    out = max_last(s, s.public_to_shares(x) + 0).sum(0)
    assert torch.equal(out, x.max(-1).values)


def test_max_rounds_one_level_per_group_of_16(monkeypatch):
    """Rounds of max over a row, one level per group of b <= 16 (one level up to 16 entries, two up to
    256): by lookups 4 a level; by bit decompositions (where the tables would be too large) 6 +
    ceil(log4(b - 1)) a level (a 50257-entry row: 4 levels, 32 rounds, where a binary tournament takes 96)."""
    from mpc_core.protocols import lookup
    from mpc_core.protocols.nonlinear import MAX_GROUP
    assert MAX_GROUP == 16
    # 257 entries: the first level (17 groups, 2040 pairs) exceeds lookup.MAX_TABLE_WORDS and takes 8 rounds
    for n, want in ((2, 4), (5, 4), (16, 4), (17, 8), (40, 8), (100, 8), (257, 8 + 4 + 4)):
        _, stats = simulate(lambda a: a.max(-1), torch.randn(1, n, dtype=torch.float64), parties=3)
        assert stats.rounds == want, (n, stats.rounds)
    monkeypatch.setattr(lookup, "MAX_TABLE_WORDS", 0)
    for n, want in ((2, 6), (5, 7), (16, 8), (17, 8 + 6), (40, 8 + 7), (64, 8 + 7), (65, 8 + 7), (1000, 8 + 8 + 7)):
        _, stats = simulate(lambda a: a.max(-1), torch.randn(1, n, dtype=torch.float64), parties=3)
        assert stats.rounds == want, (n, stats.rounds)
