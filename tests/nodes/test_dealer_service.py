"""The dealer role in isolation: sealed corrections, request order, which jobs it serves, when it releases."""
from __future__ import annotations

import pytest

from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from mpc_core.dealer import Request, TrustedDealer
from mpc_core.encoding import canonical_cbor
from prover.channels import open_correction, seal_correction
from prover.dealer_service import (DealerServiceError, _LoggingDealer, release_for_challenge, request_from,
                                   run_dealer_job)
from prover.errors import ChannelAuthError, ChannelKeyError
from prover.keys import NodeKeys, registration_entry

KEY = bytes(range(32))
DESC = ["beaver", [[2, 3], [2, 3]]]


def test_correction_round_trip_and_every_binding():
    sealed = seal_correction(KEY, "job-1", 7, DESC, b"payload bytes")
    assert open_correction(KEY, "job-1", 7, DESC, sealed) == b"payload bytes"
    for key, job, op, desc, ct in ((bytes(32), "job-1", 7, DESC, sealed), (KEY, "job-2", 7, DESC, sealed),
                                   (KEY, "job-1", 8, DESC, sealed), (KEY, "job-1", 7, ["beaver", [[2, 3], [2, 4]]], sealed),
                                   (KEY, "job-1", 7, DESC, sealed[:-1] + bytes([sealed[-1] ^ 1])),
                                   (KEY, "job-1", 7, DESC, b"")):
        with pytest.raises(ChannelAuthError):
            open_correction(key, job, op, desc, ct)
    with pytest.raises(ChannelKeyError):
        seal_correction(b"short", "job-1", 0, DESC, b"x")
    with pytest.raises(ChannelKeyError):
        open_correction(b"short", "job-1", 0, DESC, sealed)


def test_dealer_answers_requests_only_in_op_order():
    d = _LoggingDealer(TrustedDealer(b"m" * 32, b"job", 3))
    req = request_from(DESC)
    assert isinstance(req, Request) and req.describe() == DESC
    d.correction(req, 0)
    with pytest.raises(DealerServiceError):
        d.correction(req, 2)
    d.correction(req, 1)
    assert d.log == [DESC, DESC]


def _keys(name: str) -> NodeKeys:
    return NodeKeys.generate(name, prg.master_from_int(3, f"test-dealer:{name}"))


@pytest.fixture
def ledger_with_job(tmp_path):
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", origin="test", log_identity=Identity("log", b"L" * 32))
    client, dealer, other = _keys("client"), _keys("dealer"), _keys("other-dealer")
    nodes = [_keys(f"node-{i}") for i in range(3)]
    led.append_many([registration_entry(k, ("node",)) for k in [client, dealer, other] + nodes])
    led.append_many([
        E.make_entry(client.identity, E.JOB_OPEN, {"job_id": "j1", "model_id": "m", "n_parties": 3, "replicas": 1,
                                                   "stages": 1, "dealer": other.node_id, "client": client.node_id,
                                                   "params": {"prompt_len": 1, "steps": 1, "rendezvous": "127.0.0.1:1"}}),
        E.make_entry(client.identity, E.JOB_ASSIGN, {"job_id": "j1", "assignments": [
            {"node": k.node_id, "party": p, "replica": 0, "stage": 0} for p, k in enumerate(nodes)]})])
    yield led, dealer, other, tmp_path
    led.close()


def test_dealer_refuses_jobs_it_is_not_named_in_or_served_before(ledger_with_job):
    led, dealer, other, tmp = ledger_with_job
    with pytest.raises(DealerServiceError, match="names dealer"):
        run_dealer_job(led, dealer, "j1", tmp / "state", timeout_s=1)
    with pytest.raises(DealerServiceError, match="no job.open"):
        run_dealer_job(led, other, "nope", tmp / "state", timeout_s=1)
    led.append(E.make_entry(other.identity, E.DEALER_COMMIT, {"job_id": "j1", "beacon": bytes(32), "seeds": [
        {"party": p, "commitment": bytes(32)} for p in range(3)]}))
    with pytest.raises(DealerServiceError, match="served before"):
        run_dealer_job(led, other, "j1", tmp / "state", timeout_s=1)
    assert led.by_job("j1", kind=E.DEALER_COMMIT)[0].entry.author == other.node_id  # nothing was added


