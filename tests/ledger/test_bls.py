"""ledger/bls.py against py_ecc, the draft's Python reference: the same bytes out, the same verdicts on
valid, tampered and malformed input (py_ecc needs about a second per verification: few examples)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from py_ecc.bls import G2ProofOfPossession as REF

from ledger import bls

# No shrinking: each py_ecc call takes up to a second, and a failing example is printed as found.
SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    phases=[Phase.explicit, Phase.reuse, Phase.generate])
keys = st.binary(min_size=32, max_size=32).map(REF.KeyGen)
messages = st.binary(max_size=64)


@SETTINGS
@given(sk=keys, msg=messages)
def test_keys_signatures_and_proofs_are_the_references_bytes(sk, msg):
    pk = bls.sk_to_pk(sk)
    assert pk == bytes(REF.SkToPk(sk))
    sig = bls.sign(sk, msg)
    assert sig == bytes(REF.Sign(sk, msg))
    assert bls.pop_prove(sk) == bytes(REF.PopProve(sk))
    assert bls.verify(pk, msg, sig) and REF.Verify(pk, msg, sig)
    assert bls.pop_verify(pk, bls.pop_prove(sk))


@SETTINGS
@given(sk=keys, msg=messages, flip=st.integers(0, 95 * 8 - 1))
def test_a_tampered_signature_or_message_fails_as_in_the_reference(sk, msg, flip):
    pk = bls.sk_to_pk(sk)
    sig = bytearray(bls.sign(sk, msg))
    sig[1 + flip // 8] ^= 1 << (flip % 8)  # any bit after the flag byte
    bad = bytes(sig)
    assert bls.verify(pk, msg, bad) is False and REF.Verify(pk, msg, bad) is False
    assert bls.verify(pk, msg + b"x", bls.sign(sk, msg)) is False
    assert bls.pop_verify(pk, bls.sign(sk, pk)) is False  # a signature under the wrong tag is no proof


@settings(max_examples=2, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(sks=st.lists(keys, min_size=2, max_size=3, unique=True), msg=messages)
def test_aggregates_agree_with_the_reference(sks, msg):
    pks = [bls.sk_to_pk(sk) for sk in sks]
    msgs = [msg + bytes([i]) for i in range(len(sks))]
    agg = bls.aggregate([bls.sign(sk, m) for sk, m in zip(sks, msgs)])
    assert agg == bytes(REF.Aggregate([REF.Sign(sk, m) for sk, m in zip(sks, msgs)]))
    assert bls.aggregate_verify(pks, msgs, agg) and REF.AggregateVerify(pks, msgs, agg)
    assert not bls.aggregate_verify(pks, msgs[::-1], agg)
    same = bls.aggregate([bls.sign(sk, msg) for sk in sks])
    assert bls.fast_aggregate_verify(pks, msg, same) and REF.FastAggregateVerify(pks, msg, same)
    assert not bls.fast_aggregate_verify(pks[:-1], msg, same)


def test_malformed_input_is_refused_without_raising():
    sk = REF.KeyGen(bytes(32))
    pk, sig = bls.sk_to_pk(sk), bls.sign(sk, b"m")
    identity_pk = b"\xc0" + bytes(47)
    for bad_pk in (b"", pk[:-1], b"\x80" + bytes(47), identity_pk, b"\xff" * 48):
        assert bls.verify(bad_pk, b"m", sig) is False
        assert REF.Verify(bad_pk, b"m", sig) is False
        assert bls.fast_aggregate_verify([bad_pk], b"m", sig) is False
        assert bls.aggregate_verify([bad_pk], [b"m"], sig) is False
        assert bls.pop_verify(bad_pk, sig) is False
    for bad_sig in (b"", sig[:-1], b"\xff" * 96, b"\x80" + bytes(95), b"\xc0" + bytes(94) + b"\x01"):
        assert bls.verify(pk, b"m", bad_sig) is False
    assert bls.aggregate([b"\xc0" + bytes(95)]) == b"\xc0" + bytes(95)  # the identity, canonically encoded
    assert bls.aggregate_verify([], [], sig) is False and bls.fast_aggregate_verify([], b"m", sig) is False
    assert bls.aggregate_verify([pk], [b"m", b"n"], sig) is False
    # A key and its negation sum to the identity: the aggregate key is refused, as KeyValidate says.
    neg = bls.sk_to_pk(bls.CURVE_ORDER - sk)
    assert bls.fast_aggregate_verify([pk, neg], b"m", bls.aggregate([sig, bls.sign(bls.CURVE_ORDER - sk, b"m")])) is False
    for bad_sk in (0, bls.CURVE_ORDER, -1, True):
        with pytest.raises(bls.BLSError):
            bls.sign(bad_sk, b"m")
    with pytest.raises(bls.BLSError):
        bls.aggregate([])
    with pytest.raises(bls.BLSError):
        bls.aggregate([b"\xff" * 96])
