"""The torch.distributed transport: one process per party, plus a dealer process.

World layout: ranks 0..N-1 are the parties, rank N is the dealer. The parties
exchange openings with all_gather inside their own process group (gloo on
CPU, NCCL when shares live on CUDA). Parties 0..N-2 expand their material from
their seeds and never talk to the dealer during the online phase; party N-1
sends each request descriptor to the dealer and receives its correction shares
(point to point). Every collective has the group's timeout, so a peer that
dies mid-protocol raises PeerDisconnected or PeerTimeout instead of hanging.
"""
from __future__ import annotations

import datetime
import os
import socket
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mpc_core import prg
from mpc_core.broadcast import BroadcastLog
from mpc_core.communicator import Communicator
from mpc_core.dealer import Request, SeededDealerClient, TrustedDealer, kind_spec
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.errors import MPCError, PeerDisconnected, PeerTimeout, ShapeError, TransportError
from mpc_core.session import Session, input_owner_seed

DEFAULT_TIMEOUT_S = 60.0


def _translate(exc: BaseException, where: str) -> TransportError:
    msg = str(exc)
    low = msg.lower()
    if "timeout" in low or "timed out" in low:
        return PeerTimeout(f"{where}: a peer did not answer in time ({msg.splitlines()[0] if msg else 'timeout'})")
    return PeerDisconnected(f"{where}: connection to a peer failed ({msg.splitlines()[0] if msg else type(exc).__name__})")


class TorchDistributedCommunicator(Communicator):
    """One party per process; openings are all_gathers in the parties' process group.

    With `broadcast_log` the round is run as point-to-point messages to every peer and
    each message is chained into the log (mpc_core.broadcast)."""

    def __init__(self, rank: int, n_parties: int, group: Any, device: torch.device | None = None,
                 broadcast_log: BroadcastLog | None = None):
        self.n_parties = n_parties
        self.local_parties = (rank,)
        self.rank = rank
        self.group = group
        self.device = device or torch.device("cpu")
        self.broadcast_log = broadcast_log

    def all_gather(self, local: torch.Tensor) -> torch.Tensor:
        if local.shape[0] != 1:
            raise ShapeError(f"distributed all_gather expects 1 party row, got {local.shape[0]}")
        mine = local[0].contiguous().to(self.device)
        out = [torch.empty_like(mine) for _ in range(self.n_parties)]
        if self.broadcast_log is not None:
            return self._p2p_round(mine, out)
        try:
            dist.all_gather(out, mine, group=self.group)
        except Exception as exc:  # gloo raises RuntimeError/DistBackendError on dead peers
            raise _translate(exc, f"party {self.rank} all_gather") from exc
        return torch.stack(out).cpu()

    def _p2p_round(self, mine: torch.Tensor, out: list[torch.Tensor]) -> torch.Tensor:
        log = self.broadcast_log
        peers = log.peers
        sends = {j: self._message_for(log.count, j, mine) for j in peers}
        try:
            # Every receive is posted before any send, and all complete together: a round costs one
            # network trip instead of a handshake per peer in turn (5 ms one-way: 10 ms a round, not 25).
            works = [dist.irecv(out[j], src=j, group=self.group) for j in peers]
            works += [dist.isend(sends[j], dst=j, group=self.group) for j in peers]
            for w in works:
                w.wait()
        except Exception as exc:
            raise _translate(exc, f"party {self.rank} exchange") from exc
        out[self.rank] = mine
        log.record_round(sends, {j: out[j] for j in peers})
        return torch.stack(out).cpu()

    def _message_for(self, round_index: int, peer: int, mine: torch.Tensor) -> torch.Tensor:
        """The tensor this party sends `peer` in point-to-point round `round_index`: its own share, the same for
        every peer."""
        return mine


