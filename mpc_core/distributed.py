"""One process per party over the TCP mesh (mpc_core.mesh), plus a dealer process: the harness.

World layout: ranks 0..N-1 are the parties, rank N is the dealer (it hosts the mesh's
rendezvous). The parties exchange openings over the mesh (MeshCommunicator). Parties
0..N-2 expand their material from their seeds and never talk to the dealer during the
online phase; party N-1 sends each request descriptor to the dealer and receives its
correction shares. Every link has the job's timeout, so a peer that dies mid-protocol
raises PeerDisconnected or PeerTimeout instead of hanging.
"""
from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from mpc_core import prg
from mpc_core.dealer import Request, SeededDealerClient, TrustedDealer, kind_spec
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.errors import MPCError
from mpc_core.mesh import Mesh, MeshCommunicator, free_port, join_mesh
from mpc_core.session import Session, input_owner_seed

DEFAULT_TIMEOUT_S = 60.0


class DealerChannel:
    """The last party's link to the dealer rank."""

    def __init__(self, mesh: Mesh, dealer_rank: int):
        self.mesh = mesh
        self.dealer_rank = dealer_rank

    def fetch(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        self.mesh.send(self.dealer_rank, canonical_cbor([op_index] + req.describe()))
        return {comp.name: self.mesh.recv_tensor(self.dealer_rank, tuple(comp.shape)) for comp in kind_spec(req).derived}

    def marker(self, code: int) -> None:
        """Tell the dealer rank that the program reached a checkpoint (`code` > 0), e.g. logits ready."""
        self.mesh.send(self.dealer_rank, canonical_cbor(["marker", int(code)]))

    def close(self) -> None:
        try:
            self.mesh.send(self.dealer_rank, b"")
        except MPCError:  # the dealer may already be gone; closing is best effort
            pass


def serve_dealer(dealer: TrustedDealer, mesh: Mesh, last_party: int,
                 on_marker: Callable[[int], None] | None = None) -> int:
    """Dealer loop: answer the last party's correction requests until it says stop. Returns requests served.

    A message ["marker", code] comes from the program (see DealerChannel.marker); `on_marker(code)`
    runs the co-located role (the client, in private generation) at that point."""
    served = 0
    expected = 0
    while True:
        raw = mesh.recv(last_party, 1 << 20)
        if not raw:
            return served
        msg = decode_cbor(raw)
        if isinstance(msg, list) and len(msg) == 2 and msg[0] == "marker":
            if on_marker is None:
                raise MPCError(f"dealer: unexpected marker {msg[1]}")
            on_marker(int(msg[1]))
            continue
        op_index, kind, params = msg[0], msg[1], msg[2]
        if op_index != expected:
            raise MPCError(f"dealer: request #{op_index} out of order (expected #{expected})")
        expected += 1
        req = Request(kind, tuple(_tuplify(q) for q in params))
        corr = dealer.correction(req, op_index)
        for comp in kind_spec(req).derived:
            mesh.send_tensor(last_party, corr[comp.name])
        served += 1


def _tuplify(p):
    return tuple(_tuplify(q) for q in p) if isinstance(p, list) else p


@dataclass
class PartyOutcome:
    rank: int
    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None


def _worker(rank: int, n_parties: int, port: int, master_seed: bytes, job: bytes, timeout_s: float,
            fn: Callable[[Session], Any], queue: Any, session_kw: dict,
            dealer_fn: Callable[[TrustedDealer, Mesh, int], Any] | None = None) -> None:
    torch.set_num_threads(1)
    mesh = None
    try:
        mesh = join_mesh(f"127.0.0.1:{port}", rank, n_parties + 1, job, timeout_s)
        if rank == n_parties:
            dealer = TrustedDealer(master_seed, job, n_parties)
            value = dealer_fn(dealer, mesh, n_parties) if dealer_fn else serve_dealer(dealer, mesh, n_parties - 1)
            queue.put(PartyOutcome(rank, True, pickle.dumps(value)))
            return
        seed = prg.derive_party_seed(master_seed, job, rank)
        channel = DealerChannel(mesh, n_parties) if rank == n_parties - 1 else None
        client = SeededDealerClient(rank, n_parties, job, seed, channel.fetch if channel else None)
        comm = MeshCommunicator(mesh, n_parties)
        session = Session(comm, client, job=job, input_seed=input_owner_seed(master_seed, job), **session_kw)
        session.dealer_channel = channel  # the last party's link (markers); None elsewhere
        try:
            value = fn(session)
        finally:
            if channel is not None:
                channel.close()
        queue.put(PartyOutcome(rank, True, pickle.dumps(value)))
    except BaseException as exc:  # report every failure to the parent with its type
        queue.put(PartyOutcome(rank, False, None, f"{exc}\n{traceback.format_exc()}", type(exc).__name__))
    finally:
        if mesh is not None:
            mesh.close()


def run_parties(fn: Callable[[Session], Any], n_parties: int, master_seed: bytes, *, job: bytes = b"simulate",
                timeout_s: float = DEFAULT_TIMEOUT_S, join_timeout_s: float | None = None,
                dealer_fn: Callable[[TrustedDealer, Mesh, int], Any] | None = None, **session_kw) -> list[PartyOutcome]:
    """Run `fn(session)` in one process per party (plus a dealer process) over the mesh on loopback.

    `fn` (and `dealer_fn`, which replaces the plain dealer loop at rank N) must be picklable
    top-level functions or functools.partial of them. Returns one outcome per rank (dealer last).
    """
    if n_parties < 2:
        raise MPCError(f"MPC needs at least 2 parties, got {n_parties}")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, n_parties, port, master_seed, job, timeout_s, fn, queue, session_kw,
                                               dealer_fn), daemon=True) for r in range(n_parties + 1)]
    for p in procs:
        p.start()
    outcomes: dict[int, PartyOutcome] = {}
    limit = join_timeout_s if join_timeout_s is not None else 4 * timeout_s + 60
    import queue as _q
    import time as _t
    deadline = _t.monotonic() + limit
    while len(outcomes) < len(procs) and _t.monotonic() < deadline:
        try:
            o = queue.get(timeout=0.5)
            if o.ok:  # results travel pickled by value: a tensor shared by file descriptor dies with its process
                o.value = pickle.loads(o.value)
            outcomes[o.rank] = o
        except _q.Empty:
            for r, p in enumerate(procs):
                if r not in outcomes and not p.is_alive() and p.exitcode not in (None, 0):
                    outcomes[r] = PartyOutcome(r, False, None, f"process exited with code {p.exitcode}", "ProcessDied")
    for r, p in enumerate(procs):
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
        if r not in outcomes:
            outcomes[r] = PartyOutcome(r, False, None, "no result before the join timeout", "JoinTimeout")
    return [outcomes[r] for r in range(len(procs))]
