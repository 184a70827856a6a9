"""Witnesses cosign checkpoints they checked; the log operator aggregates only valid cosignatures."""
from __future__ import annotations

import pytest

from ledger import entries as E
from ledger.checkpoints import Checkpoint, sign_checkpoint
from ledger.errors import CheckpointError
from ledger.log import Ledger
from ledger.operator import LogOperator, pending_entries
from ledger.witness import WitnessState, collect_cosignatures, witness_step
from tests.ledger.conftest import LOG, ORIGIN, ident, step

W1, W2 = ident("witness-1"), ident("witness-2")


@pytest.fixture
def wled(ledger):
    ledger.append_many([E.registration(W1, roles=("witness",)), E.registration(W2, roles=("witness",))])
    ledger.checkpoint()
    return ledger


def _state(led: Ledger) -> WitnessState:
    return WitnessState(led.origin, LOG.bls_pub)


def test_two_witnesses_cosign_and_the_operator_aggregates(wled, tmp_path):
    s1, s2 = _state(wled), _state(wled)
    cp = wled.latest_checkpoint()
    assert witness_step(wled, W1, s1).size == cp.size
    assert witness_step(wled, W1, s1) is None  # nothing new to cosign
    assert witness_step(wled, W2, s2).size == cp.size
    assert pending_entries(wled) == 0  # cosign entries do not call for a new checkpoint
    added, nxt = collect_cosignatures(wled, 0)
    assert added == 2 and nxt == wled.size()
    got = wled.checkpoint_at(cp.size)
    assert set(got.signers[1:]) == {W1.bls_pub, W2.bls_pub}
    assert got.verify(LOG.bls_pub, witnesses=[W1.bls_pub, W2.bls_pub], quorum=2)
    assert not got.verify(LOG.bls_pub, witnesses=[W1.bls_pub, W2.bls_pub, ident("x").bls_pub], quorum=3)
    assert collect_cosignatures(wled, nxt) == (0, nxt)
    assert collect_cosignatures(wled, 0)[0] == 0  # already aggregated: not twice
    # The state survives a restart and the witness goes on from it.
    s1.save(tmp_path / "w1.json")
    again = WitnessState.load(tmp_path / "w1.json")
    assert (again.size, again.root) == (s1.size, s1.root)
    wled.append(step("alice", 1))
    wled.checkpoint()
    assert witness_step(wled, W1, again).size == wled.latest_checkpoint().size


def test_a_witness_refuses_a_split_view_and_keeps_its_state(wled, tmp_path):
    s = _state(wled)
    witness_step(wled, W1, s)
    before = (s.size, s.root)
    # A second ledger under the same log key and origin, with different entries: a fork.
    fork = Ledger.open(f"sqlite:///{tmp_path / 'fork.db'}", origin=ORIGIN, log_identity=LOG)
    try:
        fork.append_many([E.registration(ident("mallory")), E.registration(W1, roles=("witness",))])
        for i in range(5):
            fork.append(step("mallory", i))
        fork.checkpoint()
        with pytest.raises(CheckpointError):
            witness_step(fork, W1, s)
        assert (s.size, s.root) == before
        assert fork.by_kind(E.COSIGN) == []
    finally:
        fork.close()


def test_a_checkpoint_not_signed_by_the_pinned_log_is_refused(wled):
    s = WitnessState(wled.origin, ident("other-log").bls_pub)
    with pytest.raises(CheckpointError):
        witness_step(wled, W1, s)


def test_bad_cosignatures_are_not_aggregated(wled):
    cp = wled.latest_checkpoint()
    bob = ident("bob")  # registered, but not as a witness
    wled.append_many([
        E.make_entry(bob, E.COSIGN, {"size": cp.size, "root": cp.root, "sig": bob.bls_sign(cp.checkpoint.message())}),
        # a witness signing something else than the checkpoint
        E.make_entry(W1, E.COSIGN, {"size": cp.size, "root": cp.root, "sig": W1.bls_sign(b"not the checkpoint")}),
        # a witness cosigning a tree head the log never signed
        E.make_entry(W2, E.COSIGN, {"size": cp.size, "root": bytes(32),
                                    "sig": W2.bls_sign(sign_checkpoint(Checkpoint(wled.origin, cp.size, bytes(32),
                                                                                  wled.hash_name), W2).checkpoint.message())}),
    ])
    added, _ = collect_cosignatures(wled, 0)
    assert added == 0
    assert wled.checkpoint_at(cp.size).signers == (LOG.bls_pub,)


def test_malformed_state_files_are_refused(tmp_path):
    for text in ("", "{}", '{"origin": "o", "log_key": "zz", "size": 0, "root": null}',
                 '{"origin": "o", "log_key": "00", "size": 3, "root": null}'):
        p = tmp_path / "s.json"
        p.write_text(text)
        with pytest.raises(CheckpointError):
            WitnessState.load(p)


def test_the_operator_collects_while_serving(wled):
    op = LogOperator(wled)
    s = _state(wled)
    witness_step(wled, W1, s)
    op.step(0.0)
    assert W1.bls_pub in wled.checkpoint_at(s.size).signers
