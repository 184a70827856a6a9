"""The TCP mesh (mpc_core.mesh), ranks as threads of this process: forming, framing, failures, bad input."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

from mpc_core import domains
from mpc_core.broadcast import BroadcastLog
from mpc_core.encoding import canonical_cbor
from mpc_core.errors import PeerDisconnected, PeerTimeout
from mpc_core.mesh import FRAME, MeshCommunicator, MeshError, join_mesh, listen_rendezvous


def form(world: int, job: bytes = b"job", timeout_s: float = 10.0, before_join=None) -> list:
    """Every rank's Mesh, joined from threads; `before_join(address)` runs once the rendezvous listens."""
    listener = listen_rendezvous("127.0.0.1:0")
    address = "%s:%d" % listener.getsockname()[:2]
    meshes: list = [None] * world
    errors: list = []

    def join(r: int) -> None:
        try:
            meshes[r] = join_mesh(address, r, world, job, timeout_s,
                                  listener=listener if r == world - 1 else None)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((r, exc))

    threads = [threading.Thread(target=join, args=(r,)) for r in range(world)]
    threads[-1].start()
    if before_join is not None:
        before_join(address)
    for t in threads[:-1]:
        t.start()
    for t in threads:
        t.join(timeout_s + 5)
    assert not errors, errors
    return meshes


