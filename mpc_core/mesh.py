"""The TCP mesh: the transport of a job, one stream socket per pair of ranks (specs/transport.md).

A job's world has ranks 0..W-1 (in a ledger job: the N parties, the dealer, the client).
Every message is a frame on the pair's stream:

    frame = length (8 bytes, little-endian) || payload          (length <= MAX_FRAME)

Forming the mesh (`join_mesh`), with host = rank W-1 (it owns the rendezvous address):

    1. The host listens on the rendezvous address (bound before the job is announced, so no
       one else can take the port: `listen_rendezvous`).
    2. Every other rank r listens on a port of its own, connects to the rendezvous (retrying
       until the deadline) and sends HELLO = canonical_cbor([MESH_HELLO, job, W, r, "host:port"]).
    3. The host reads one hello per connection; a hello that is malformed, for another job or
       world, or for a rank already taken is dropped (that connection is closed, the mesh keeps
       forming). When every rank is in, the host sends each the table {rank: "host:port"}.
    4. Rank r connects to every non-host rank j < r (sending HELLO with an empty address) and
       accepts one connection from every non-host rank j > r, checked like step 3.

Rejoining (specs/node-daemon.md section 8): a mesh formed with `keep_listener` keeps every
rank's listening socket (and the host's rank table) open for the job. A standby that takes over a
lost rank r connects to the host and to each rank it needs with REJOIN = canonical_cbor([MESH_REJOIN,
job, W, r, node, signature]), the signature the standby's over `rejoin_statement` (the caller checks
it against the node the ledger says took r over: `accept_rejoin`); the host answers with its table.

A stream keeps the order of one pair's messages, so two ranks that run the same program
match sends and receives without tags. A peer that closes its stream raises PeerDisconnected,
one that sends nothing for `timeout_s` PeerTimeout; the other links of the mesh stay up,
so the caller decides what a lost peer means. Messages are neither encrypted nor
authenticated here: what must stay private travels sealed (prover.channels), and the
parties' openings are public by design and committed to (specs/broadcast.md).
"""
from __future__ import annotations

import select
import socket
import struct
import time
from typing import Callable, Mapping

import numpy as np
import torch

from mpc_core import domains
from mpc_core.broadcast import BroadcastLog
from mpc_core.communicator import Communicator
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.errors import EncodingError, MPCError, PeerDisconnected, PeerTimeout, ShapeError, TransportError
from mpc_core.replicas import Layout, pick

FRAME = struct.Struct("<Q")
MAX_FRAME = 1 << 30  # a message larger than this is refused (a job's largest opening is a few MB)
MAX_HELLO = 4096
LISTEN_BACKLOG = 64
RETRY_S = 0.05  # between connection attempts while a peer is not listening yet
HELLO_WAIT_S = 2.0  # a connection that says no hello in this long is dropped (a silent stranger cannot stall us)
STALL_TIMEOUTS = 3  # with replicas, how many timeouts a rank held up behind a silent one is waited for
SMALL_ROUND = 32 << 10  # messages this small fit any socket buffer: send them all, then receive (no poll loop)


class MeshError(TransportError):
    """A peer broke the mesh's format (oversized frame, bad hello, bad table) or the mesh cannot form."""


class ResumeMismatch(MPCError):
    """A standby's recomputed messages do not chain to what a peer received from the rank it took over."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (prefer `listen_rendezvous`, which keeps it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise MeshError(f"address {address!r} is not HOST:PORT")
    return host, int(port)


def listen_rendezvous(address: str) -> socket.socket:
    """Bind and listen on `address` ("HOST:PORT", port 0 for any free one): the host's rendezvous."""
    host, port = _split_address(address)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        s.listen(LISTEN_BACKLOG)
    except OSError as exc:
        s.close()
        raise MeshError(f"cannot listen on {address}: {exc}") from exc
    return s


def _address_of(s: socket.socket) -> str:
    host, port = s.getsockname()[:2]
    return f"{host}:{port}"


def _tune(s: socket.socket, timeout_s: float) -> None:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a round is a few small messages: no Nagle delay
    s.settimeout(timeout_s)


def _recv_into(s: socket.socket, view: memoryview, peer: str) -> None:
    got = 0
    while got < len(view):
        try:
            n = s.recv_into(view[got:])
        except socket.timeout as exc:
            raise PeerTimeout(f"{peer} sent nothing for the timeout") from exc
        except OSError as exc:
            raise PeerDisconnected(f"connection to {peer} failed: {exc}") from exc
        if n == 0:
            raise PeerDisconnected(f"{peer} closed the connection")
        got += n


