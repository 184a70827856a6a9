"""Fixed-point encoding, additive and XOR sharing (hypothesis) for N in {2, 3, 5}."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_core import EncodingError, PartyError, Session, SharedTensor, decode, encode
from mpc_core.prg import master_from_int
from mpc_core.ring import lshr, max_abs, pack_bits, unpack_bits, wrap

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=20))
@settings(max_examples=60, deadline=None)
def test_encode_decode_roundtrip_within_half_ulp(values):
    x = torch.tensor(values, dtype=torch.float64)
    back = decode(encode(x))
    assert float((back - x).abs().max()) <= 2.0**-17 + 1e-12


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_encode_rejects_non_finite(bad):
    with pytest.raises(EncodingError, match="non-finite"):
        encode(torch.tensor([1.0, bad]))


def test_encode_rejects_out_of_range():
    with pytest.raises(EncodingError, match="out of the fixed-point range"):
        encode(torch.tensor([max_abs()]))
    encode(torch.tensor([max_abs() - 1.0], dtype=torch.float64))  # just inside is fine


def test_ring_wraps_like_python_modular_arithmetic():
    a = torch.tensor([2**62, -(2**63), 12345678912345], dtype=torch.int64)
    b = torch.tensor([3, -1, 98765432198765], dtype=torch.int64)
    for got, x, y in zip((a * b).tolist(), a.tolist(), b.tolist()):
        assert got == wrap(x * y)
    assert int(lshr(torch.tensor([-1]), 60)) == 15


@pytest.mark.parametrize("n", [2, 3, 5])
@given(st.lists(finite, min_size=1, max_size=16), st.integers(0, 2**32))
@settings(max_examples=25, deadline=None)
def test_share_reconstruct(n, values, seed):
    x = torch.tensor(values, dtype=torch.float64)
    s = Session.in_process(n, master_from_int(seed), record=False)
    sh = SharedTensor.from_plain(s, x)
    assert sh.data.shape == (n, len(values))
    assert torch.equal(sh.data.sum(0), encode(x))  # shares add up in Z_2^64
    assert torch.allclose(sh.reveal(), decode(encode(x)), atol=0, rtol=0)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_any_n_minus_1_shares_look_uniform(n):
    # Sharing the same secret twice with different seeds gives unrelated first N-1 shares.
    x = torch.zeros(4096, dtype=torch.float64)
    a = SharedTensor.from_plain(Session.in_process(n, master_from_int(1), record=False), x).data
    b = SharedTensor.from_plain(Session.in_process(n, master_from_int(2), record=False), x).data
    assert not torch.equal(a[:-1], b[:-1])
    ones = torch.tensor([bin(v & (2**64 - 1)).count("1") for v in a[0].tolist()], dtype=torch.float64)
    assert abs(float(ones.mean()) - 32.0) < 0.5  # a fresh share is uniform: about half its bits set


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=12), st.integers(2, 5), st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_xor_sharing_reconstructs(words, n, seed):
    from mpc_core import prg
    x = torch.tensor(words, dtype=torch.int64)
    key = master_from_int(seed)
    shares = [prg.ring_tensor(key, b"t", 0, p, "x", x.shape) for p in range(n - 1)]
    last = x.clone()
    for sh in shares:
        last ^= sh
    acc = last.clone()
    for sh in shares:
        acc ^= sh
    assert torch.equal(acc, x)


def test_fewer_than_two_parties_is_refused():
    with pytest.raises(PartyError, match="at least 2"):
        Session.in_process(1, master_from_int(0))


def test_math_constant_encoding_is_exact_to_half_ulp():
    v = decode(encode(torch.tensor([math.pi])))
    assert abs(float(v[0]) - math.pi) <= 2**-17


@given(st.lists(st.integers(0, 1), min_size=0, max_size=200), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_pack_bits_round_trip_and_commutes_with_xor(bits, junk):
    """unpack(pack(b)) == b for any length (bit 63 of a word included); only bit 0 of each input counts;
    pack(a ^ b) == pack(a) ^ pack(b), so XOR shares pack share by share."""
    b = torch.tensor(bits, dtype=torch.int64)
    words = pack_bits(b | (junk << 1))  # higher bits of the inputs are ignored
    assert words.shape == ((len(bits) + 63) // 64,)
    assert torch.equal(unpack_bits(words, len(bits)), b)
    other = torch.randint(0, 2, (len(bits),), generator=torch.Generator().manual_seed(len(bits)))
    assert torch.equal(pack_bits(b ^ other), pack_bits(b) ^ pack_bits(other))
    with pytest.raises(EncodingError):
        unpack_bits(words, len(bits) + 64)


def test_b2a_sends_one_word_per_64_bits():
    """B2A of 130 bits opens 3 words: 3 * 8 bytes to each of the N - 1 peers."""
    from mpc_core.protocols.binary import b2a_bits
    s = Session.in_process(3, master_from_int(0), record=False)
    bits = torch.randint(0, 2, (130,), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    xb = torch.stack([bits, torch.zeros_like(bits), torch.zeros_like(bits)])
    before = s.counters.bytes_per_party
    out = b2a_bits(s, xb)
    assert s.counters.bytes_per_party - before == 3 * 8 * 2
    assert torch.equal(out.sum(0), bits)