class DealerChannel:
    """The last party's point-to-point link to the dealer rank."""

    def __init__(self, dealer_rank: int):
        self.dealer_rank = dealer_rank

    def fetch(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        payload = canonical_cbor([op_index] + req.describe())
        try:
            dist.send(torch.tensor([len(payload)], dtype=torch.int64), dst=self.dealer_rank)
            dist.send(torch.frombuffer(bytearray(payload), dtype=torch.uint8), dst=self.dealer_rank)
            out = {}
            for comp in kind_spec(req).derived:
                t = torch.empty(comp.shape, dtype=torch.int64)
                dist.recv(t, src=self.dealer_rank)
                out[comp.name] = t
        except Exception as exc:
            raise _translate(exc, "dealer channel") from exc
        return out

    def marker(self, code: int) -> None:
        """Tell the dealer rank that the program reached a checkpoint (`code` > 0), e.g. logits ready."""
        try:
            dist.send(torch.tensor([-int(code)], dtype=torch.int64), dst=self.dealer_rank)
        except Exception as exc:
            raise _translate(exc, "dealer channel") from exc

    def close(self) -> None:
        try:
            dist.send(torch.tensor([0], dtype=torch.int64), dst=self.dealer_rank)
        except Exception:  # the dealer may already be gone; closing is best effort
            pass


def serve_dealer(dealer: TrustedDealer, last_party: int, on_marker: Callable[[int], None] | None = None) -> int:
    """Dealer loop: answer the last party's correction requests until it says stop. Returns requests served.

    A negative length is a marker from the program (see DealerChannel.marker); `on_marker(code)`
    runs the co-located role (the client, in private generation) at that point."""
    served = 0
    expected = 0
    while True:
        n = torch.empty(1, dtype=torch.int64)
        try:
            dist.recv(n, src=last_party)
        except Exception as exc:
            raise _translate(exc, "dealer") from exc
        if int(n) < 0:
            if on_marker is None:
                raise MPCError(f"dealer: unexpected marker {-int(n)}")
            on_marker(-int(n))
            continue
        if int(n) == 0:
            return served
        buf = torch.empty(int(n), dtype=torch.uint8)
        dist.recv(buf, src=last_party)
        msg = decode_cbor(bytes(buf.numpy().tobytes()))
        op_index, kind, params = msg[0], msg[1], msg[2]
        if op_index != expected:
            raise MPCError(f"dealer: request #{op_index} out of order (expected #{expected})")
        expected += 1
        corr = dealer.correction(Request(kind, tuple(_tuplify(p) for p in params)), op_index)
        for comp in kind_spec(Request(kind, tuple(_tuplify(p) for p in params))).derived:
            dist.send(corr[comp.name].contiguous(), dst=last_party)
        served += 1


def _tuplify(p):
    return tuple(_tuplify(q) for q in p) if isinstance(p, list) else p


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PartyOutcome:
    rank: int
    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None


def _worker(rank: int, n_parties: int, port: int, master_seed: bytes, job: bytes, timeout_s: float,
            fn: Callable[[Session], Any], queue: Any, session_kw: dict,
            dealer_fn: Callable[[TrustedDealer, int], Any] | None = None) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    world = n_parties + 1
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timeout)
        group = dist.new_group(ranks=list(range(n_parties)), timeout=timeout)
        if rank == n_parties:
            dealer = TrustedDealer(master_seed, job, n_parties)
            value = dealer_fn(dealer, n_parties) if dealer_fn else serve_dealer(dealer, n_parties - 1)
            queue.put(PartyOutcome(rank, True, value))
            return
        seed = prg.derive_party_seed(master_seed, job, rank)
        channel = DealerChannel(n_parties) if rank == n_parties - 1 else None
        client = SeededDealerClient(rank, n_parties, job, seed, channel.fetch if channel else None)
        comm = TorchDistributedCommunicator(rank, n_parties, group)
        session = Session(comm, client, job=job, input_seed=input_owner_seed(master_seed, job), **session_kw)
        session.dealer_channel = channel  # the last party's link (markers); None elsewhere
        try:
            value = fn(session)
        finally:
            if channel is not None:
                channel.close()
        queue.put(PartyOutcome(rank, True, value))
    except BaseException as exc:  # report every failure to the parent with its type
        queue.put(PartyOutcome(rank, False, None, f"{exc}\n{traceback.format_exc()}", type(exc).__name__))
    finally:
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass


def run_parties(fn: Callable[[Session], Any], n_parties: int, master_seed: bytes, *, job: bytes = b"simulate",
                timeout_s: float = DEFAULT_TIMEOUT_S, join_timeout_s: float | None = None,
                dealer_fn: Callable[[TrustedDealer, int], Any] | None = None, **session_kw) -> list[PartyOutcome]:
    """Run `fn(session)` in one process per party (plus a dealer process) over gloo on loopback.

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
