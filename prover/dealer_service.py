"""The dealer role of a ledger job: `shardproof dealer serve`, or inside the client (specs/node-daemon.md).

For each `job.open` that names it as dealer, the dealer

1. draws a master seed, keeps it in a state file (mode 0600) and posts `dealer.commit`:
   one seed commitment per party, before any party starts;
2. runs the job's offline phase: the job's dealer plan (protocol.plan: every material request of
   the program, from the published manifest, the prompt length and the steps) and the last
   party's correction shares for all of it;
3. joins the job's mesh as rank N (prover.wire) and sends party i its seed sealed on
   a private channel (Noise K); the last party's message also carries a fresh
   correction key and announces the prefetched corrections, which follow sealed in bulk;
4. answers, online, only the last party's requests beyond the plan (none when the plan holds),
   each answer encrypted under the correction key with the request bound as associated data;
5. records the request log (the requests the last party used, in op order) in its state file, and
6. when an auditor's `challenge` for the job follows from the first sealing checkpoint,
   releases the challenged parties' seeds (and the corrections, when the last party is
   challenged) in an `opening` entry; never for a challenge that does not.
A job is served at most once, also across restarts.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ledger import Ledger
from ledger import entries as E
from ledger import merkle
from ledger.subscribe import Subscription
from mpc_core.dealer import Request, TrustedDealer, kind_spec
from mpc_core.encoding import canonical_cbor, decode_cbor, tensor_bytes, tensor_from_bytes
from mpc_core.errors import MPCError, PeerTimeout, TransportError
from mpc_core.replicas import Layout
from prover.blob_server import BlobServer, answer_blob_requests, keep_blob
from prover.channels import (CORRECTION_KEY_BYTES, MAX_PAYLOAD, MAX_SEALED, PURPOSE_DEALER, TAG_BYTES, ReplayGuard,
                             StaticKeys, open_, open_correction, seal, seal_correction)
from protocol import bodies as B
from protocol.challenge import DEALER_SLOT, beacon_commitment, beacon_value
from protocol.job_view import challenge_state, job_failed, published_manifest, read_job_from_ledger
from protocol.plan import Plan, dealer_plan
from prover.ledger_view import job_closed, next_wake, standby_check
from prover.local_files import safe_id, write_secret
from prover.errors import ProverError
from prover.keys import NodeKeys, lookup_peer
from protocol.opening import correction_items, corrections_leaf, enc_tensor, encode_release
from mpc_core.mesh import Mesh
from prover.wire import dealer_rank, join_job, recv_exact, recv_fixed, send_fixed

log = logging.getLogger("shardproof.dealer")

STATE_FORMAT = "shardproof/dealer-state/v1"
REQUEST_FRAME = 2048  # bytes of one correction request frame (a request descriptor is a few dozen bytes)


class DealerServiceError(ProverError):
    """The dealer cannot serve a job (not its job, bad entries, a bad request from the last party)."""


# --- the correction link (last party <-> dealer) ----------------------------------------------
class SealedDealerLink:
    """The last party's online side: ask for request #k's corrections, receive them encrypted."""

    def __init__(self, mesh: Mesh, n_parties: int, job_id: str, key: bytes, replicas: int = 1):
        self.mesh = mesh
        self.rank = dealer_rank(n_parties, replicas)
        self.job_id = job_id
        self.key = key

    def fetch(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        """Request #`op_index`'s correction shares from the dealer (one round trip)."""
        desc = req.describe()
        comps = kind_spec(req).derived
        sizes = [8 * _numel(c.shape) for c in comps]
        # One fixed-size request frame and one reply of known size: a round trip is two messages.
        send_fixed(self.mesh, canonical_cbor([op_index] + desc), self.rank, REQUEST_FRAME)
        sealed = recv_exact(self.mesh, self.rank, sum(sizes) + TAG_BYTES)
        payload = open_correction(self.key, self.job_id, op_index, desc, sealed)
        out, pos = {}, 0
        for comp, size in zip(comps, sizes):
            out[comp.name] = tensor_from_bytes(payload[pos:pos + size], tuple(comp.shape))
            pos += size
        return out

    def close(self, used: int | None = None) -> None:
        """Tell the dealer the program is done: a frame `canonical_cbor([used])` with the number of
        requests the program made (or, without it, an empty frame)."""
        try:
            send_fixed(self.mesh, canonical_cbor([int(used)]) if used is not None else b"", self.rank, REQUEST_FRAME)
        except Exception:  # the dealer may be gone already; closing is best effort
            pass


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _correction_sizes(req: Request) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, bytes) of each derived component of a request, in component order."""
    return [(c.name, tuple(c.shape), 8 * _numel(c.shape)) for c in kind_spec(req).derived]


class PrefetchedCorrections:
    """The last party's correction source (`SeededDealerClient`'s fetch): the dealer's bulk corrections
    for its plan, served by op index, and the online link for requests beyond the plan.

    `requests` are the plan's request descriptors in op order (op 0 first) and `payload` their
    correction shares, int64 little-endian, in op order and component order. A request at a planned op
    index must equal the plan's (else DealerServiceError: the dealer already delivered that op's
    correction, and a second one on the same randomness would leak it, so none is asked for); a
    request past the plan goes to `online(req, op_index)` and is logged. `head` is the Merkle root
    over the corrections used, in op order (protocol.opening.corrections_head), as the job root
    commits to it: the same whether they came in bulk or online."""

    def __init__(self, requests: list, payload: bytes | memoryview, online=None, job_id: str = ""):
        self.job_id = job_id
        self.requests = [list(d) for d in requests]
        self.payload = memoryview(payload)
        self.online = online
        self.offsets: list[int] = []
        pos = 0
        try:
            for d in self.requests:
                self.offsets.append(pos)
                pos += sum(size for _, _, size in _correction_sizes(request_from(d)))
        except (MPCError, ValueError, TypeError) as exc:
            raise DealerServiceError(f"the dealer's plan holds a malformed request: {type(exc).__name__}: {exc}") from exc
        if pos != len(self.payload):
            raise DealerServiceError(f"the dealer's plan needs {pos} bytes of corrections, {len(self.payload)} came")
        self.used = 0  # requests answered so far (the program asks in op order)
        self.online_requests = 0
        self._online_items: dict[int, list] = {}
        self._tree, self._hashed = merkle.MerkleFrontier(), 0

    def __call__(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        if op_index != self.used:
            raise DealerServiceError(f"correction #{op_index} asked out of order (#{self.used} is next)")
        desc = req.describe()
        if op_index < len(self.requests):
            if desc != self.requests[op_index]:
                raise DealerServiceError(f"request #{op_index} {desc} differs from the dealer's plan "
                                         f"{self.requests[op_index]}; its correction cannot be asked for again")
            out, pos = {}, self.offsets[op_index]
            for name, shape, size in _correction_sizes(req):
                out[name] = tensor_from_bytes(self.payload[pos:pos + size], shape)
                pos += size
        else:
            if self.online is None:
                raise DealerServiceError(f"request #{op_index} is past the dealer's plan and there is no online link")
            if self.online_requests == 0:
                log.warning("job %s: request #%d is past the dealer's plan of %d requests; fetching online",
                            self.job_id, op_index, len(self.requests))
            out = self.online(req, op_index)
            self.online_requests += 1
            self._online_items[op_index] = [desc, {k: enc_tensor(v) for k, v in sorted(out.items())}]
        self.used += 1
        return out

    def _item(self, op_index: int) -> list:
        """The correction message of a used op as the chain hashes it: [descriptor, {component: [shape, bytes]}]."""
        if op_index in self._online_items:
            return self._online_items[op_index]
        req, pos, comps = self.requests[op_index], self.offsets[op_index], {}
        for name, shape, size in _correction_sizes(request_from(req)):
            comps[name] = [list(shape), bytes(self.payload[pos:pos + size])]
            pos += size
        return [req, dict(sorted(comps.items()))]

    @property
    def head(self) -> bytes:
        """The corrections Merkle root over every correction used so far (hashed off the online path)."""
        while self._hashed < self.used:
            self._tree.append(merkle.leaf_hash(corrections_leaf(self._hashed, self._item(self._hashed))))
            self._hashed += 1
        return self._tree.root()


class _LoggingDealer:
    """A TrustedDealer that records the last party's requests in op order: the plan's requests (all
    delivered in bulk), then every request answered online past it."""

    def __init__(self, dealer: TrustedDealer, planned: list | None = None):
        self.dealer = dealer
        self.log: list[list] = [list(d) for d in planned or []]
        self.planned = len(self.log)  # requests delivered in bulk (never answered again online)
        self.online = 0  # requests answered online

    def correction(self, req: Request, op_index: int):
        """Answer request #`op_index` online: only the next op past everything delivered (never an op
        whose correction the last party already holds: a second correction on its randomness leaks it).
        A replica may repeat a request its twin made: the same request at the same op gets the same
        answer (a deterministic function of the two), which tells the replica nothing new."""
        if op_index < len(self.log) and op_index >= self.planned and self.log[op_index] == req.describe():
            return self.dealer.correction(req, op_index)
        if op_index != len(self.log):
            raise DealerServiceError(f"request #{op_index} out of order (expected #{len(self.log)})")
        corr = self.dealer.correction(req, op_index)
        self.log.append(req.describe())
        self.online += 1
        return corr

    def check_used(self, used: int) -> int:
        """A replica's close frame: check that `used` is a count of delivered requests (the log is not
        trimmed: its twins may have used more); returns it."""
        if not isinstance(used, int) or isinstance(used, bool) or not 0 <= used <= len(self.log):
            raise DealerServiceError(f"the last party reports {used!r} requests used, {len(self.log)} were delivered")
        return used

    def close(self, used: int) -> None:
        """The last party used the first `used` requests: the log keeps those (what a release reveals)."""
        if not isinstance(used, int) or isinstance(used, bool) or not 0 <= used <= len(self.log):
            raise DealerServiceError(f"the last party reports {used!r} requests used, {len(self.log)} were delivered")
        del self.log[used:]


def request_from(desc: list) -> Request:
    """A Request from its descriptor [kind, params] (lists back to tuples)."""
    def tup(p):
        return tuple(tup(q) for q in p) if isinstance(p, list) else p
    kind, params = desc
    return Request(kind, tuple(tup(p) for p in params))


def _to_replica(mesh: Mesh, rank: int, replicas: int, lost: dict[int, str], send) -> None:
    """Run `send()` towards one party rank; with replicas, a rank that is gone is recorded in `lost`
    (and dropped from the mesh) instead of failing the job (its twins carry on)."""
    if rank in lost:
        return
    try:
        send()
    except TransportError as exc:
        if replicas == 1:
            raise
        lost[rank] = f"{type(exc).__name__}: {exc}"
        mesh.drop(rank)


def serve_replicas(dealer: _LoggingDealer, mesh: Mesh, ranks: list[int], job_id: str, key: bytes,
                   lost: dict[int, str], idle: Callable[[], str] | None = None) -> int:
    """`serve_corrections` for every live replica of the last share index at once (one thread each; they
    ask for the same requests in the same order, and an answer is a deterministic function of the
    request). A replica that goes away is recorded in `lost`; returns the largest count of requests a
    replica reported used. Fails if no replica of the last index finished. A replica silent past the
    timeout is waited for while `idle()` says nothing (the job runs) and, once a twin closed, for one more
    timeout."""
    if len(ranks) == 1 and not lost:
        return serve_corrections(dealer, mesh, ranks[0], job_id, key, idle=idle)
    used: dict[int, int] = {}
    lock = threading.Lock()
    first_done: list[float] = []

    def twin_done() -> str:
        why = idle() if idle is not None else ""
        if not why and first_done and time.monotonic() - first_done[0] > mesh.timeout_s:
            why = f"a twin closed its link {mesh.timeout_s:.0f} s ago and this replica did not"
        return why

    def one(r: int) -> None:
        try:
            used[r] = serve_corrections(dealer, mesh, r, job_id, key, lock, idle=twin_done)
            with lock:
                first_done.append(time.monotonic())
        except TransportError as exc:
            lost[r] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - reported below, after every thread is done
            lost[r] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not used:
        raise DealerServiceError("no replica of the last share index finished: "
                                 + "; ".join(f"rank {r}: {lost.get(r, '?')}" for r in ranks))
    return max(used.values())


def serve_corrections(dealer: _LoggingDealer, mesh: Mesh, last: int, job_id: str, key: bytes,
                      lock: threading.Lock | None = None, idle: Callable[[], str] | None = None) -> int:
    """Answer the online requests of the last party's rank `last` until it closes the link; returns the
    number of requests it used (the close frame `[used]` trims the log to them; an empty frame keeps the
    log as is). With replicas each rank has a thread and `lock` guards the shared log. The party may rightly
    stay silent for the whole job (everything planned was delivered in bulk): with `idle`, each timeout of
    silence asks `idle()`, and only a reason it gives ends the wait (PeerTimeout)."""
    guard = lock or contextlib.nullcontext()
    while True:
        while idle is not None and not mesh.wait_readable(last, mesh.timeout_s):
            why = idle()
            if why:
                raise PeerTimeout(f"rank {last} silent: {why}")
        msg = recv_fixed(mesh, last, REQUEST_FRAME)
        if not msg:
            return len(dealer.log)
        try:
            obj = decode_cbor(msg)
            if isinstance(obj, list) and len(obj) == 1:
                with guard:
                    if lock is None:
                        dealer.close(obj[0])
                        return len(dealer.log)
                    return dealer.check_used(obj[0])
            op_index, kind, params = obj
            req = request_from([kind, params])
            with guard:
                corr = dealer.correction(req, op_index)
            payload = b"".join(tensor_bytes(corr[c.name].contiguous()) for c in kind_spec(req).derived)
        except DealerServiceError:
            raise
        except (MPCError, ValueError, TypeError, KeyError) as exc:
            raise DealerServiceError(f"bad correction request from party {last}: {type(exc).__name__}: {exc}") from exc
        mesh.send(last, seal_correction(key, job_id, op_index, req.describe(), payload))


# --- the offline phase: the plan's corrections, delivered in bulk -------------------------------
PREFETCH_CHUNK = MAX_PAYLOAD  # bytes of one sealed bulk message (the channel's payload limit)


@dataclass
class Offline:
    """A job's offline phase on the dealer's side: the plan's request descriptors and the bulk stream
    (canonical_cbor(descriptors) || corrections), with what it cost."""

    requests: list
    stream: bytes
    requests_bytes: int
    plan_seconds: float = 0.0
    corrections_seconds: float = 0.0

    @property
    def corrections_bytes(self) -> int:
        return len(self.stream) - self.requests_bytes

    def header(self) -> dict:
        """What the last party's seed message announces: {requests_bytes, bytes, messages}."""
        return {"requests_bytes": self.requests_bytes, "bytes": len(self.stream),
                "messages": -(-len(self.stream) // PREFETCH_CHUNK)}

    def chunks(self) -> list[memoryview]:
        view = memoryview(self.stream)
        return [view[i:i + PREFETCH_CHUNK] for i in range(0, len(self.stream), PREFETCH_CHUNK)]


def offline_corrections(dealer: TrustedDealer, plan: Plan) -> Offline:
    """The last party's corrections for every request of `plan` (op order, from op 0), computed now:
    bit for bit what `dealer.correction` answers online for the same request and op index."""
    t0 = time.perf_counter()
    parts, requests = [], []
    for k, (op_index, req) in enumerate(plan):
        if op_index != k:
            raise DealerServiceError(f"plan entry {k} names op #{op_index}")
        corr = dealer.correction(req, op_index)
        parts.extend(tensor_bytes(corr[c.name].contiguous()) for c in kind_spec(req).derived)
        requests.append(req.describe())
    head = canonical_cbor(requests)
    return Offline(requests, head + b"".join(parts), len(head), corrections_seconds=time.perf_counter() - t0)


def send_prefetch(keys: NodeKeys, mesh: Mesh, peer_x25519: bytes, node_id: str, job_id: str, offline: Offline,
                  party: int) -> None:
    """Send the bulk stream to the last party: sealed `dealer.material` messages with counters 1, 2, ...
    (counter 0 is the seed message that announces it)."""
    for i, chunk in enumerate(offline.chunks(), start=1):
        mesh.send(party, seal(keys, peer_x25519, node_id, job_id, PURPOSE_DEALER, chunk, i))


def receive_prefetch(keys: StaticKeys, mesh: Mesh, header: dict, rank: int, dealer_x25519: bytes, dealer_id: str, job_id: str,
                     guard: ReplayGuard, online=None) -> PrefetchedCorrections:
    """The last party's side of `send_prefetch`: receive and open the announced messages from `rank`, check them
    against the announcement, and return the correction source (with `online` for requests past the plan).
    Raises DealerServiceError on a stream that does not match its announcement."""
    try:
        messages, total, req_bytes = int(header["messages"]), int(header["bytes"]), int(header["requests_bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DealerServiceError(f"malformed prefetch announcement: {exc}") from exc
    if not (0 <= messages and 0 <= req_bytes <= total and messages == -(-total // PREFETCH_CHUNK)):
        raise DealerServiceError(f"impossible prefetch announcement {header!r}")
    parts = []
    for i in range(1, messages + 1):
        opened = open_(keys, mesh.recv(rank, MAX_SEALED), dealer_x25519,
                       sender=dealer_id, job=job_id, purpose=PURPOSE_DEALER, replay=guard)
        if opened.counter != i:
            raise DealerServiceError(f"prefetch message #{opened.counter} where #{i} was due")
        parts.append(opened.payload)
    stream = b"".join(parts)
    if len(stream) != total:
        raise DealerServiceError(f"prefetch of {len(stream)} bytes, {total} announced")
    return prefetch_from_stream(stream, req_bytes, online, job_id)


def prefetch_from_stream(stream: bytes, requests_bytes: int, online=None, job_id: str = "") -> PrefetchedCorrections:
    """The correction source of a bulk stream canonical_cbor(descriptors) || corrections (`Offline.stream`).
    Raises DealerServiceError on a stream that does not parse or whose size does not fit its plan."""
    try:
        requests = decode_cbor(bytes(stream[:requests_bytes])) if requests_bytes else []
        if not isinstance(requests, list) or not all(isinstance(d, list) and len(d) == 2 for d in requests):
            raise ValueError("not a list of [kind, params]")
    except (MPCError, ValueError) as exc:
        raise DealerServiceError(f"malformed prefetched plan: {exc}") from exc
    return PrefetchedCorrections(requests, memoryview(stream)[requests_bytes:], online, job_id)


# --- one job ------------------------------------------------------------------------------
def _state_path(state_dir: Path, job_id: str) -> Path:
    return Path(state_dir) / f"dealer-{safe_id(job_id, 'job id')}.cbor"


def run_dealer_job(led: Ledger, keys: NodeKeys, job_id: str, state_dir: str | os.PathLike, timeout_s: float = 60.0,
                   master_seed: bytes | None = None) -> Path:
    """Serve `job_id` as its dealer (steps 1-5 of the module docstring); returns the state file."""
    opens = led.by_job(job_id, kind=E.JOB_OPEN)
    if not opens:
        raise DealerServiceError(f"no job.open for {job_id!r}")
    b = opens[0].entry.body
    if b["dealer"] != keys.node_id:
        raise DealerServiceError(f"job {job_id} names dealer {b['dealer']!r}, not {keys.node_id!r}")
    assigns = [e for e in led.by_job(job_id, kind=E.JOB_ASSIGN) if e.entry.author == opens[0].entry.author]
    if not assigns:
        raise DealerServiceError(f"no job.assign by the job's author for {job_id!r}")
    n, replicas = int(b["n_parties"]), int(b.get("replicas", 1))
    try:
        layout = Layout(n, replicas)
    except MPCError as exc:
        raise DealerServiceError(f"job {job_id}: {exc}") from None
    by_rank = {layout.rank(a["party"], a["replica"]): a["node"] for a in assigns[0].entry.body["assignments"]
               if a.get("stage", 0) == 0 and 0 <= a["party"] < n and 0 <= a["replica"] < replicas}
    if sorted(by_rank) != list(range(layout.party_ranks)):
        raise DealerServiceError(f"job {job_id}: the assignment does not cover parties 0..{n - 1}"
                                 + (f" x replicas 0..{replicas - 1}" if replicas > 1 else ""))
    peers = {r: lookup_peer(led, node) for r, node in by_rank.items()}
    if any(pk is None or pk.x25519 is None for pk in peers.values()):
        raise DealerServiceError(f"job {job_id}: a node has no registered X25519 key")
    rendezvous = str((b.get("params") or {})["rendezvous"])
    path = _state_path(Path(state_dir), job_id)
    if path.exists() or led.by_job(job_id, kind=E.DEALER_COMMIT):
        raise DealerServiceError(f"job {job_id} was served before (a dealer serves a job once)")
    path.parent.mkdir(parents=True, exist_ok=True)
    master = master_seed or os.urandom(32)
    state = {"format": STATE_FORMAT, "job_id": job_id, "n_parties": n, "master_seed": master, "requests": [],
             "status": "started"}
    write_secret(path, canonical_cbor(state))  # the seed is on disk before it is committed to
    trusted = TrustedDealer(master, job_id.encode(), n)
    beacon = beacon_commitment(job_id, DEALER_SLOT, beacon_value(master, job_id, DEALER_SLOT))
    standby = _standby_seeds(led, keys, job_id, trusted, set(by_rank.values()), n, replicas)
    led.append(E.make_entry(keys.identity, E.DEALER_COMMIT, B.DealerCommit(
        job_id, dict(enumerate(trusted.seed_commitments())), beacon, standby).to_body()))
    # The offline phase, while the nodes load their shares and the group forms: nothing online waits on it.
    t0 = time.perf_counter()
    plan = plan_for_job(led, job_id, b)
    plan_s = time.perf_counter() - t0
    offline = offline_corrections(trusted, plan)
    offline.plan_seconds = plan_s
    log.info("job %s: offline phase: %d requests planned in %.2f s, %d bytes of corrections computed in %.2f s",
             job_id, len(plan), plan_s, offline.corrections_bytes, offline.corrections_seconds)
    dealer = _LoggingDealer(trusted, offline.requests)
    resumable = bool(B.JobOpen.from_entry(opens[0].entry).standby)
    mesh = join_job(rendezvous, dealer_rank(n, replicas), n, job_id, timeout_s, replicas=replicas,
                    resumable=resumable)
    lost: dict[int, str] = {}  # replica ranks that went away (the job goes on while each index has one)
    idle = _job_idle(led, job_id, n, timeout_s)
    try:
        key = os.urandom(CORRECTION_KEY_BYTES)
        if resumable and replicas == 1:  # R = 1 with standbys: the last party may be handed to a standby mid-job
            used = _serve_resumable(led, keys, dealer, mesh, n, job_id, key, offline, trusted, by_rank,
                                    {r: pk.x25519 for r, pk in peers.items()}, timeout_s, idle)
            return _finish(path, state, dealer, used, plan, job_id)
        for r in range(layout.party_ranks):
            p = layout.party_of(r)
            msg = {"seed": trusted.party_seed(p)}
            if p == n - 1:
                msg["corrections_key"] = key
                msg["prefetch"] = offline.header()
            _to_replica(mesh, r, replicas, lost, lambda r=r, msg=msg: mesh.send(r, seal(
                keys, peers[r].x25519, by_rank[r], job_id, PURPOSE_DEALER, canonical_cbor(msg), 0)))
        t0 = time.perf_counter()
        lasts = [r for r in layout.ranks_of(n - 1) if r not in lost]
        for r in lasts:
            _to_replica(mesh, r, replicas, lost, lambda r=r: send_prefetch(
                keys, mesh, peers[r].x25519, by_rank[r], job_id, offline, r))
        log.info("job %s: sent party %d the plan and its corrections, %d bytes in %d sealed messages, in %.2f s",
                 job_id, n - 1, len(offline.stream), offline.header()["messages"], time.perf_counter() - t0)
        try:
            used = serve_replicas(dealer, mesh, [r for r in lasts if r not in lost], job_id, key, lost, idle)
        except DealerServiceError as exc:
            if not resumable or any(r not in lost for r in layout.ranks_of(n - 1)):
                raise
            used = _serve_standby(led, keys, dealer, mesh, layout.rank(n - 1, 0), n, job_id, key, offline, trusted,
                                  timeout_s, exc)
    finally:
        mesh.close()
    if lost:
        log.warning("job %s: lost replica rank(s) %s", job_id, ", ".join(f"{r} ({why})" for r, why in lost.items()))
    return _finish(path, state, dealer, used, plan, job_id)


def _finish(path: Path, state: dict, dealer: "_LoggingDealer", used: int, plan: Plan, job_id: str) -> Path:
    state.update(requests=dealer.log, status="done")
    write_secret(path, canonical_cbor(state))
    log.info("job %s: the last party used %d correction requests (%d planned, %d answered online)", job_id, used,
             len(plan), dealer.online)
    return path


IDLE_TIMEOUTS = 100  # the dealer waits for a silent last party at most this many timeouts (the job runs meanwhile)


def _job_idle(led: Ledger, job_id: str, n: int, timeout_s: float, served_by: str | None = None) -> Callable[[], str]:
    """What ends the dealer's wait for a silent last party (`serve_corrections(idle=...)`): the opener's
    job.fail, a job.resume handing the last index to a standby (other than `served_by`, the one being
    served), or IDLE_TIMEOUTS timeouts of silence in all; "" while the job simply runs (a ledger that cannot
    be read says nothing)."""
    calls = [0]

    def idle() -> str:
        calls[0] += 1
        if calls[0] > IDLE_TIMEOUTS:
            return f"silent for {IDLE_TIMEOUTS} x {timeout_s:.0f} s"
        try:
            view = read_job_from_ledger(led, job_id)
        except Exception:  # noqa: BLE001 - keep waiting; the cap above still ends it
            return ""
        if view.fail is not None:
            return f"the job's opener closed it: {view.fail.body.reason}"
        if n - 1 in view.resumes and view.resumes[n - 1].body.standby != served_by:
            return f"the last index was handed to standby {view.resumes[n - 1].body.standby}"
        return ""
    return idle


def _serve_resumable(led: Ledger, keys: NodeKeys, dealer: "_LoggingDealer", mesh: Mesh, n: int, job_id: str,
                     key: bytes, offline: "Offline", trusted: TrustedDealer, nodes: dict[int, str],
                     x25519s: dict[int, bytes], timeout_s: float, idle: Callable[[], str] | None = None) -> int:
    """Serve the seeds and the last party's material in an R = 1 job with standbys: if the last party is lost
    at any point, its standby is served instead (`_serve_standby`); returns the requests used. Parties
    0..N-2 get their seed once (their standbys get theirs from dealer.commit)."""
    last = n - 1
    for r in range(last):  # a party lost before its seed is the peers' and the client's to hand over
        try:
            mesh.send(r, seal(keys, x25519s[r], nodes[r], job_id, PURPOSE_DEALER,
                              canonical_cbor({"seed": trusted.party_seed(r)}), 0))
        except TransportError as exc:
            log.warning("job %s: party %d is lost before its seed (%s)", job_id, r, exc)
    try:
        return _serve_last(keys, dealer, mesh, last, n, job_id, key, offline, trusted, nodes[last], x25519s[last], idle)
    except TransportError as exc:
        return _serve_standby(led, keys, dealer, mesh, last, n, job_id, key, offline, trusted, timeout_s, exc)


def _serve_last(keys: NodeKeys, dealer: "_LoggingDealer", mesh: Mesh, rank: int, n: int, job_id: str, key: bytes,
                offline: "Offline", trusted: TrustedDealer, node: str, x25519: bytes,
                idle: Callable[[], str] | None = None) -> int:
    """The last share index's material, sealed to `node` at `rank`: seed, correction key and plan header,
    the bulk corrections, then its online requests until it closes; returns the requests it used."""
    msg = {"seed": trusted.party_seed(n - 1), "corrections_key": key, "prefetch": offline.header()}
    mesh.send(rank, seal(keys, x25519, node, job_id, PURPOSE_DEALER, canonical_cbor(msg), 0))
    send_prefetch(keys, mesh, x25519, node, job_id, offline, rank)
    return serve_corrections(dealer, mesh, rank, job_id, key, idle=idle)


def _serve_standby(led: Ledger, keys: NodeKeys, dealer: "_LoggingDealer", mesh: Mesh, rank: int, n: int,
                   job_id: str, key: bytes, offline: "Offline", trusted: TrustedDealer, timeout_s: float,
                   why: Exception) -> int:
    """Every node of the last index is lost (`why`): hold for the standby a counted job.resume names (its
    signed rejoin at `rank`, replica 0's, mpc_core.mesh) and serve it the same material from the start
    (specs/node-daemon.md section 8); repeated online requests get the same answers. Returns the requests
    used; raises if no standby takes over within `timeout_s` or the job is closed."""
    last = n - 1
    log.warning("job %s: the last share index is lost (%s); holding for a standby", job_id, why)
    node = mesh.admit_rejoin(rank, standby_check(led, job_id, last), time.monotonic() + timeout_s,
                             job_closed(led, job_id))
    log.info("job %s: standby %s took over the last share index; serving it the job's material", job_id, node)
    return _serve_last(keys, dealer, mesh, rank, n, job_id, key, offline, trusted, node, lookup_peer(led, node).x25519,
                       _job_idle(led, job_id, n, timeout_s, served_by=node))


def _standby_seeds(led: Ledger, keys: NodeKeys, job_id: str, trusted: TrustedDealer, assigned: set[str], n: int,
                   replicas: int) -> dict[str, tuple[int, bytes]]:
    """The seed of each standby's share index, sealed to it, for the dealer.commit (specs/node-daemon.md
    section 8): a standby job.open names that the publication delivered an index 0..N-2 to (a standby of the
    last index gets its seed with the correction stream, on the mesh, when it takes over: `_serve_standby`).
    Others are skipped (protocol.job_view would not count their job.resume)."""
    view = read_job_from_ledger(led, job_id)
    out: dict[str, tuple[int, bytes]] = {}
    for node in view.open.body.standby:
        idx = view.publish.body.delivered_index(node) if view.publish is not None else None
        peer = lookup_peer(led, node)
        if idx == n - 1 and node not in assigned:
            continue  # served on the mesh when it takes over
        if node in assigned or idx is None or not 0 <= idx < n or peer is None or peer.x25519 is None:
            log.warning("job %s: standby %r cannot resume an index of this job; no seed sealed to it", job_id, node)
            continue
        msg = canonical_cbor({"seed": trusted.party_seed(idx), "party": idx})
        out[node] = (idx, seal(keys, peer.x25519, node, job_id, PURPOSE_DEALER, msg, 0))
    return out


_PLAN_CACHE: dict[tuple, Plan] = {}  # (model id, prompt length, steps, parties) -> plan; a few recent ones
_PLAN_CACHE_SIZE = 8


def plan_for_job(led: Ledger, job_id: str, job_open: dict) -> Plan:
    """The dealer plan of a job (protocol.plan.dealer_plan) from its `job.open` and the published manifest;
    an empty plan (every request is then answered online) when it cannot be made, with a warning."""
    try:
        params = job_open.get("params") or {}
        key = (str(job_open["model_id"]), int(params["prompt_len"]), int(params["steps"]), int(job_open["n_parties"]))
        if key not in _PLAN_CACHE:
            manifest = published_manifest(led, key[0])
            if int(manifest["n_parties"]) != key[3]:
                raise DealerServiceError(f"model has {manifest['n_parties']} shares, job has {key[3]} parties")
            while len(_PLAN_CACHE) >= _PLAN_CACHE_SIZE:
                _PLAN_CACHE.pop(next(iter(_PLAN_CACHE)))
            _PLAN_CACHE[key] = dealer_plan(manifest, key[1], key[2], key[3])
        return _PLAN_CACHE[key]
    except Exception as exc:  # noqa: BLE001 - no plan is slower, never wrong
        log.warning("job %s: no dealer plan (%s: %s); every correction will be fetched online", job_id,
                    type(exc).__name__, exc)
        return []


def dealer_process(ledger_url: str, key_bytes: bytes, job_id: str, state_dir: str, timeout_s: float,
                   master_seed: bytes | None, log_path: str | None = None) -> None:
    """Entry point of the dealer process a client starts when the dealer runs inside the client.

    With `log_path`, everything this process writes to stderr (its log, a traceback, native libraries'
    messages) goes to that file instead of the client's terminal."""
    if log_path is not None:
        import logging as _logging
        import sys

        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.dup2(fd, 1)
        os.close(fd)
        _logging.basicConfig(level=_logging.INFO, stream=sys.stderr,
                             format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    led = Ledger.open(ledger_url, create=False)
    try:
        run_dealer_job(led, NodeKeys.from_bytes(key_bytes), job_id, state_dir, timeout_s, master_seed)
    finally:
        led.close()


# --- challenges ---------------------------------------------------------------------------
def load_state(state_file: str | os.PathLike, job_id: str) -> dict:
    state = decode_cbor(Path(state_file).read_bytes())
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("job_id") != job_id:
        raise DealerServiceError(f"{state_file} is not the dealer state of job {job_id}")
    return state


def release_for_challenge(ledger: str | Ledger, dealer_keys: NodeKeys, state_file: str | os.PathLike,
                          job_id: str, serve=None) -> int | None:
    """The dealer's duties after a job (specs/audit.md sections 2-3), one step per call as the ledger
    allows: once the job is sealed, reveal its challenge beacon; once every beacon is revealed, post
    the derived challenge if nobody has; then post `dealer.release` for the counted challenge (the
    challenged parties' seeds, and the last party's corrections when it is challenged). Returns the
    release's ledger index once it is there, else None. A challenge entry that does not follow from
    the derivation is never answered (releasing then could break the audit privacy budget). With
    `serve(job_id, blob) -> (digest, url)` the release is served by the dealer (only its digest goes on the
    ledger: specs/audit.md section 3), else stored on the ledger."""
    led = Ledger.open(ledger, create=False) if isinstance(ledger, str) else ledger
    state = load_state(state_file, job_id)
    if state.get("status", "done") != "done":
        raise DealerServiceError(f"job {job_id} did not finish on the dealer's side")
    st = challenge_state(led, job_id)
    view = st.view
    if view.dealer != dealer_keys.node_id or view.dealer_commit is None:
        raise DealerServiceError(f"job {job_id}: this dealer's commitment does not count")
    if st.seal is None:
        return None
    master = bytes(state["master_seed"])
    if DEALER_SLOT not in view.reveals:
        led.append(E.make_entry(dealer_keys.identity, E.REVEAL, B.Reveal(
            job_id, None, beacon_value(master, job_id, DEALER_SLOT)).to_body()))
        return None
    if st.derived is None:
        return None
    if st.counted is None:
        d = st.derived
        led.append(E.make_entry(dealer_keys.identity, E.CHALLENGE, B.Challenge(
            job_id, d.checkpoint_size, d.checkpoint_root, d.seed, tuple(d.opened)).to_body()))
        return None
    if view.release is not None:
        return view.release.index  # released before a restart
    n = state["n_parties"]
    parties = st.opened
    dealer = TrustedDealer(master, job_id.encode(), n)
    corrections = correction_items(dealer, [request_from(d) for d in state["requests"]]) if n - 1 in parties else None
    blob = encode_release({p: dealer.party_seed(p) for p in parties}, corrections)
    if serve is not None:
        digest, url = serve(job_id, blob)
        body = B.DealerRelease(job_id, st.counted.index, digest, True, url)
    else:
        body = B.DealerRelease(job_id, st.counted.index, led.put_blob(blob))
    return led.append(E.make_entry(dealer_keys.identity, E.RELEASE, body.to_body()))


# --- the daemon ---------------------------------------------------------------------------
class DealerDaemon:
    """`shardproof dealer serve`: serves every job that names this dealer, and releases seeds on challenge."""

    def __init__(self, ledger_url: str, keys: NodeKeys, data_dir: str | os.PathLike, poll_s: float = 0.2,
                 timeout_s: float = 60.0, heartbeat_s: float | None = 60.0,
                 serve_releases: str | None = "127.0.0.1:0"):
        self.led = Ledger.open(ledger_url, create=False)
        # HOST:PORT to serve releases on (prover.blob_server), or None to store them on the ledger
        self.serve_releases = serve_releases
        self._blob_server = None
        self._requests: Subscription | None = None
        self.heartbeat_s = heartbeat_s  # None: post no node.heartbeat
        self._next_heartbeat = 0.0
        self.keys = keys
        self.data_dir = Path(data_dir)
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._cursor = 0
        self._pending: dict[str, float] = {}  # job -> when its job.open was first seen
        self.jobs_served = 0
        self.released: set[str] = set()

    def _served(self) -> dict[str, Path]:
        d = self.data_dir / "dealer"
        out = {}
        for f in sorted(d.glob("dealer-*.cbor")) if d.exists() else []:
            try:
                st = decode_cbor(f.read_bytes())
                if st.get("status") == "done":
                    out[st["job_id"]] = f
            except Exception:
                log.warning("unreadable dealer state %s", f)
        return out

    def poll_once(self) -> bool:
        """Serve newly opened jobs that name this dealer (once their assignment is on the ledger, within the
        timeout), then answer challenges. Returns whether a job ran."""
        ran = False
        for le in self._feed().drain():
            self._cursor = le.index + 1
            if le.entry.body.get("dealer") == self.keys.node_id:
                self._pending.setdefault(le.entry.body["job_id"], time.monotonic())
        for job_id, seen in list(self._pending.items()):
            try:
                safe_id(job_id, "job id")
                if _state_path(self.data_dir / "dealer", job_id).exists() or self.led.by_job(job_id, kind=E.DEALER_COMMIT):
                    del self._pending[job_id]
                    continue
                if job_failed(self.led, job_id) is not None:
                    del self._pending[job_id]
                    log.warning("job %r: closed by its opener (job.fail); not serving it", job_id)
                    continue
                if not self.led.by_job(job_id, kind=E.JOB_ASSIGN):
                    if time.monotonic() - seen > self.timeout_s:
                        del self._pending[job_id]
                        log.warning("job %r: no assignment within %.0f s; not serving it", job_id, self.timeout_s)
                    continue  # the client posts the assignment with the job; look again on the next poll
                del self._pending[job_id]
                run_dealer_job(self.led, self.keys, job_id, self.data_dir / "dealer", self.timeout_s)
                self.jobs_served += 1
                ran = True
            except Exception as exc:  # a bad job must not take the dealer down
                self._pending.pop(job_id, None)
                log.error("job %r: cannot serve it: %s: %s", job_id, type(exc).__name__, exc)
        for job_id, f in self._served().items():
            if job_id in self.released:
                continue
            try:
                idx = release_for_challenge(self.led, self.keys, f, job_id,
                                            serve=self._serve if self._blob_server is not None else None)
                if idx is not None:
                    self.released.add(job_id)
                    log.info("job %s: released seeds for the challenge (entry #%d)", job_id, idx)
            except Exception as exc:
                self.released.add(job_id)  # not retried: a bad job must not make the dealer spin
                log.error("job %s: no release: %s: %s", job_id, type(exc).__name__, exc)
        return ran

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until `stop` is set."""
        torch.set_num_threads(1)  # one thread per role process: spinning thread pools starve the peers
        stop = stop or threading.Event()
        log.info("dealer %s serving", self.keys.node_id)
        if self.serve_releases is not None and self._blob_server is None:
            host, _, port = self.serve_releases.rpartition(":")
            self._blob_server = BlobServer(self._served_blob, host.strip("[]") or "127.0.0.1", int(port or 0))
            log.info("dealer %s serves its releases at %s", self.keys.node_id, self._blob_server.url)
        while not stop.is_set():
            self._heartbeat_if_due()
            self.answer_requests()
            if not self.poll_once():  # re-scan once the ledger grew, or a pending job's timeout is due
                self._feed().wait(next_wake([*(seen + self.timeout_s for seen in self._pending.values()),
                                             *([self._next_heartbeat] if self.heartbeat_s is not None else [])],
                                            self.poll_s), stop)
        if self._blob_server is not None:
            self._blob_server.close()
            self._blob_server = None
        log.info("dealer %s stopped", self.keys.node_id)

    # --- served releases ------------------------------------------------------------------
    def _served_dir(self, job_id: str) -> Path:
        return self.data_dir / "dealer" / "served" / safe_id(job_id, "job id")

    def _serve(self, job_id: str, blob: bytes) -> tuple[bytes, str]:
        """Keep a release to serve it; its digest and the URL it is served at."""
        return keep_blob(self._served_dir(job_id), blob), self._blob_server.url

    def _served_blob(self, digest: bytes) -> bytes | None:
        for f in (self.data_dir / "dealer" / "served").glob(f"*/{digest.hex()}"):
            return f.read_bytes()
        return None

    def answer_requests(self) -> None:
        """Put every release this dealer serves that someone requested on the ledger (`blob.provide`), once."""
        if self._requests is None:
            self._requests = self.led.subscribe(start=0, kind=E.BLOB_REQUEST)
        answer_blob_requests(self.led, self._requests, self.keys.node_id, self.keys.identity, self._provided_release)

    def _provided_release(self, job_id: str, digest: bytes) -> bytes | None:
        """A release this dealer serves for `job_id`, by digest (None if it serves none such)."""
        f = self._served_dir(job_id) / digest.hex()
        return f.read_bytes() if f.exists() else None

    def _heartbeat_if_due(self) -> None:
        """Post a `node.heartbeat` (no models: a dealer holds none) at start, then every `heartbeat_s`."""
        if self.heartbeat_s is None or time.monotonic() < self._next_heartbeat:
            return
        self._next_heartbeat = time.monotonic() + self.heartbeat_s
        try:
            self.led.append(E.make_entry(self.keys.identity, E.HEARTBEAT, B.Heartbeat(self.keys.node_id).to_body()))
        except Exception as exc:  # a missed heartbeat must not take the dealer down
            log.warning("heartbeat not posted: %s: %s", type(exc).__name__, exc)

    def _feed(self) -> Subscription:
        """The job.open entries from `_cursor` on (created once; `wait` wakes on any growth of the ledger)."""
        if getattr(self, "_sub", None) is None:
            self._sub = self.led.subscribe(start=self._cursor, kind=E.JOB_OPEN)
        return self._sub