def run_all(fns) -> list:
    out: list = [None] * len(fns)
    errs: list = []

    def go(i):
        try:
            out[i] = fns[i]()
        except Exception as exc:  # noqa: BLE001
            errs.append((i, exc))

    ts = [threading.Thread(target=go, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    if errs:
        raise errs[0][1]
    return out


def test_a_mesh_forms_and_every_pair_talks_in_order():
    meshes = form(4)
    try:
        for a in range(4):
            for b in range(4):
                if a != b:
                    meshes[a].send(b, b"%d->%d first" % (a, b))
                    meshes[a].send(b, b"%d->%d second" % (a, b))
        for a in range(4):
            for b in range(4):
                if a != b:
                    assert meshes[b].recv(a) == b"%d->%d first" % (a, b)
                    assert meshes[b].recv(a) == b"%d->%d second" % (a, b)
    finally:
        for m in meshes:
            m.close()


def test_large_simultaneous_exchanges_do_not_deadlock():
    meshes = form(3)
    big = {r: bytes([r]) * (6 << 20) for r in range(3)}  # far beyond any socket buffer, all sent at once
    try:
        got = run_all([lambda r=r: meshes[r].exchange({j: big[r] for j in range(3) if j != r}) for r in range(3)])
        for r in range(3):
            assert got[r] == {j: big[j] for j in range(3) if j != r}
    finally:
        for m in meshes:
            m.close()


def test_all_gather_over_the_mesh_chains_every_message():
    meshes = form(3)
    try:
        logs = [BroadcastLog(r, 3) for r in range(3)]
        comms = [MeshCommunicator(meshes[r], 3, logs[r]) for r in range(3)]
        rows = [torch.arange(6, dtype=torch.int64).reshape(1, 2, 3) + 100 * r for r in range(3)]
        out = run_all([lambda r=r: comms[r].all_gather(rows[r]) for r in range(3)])
        want = torch.cat(rows)
        for r in range(3):
            assert torch.equal(out[r], want)
            assert logs[r].count == 1
        assert logs[0].sent[1] == logs[1].received[0] and logs[2].sent[0] == logs[0].received[2]
    finally:
        for m in meshes:
            m.close()


def test_strangers_and_bad_hellos_are_dropped_and_the_mesh_still_forms():
    intruders: list[socket.socket] = []

    def intrude(address: str) -> None:
        host, port = address.rsplit(":", 1)
        for hello in (b"garbage that is not a frame",
                      canonical_cbor([domains.MESH_HELLO, b"other-job", 3, 0, "127.0.0.1:1"]),
                      canonical_cbor([domains.MESH_HELLO, b"job", 3, 7, "127.0.0.1:1"]),  # no such rank
                      canonical_cbor([domains.MESH_HELLO, b"job", 3, 2, "127.0.0.1:1"])):  # the host's own rank
            s = socket.create_connection((host, int(port)))
            s.sendall(FRAME.pack(len(hello)) + hello)
            intruders.append(s)
        intruders.append(socket.create_connection((host, int(port))))  # says nothing at all

    t0 = time.monotonic()
    meshes = form(3, timeout_s=10, before_join=intrude)
    try:
        meshes[0].send(1, b"hello")
        assert meshes[1].recv(0) == b"hello"
        assert time.monotonic() - t0 < 9  # a silent stranger costs a bounded wait, not the whole deadline
    finally:
        for m in meshes:
            m.close()
        for s in intruders:
            s.close()


def test_an_oversized_announcement_is_refused_without_reading_it():
    meshes = form(2)
    try:
        meshes[0].links[1].sendall(FRAME.pack(1 << 40))
        with pytest.raises(MeshError, match="announced"):
            meshes[1].recv(0)
        meshes[0].send(1, b"x" * 100)
        m2 = form(2)
        try:
            m2[0].send(1, b"x" * 100)
            with pytest.raises(MeshError, match="limit 10"):
                m2[1].recv(0, max_len=10)
        finally:
            for m in m2:
                m.close()
    finally:
        for m in meshes:
            m.close()


def test_a_closed_peer_is_disconnected_and_a_silent_one_times_out():
    meshes = form(3, timeout_s=1.0)
    try:
        meshes[2].close()
        with pytest.raises(PeerDisconnected):
            meshes[0].recv(2)
        with pytest.raises(PeerDisconnected):
            meshes[1].exchange({2: b"b"})
        t0 = time.monotonic()
        with pytest.raises(PeerTimeout):
            meshes[0].recv(1)  # rank 1 is alive but sends nothing
        assert 0.8 < time.monotonic() - t0 < 5
        t0 = time.monotonic()
        with pytest.raises(PeerTimeout):
            meshes[0].exchange({1: b"x" * (1 << 20)})  # the poll path: nothing comes back
        assert time.monotonic() - t0 < 5
    finally:
        for m in meshes:
            m.close()


def test_a_rank_that_never_joins_fails_the_mesh_in_time():
    listener = listen_rendezvous("127.0.0.1:0")
    t0 = time.monotonic()
    with pytest.raises(PeerTimeout, match="did not join"):
        join_mesh("127.0.0.1:%d" % listener.getsockname()[1], 2, 3, b"job", 1.0, listener=listener)
    assert time.monotonic() - t0 < 5


def test_bad_arguments_are_refused():
    with pytest.raises(MeshError):
        join_mesh("127.0.0.1:1", 3, 3, b"job", 1.0)
    with pytest.raises(MeshError, match="HOST:PORT"):
        listen_rendezvous("no-port")


# --- replicas (mpc_core.replicas): R ranks per share index ------------------------------------------
def _replica_job(n: int, replicas: int, crash: dict[int, int] | None = None, corrupt: int | None = None):
    """Run the same protocol on n x replicas mesh ranks (threads) and in-process; returns (per-rank output or
    exception, per-rank communicator, in-process output). `crash` = {rank: round}: that rank's process
    "dies" (closes its links) when it reaches that round; `corrupt`: that rank sends +1 on every word."""
    from mpc_core.dealer import SeededDealerClient, TrustedDealer
    from mpc_core.protocols.binary import ltz
    from mpc_core.protocols.nonlinear import mul_fx
    from mpc_core.replicas import Layout
    from mpc_core.session import Session
    from mpc_core.shares import additive_split

    master, job = bytes(range(32)), b"replica-job"
    lay = Layout(n, replicas)
    x = torch.arange(-6, 6, dtype=torch.int64) * 40_000
    y = torch.arange(12, dtype=torch.int64) * 30_000 - 150_000
    xs, ys = additive_split(x, n, master, job, "x"), additive_split(y, n, master, job, "y")

    def program(s: Session) -> torch.Tensor:
        z = mul_fx(s, s_in(s, xs), s_in(s, ys))
        for _ in range(3):
            z = mul_fx(s, z, s_in(s, xs))
        return ltz(s, z) * 7 + z

    def s_in(s: Session, shares) -> torch.Tensor:
        return torch.stack([shares[p] for p in s.local_parties])

    ref = program(Session.in_process(n, master, job=job, record=False))
    dealer = TrustedDealer(master, job, n)
    meshes = form(lay.party_ranks)
    comms: list = [None] * lay.party_ranks

    class Crashing(MeshCommunicator):
        def all_gather(self, local):
            if crash and self.rank in crash and (getattr(self, "_k", 0) >= crash[self.rank]):
                self.mesh.close()
                raise PeerDisconnected("this replica crashed (test)")
            self._k = getattr(self, "_k", 0) + 1
            return super().all_gather(local)

        def _message_for(self, round_index, peer, mine):
            return mine + 1 if self.rank == corrupt else mine

    def run(rank: int):
        p = lay.party_of(rank)
        client = SeededDealerClient(p, n, job, dealer.party_seed(p), dealer.correction if p == n - 1 else None)
        comms[rank] = Crashing(meshes[rank], n, BroadcastLog(rank, lay.party_ranks, tuple(lay.peer_ranks(rank))),
                               replicas=replicas)
        try:
            return program(Session(comms[rank], client, job=job, record=False))[0]
        except PeerDisconnected as exc:
            return exc

    try:
        outs = run_all([lambda r=r: run(r) for r in range(lay.party_ranks)])
    finally:
        for m in meshes:
            m.close()
    return outs, comms, ref


def test_replicas_compute_what_one_party_per_index_computes():
    outs, comms, ref = _replica_job(3, 2)
    for rank, out in enumerate(outs):
        assert torch.equal(out, ref[rank % 3]), rank
    assert all(not c.lost and not c.divergent for c in comms)
    # every replica of an index sent every peer the same chain: receipts would agree
    for rank, c in enumerate(comms):
        for j in c.peers:
            assert comms[j].broadcast_log.received[rank] == c.broadcast_log.sent[j]
            assert c.broadcast_log.counts[j] == c.broadcast_log.count


@pytest.mark.parametrize("crash_round", [0, 3, 9])
def test_a_replica_that_dies_mid_protocol_is_dropped_and_the_others_finish(crash_round):
    outs, comms, ref = _replica_job(3, 2, crash={4: crash_round})  # rank 4 = party 1, replica 1
    assert isinstance(outs[4], PeerDisconnected)
    for rank, out in enumerate(outs):
        if rank != 4:
            assert torch.equal(out, ref[rank % 3]), rank
            if rank % 3 != 1:
                assert 4 in comms[rank].lost and 4 not in comms[rank].live
                assert comms[rank].broadcast_log.counts[4] == crash_round


def test_an_index_with_no_live_replica_fails_the_round():
    outs, _, _ = _replica_job(3, 2, crash={1: 2, 4: 2})  # both replicas of party 1
    for rank in (0, 2, 3, 5):
        assert isinstance(outs[rank], PeerDisconnected) and "every replica of party 1" in str(outs[rank])


def test_a_replica_whose_copy_differs_is_counted_divergent():
    outs, comms, ref = _replica_job(3, 2, corrupt=5)  # party 2, replica 1: its twin (rank 2) is the copy used
    for rank, out in enumerate(outs):
        assert torch.equal(out, ref[rank % 3]), rank
    for rank in (0, 1, 3, 4):
        assert comms[rank].divergent.get(5) == comms[rank].broadcast_log.count
        assert comms[rank].broadcast_log.received[5] != comms[rank].broadcast_log.received[2]
