"""Broadcast receipts: chains, signatures and the equivocation verdict (specs/broadcast.md)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Identity
from mpc_core.broadcast import BroadcastLog, receipt_message
from mpc_core.errors import MPCError
from verifier.broadcast import check_receipts

JOB = "job-b"
N = 3
IDS = [Identity(f"node-{i}", bytes([i + 1]) * 32) for i in range(N)]
ASSIGN = {i: IDS[i].node_id for i in range(N)}
KEYS = {k.node_id: k.ed25519_pub for k in IDS}


def _run(rounds: int, tamper: tuple[int, int, int] | None = None) -> list[BroadcastLog]:
    """Simulate `rounds` broadcast rounds; `tamper` = (sender, round, victim) alters one message."""
    logs = [BroadcastLog(p, N) for p in range(N)]
    for k in range(rounds):
        msgs = {p: torch.full((2, 3), 10 * k + p, dtype=torch.int64) for p in range(N)}
        sent = {p: {j: msgs[p] for j in logs[p].peers} for p in range(N)}
        if tamper is not None and tamper[1] == k:
            s, _, v = tamper
            sent[s][v] = msgs[s] + 1
        for p in range(N):
            logs[p].record_round(sent[p], {j: sent[j][p] for j in logs[p].peers})
    return logs


def _job_roots(logs: list[BroadcastLog], forge: dict | None = None) -> list[dict]:
    """Each party's job-root body: the receipts its peers signed for it, checked as a node would."""
    bodies = []
    for r in range(N):
        heard, disputes = [], []
        for j in logs[r].peers:
            head = logs[j].sent[r]
            sig = IDS[j].sign(receipt_message(JOB, j, r, logs[j].count, head))
            if forge and (j, r) in forge:
                sig = forge[(j, r)]
            if head == logs[r].received[j]:
                heard.append([j, logs[j].count, head, sig])
            else:
                disputes.append(j)
        bodies.append({"party": r, "receipts": heard, "disputes": disputes})
    return bodies


def test_honest_chains_agree_and_convict_nobody():
    logs = _run(5)
    for p in range(N):
        assert len(set(logs[p].sent.values())) == 1  # one message to everyone
        for j in logs[p].peers:
            assert logs[p].received[j] == logs[j].sent[p]
    f = check_receipts(JOB, _job_roots(logs), ASSIGN, KEYS)
    assert f.consistent and f.receipts_checked == N * (N - 1)


def test_equivocation_is_proven_by_two_receipts():
    logs = _run(5, tamper=(1, 3, 2))
    f = check_receipts(JOB, _job_roots(logs), ASSIGN, KEYS)
    assert list(f.equivocators) == [1] and "equivocation" in f.equivocators[1]
    assert f.disputes == {}


def test_forged_receipts_prove_nothing_and_a_mismatch_is_a_dispute():
    logs = _run(4, tamper=(1, 2, 2))
    bodies = _job_roots(logs, forge={(1, 2): b"\x00" * 64})  # node 1's receipt for node 2 is garbage
    f = check_receipts(JOB, bodies, ASSIGN, KEYS)
    assert f.equivocators == {}  # one valid receipt only
    # A node that lies about its receipts (claims a head it never got) cannot frame a sender.
    bodies = _job_roots(_run(4))
    bodies[2]["receipts"][0][2] = b"\x11" * 32
    assert check_receipts(JOB, bodies, ASSIGN, KEYS).equivocators == {}
    # What node 2 received from node 1 differs from node 1's chain towards it: a dispute.
    logs = _run(4)
    logs[2].received[1] = b"\x22" * 32
    f = check_receipts(JOB, _job_roots(logs), ASSIGN, KEYS)
    assert f.disputes == {1: [2]} and not f.consistent


def test_receipts_of_another_job_do_not_count():
    logs = _run(3, tamper=(0, 1, 2))
    bodies = _job_roots(logs)
    assert 0 in check_receipts(JOB, bodies, ASSIGN, KEYS).equivocators
    assert check_receipts("other-job", bodies, ASSIGN, KEYS).equivocators == {}


def test_log_rejects_rounds_that_do_not_name_every_peer():
    log = BroadcastLog(0, N)
    t = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(MPCError):
        log.record_round({1: t}, {1: t, 2: t})
    with pytest.raises(MPCError):
        BroadcastLog(3, N)


junk = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.binary(max_size=40) | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(junk, max_size=4))
def test_garbage_job_roots_never_raise(bodies):
    f = check_receipts(JOB, bodies, ASSIGN, KEYS)
    assert f.equivocators == {}


def test_three_replicas_outvote_the_one_whose_chain_differs():
    """Replicas (N = 2 indices, R = 3): ranks 0, 2, 4 are index 0, ranks 1, 3, 5 index 1. Rank 4 sends
    something else than its twins to every peer: signed honestly, it is no equivocator, but the receipts of
    each peer show it outvoted 2 to 1; with two replicas nothing is outvoted."""
    n, R = 2, 3
    ids = [Identity(f"r{k}", bytes([k + 1]) * 32) for k in range(n * R)]
    keys = {k.node_id: k.ed25519_pub for k in ids}
    assign = {k: ids[k].node_id for k in range(n * R)}
    peers = {k: tuple(j for j in range(n * R) if j % n != k % n) for k in range(n * R)}
    logs = [BroadcastLog(k, n * R, peers[k]) for k in range(n * R)]
    for rnd in range(4):
        msgs = {k: torch.full((3,), 100 * rnd + k % n + (7 if k == 4 else 0), dtype=torch.int64) for k in range(n * R)}
        for k in range(n * R):
            logs[k].record_round({j: msgs[k] for j in peers[k]}, {j: msgs[j] for j in peers[k]})
    bodies = []
    for r in range(n * R):
        heard = [[j, logs[j].counts[r], logs[j].sent[r],
                  ids[j].sign(receipt_message(JOB, j, r, logs[j].counts[r], logs[j].sent[r]))] for j in peers[r]]
        bodies.append({"party": r % n, "replica": r // n, "receipts": heard, "disputes": []})
    f = check_receipts(JOB, bodies, assign, keys, n_parties=n)
    assert f.equivocators == {} and f.disputes == {} and set(f.minority) == {4}, f
    assert "2 of its 2 twins" in f.minority[4]
    two = [b for b in bodies if b["replica"] < 2]
    for b in two:
        b["receipts"] = [x for x in b["receipts"] if x[0] < 4]
    assert check_receipts(JOB, two, assign, keys, n_parties=n).minority == {}