def _send_frame(s: socket.socket, payload: bytes | bytearray | memoryview, peer: str) -> None:
    try:
        s.sendall(FRAME.pack(len(payload)) + bytes(payload))
    except socket.timeout as exc:
        raise PeerTimeout(f"{peer} took nothing for the timeout") from exc
    except OSError as exc:
        raise PeerDisconnected(f"connection to {peer} failed: {exc}") from exc


def _recv_frame(s: socket.socket, peer: str, max_len: int) -> bytearray:
    head = bytearray(FRAME.size)
    _recv_into(s, memoryview(head), peer)
    (n,) = FRAME.unpack(head)
    if n > max_len:
        raise MeshError(f"{peer} announced a {n}-byte message (limit {max_len})")
    body = bytearray(n)
    if n:
        _recv_into(s, memoryview(body), peer)
    return body


class Mesh:
    """This rank's streams to every other rank of one job."""

    def __init__(self, rank: int, world: int, job: bytes, links: Mapping[int, socket.socket], timeout_s: float,
                 listener: socket.socket | None = None, table: Mapping[int, str] | None = None):
        self.rank = rank
        self.world = world
        self.job = job
        self.links = dict(links)
        self.timeout_s = timeout_s
        self.listener = listener  # kept open for rejoining ranks (`join_mesh(keep_listener=True)`), else None
        self.table = dict(table or {})  # the host's rank -> address table (host only, with a kept listener)

    def _link(self, peer: int) -> socket.socket:
        s = self.links.get(peer)
        if s is None:
            raise MeshError(f"rank {self.rank} has no link to rank {peer}")
        return s

    def send(self, dst: int, payload: bytes | bytearray | memoryview) -> None:
        """Send one message to rank `dst` (returns once the kernel took it)."""
        _send_frame(self._link(dst), payload, f"rank {dst}")

    def recv(self, src: int, max_len: int = MAX_FRAME) -> bytes:
        """The next message from rank `src` (at most `max_len` bytes, else MeshError)."""
        return bytes(_recv_frame(self._link(src), f"rank {src}", max_len))

    def wait_readable(self, src: int, timeout_s: float) -> bool:
        """Whether rank `src` has something to read (a message, or its stream's end) within `timeout_s`:
        for a rank that may rightly stay silent longer than the timeout (the dealer waiting for online
        requests while the job runs)."""
        r, _, _ = select.select([self._link(src)], [], [], max(0.0, timeout_s))
        return bool(r)

    def send_tensor(self, dst: int, t: torch.Tensor) -> None:
        """Send a tensor's bytes (C order, native little-endian); the receiver knows its shape and dtype."""
        self.send(dst, t.detach().cpu().contiguous().numpy().tobytes())

    def recv_tensor(self, src: int, shape: tuple[int, ...], dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """Receive a tensor of a known shape and dtype sent with `send_tensor`."""
        body = _recv_frame(self._link(src), f"rank {src}", MAX_FRAME)
        return _tensor_from(body, shape, dtype, src)

    def exchange(self, outgoing: Mapping[int, bytes | bytearray | memoryview], max_len: int = MAX_FRAME
                 ) -> dict[int, bytes]:
        """Send outgoing[j] to every rank j named and receive one message from each, all at once: a round
        costs one trip however large the messages (no two ranks wait on each other's full buffers)."""
        return {j: bytes(b) for j, b in self._exchange(outgoing, max_len).items()}

    def exchange_live(self, outgoing: Mapping[int, bytes | bytearray | memoryview], max_len: int = MAX_FRAME
                      ) -> tuple[dict[int, bytes], dict[int, TransportError]]:
        """`exchange` that survives lost peers: returns (messages received, rank -> why it was lost) for the
        ranks named. A peer that closed its stream, failed, or made no progress for `timeout_s` is lost:
        its link is closed and dropped from the mesh, and the exchange goes on with the others. A peer
        that breaks the format (MeshError) still fails the whole exchange."""
        lost: dict[int, TransportError] = {}
        got = self._exchange(outgoing, max_len, lost)
        return {j: bytes(b) for j, b in got.items()}, lost

    def drop(self, peer: int) -> None:
        """Close and forget the link to `peer` (a lost replica: nothing more is sent to or read from it)."""
        s = self.links.pop(peer, None)
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def _exchange(self, outgoing: Mapping[int, bytes | bytearray | memoryview], max_len: int,
                  lost: dict[int, TransportError] | None = None, recv_only: tuple[int, ...] = (),
                  rejoin: Callable[[int, TransportError], int | None] | None = None,
                  timeout_s: float | None = None, groups: Mapping[int, int] | None = None) -> dict[int, bytearray]:
        """The exchange; with `lost`, a peer's transport failure is recorded there (and its link dropped)
        instead of raised. The ranks of `recv_only` are received from without being sent anything.

        With `rejoin`, a lost peer may be held for instead: `rejoin(rank, why)` returns None (the rank is
        lost as without it) or, once `links[r]` is a new link that already has everything this rank owes
        it (MeshCommunicator: the replay), the rank r whose message of this round is then read from it (r
        is the lost rank, or with replicas the index's replica 0, which a standby takes over). It is called
        as soon as the loss shows, whatever else the round waits for (a peer may be waiting for the same
        standby), and fails the round if it raises. `timeout_s` overrides the mesh's no-progress timeout.

        With `groups` (rank -> share index: replicas), a silent rank is lost after the timeout only if a
        twin of it delivered this round; ranks none of whose twins did are waited for up to STALL_TIMEOUTS
        timeouts (they are likely held up by a silent rank elsewhere, which its own peers drop first)."""
        quiet_limit = self.timeout_s if timeout_s is None else timeout_s
        outgoing = dict(outgoing)
        for j in recv_only:
            outgoing.setdefault(j, None)
        socks = {}
        for j in outgoing:
            if lost is not None and j not in self.links:
                lost[j] = PeerDisconnected(f"rank {j} was dropped from the mesh before")
                continue
            socks[j] = self._link(j)
        if not socks:
            return {}

        def fail(j: int, exc: TransportError) -> None:
            if lost is None:
                raise exc
            lost[j] = exc
            self.drop(j)

        if rejoin is None and timeout_s is None and groups is None and all(outgoing[j] is None or len(outgoing[j]) <= SMALL_ROUND
                                                        for j in socks):
            for j in list(socks):
                if outgoing[j] is None:
                    continue
                try:
                    _send_frame(socks[j], outgoing[j], f"rank {j}")
                except (PeerDisconnected, PeerTimeout) as exc:
                    fail(j, exc)
                    del socks[j]
            out: dict[int, bytearray] = {}
            for j, s in socks.items():
                try:
                    out[j] = _recv_frame(s, f"rank {j}", max_len)
                except (PeerDisconnected, PeerTimeout) as exc:
                    fail(j, exc)
            return out
        send_buf = {j: memoryview(b"" if outgoing[j] is None else FRAME.pack(len(outgoing[j])) + bytes(outgoing[j]))
                    for j in socks}
        sent = dict.fromkeys(socks, 0)
        head = {j: bytearray(FRAME.size) for j in socks}
        body: dict[int, bytearray | None] = dict.fromkeys(socks)
        got = dict.fromkeys(socks, 0)
        done_in: set[int] = set()
        by_fd = {s.fileno(): j for j, s in socks.items()}
        poller = select.poll()
        for j, s in socks.items():
            poller.register(s, select.POLLIN | (select.POLLOUT if len(send_buf[j]) else 0))
        active = set(socks)
        quiet_since = time.monotonic()

        def pending(j: int) -> bool:
            return j not in done_in or sent[j] < len(send_buf[j])

        def lose(j: int, exc: TransportError) -> None:
            nonlocal quiet_since
            try:
                poller.unregister(socks[j])
            except (KeyError, ValueError):
                pass
            active.discard(j)
            if rejoin is None:
                fail(j, exc)
                return
            self.drop(j)
            back = rejoin(j, exc)  # raises if nobody takes the rank over
            if back is None:
                fail(j, exc)
                return
            if back != j:
                fail(j, exc)
            s = socks[back] = self._link(back)
            by_fd[s.fileno()] = back
            send_buf[back], sent[back], head[back], body[back], got[back] = (memoryview(b""), 0, bytearray(FRAME.size),
                                                                              None, 0)
            done_in.discard(back)
            poller.register(s, select.POLLIN)
            active.add(back)
            quiet_since = time.monotonic()

        extended_at: float | None = None  # quiet_since when the wait was extended (groups: nobody odd)
        while any(pending(j) for j in active):
            limit = STALL_TIMEOUTS * quiet_limit if extended_at == quiet_since else quiet_limit
            left = limit - (time.monotonic() - quiet_since)
            if left <= 0:
                waiting = sorted(j for j in active if pending(j))
                exc = PeerTimeout(f"rank {self.rank}: ranks {waiting} made no progress for {limit:.0f} s")
                if groups is not None and limit == quiet_limit:
                    # A rank whose twin delivered is the silent one; ranks with no twin in yet are likely
                    # stalled behind a silent rank elsewhere (which its own peers drop): wait longer for them.
                    odd = [j for j in waiting if any(t != j and groups.get(t) == groups.get(j) and t in done_in
                                                     for t in socks)]
                    for j in odd:
                        lose(j, exc)
                    if len(odd) < len(waiting):
                        extended_at = quiet_since
                    continue
                for j in waiting:
                    lose(j, exc)
                continue
            for fd, ev in poller.poll(left * 1000):
                j = by_fd[fd]
                if j not in active or socks[j].fileno() != fd:
                    continue
                s = socks[j]
                try:
                    if ev & select.POLLOUT and sent[j] < len(send_buf[j]):
                        sent[j] += s.send(send_buf[j][sent[j]:])
                        quiet_since = time.monotonic()
                    if ev & (select.POLLIN | select.POLLHUP | select.POLLERR) and j not in done_in:
                        b = body[j]
                        view = memoryview(head[j])[got[j]:] if b is None else memoryview(b)[got[j] - FRAME.size:]
                        n = s.recv_into(view) if len(view) else 0
                        if len(view) and n == 0:
                            raise PeerDisconnected(f"rank {j} closed the connection")
                        got[j] += n
                        quiet_since = time.monotonic()
                        if b is None and got[j] == FRAME.size:
                            (size,) = FRAME.unpack(head[j])
                            if size > max_len:
                                raise MeshError(f"rank {j} announced a {size}-byte message (limit {max_len})")
                            body[j] = bytearray(size)
                        if body[j] is not None and got[j] == FRAME.size + len(body[j]):
                            done_in.add(j)
                except (BlockingIOError, InterruptedError, socket.timeout):
                    continue
                except MeshError:
                    raise
                except (PeerDisconnected, OSError) as exc:
                    err = exc if isinstance(exc, PeerDisconnected) else PeerDisconnected(
                        f"connection to rank {j} failed: {exc}")
                    lose(j, err)
                    continue
                mask = (select.POLLIN if j not in done_in else 0) | (select.POLLOUT if sent[j] < len(send_buf[j]) else 0)
                if mask:
                    poller.modify(s, mask)
                else:
                    poller.unregister(s)
        return {j: body[j] for j in active}

    def admit_rejoin(self, rank: int, check: "RejoinCheck", deadline: float,
                     give_up: Callable[[], str] | None = None, live: set[int] | None = None) -> str:
        """Wait on the kept listener for the standby taking over `rank` (`accept_rejoin`) and link it in place
        of the lost one; the host then sends it the rank table (of the `live` ranks, default all). Returns the
        standby's node id."""
        if self.listener is None:
            raise MeshError(f"rank {self.rank} kept no listener: rank {rank} cannot rejoin")
        self.drop(rank)
        s, node = accept_rejoin(self.listener, self.job, self.world, rank, check, self.timeout_s, deadline, give_up)
        self.links[rank] = s
        if self.rank == self.world - 1:
            table = {r: a for r, a in self.table.items() if live is None or r in live}
            _send_frame(s, canonical_cbor(table), f"rank {rank}")
        return node

    def close(self) -> None:
        """Close every link and a kept listener (idempotent)."""
        for peer in list(self.links):
            self.drop(peer)
        if self.listener is not None:
            self.listener.close()
            self.listener = None


def _tensor_from(body: bytearray, shape: tuple[int, ...], dtype: torch.dtype, src: int) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    n = 1
    for d in shape:
        n *= int(d)
    if len(body) != n * itemsize:
        raise MeshError(f"rank {src} sent {len(body)} bytes where a {tuple(shape)} {dtype} tensor was due")
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(body, dtype=dtype).reshape(shape)


def _hello(job: bytes, world: int, rank: int, address: str) -> bytes:
    return canonical_cbor([domains.MESH_HELLO, bytes(job), world, rank, address])


def _read_hello(s: socket.socket, job: bytes, world: int, allowed: set[int], peer: str) -> tuple[int, str] | None:
    """The (rank, address) of a valid hello on `s`, or None (the connection is then dropped)."""
    try:
        msg = decode_cbor(bytes(_recv_frame(s, peer, MAX_HELLO)))
    except (TransportError, EncodingError):
        return None
    if not (isinstance(msg, list) and len(msg) == 5 and msg[0] == domains.MESH_HELLO and msg[1] == bytes(job)
            and msg[2] == world and isinstance(msg[3], int) and not isinstance(msg[3], bool) and msg[3] in allowed
            and isinstance(msg[4], str) and len(msg[4]) <= 300):
        return None
    return msg[3], msg[4]


def _accept_one(listener: socket.socket, wait_s: float, what: str) -> socket.socket | None:
    """One connection accepted within `wait_s`, or None."""
    listener.settimeout(wait_s)
    try:
        s, _addr = listener.accept()
    except socket.timeout:
        return None
    except OSError as exc:
        raise MeshError(f"accepting {what} failed: {exc}") from exc
    return s


def _accept_hellos(listener: socket.socket, job: bytes, world: int, expected: set[int], deadline: float,
                   timeout_s: float) -> dict[int, tuple[socket.socket, str]]:
    """Accept connections until every rank of `expected` said a valid hello; drop anything else."""
    out: dict[int, tuple[socket.socket, str]] = {}
    while set(out) != expected:
        left = deadline - time.monotonic()
        if left <= 0:
            for s, _ in out.values():
                s.close()
            raise PeerTimeout(f"ranks {sorted(expected - set(out))} did not join the mesh in time")
        s = _accept_one(listener, left, "mesh connections")
        if s is None:
            continue
        _tune(s, min(HELLO_WAIT_S, timeout_s, max(left, 0.1)))
        said = _read_hello(s, job, world, expected - set(out), "a joining rank")
        if said is None:
            s.close()
            continue
        _tune(s, timeout_s)
        out[said[0]] = (s, said[1])
    return out


def _connect(address: str, deadline: float, timeout_s: float) -> socket.socket:
    host, port = _split_address(address)
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=max(0.1, min(timeout_s, deadline - time.monotonic())))
            _tune(s, timeout_s)
            return s
        except OSError as exc:  # not listening yet
            last = exc
            time.sleep(RETRY_S)
    raise PeerTimeout(f"could not connect to {address} in time ({last})")


