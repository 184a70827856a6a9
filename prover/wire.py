"""A job's mesh and the byte messages that cross it (specs/node-daemon.md, specs/transport.md).

Rank layout of a ledger job with N parties and R replicas per share index (world N R + 2):

    0 .. N R-1   the parties (node daemons): rank = replica N + party (mpc_core.replicas)
    N R          the dealer (seeds, and the last party's correction shares)
    N R + 1      the client (input shares out, output shares in); it hosts the rendezvous

Everything a role sends another over the mesh except the parties' openings is a
sealed channel message (prover.channels); openings are public by design and committed.
"""
from __future__ import annotations

import socket

from mpc_core.mesh import Mesh, join_mesh, listen_rendezvous, rejoin_hello, rejoin_mesh, rejoin_statement
from prover.errors import ProverError

MAX_RECEIPT = 4096  # a broadcast receipt: canonical_cbor([count, head, Ed25519 signature])
MAX_RESUME_HEADER = 256  # a peer's resumption header: canonical_cbor([count, head]); the client's: [steps done]


class WireError(ProverError):
    """A peer sent something the wire format does not allow (e.g. an oversized message)."""


def dealer_rank(n_parties: int, replicas: int = 1) -> int:
    return n_parties * replicas


def client_rank(n_parties: int, replicas: int = 1) -> int:
    return n_parties * replicas + 1


def world_size(n_parties: int, replicas: int = 1) -> int:
    return n_parties * replicas + 2


def recv_exact(mesh: Mesh, src: int, size: int) -> bytes:
    """Receive one message of exactly `size` bytes (other messages: `Mesh.send`, `Mesh.recv`)."""
    data = mesh.recv(src, size)
    if len(data) != size:
        raise WireError(f"rank {src} sent {len(data)} bytes where {size} were due")
    return data


def send_fixed(mesh: Mesh, data: bytes, dst: int, size: int) -> None:
    """Send `data` as one message of exactly `size` bytes: a 4-byte little-endian length, the data, zero padding
    (every request frame has one length, whatever it asks for)."""
    if len(data) + 4 > size:
        raise WireError(f"{len(data)} bytes do not fit a {size}-byte frame")
    mesh.send(dst, len(data).to_bytes(4, "little") + data + bytes(size - 4 - len(data)))


def recv_fixed(mesh: Mesh, src: int, size: int) -> bytes:
    """Receive one `send_fixed` frame of `size` bytes from rank `src`; returns the data."""
    raw = recv_exact(mesh, src, size)
    n = int.from_bytes(raw[:4], "little")
    if n + 4 > size:
        raise WireError(f"rank {src} sent a frame claiming {n} bytes in {size}")
    return raw[4:4 + n]


def open_rendezvous(host: str = "127.0.0.1") -> tuple[socket.socket, str]:
    """The client's rendezvous: a listening socket on a free port of `host`, and its "HOST:PORT" for job.open."""
    s = listen_rendezvous(f"{host}:0")
    addr, port = s.getsockname()[:2]
    return s, f"{addr}:{port}"


def join_job(rendezvous: str, rank: int, n_parties: int, job_id: str, timeout_s: float,
             listener: socket.socket | None = None, replicas: int = 1, resumable: bool = False) -> Mesh:
    """Join a job's mesh (world N R + 2) as `rank`; the client passes the listener of `open_rendezvous`.
    In a `resumable` job (one with standbys) every rank keeps its listener open for a standby's rejoin."""
    return join_mesh(rendezvous, rank, world_size(n_parties, replicas), job_id.encode(), timeout_s, listener=listener,
                     keep_listener=resumable)


def rejoin_job(rendezvous: str, rank: int, n_parties: int, job_id: str, timeout_s: float, node_id: str,
               sign, with_dealer: bool = False, replicas: int = 1) -> Mesh:
    """As a standby, take over party rank `rank` of a running job (with R replicas: replica 0's rank of its
    index): link the client and every other live party rank (and the dealer: `with_dealer`, the last party's
    correction stream), with a hello signed by `sign` (the standby's Ed25519 key)."""
    world = world_size(n_parties, replicas)
    job = job_id.encode()
    hello = rejoin_hello(job, world, rank, node_id, sign(rejoin_statement(job, world, rank, node_id)))
    peers = [j for j in range(n_parties * replicas) if j != rank] + ([dealer_rank(n_parties, replicas)]
                                                                      if with_dealer else [])
    return rejoin_mesh(rendezvous, rank, world, job, hello, peers, timeout_s)
