"""Typed entry bodies: every valid body round-trips through a signed entry; a missing or mistyped field
is a BodyError, never a crash or a silently wrong value."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import entries as E
from ledger.keys import Identity
from protocol import bodies as B
from protocol.errors import BodyError

A = Identity("alice", b"A" * 32)
ids = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12)
b32 = st.binary(min_size=32, max_size=32)
small = st.integers(0, 1 << 16)

BODIES = {
    B.JobOpen: st.builds(B.JobOpen, ids, ids, st.integers(2, 9), ids, st.one_of(st.none(), ids),
                         params=st.fixed_dictionaries({"prompt_len": st.integers(1, 9), "open_deadline": small})),
    B.JobAssign: st.builds(B.JobAssign, ids, st.lists(st.builds(B.Assignment, ids, small, small, small),
                                                       min_size=1, max_size=5).map(tuple)),
    B.DealerCommit: st.builds(B.DealerCommit, ids, st.dictionaries(small, b32, min_size=1, max_size=4), b32,
                              st.dictionaries(ids, st.tuples(small, st.binary(min_size=1, max_size=200)), max_size=3)),
    B.JobRoot: st.builds(B.JobRoot, ids, ids, small, small, b32, st.integers(0, 1 << 30),
                         st.binary(min_size=96, max_size=96), b32, b32, b32,
                         st.lists(st.builds(B.Receipt, small, small, b32, st.binary(min_size=64, max_size=64)),
                                  max_size=3).map(tuple),
                         st.lists(small, max_size=3).map(tuple), st.one_of(st.none(), b32)),
    B.Reveal: st.builds(B.Reveal, ids, st.one_of(st.none(), small), b32),
    B.Challenge: st.builds(B.Challenge, ids, small, b32, b32, st.lists(small, max_size=4).map(tuple),
                           st.one_of(st.none(), st.integers(1, 64))),
    B.Opening: st.builds(B.Opening, ids, ids, small, small, b32, st.one_of(st.none(), b32)),
    B.DealerRelease: st.builds(B.DealerRelease, ids, small, b32),
    B.ModelRefresh: st.builds(B.ModelRefresh, ids, ids, b32),
    B.Verdict: st.builds(B.Verdict, ids, st.sampled_from(E.OUTCOMES), st.lists(ids, max_size=3).map(tuple),
                         st.text(max_size=40), st.one_of(st.none(), st.integers(0, 64)),
                         st.lists(ids, max_size=3).map(tuple)),
    B.Heartbeat: st.builds(B.Heartbeat, ids, st.lists(ids, max_size=4).map(tuple)),
    B.JobFail: st.builds(B.JobFail, ids, st.text(min_size=1, max_size=40)),
    B.JobResume: st.builds(B.JobResume, ids, small, ids, ids),
}


@pytest.mark.parametrize("cls", list(BODIES), ids=lambda c: c.__name__)
def test_typed_bodies_round_trip_through_signed_entries(cls):
    @settings(max_examples=40, deadline=None)
    @given(BODIES[cls])
    def check(body):
        e = E.decode_entry(E.make_entry(A, cls.KIND, body.to_body(), time=1).encode())
        assert cls.from_entry(e) == body

    check()


@pytest.mark.parametrize("cls", list(BODIES), ids=lambda c: c.__name__)
def test_a_body_missing_a_field_or_with_a_wrong_type_is_a_body_error(cls):
    @settings(max_examples=20, deadline=None)
    @given(BODIES[cls], st.data())
    def check(body, data):
        good = body.to_body()
        key = data.draw(st.sampled_from(sorted(good)))
        bads = [{**good, key: 1.5}, {**good, key: [object]}]
        if E.SCHEMAS[cls.KIND][key][1]:  # a required field
            bads.append({k: v for k, v in good.items() if k != key})
        for bad in bads:
            with pytest.raises(BodyError):
                cls.from_entry(E.Entry(cls.KIND, "alice", 1, bad, b"\x00" * 64))
        with pytest.raises(BodyError):
            cls.from_entry(E.Entry(E.CHECKPOINT if cls.KIND != E.CHECKPOINT else E.VERDICT, "alice", 1, good))

    check()