def join_mesh(rendezvous: str, rank: int, world: int, job: bytes, timeout_s: float, *,
              listener: socket.socket | None = None, listen_host: str | None = None,
              keep_listener: bool = False) -> Mesh:
    """Form the job's mesh as `rank` of `world` (module docstring, steps 1-4) within `timeout_s`.

    The host (rank world-1) passes the `listener` it bound with `listen_rendezvous` (else it binds
    `rendezvous` itself); every other rank listens on `listen_host` (default: the rendezvous host).
    With `keep_listener` the listening socket stays open in `Mesh.listener` (for `accept_rejoin`)."""
    if world < 2 or not 0 <= rank < world:
        raise MeshError(f"rank {rank} outside a world of {world}")
    deadline = time.monotonic() + timeout_s
    host_rank = world - 1
    links: dict[int, socket.socket] = {}
    try:
        if rank == host_rank:  # steps 1 and 3
            own = listener if listener is not None else listen_rendezvous(rendezvous)
            try:
                joined = _accept_hellos(own, job, world, set(range(world - 1)), deadline, timeout_s)
            except BaseException:
                own.close()
                raise
            if not keep_listener:
                own.close()
            addresses = {r: addr for r, (_, addr) in joined.items()}
            table = canonical_cbor(addresses)
            for r, (s, _) in joined.items():
                links[r] = s
                _send_frame(s, table, f"rank {r}")
            return Mesh(rank, world, job, links, timeout_s, own if keep_listener else None,
                        addresses if keep_listener else None)
        # step 2
        own = listen_rendezvous(f"{listen_host or _split_address(rendezvous)[0]}:0")
        try:
            s = _connect(rendezvous, deadline, timeout_s)
            links[host_rank] = s
            _send_frame(s, _hello(job, world, rank, _address_of(own)), f"rank {host_rank}")
            table = decode_cbor(bytes(_recv_frame(s, f"rank {host_rank}", 64 * world + MAX_HELLO)))
            if not isinstance(table, dict) or set(table) != set(range(world - 1)) or table.get(rank) != _address_of(own):
                raise MeshError("the rendezvous host sent a bad rank table")
            for j in range(rank):  # step 4: connect down, accept up
                links[j] = _connect(str(table[j]), deadline, timeout_s)
                _send_frame(links[j], _hello(job, world, rank, ""), f"rank {j}")
            ups = _accept_hellos(own, job, world, set(range(rank + 1, world - 1)), deadline, timeout_s)
            links.update({r: s for r, (s, _) in ups.items()})
        except BaseException:
            own.close()
            raise
        if not keep_listener:
            own.close()
        return Mesh(rank, world, job, links, timeout_s, own if keep_listener else None)
    except BaseException:
        for s in links.values():
            s.close()
        raise


