"""Bad input gives a typed MPCError with a message that says what and where."""
import pytest
import torch

from mpc_core import (DTypeError, EncodingError, MPCError, PartyError, Session, ShapeError, SharedTensor,
                      simulate)
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.prg import master_from_int


def _s(n=3, seed=0):
    return Session.in_process(n, master_from_int(seed), record=False)


def test_error_tree_is_rooted_at_mpcerror():
    for e in (DTypeError, EncodingError, PartyError, ShapeError):
        assert issubclass(e, MPCError)


def test_mismatched_shapes():
    s = _s()
    a = SharedTensor.from_plain(s, torch.zeros(2, 3, dtype=torch.float64))
    b = SharedTensor.from_plain(s, torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4, 5\)"):
        a + b
    with pytest.raises(ShapeError, match="do not broadcast"):
        a * b
    with pytest.raises(ShapeError, match="do not fit"):
        a @ b
    with pytest.raises(ShapeError, match="cannot reshape"):
        a.reshape(7)
    with pytest.raises(ShapeError, match="dim 5 out of range"):
        a.softmax(5)
    with pytest.raises(ShapeError, match="do not fit"):
        a @ torch.zeros(4, 4, dtype=torch.float64)


def test_mismatched_sessions_parties_or_encodings():
    a = SharedTensor.from_plain(_s(3, 0), torch.zeros(2, dtype=torch.float64))
    b = SharedTensor.from_plain(_s(3, 1), torch.zeros(2, dtype=torch.float64))
    c = SharedTensor.from_plain(_s(2, 0), torch.zeros(2, dtype=torch.float64))
    for other in (b, c):
        with pytest.raises(PartyError, match="different sessions"):
            a + other
        with pytest.raises(PartyError, match="different sessions"):
            a * other
    s16 = _s()
    s12 = Session.in_process(3, master_from_int(0), record=False, frac_bits=12)
    with pytest.raises(PartyError):
        SharedTensor.from_plain(s16, torch.ones(1)) + SharedTensor.from_plain(s12, torch.ones(1))


def test_wrong_dtypes():
    s = _s()
    with pytest.raises(DTypeError, match="int64"):
        SharedTensor(s, torch.zeros(3, 2, dtype=torch.float32))
    a = SharedTensor.from_plain(s, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(DTypeError, match="ambiguous"):
        a + torch.zeros(2, dtype=torch.int64)
    with pytest.raises(DTypeError):
        SharedTensor.from_plain(s, torch.zeros(2, dtype=torch.bool))


def test_wrong_number_of_party_rows():
    s = _s()
    with pytest.raises(ShapeError, match="3 local party rows"):
        SharedTensor(s, torch.zeros(2, 4, dtype=torch.int64))


def test_non_finite_and_out_of_range_inputs():
    with pytest.raises(EncodingError, match="non-finite value at index \\(1,\\)"):
        simulate(lambda a: a, torch.tensor([0.0, float("nan")]))
    with pytest.raises(EncodingError, match="out of the fixed-point range"):
        simulate(lambda a: a, torch.tensor([1e15], dtype=torch.float64))


def test_fewer_than_two_parties():
    with pytest.raises(PartyError, match="at least 2 parties"):
        simulate(lambda a: a, torch.ones(1), parties=1)


def test_shared_values_have_no_truth_value():
    a = SharedTensor.from_plain(_s(), torch.ones(1))
    with pytest.raises(PartyError, match="truth value"):
        bool(a < 0)


def test_canonical_cbor_refuses_floats_garbage_and_non_canonical_bytes():
    with pytest.raises(EncodingError, match="float"):
        canonical_cbor({"a": [1, 2.5]})
    with pytest.raises(EncodingError, match="malformed"):
        decode_cbor(b"\xff\x00\x13")
    with pytest.raises(EncodingError, match="non-canonical"):
        decode_cbor(bytes.fromhex("a2616202616101"))  # {"b": 2, "a": 1}: unsorted keys
    with pytest.raises(EncodingError):
        decode_cbor(canonical_cbor([1, 2]) + b"\x00")
    assert decode_cbor(canonical_cbor({"b": 2, "a": [b"x", None, True]})) == {"a": [b"x", None, True], "b": 2}