def test_release_only_for_the_derived_challenge(ledger_with_job):
    """The dealer reveals its beacon once the job is sealed, posts the derived challenge if nobody has,
    and releases seeds only for it: a junk challenge posted first gets nothing."""
    from mpc_core.dealer import TrustedDealer
    from prover.local_files import write_secret
    from protocol import bodies as B
    from protocol.challenge import DEALER_SLOT, beacon_commitment, beacon_value
    from protocol.job_view import challenge_state
    from protocol.opening import decode_release

    led, dealer, other, tmp = ledger_with_job
    nodes = [_keys(f"node-{i}") for i in range(3)]
    master, secrets = b"m" * 32, [bytes([i]) * 32 for i in range(3)]
    state = tmp / "dealer-j1.cbor"
    write_secret(state, canonical_cbor({"format": "shardproof/dealer-state/v1", "job_id": "j1", "n_parties": 3,
                                        "master_seed": master, "requests": [], "status": "done"}))
    with pytest.raises(DealerServiceError, match="does not count"):
        release_for_challenge(led, other, state, "j1")  # no dealer.commit of its own yet
    led.append(E.make_entry(other.identity, E.DEALER_COMMIT, B.DealerCommit(
        "j1", dict(enumerate(TrustedDealer(master, b"j1", 3).seed_commitments())),
        beacon_commitment("j1", DEALER_SLOT, beacon_value(master, "j1", DEALER_SLOT))).to_body()))
    led.append_many([E.make_entry(k.identity, E.JOB_ROOT, B.JobRoot(
        "j1", k.node_id, i, 0, bytes(32), 1, bytes(96), bytes(32), bytes(32),
        beacon_commitment("j1", i, beacon_value(secrets[i], "j1", i))).to_body()) for i, k in enumerate(nodes)])
    before = led.size()
    assert release_for_challenge(led, other, state, "j1") is None and led.size() == before  # not sealed yet
    led.checkpoint()
    junk = led.append(E.make_entry(dealer.identity, E.CHALLENGE, B.Challenge(
        "j1", 1, bytes(32), bytes(32), (0, 1)).to_body()))
    assert release_for_challenge(led, other, state, "j1") is None  # reveals its beacon
    assert [e.entry.author for e in led.by_job("j1", kind=E.REVEAL)] == [other.node_id]
    assert release_for_challenge(led, other, state, "j1") is None  # the nodes have not revealed: nothing
    led.append_many([E.make_entry(k.identity, E.REVEAL, B.Reveal("j1", i, beacon_value(secrets[i], "j1", i)).to_body())
                     for i, k in enumerate(nodes)])
    assert release_for_challenge(led, other, state, "j1") is None  # posts the derived challenge
    idx = release_for_challenge(led, other, state, "j1")
    st = challenge_state(led, "j1")
    rel = led.get(idx).entry
    assert rel.kind == E.RELEASE and rel.body["challenge"] == st.counted.index != junk
    assert sorted(decode_release(led.get_blob(rel.body["data"]))["seeds"]) == st.opened
    assert release_for_challenge(led, other, state, "j1") == idx  # never twice
    with pytest.raises(DealerServiceError, match="not the dealer state"):
        release_for_challenge(led, other, state, "j2")


def test_a_job_without_assignment_does_not_block_the_dealer(ledger_with_job):
    from prover.dealer_service import DealerDaemon
    from prover.local_files import write_secret

    led, dealer, other, tmp = ledger_with_job
    client = _keys("client")
    led.append(E.make_entry(other.identity, E.DEALER_COMMIT, {"job_id": "j1", "beacon": bytes(32), "seeds": [
        {"party": p, "commitment": bytes(32)} for p in range(3)]}))  # j1 counts as served
    led.append(E.make_entry(client.identity, E.JOB_OPEN, {
        "job_id": "lonely", "model_id": "m", "n_parties": 3, "replicas": 1, "stages": 1, "dealer": other.node_id,
        "client": client.node_id, "params": {"prompt_len": 1, "steps": 1, "rendezvous": "127.0.0.1:1"}}))
    (tmp / "d" / "dealer").mkdir(parents=True)
    write_secret(tmp / "d" / "dealer" / "dealer-old.cbor", canonical_cbor({
        "format": "shardproof/dealer-state/v1", "job_id": "old", "n_parties": 3, "master_seed": b"m" * 32,
        "requests": [], "status": "done"}))
    led.append(E.make_entry(dealer.identity, E.CHALLENGE, {"job_id": "old", "checkpoint_size": 1,
                                                           "checkpoint_root": bytes(32), "seed": bytes(32),
                                                           "parties": [0, 1]}))
    d = DealerDaemon(f"sqlite:///{tmp / 'l.db'}", other, tmp / "d", timeout_s=30)
    assert d.poll_once() is False
    assert "lonely" in d._pending and "old" in d.released  # the challenge was looked at (and refused: not derived)
    assert not led.by_job("old", kind=E.RELEASE) and not led.by_job("lonely", kind=E.DEALER_COMMIT)