def rejoin_statement(job: bytes, world: int, rank: int, node: str) -> bytes:
    """What a standby signs to take over `rank` of a job's mesh: MESH_REJOIN || canonical_cbor([job, W, rank, node])."""
    return domains.MESH_REJOIN + canonical_cbor([bytes(job), world, rank, node])


def rejoin_hello(job: bytes, world: int, rank: int, node: str, signature: bytes) -> bytes:
    """The first frame a standby sends each rank it connects to (module docstring, "Rejoining")."""
    return canonical_cbor([domains.MESH_REJOIN, bytes(job), world, rank, node, bytes(signature)])


RejoinCheck = Callable[[str, bytes, bytes], bool]  # (node, statement, signature) -> may it take the rank over?


def accept_rejoin(listener: socket.socket, job: bytes, world: int, rank: int, check: RejoinCheck,
                  timeout_s: float, deadline: float, give_up: Callable[[], str] | None = None) -> tuple[socket.socket, str]:
    """Accept, on a kept listener, the connection of the standby that takes over `rank`: the first one whose
    REJOIN hello `check` accepts (anything else is dropped). Returns (its socket, its node id); raises
    PeerTimeout at `deadline`, or PeerDisconnected as soon as `give_up()` gives a reason (e.g. the job was
    closed)."""
    while True:
        why = give_up() if give_up is not None else ""
        if why:
            raise PeerDisconnected(f"no standby for rank {rank}: {why}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerTimeout(f"no standby took over rank {rank} in time")
        s = _accept_one(listener, min(left, 0.5), "a rejoining rank")
        if s is None:
            continue
        _tune(s, min(HELLO_WAIT_S, timeout_s))
        try:
            msg = decode_cbor(bytes(_recv_frame(s, "a rejoining rank", MAX_HELLO)))
        except (TransportError, EncodingError):
            s.close()
            continue
        ok = (isinstance(msg, list) and len(msg) == 6 and msg[0] == domains.MESH_REJOIN and msg[1] == bytes(job)
              and msg[2] == world and msg[3] == rank and isinstance(msg[4], str) and isinstance(msg[5], bytes))
        if ok:
            try:
                ok = bool(check(msg[4], rejoin_statement(job, world, rank, msg[4]), msg[5]))
            except Exception:  # noqa: BLE001 - a check that fails refuses the connection
                ok = False
        if not ok:
            s.close()
            continue
        _tune(s, timeout_s)
        return s, msg[4]


def rejoin_mesh(rendezvous: str, rank: int, world: int, job: bytes, hello: bytes, connect_to: list[int],
                timeout_s: float) -> Mesh:
    """Take over `rank` of a running mesh: send `hello` (`rejoin_hello`) to the host, read its table (the ranks
    still live), and connect to each rank of `connect_to` the table lists, with the same hello. The returned
    mesh links those ranks and the host."""
    deadline = time.monotonic() + timeout_s
    host_rank = world - 1
    links: dict[int, socket.socket] = {}
    try:
        s = _connect(rendezvous, deadline, timeout_s)
        links[host_rank] = s
        _send_frame(s, hello, f"rank {host_rank}")
        table = decode_cbor(bytes(_recv_frame(s, f"rank {host_rank}", 64 * world + MAX_HELLO)))
        if not isinstance(table, dict) or not all(isinstance(a, str) for a in table.values()):
            raise MeshError("the rendezvous host sent a bad rank table")
        for j in connect_to:
            if j == host_rank or j == rank or j not in table:
                continue
            links[j] = _connect(str(table[j]), deadline, timeout_s)
            _send_frame(links[j], hello, f"rank {j}")
        return Mesh(rank, world, job, links, timeout_s)
    except BaseException:
        for s in links.values():
            s.close()
        raise


class MeshCommunicator(Communicator):
    """One party per process: an opening is one exchange with every other party over the mesh.

    With `replicas` > 1 the party ranks follow mpc_core.replicas: a round goes to every live replica of
    every other share index, takes each index's share from its lowest live replica and compares the
    other copies; a replica lost mid-job is dropped (`lost`), and the round fails only when an index has
    no live replica left. Copies that differ from the one used are counted in `divergent` (rank ->
    rounds); the broadcast chains hold what each replica sent. With `broadcast_log` every message sent
    and received is chained into the log (mpc_core.broadcast)."""

    def __init__(self, mesh: Mesh, n_parties: int, broadcast_log: BroadcastLog | None = None, replicas: int = 1):
        self.layout = Layout(n_parties, replicas)
        if not 0 <= mesh.rank < self.layout.party_ranks <= mesh.world:
            raise MeshError(f"rank {mesh.rank} is not a party rank of {n_parties} x {replicas}")
        self.mesh = mesh
        self.rank = mesh.rank
        self.party = self.layout.party_of(mesh.rank)
        self.n_parties = n_parties
        self.local_parties = (self.party,)
        self.broadcast_log = broadcast_log
        self.peers = self.layout.peer_ranks(mesh.rank)
        self.live = list(self.peers)  # peer ranks not lost yet
        self.lost: dict[int, str] = {}  # rank -> why it was dropped
        self._groups = {j: self.layout.party_of(j) for j in self.peers} if replicas > 1 else None
        self.divergent: dict[int, int] = {}  # rank -> rounds in which its copy differed from the one used
        self.sent_bytes = 0  # payload bytes this rank sent to its peers (every live replica counts)
        # Resumption (specs/node-daemon.md section 8). On a peer: `rejoin(rank, why)` waits for the standby
        # that takes over a lost rank and returns once `mesh.links[rank]` is its link; every message sent is
        # kept in `history` to replay to it, and `rejoined` says in which round each rank came back.
        self.rejoin: Callable[[int, TransportError], None] | None = None
        self.history: dict[int, list[bytes]] = {}
        self.rejoined: dict[int, int] = {}
        # On the standby (`catch_up`): peer rank -> (rounds it received from the lost rank, its chain head).
        self.skip: dict[int, tuple[int, bytes]] = {}

    def all_gather(self, local: torch.Tensor) -> torch.Tensor:
        if local.shape[0] != 1:
            raise ShapeError(f"a mesh party's all_gather expects 1 party row, got {local.shape[0]}")
        mine = local[0].contiguous()
        log = self.broadcast_log
        round_index = log.count if log is not None else 0
        sends = {j: self._message_for(round_index, j, mine) for j in self.live}
        own = mine.numpy().tobytes()
        payloads = {j: own if t is mine else t.contiguous().numpy().tobytes() for j, t in sends.items()}
        if self.rejoin is not None:
            for j, b in payloads.items():
                self.history.setdefault(j, []).append(b)
        # A standby catching up sends a peer nothing for the rounds that peer received from the lost rank.
        quiet = tuple(j for j in payloads if round_index < self.skip.get(j, (0, b""))[0])
        if quiet:
            payloads = {j: b for j, b in payloads.items() if j not in quiet}
        self.sent_bytes += sum(len(b) for b in payloads.values())
        # Without replicas or a standby there is nothing to fall back on: a lost peer fails the round.
        resumable = self.rejoin is not None
        lost: dict[int, TransportError] | None = {} if self.layout.replicas > 1 else None
        # With a standby, a lost rank is held for in the round it was lost in, then replayed to (`_resume`).
        hold = (lambda j, why: self._resume(j, round_index, why, sends, lost)) if resumable else None
        got = self.mesh._exchange(payloads, MAX_FRAME, lost, quiet, hold, groups=self._groups)
        for j, exc in (lost or {}).items():
            if j in self.live:
                self.live.remove(j)  # gone for the rest of the job
            self.lost[j] = f"{type(exc).__name__}: {exc}"
        # Assemble (N, *shape) in numpy: a round is a few small messages, and torch's per-call cost would dominate it.
        out = torch.empty((self.n_parties, *mine.shape), dtype=mine.dtype)
        rows = out.numpy()
        rows[self.party] = mine.numpy()
        want = rows[self.party].nbytes
        for j in got:
            if len(got[j]) != want:
                raise MeshError(f"rank {j} sent {len(got[j])} bytes where {want} were due")
        for q in range(self.n_parties):
            if q == self.party:
                continue
            copies = {j: got[j] for j in self.layout.ranks_of(q) if j in got}
            if not copies:
                raise PeerDisconnected(f"every replica of party {q} is lost: "
                                       + "; ".join(f"rank {j}: {self.lost.get(j, 'no message')}"
                                                   for j in self.layout.ranks_of(q)))
            used, differ = pick(copies)
            for j in differ:
                self.divergent[j] = self.divergent.get(j, 0) + 1
            rows[q] = np.frombuffer(copies[used], dtype=rows.dtype).reshape(rows.shape[1:])
        if log is not None:
            log.record_round({j: sends[j] for j in got},
                             {j: torch.frombuffer(got[j], dtype=mine.dtype).reshape(mine.shape)
                              if self.layout.replicas > 1 else out[j] for j in got})
            for j in quiet:
                count, head = self.skip[j]
                if log.count == count and log.sent[j] != head:
                    raise ResumeMismatch(f"rank {self.rank}'s recomputed messages to rank {j} do not chain to what "
                                         f"rank {j} received from the lost rank in rounds 0..{count - 1}")
        return out

    def _resume(self, j: int, round_index: int, why: TransportError, sends: dict, lost: dict | None) -> int | None:
        """Peer side of a resumption. Rank `j` is lost: if a twin of its index is live, it is dropped as usual
        (None). Else wait for the standby of the index (it takes the rank of replica 0, r), hand it what it
        needs to catch up: the rounds received from `j` (the index's last live replica), the chain head over
        them, then every message sent to `j` so far, this round's included; r's chains continue `j`'s. Returns
        r, whose message of this round the exchange then reads."""
        log = self.broadcast_log
        if log is None:
            raise MeshError("a resumable rank needs a broadcast log (the standby's messages are checked against it)")
        q = self.layout.party_of(j)
        twins = [t for t in self.layout.ranks_of(q) if t != j and t in self.live and t not in (lost or {})]
        if twins:
            return None
        r = self.layout.ranks_of(q)[0]
        self.rejoin(r, why)  # type: ignore[misc]
        if r != j:  # the standby continues the chains of the replica it replaces in the peers' eyes
            log.sent[r], log.received[r], log.counts[r] = log.sent[j], log.received[j], log.counts[j]
            self.history[r] = self.history.get(j, [])
            sends[r] = sends[j]
            if r not in self.live:
                self.live.append(r)
            self.lost.pop(r, None)
        self.mesh.send(r, canonical_cbor([log.counts[r], log.received[r]]))
        for b in self.history.get(r, []):
            self.mesh.send(r, b)
        self.rejoined[r] = round_index
        return r

    def catch_up(self, headers: Mapping[int, object]) -> None:
        """Standby side: read each peer's resumption header (`[rounds received from the lost rank, chain head]`)
        from `headers` (rank -> decoded frame). From then on the rounds a peer already has are recomputed
        and chained but not sent; when they are done the chain must equal the peer's head (ResumeMismatch)."""
        for j in self.peers:
            if j not in headers:  # a replica of another index that was lost before the take-over
                if j in self.live:
                    self.live.remove(j)
                self.lost[j] = "lost before the standby took over"
                continue
            h = headers.get(j)
            if not (isinstance(h, list) and len(h) == 2 and isinstance(h[0], int) and not isinstance(h[0], bool)
                    and h[0] >= 0 and isinstance(h[1], bytes) and len(h[1]) == 32):
                raise MeshError(f"rank {j} sent a bad resumption header")
            self.skip[j] = (h[0], h[1])
            if h[0] == 0 and self.broadcast_log is not None and h[1] != self.broadcast_log.sent[j]:
                raise ResumeMismatch(f"rank {j} says it received nothing, with a chain head that is not empty")

    def _message_for(self, round_index: int, peer: int, mine: torch.Tensor) -> torch.Tensor:
        """The tensor this party sends `peer` in round `round_index`: its own share, the same for every peer."""
        return mine
