"""A job's torch.distributed group and the byte messages that cross it (specs/node-daemon.md).

Rank layout of a ledger job with N parties (world N+2):

    0 .. N-1   the parties (node daemons)
    N          the dealer (seeds, and the last party's correction shares)
    N+1        the client (input shares out, output shares in)

Everything a role sends another over this group except the parties' openings is a
sealed channel message (prover.channels); openings are public by design and committed.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from mpc_core.distributed import _translate
from prover.errors import ProverError

MAX_WIRE_BYTES = 1 << 30


class WireError(ProverError):
    """A peer sent something the wire format does not allow (e.g. an oversized message)."""


def dealer_rank(n_parties: int) -> int:
    return n_parties


def client_rank(n_parties: int) -> int:
    return n_parties + 1


def world_size(n_parties: int) -> int:
    return n_parties + 2


def send_bytes(data: bytes, dst: int) -> None:
    """Send a byte string to rank `dst`: its length (int64), then the bytes (uint8)."""
    try:
        dist.send(torch.tensor([len(data)], dtype=torch.int64), dst=dst)
        if data:
            dist.send(torch.frombuffer(bytearray(data), dtype=torch.uint8), dst=dst)
    except Exception as exc:
        raise _translate(exc, f"send to rank {dst}") from exc


def recv_bytes(src: int, max_len: int = MAX_WIRE_BYTES) -> bytes:
    """Receive a byte string sent with `send_bytes` from rank `src`."""
    try:
        n = torch.empty(1, dtype=torch.int64)
        dist.recv(n, src=src)
        if not 0 <= int(n) <= max_len:
            raise WireError(f"rank {src} announced {int(n)} bytes (limit {max_len})")
        if int(n) == 0:
            return b""
        buf = torch.empty(int(n), dtype=torch.uint8)
        dist.recv(buf, src=src)
    except WireError:
        raise
    except Exception as exc:
        raise _translate(exc, f"receive from rank {src}") from exc
    return bytes(buf.numpy().tobytes())


def send_exact(data: bytes, dst: int) -> None:
    """Send `data` as one message whose length the receiver already knows."""
    try:
        dist.send(torch.frombuffer(bytearray(data), dtype=torch.uint8), dst=dst)
    except Exception as exc:
        raise _translate(exc, f"send to rank {dst}") from exc


def recv_exact(src: int, size: int) -> bytes:
    """Receive one message of exactly `size` bytes (sent with `send_exact`)."""
    buf = torch.empty(size, dtype=torch.uint8)
    try:
        dist.recv(buf, src=src)
    except Exception as exc:
        raise _translate(exc, f"receive from rank {src}") from exc
    return buf.numpy().tobytes()


def send_fixed(data: bytes, dst: int, size: int) -> None:
    """Send `data` as one message of exactly `size` bytes: a 4-byte little-endian length, the data, zero padding."""
    if len(data) + 4 > size:
        raise WireError(f"{len(data)} bytes do not fit a {size}-byte frame")
    send_exact(len(data).to_bytes(4, "little") + data + bytes(size - 4 - len(data)), dst)


def recv_fixed(src: int, size: int) -> bytes:
    """Receive one `send_fixed` frame of `size` bytes from rank `src`; returns the data."""
    raw = recv_exact(src, size)
    n = int.from_bytes(raw[:4], "little")
    if n + 4 > size:
        raise WireError(f"rank {src} sent a frame claiming {n} bytes in {size}")
    return raw[4:4 + n]


def exchange_bytes(data: dict[int, bytes], peers: list[int]) -> dict[int, bytes]:
    """Send `data[j]` to every peer j and receive one byte string from each (no ordering deadlock)."""
    try:
        lens = {j: torch.tensor([len(data[j])], dtype=torch.int64) for j in peers}
        works = [dist.isend(lens[j], dst=j) for j in peers]
        got = {}
        for j in peers:
            n = torch.empty(1, dtype=torch.int64)
            dist.recv(n, src=j)
            if not 0 < int(n) <= MAX_WIRE_BYTES:
                raise WireError(f"rank {j} announced {int(n)} bytes")
            got[j] = int(n)
        for w in works:
            w.wait()
        bufs = {j: torch.frombuffer(bytearray(data[j]), dtype=torch.uint8) for j in peers}
        works = [dist.isend(bufs[j], dst=j) for j in peers]
        out = {}
        for j in peers:
            buf = torch.empty(got[j], dtype=torch.uint8)
            dist.recv(buf, src=j)
            out[j] = bytes(buf.numpy().tobytes())
        for w in works:
            w.wait()
    except WireError:
        raise
    except Exception as exc:
        raise _translate(exc, "exchange with peers") from exc
    return out


def join_group(rendezvous: str, rank: int, n_parties: int, timeout_s: float):
    """Join a job's gloo group (world N+2) and create the parties' subgroup (every rank calls new_group)."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group("gloo", init_method=f"tcp://{rendezvous}", rank=rank, world_size=world_size(n_parties),
                            timeout=timeout)
    return dist.new_group(ranks=list(range(n_parties)), timeout=timeout)


def leave_group() -> None:
    """Tear the job's process group down (best effort), so the next job can form a new one."""
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # a peer may already be gone
        pass
