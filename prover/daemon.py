"""`prover serve`: the node daemon. Jobs and challenges arrive as ledger entries.

A node polls the ledger for `job.assign` entries naming its id. For each job it
reads `job.open` (params: `prompt_len`, `steps`, `rendezvous` HOST:PORT), waits
for the dealer's `dealer.commit`, joins the job's mesh (prover.wire: the
parties, the dealer, the client), receives its dealer seed sealed on a private
channel (checked against the dealer's seed commitment), runs its party of the
private generation with sealed one-hot input shares in and sealed logit shares
out, exchanges signed broadcast receipts with its peers (mpc_core.broadcast),
commits to its transcript and posts its BLS-signed `node.job_root` with the
receipts it holds. What it needs to open the job later
(records, token shares, node secret; the spilled step tensors) stays under
`data_dir/jobs/<job>/`, so a restarted daemon skips finished jobs and can still
answer their challenges: once the job is sealed it reveals its challenge beacon,
posts the derived challenge if nobody has, and opens its party if the counted
challenge opens it (`answer_challenge`, specs/node-daemon.md section 4); a
challenge that does not follow from the derivation is never answered.

Ranks and wire format: prover.wire. The dealer is its own role (prover.dealer_service).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ledger import Ledger
from ledger import entries as E
from ledger.keys import ed25519_verify
from ledger.subscribe import Subscription
from prover.ledger_view import job_closed, next_wake, standby_check
from mpc_core import prg
from mpc_core.dealer import SeededDealerClient
from mpc_core.broadcast import BroadcastLog, receipt_message
from mpc_core.mesh import STALL_TIMEOUTS, Mesh, MeshCommunicator
from mpc_core.replicas import Layout
from mpc_core.encoding import canonical_cbor, decode_cbor, tensor_bytes, tensor_from_bytes
from mpc_core.errors import EncodingError
from mpc_core.session import Session
from mpc_core.transcript import Transcript
from prover.blob_server import BlobServer, answer_blob_requests, keep_blob
from prover.channels import MAX_SEALED, PURPOSE_DEALER, PURPOSE_INPUT, PURPOSE_OUTPUT, ReplayGuard, open_, seal
from prover.dealer_service import SealedDealerLink, receive_prefetch
from protocol.commitments import commit, replica_secret
from prover.errors import ProverError
from prover.keys import NodeKeys, lookup_peer
from protocol import bodies as B
from protocol.challenge import beacon_commitment, beacon_value
from protocol.errors import JobError
from protocol.job_view import challenge_state, read_job_from_ledger
from prover.local_files import safe_id, write_secret
from prover.model_delivery import REFRESH_SCHEME, fetch_share
from models.publish import MANIFEST_FILE, SALTS_FILE, commit_tensor, load_party_share, manifest_config, read_manifest
from protocol.opening import OpeningBlobs, dec_tensor, decode_records, enc_tensor, encode_records, node_opening
from protocol.program import party_program
from protocol.weight_refresh import job_salts, read_keys, refreshed
from prover.wire import MAX_RECEIPT, MAX_RESUME_HEADER, client_rank, dealer_rank, join_job, rejoin_job

log = logging.getLogger("shardproof.daemon")



REPLICA_GRACE_S = 10.0  # a replica answers (reveal, opening) for its index this long after its twin could have


class DaemonError(ProverError):
    """A job or challenge the daemon cannot serve (bad job entries, missing model, bad dealer seed)."""


class _NotYet(DaemonError):
    """The job's entries are not all on the ledger yet (e.g. the dealer has not committed)."""


@dataclass
class JobInfo:
    """The ledger's description of one job, as a node needs it."""

    job_id: str
    model_id: str
    n_parties: int
    party: int
    client: str
    dealer: str
    prompt_len: int
    steps: int
    rendezvous: str
    seed_commitment: bytes
    refresh: bool = False  # use the job's refreshed weight shares (protocol.weight_refresh)
    replica: int = 0
    replicas: int = 1
    standby: tuple[str, ...] = ()  # the job's standby nodes: with any, an index that lost every node is waited for
    resume: B.JobResume | None = None  # set when this node is the standby taking the party over

    @property
    def resumable(self) -> bool:
        return bool(self.standby)

    @property
    def layout(self) -> Layout:
        return Layout(self.n_parties, self.replicas)

    @property
    def rank(self) -> int:
        return self.layout.rank(self.party, self.replica)


class NodeDaemon:
    """One node: runs the jobs assigned to it and answers challenges on them (see the module docstring).

    `make_communicator`, `make_session`, `weight_share`, `opening_payload` and `opened_transcript` are the
    honest node's choices; test adversaries override them (sim.adversary.CheatingNodeDaemon)."""

    def __init__(self, ledger_url: str, keys: NodeKeys, data_dir: str | os.PathLike,
                 poll_s: float = 0.2, timeout_s: float = 60.0, heartbeat_s: float | None = 60.0,
                 serve_openings: str | None = "127.0.0.1:0"):
        self.ledger_url = ledger_url
        # HOST:PORT to serve openings on (prover.blob_server; port 0: any free port), or None to store
        # them on the ledger. Served openings keep the ledger small; an auditor that cannot fetch one
        # asks for it with a blob.request, which this node answers on the ledger (answer_requests).
        self.serve_openings = serve_openings
        self._blob_server = None
        self._requests: Subscription | None = None
        self.heartbeat_s = heartbeat_s  # None: post no node.heartbeat
        self._next_heartbeat = 0.0  # monotonic time the next heartbeat is due
        self.keys = keys
        self.node_id = keys.node_id
        self.data_dir = Path(data_dir)
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.led = Ledger.open(ledger_url, create=False)
        self._cursor = 0  # next ledger index to scan for assignments
        self._pending: dict[str, tuple[tuple[int, int], str, float]] = {}  # job -> ((party, replica), by, seen)
        self._resumes: Subscription | None = None  # job.resume entries (this node may be the standby named)
        self.jobs_run = 0
        self.handled: set[str] = set()  # jobs whose challenge was seen (answered, refused or not listed)
        self._graces: dict[tuple[str, str], float] = {}  # (job, reveal|open) -> when a twin first could answer

    # --- paths and state -----------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / safe_id(job_id, "job id")

    def status(self, job_id: str) -> str | None:
        """`started`, `done`, `failed` or None (never seen) for a job, from disk."""
        f = self.job_dir(job_id) / "status"
        return f.read_text().strip() if f.exists() else None

    def _set_status(self, job_id: str, status: str) -> None:
        d = self.job_dir(job_id)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "status.tmp"
        tmp.write_text(status)
        os.replace(tmp, d / "status")

    # --- main loop -----------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, max_jobs: int | None = None) -> None:
        """Serve until `stop` is set, or, with `max_jobs`, once that many jobs ran here and each was challenged."""
        stop = stop or threading.Event()
        (self.data_dir / "jobs").mkdir(parents=True, exist_ok=True)
        log.info("node %s serving %s", self.node_id, self.ledger_url)
        self._start_blob_server()
        while not stop.is_set():
            self._heartbeat_if_due()
            ran = self.poll_once(stop)
            if max_jobs is not None and self.jobs_run >= max_jobs and not self._open_challenges_pending():
                break
            if not ran:  # re-scan once the ledger grew, or a pending job's timeout is due
                self._feed().wait(next_wake([*(seen + self.timeout_s for _, _, seen in self._pending.values()),
                                             *self._heartbeat_due(),
                                             *(t + REPLICA_GRACE_S for t in self._graces.values()
                                               if time.monotonic() - t < REPLICA_GRACE_S)], self.poll_s), stop)
        if self._blob_server is not None:
            self._blob_server.close()
            self._blob_server = None
        log.info("node %s stopped", self.node_id)

    # --- served openings -----------------------------------------------------------------
    def _start_blob_server(self) -> None:
        if self.serve_openings is None or self._blob_server is not None:
            return

        host, _, port = self.serve_openings.rpartition(":")
        self._blob_server = BlobServer(self.served_blob, host.strip("[]") or "127.0.0.1", int(port or 0))
        log.info("node %s serves its openings at %s", self.node_id, self._blob_server.url)

    def served_blob(self, digest: bytes) -> bytes | None:
        """The bytes of a blob this node serves (an opening it posted by digest), or None."""
        name = digest.hex()
        for f in (self.data_dir / "jobs").glob(f"*/served/{name}"):
            return f.read_bytes()
        return None

    def _keep_served(self, job_id: str, data: bytes) -> bytes:
        """Keep `data` in the job's directory to serve it (and answer requests for it); its digest."""
        return keep_blob(self.job_dir(job_id) / "served", data)

    def answer_requests(self) -> None:
        """Put every blob this node serves that someone requested on the ledger (`blob.provide`), once."""
        if self._requests is None:
            self._requests = self.led.subscribe(start=0, kind=E.BLOB_REQUEST)
        answer_blob_requests(self.led, self._requests, self.node_id, self.keys.identity, self.provided_blob)

    def provided_blob(self, job_id: str, digest: bytes) -> bytes | None:
        """What this node puts on the ledger when a blob it serves for `job_id` is requested."""
        try:
            f = self.job_dir(job_id) / "served" / digest.hex()
        except ProverError:
            return None
        return f.read_bytes() if f.exists() else None

    def _heartbeat_due(self) -> list[float]:
        return [self._next_heartbeat] if self.heartbeat_s is not None else []

    def _heartbeat_if_due(self) -> None:
        """Post a `node.heartbeat` (at start, then every `heartbeat_s`): live, and the models held."""
        if self.heartbeat_s is None or time.monotonic() < self._next_heartbeat:
            return
        self._next_heartbeat = time.monotonic() + self.heartbeat_s
        try:
            self.led.append(E.make_entry(self.keys.identity, E.HEARTBEAT,
                                         B.Heartbeat(self.node_id, tuple(self.models_held())).to_body()))
        except Exception as exc:  # a missed heartbeat must not take the daemon down
            log.warning("heartbeat not posted: %s: %s", type(exc).__name__, exc)

    def models_held(self) -> list[str]:
        """Published model ids whose share this node holds: on disk, or delivered to it on the ledger."""
        d = self.data_dir / "models"
        held = {p.name for p in d.iterdir() if (p / MANIFEST_FILE).exists()} if d.exists() else set()
        first: set[str] = set()
        for le in self.led.query(kind=E.MODEL):
            if le.entry.body["model_id"] in first:
                continue  # the first publication of an id is the model (prover.model_delivery.fetch_share)
            first.add(le.entry.body["model_id"])
            deliveries = (le.entry.body.get("meta") or {}).get("deliveries", [])
            if isinstance(deliveries, list) and any(isinstance(x, dict) and x.get("node") == self.node_id
                                                    for x in deliveries):
                held.add(le.entry.body["model_id"])
        return sorted(held)[:E.MAX_LIST]

    def _feed(self) -> Subscription:
        """The job.assign entries from `_cursor` on (created once; `wait` wakes on any growth of the ledger)."""
        if getattr(self, "_sub", None) is None:
            self._sub = self.led.subscribe(start=self._cursor, kind=E.JOB_ASSIGN)
        return self._sub

    def _open_challenges_pending(self) -> bool:
        return any(self.status(j) == "done" and j not in self.handled for j in self._my_jobs())

    def _my_jobs(self) -> list[str]:
        d = self.data_dir / "jobs"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []

    def poll_once(self, stop: threading.Event | None = None) -> bool:
        """One pass: run newly assigned jobs (once their dealer has committed), answer challenges.

        Returns whether a job ran."""
        ran = False
        for le in self._feed().drain():
            self._cursor = le.index + 1
            parties = [(a["party"], a["replica"]) for a in le.entry.body["assignments"]
                       if a["node"] == self.node_id and a.get("stage", 0) == 0]
            if parties:
                self._pending.setdefault(le.entry.body["job_id"], (parties[0], le.entry.author, time.monotonic()))
        if self._resumes is None:
            self._resumes = self.led.subscribe(start=0, kind=E.JOB_RESUME)
        for le in self._resumes.drain():
            b = le.entry.body
            if b.get("standby") == self.node_id and isinstance(b.get("party"), int):
                self._pending.setdefault(b["job_id"], ((b["party"], 0), le.entry.author, time.monotonic()))
        for job_id, (party, author, seen) in list(self._pending.items()):
            if stop is not None and stop.is_set():
                return ran
            try:
                if self.status(job_id) is not None:
                    del self._pending[job_id]
                    continue  # finished, failed or interrupted earlier: never run a job twice
                info = self._job_info(job_id, party, author)
            except _NotYet as exc:
                if time.monotonic() - seen > self.timeout_s:
                    del self._pending[job_id]
                    log.warning("job %r: gave up waiting: %s", job_id, exc)
                continue
            except (ProverError, KeyError, TypeError, ValueError) as exc:
                del self._pending[job_id]
                log.warning("job %r: cannot serve it: %s", job_id, exc)
                continue
            del self._pending[job_id]
            self._set_status(job_id, "started")
            try:
                self.run_job(info)
                self._set_status(job_id, "done")
                self.jobs_run += 1
                log.info("job %s: party %d done", job_id, info.party)
            except Exception as exc:  # a failed job must not take the daemon down
                self._set_status(job_id, "failed")
                log.error("job %s: failed: %s: %s", job_id, type(exc).__name__, exc)
            ran = True
        self.answer_requests()
        for job_id in self._my_jobs():
            if job_id not in self.handled and self.status(job_id) == "done":
                try:
                    self.answer_challenge(job_id)
                except Exception as exc:
                    self.handled.add(job_id)
                    log.error("job %s: cannot answer the challenge: %s: %s", job_id, type(exc).__name__, exc)
        return ran

    def _job_info(self, job_id: str, slot: tuple[int, int], assigned_by: str) -> JobInfo:
        """The job as this node may serve it, read through the authorship rules (protocol.job_view)."""
        safe_id(job_id, "job id")
        try:
            view = read_job_from_ledger(self.led, job_id)
        except JobError as exc:
            raise DaemonError(str(exc)) from None
        if view.fail is not None:
            raise DaemonError(f"the job's opener closed it: {view.fail.body.reason}")
        if view.assign is None:
            raise DaemonError(f"no valid job.assign by the job's opener {view.opener} (seen one by {assigned_by})")
        party, replica = slot
        resume = view.resumes.get(party)
        if resume is not None and resume.body.standby != self.node_id:
            resume = None
        if view.replica_nodes.get((party, replica)) != self.node_id:
            raise DaemonError(f"the counted assignment does not give party {party} replica {replica} to this node")
        if view.dealer_commit is None:
            raise _NotYet(f"no dealer.commit by {view.dealer} yet")
        jo = view.open.body
        model_id = safe_id(jo.model_id, "model id")
        refresh = view.publish is not None and view.publish.body.refresh == REFRESH_SCHEME
        if refresh and view.refresh is None:
            raise _NotYet("no model.refresh by the model's owner yet")
        params = jo.params
        return JobInfo(job_id, model_id, jo.n_parties, party, jo.client or jo.dealer, jo.dealer,
                       int(params["prompt_len"]), int(params["steps"]), str(params["rendezvous"]),
                       view.dealer_commit.body.seeds[party], refresh, replica, view.replicas, jo.standby,
                       resume.body if resume is not None else None)

    # --- one job -------------------------------------------------------------------------
    def run_job(self, info: JobInfo) -> None:
        """Run this node's party of `info`'s job, persist its state and post its job root."""
        model_dir = self.data_dir / "models" / info.model_id
        if not (model_dir / MANIFEST_FILE).exists():
            party = fetch_share(self.led, self.keys, info.model_id, model_dir)  # the owner's sealed delivery
            log.info("model %s: fetched and checked the share of party %d", info.model_id, party)
        manifest = read_manifest(model_dir)
        if manifest["n_parties"] != info.n_parties:
            raise DaemonError(f"model has {manifest['n_parties']} shares, job has {info.n_parties} parties")
        dealer_peer, client_peer = lookup_peer(self.led, info.dealer), lookup_peer(self.led, info.client)
        if dealer_peer is None or client_peer is None or dealer_peer.x25519 is None or client_peer.x25519 is None:
            raise DaemonError("dealer or client has no registered X25519 key")
        n, p, job = info.n_parties, info.party, info.job_id.encode()
        layout, rank, R = info.layout, info.rank, info.replicas
        peers = self._party_keys(info)
        jdir = self.job_dir(info.job_id)
        jdir.mkdir(parents=True, exist_ok=True)
        guard = ReplayGuard()
        token_shares: list[torch.Tensor] = []
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        if info.resume is not None:
            mesh = rejoin_job(info.rendezvous, rank, n, info.job_id, self.timeout_s, self.node_id, self.keys.sign,
                              with_dealer=p == n - 1, replicas=R)
        else:
            mesh = join_job(info.rendezvous, rank, n, info.job_id, self.timeout_s, replicas=R, resumable=info.resumable)
        t_join = time.perf_counter()
        log.info("job %s: %s the mesh as party %d replica %d (rank %d)", info.job_id,
                 "rejoined" if info.resume is not None else "joined", p, info.replica, rank)
        dealer, client = dealer_rank(n, R), client_rank(n, R)
        bcast = BroadcastLog(rank, layout.party_ranks, tuple(layout.peer_ranks(rank)))
        have = 0  # steps whose output the client already has (a standby does not send those again)
        try:
            if info.resume is not None and p != n - 1:
                sealed = self._standby_seed(info)
            else:  # the dealer's sealed message (to a standby of the last index: when it takes over)
                sealed = mesh.recv(dealer, MAX_SEALED)
            seed_msg = decode_cbor(open_(self.keys, sealed, dealer_peer.x25519, sender=info.dealer,
                                         job=info.job_id, purpose=PURPOSE_DEALER, replay=guard).payload)
            seed = bytes(seed_msg["seed"])
            if prg.seed_commitment(seed, job, p) != info.seed_commitment:
                raise DaemonError("the dealer's seed does not match its commitment on the ledger")
            link = corrections = None
            if p == n - 1:  # the last party: the dealer's bulk corrections for its plan, the link for the rest
                link = SealedDealerLink(mesh, n, info.job_id, bytes(seed_msg["corrections_key"]), R)
                header = seed_msg.get("prefetch") or {"requests_bytes": 0, "bytes": 0, "messages": 0}
                t_pre = time.perf_counter()
                corrections = receive_prefetch(self.keys, mesh, header, dealer, dealer_peer.x25519, info.dealer,
                                               info.job_id, guard, link.fetch)
                log.info("job %s: received %d prefetched corrections (%d bytes) in %.2f s", info.job_id,
                         len(corrections.requests), len(corrections.payload), time.perf_counter() - t_pre)
            dealer_client = SeededDealerClient(p, n, job, seed, corrections)
            comm = self.make_communicator(mesh, n, bcast, R)
            if info.resume is not None:  # the client's and the peers' resumption headers (specs/node-daemon.md 8)
                have = self._client_header(mesh, client, info)
                comm.catch_up({j: self._header(mesh, j) for j in comm.peers if j in mesh.links})
                log.info("job %s: resuming party %d for %s from step %d", info.job_id, p, info.resume.lost, have)
            elif info.resumable:
                comm.rejoin = lambda j, why: self._await_standby(info, mesh, j, why)
            session = self.make_session(comm, dealer_client, job, jdir, manifest["frac_bits"])
            V = manifest_config(manifest).vocab_size

            def inputs():
                """The client's sealed one-hot input shares (1, T, V), one per step, as the program asks."""
                for i in range(info.steps):
                    T = info.prompt_len if i == 0 else 1
                    if (R > 1 or info.resumable) and not mesh.wait_readable(client, STALL_TIMEOUTS * self.timeout_s):
                        raise DaemonError(f"the client sent no input for step {i} in {STALL_TIMEOUTS} timeouts")
                    # (the client's next input waits on every index's output, which a silent replica elsewhere
                    # holds up for a timeout before its peers drop it)
                    opened = open_(self.keys, mesh.recv(client, MAX_SEALED), client_peer.x25519, sender=info.client,
                                   job=info.job_id, purpose=PURPOSE_INPUT, replay=guard)
                    if opened.counter != i:
                        raise DaemonError(f"input share #{opened.counter} where #{i} was due")
                    onehot = tensor_from_bytes(opened.payload, (T, V))
                    token_shares.append(onehot.clone())
                    yield onehot.unsqueeze(0)

            t_ready = time.perf_counter()
            try:
                share = self.weight_share(model_dir, manifest, p, info.job_id if info.refresh else None)
                weights = {name: t.unsqueeze(0) for name, t in share.items()}
                for i, logits in enumerate(party_program(session, manifest, weights, inputs())):
                    if i < have:
                        continue  # the lost node delivered it
                    out = tensor_bytes(logits.data[0].contiguous())
                    mesh.send(client, seal(self.keys, client_peer.x25519, info.client, info.job_id, PURPOSE_OUTPUT,
                                           out, i))
            finally:
                if link is not None:
                    link.close(corrections.used)
            t_run = time.perf_counter()
            if comm.rejoined:  # a standby holds a peer rank now: its receipts are signed with its key
                peers = self._party_keys(info)
            heard, disputes = self._exchange_receipts(info, mesh, bcast, peers, comm.live)
            lost = dict(comm.lost)
        finally:
            mesh.close()
        online = corrections.online_requests if corrections is not None else 0
        log.info("job %s: joined the mesh in %.2f s, received the dealer's material in %.2f s, ran %d steps in "
                 "%.2f s (%d rounds, %d online dealer requests)", info.job_id, t_join - t0, t_ready - t_join,
                 info.steps, t_run - t_ready, bcast.count, online)
        log.info("job %s: rank %d sent %d bytes to %d peer ranks in %d rounds", info.job_id, rank, comm.sent_bytes,
                 len(comm.peers), bcast.count)
        if lost:
            log.warning("job %s: lost replica rank(s) %s", info.job_id, ", ".join(f"{r} ({w})" for r, w in lost.items()))
        transcript = session.transcripts[p]
        # Every replica of this index commits with the same salts and beacon (so honest replicas post equal roots,
        # and any of them can reveal or open for the index): the secret comes from the index's dealer seed and
        # its weight-share salts, which only its holders know both of (specs/audit.md sections 1-2).
        secret = replica_secret(seed, (model_dir / f"party{p}" / SALTS_FILE).read_bytes(), info.job_id, p)
        commitment, _ = commit(transcript.records, secret, job, p)
        transcript.close()
        write_secret(jdir / "secret.bin", secret)
        write_secret(jdir / "state.cbor", canonical_cbor({
            "job_id": info.job_id, "party": p, "replica": info.replica, "n_parties": n, "model_id": info.model_id,
            "refresh": info.refresh,
            "records": encode_records(transcript.records, with_offsets=True),
            "tokens": [enc_tensor(t) for t in token_shares]}))
        root = commitment.root
        beacon = beacon_commitment(info.job_id, p, beacon_value(secret, info.job_id, p))
        sig = self.keys.bls_sign(E.job_root_message(info.job_id, self.node_id, p, info.replica, root, commitment.steps))
        self.led.append(E.make_entry(self.keys.identity, E.JOB_ROOT, B.JobRoot(
            info.job_id, self.node_id, p, info.replica, root, commitment.steps, sig, commitment.views_root,
            commitment.opened_root, beacon, tuple(B.Receipt(*r) for r in heard), tuple(disputes),
            corrections.head if corrections is not None else None).to_body()))

    # --- resumption (specs/node-daemon.md section 8) --------------------------------------
    def _standby_seed(self, info: JobInfo) -> bytes:
        """The dealer's seed message sealed to this standby in the job's dealer.commit."""
        dc = read_job_from_ledger(self.led, info.job_id).dealer_commit
        mine = dc.body.standby.get(self.node_id) if dc is not None else None
        if mine is None or mine[0] != info.party:
            raise DaemonError(f"the dealer sealed no seed of party {info.party} to this standby")
        return mine[1]

    @staticmethod
    def _header(mesh: Mesh, rank: int) -> object:
        try:
            return decode_cbor(mesh.recv(rank, MAX_RESUME_HEADER))
        except EncodingError as exc:
            raise DaemonError(f"rank {rank} sent a bad resumption header: {exc}") from None

    def _client_header(self, mesh: Mesh, client: int, info: JobInfo) -> int:
        h = self._header(mesh, client)
        if not (isinstance(h, list) and len(h) == 1 and isinstance(h[0], int) and not isinstance(h[0], bool)
                and 0 <= h[0] < info.steps):
            raise DaemonError("the client sent a bad resumption header")
        return h[0]

    def _await_standby(self, info: JobInfo, mesh: Mesh, rank: int, why: Exception) -> None:
        """Hold the job while party rank `rank` is lost: wait up to the timeout for the standby that a counted
        job.resume names to rejoin (its hello signed with its registered key); give up if the job is closed."""
        party = info.layout.party_of(rank)
        log.warning("job %s: party %d (rank %d) is lost (%s); holding for a standby", info.job_id, party, rank, why)
        node = mesh.admit_rejoin(rank, standby_check(self.led, info.job_id, party), time.monotonic() + self.timeout_s,
                                 job_closed(self.led, info.job_id))
        log.info("job %s: standby %s took over party %d (rank %d)", info.job_id, node, party, rank)

    def make_communicator(self, mesh: Mesh, n_parties: int, bcast: BroadcastLog, replicas: int = 1
                          ) -> MeshCommunicator:
        """The transport of this node's party in a job: rounds over the job's mesh, chained into `bcast`."""
        return MeshCommunicator(mesh, n_parties, broadcast_log=bcast, replicas=replicas)

    def make_session(self, comm: MeshCommunicator, dealer: SeededDealerClient, job: bytes, jdir: Path,
                     frac_bits: int) -> Session:
        """The MPC session of this node's party in a job, spilling its transcript under `jdir`."""
        return Session(comm, dealer, job=job, transcript_dir=str(jdir), frac_bits=frac_bits)

    def _party_keys(self, info: JobInfo) -> dict[int, bytes]:
        """The registered Ed25519 key of every peer rank's node (to check their broadcast receipts)."""
        view = read_job_from_ledger(self.led, info.job_id)
        layout = info.layout
        out = {}
        for rank in layout.peer_ranks(info.rank):
            node = view.replica_nodes.get((layout.party_of(rank), layout.replica_of(rank)), "")
            peer = lookup_peer(self.led, node)
            if peer is None:
                raise DaemonError(f"rank {rank}'s node {node!r} is not registered")
            out[rank] = peer.ed25519
        return out

    def _exchange_receipts(self, info: JobInfo, mesh: Mesh, bcast: BroadcastLog, peers: dict[int, bytes],
                           live: list[int]) -> tuple[list, list]:
        """Sign, for each live peer rank, the chain of what this rank sent it; check the peers' receipts for us.

        Returns (valid receipts heard [sender rank, count, head, signature], ranks whose receipt did not
        match what this rank received). With replicas or standbys, a peer lost now is left out (it posts no root)."""
        me = info.rank
        mine = {}
        for j in live:
            msg = receipt_message(info.job_id, me, j, bcast.counts[j], bcast.sent[j])
            mine[j] = canonical_cbor([bcast.counts[j], bcast.sent[j], self.keys.sign(msg)])
        if info.replicas == 1 and not info.resumable:
            got = mesh.exchange(mine, MAX_RECEIPT)
        else:  # a peer lost after the last round: this node still posts its root (the peer is unresponsive)
            got, lost = mesh.exchange_live(mine, MAX_RECEIPT)
            for j, exc in lost.items():
                log.warning("job %s: rank %d left before its broadcast receipt: %s", info.job_id, j, exc)
        heard, disputes = [], []
        for j in live:
            if j not in got:
                continue
            try:
                count, head, sig = decode_cbor(got[j])
                msg = receipt_message(info.job_id, j, me, count, bytes(head))
                ok = (count == bcast.counts[j] and bytes(head) == bcast.received[j]
                      and ed25519_verify(peers[j], msg, bytes(sig)))
            except Exception:
                ok = False
            if ok:
                heard.append([j, count, bytes(head), bytes(sig)])
            else:
                disputes.append(j)
                log.warning("job %s: rank %d's broadcast receipt does not match what it sent here", info.job_id, j)
        return heard, disputes

    def weight_share(self, model_dir: Path, manifest: dict, party: int,
                     refresh_job: str | None) -> dict[str, torch.Tensor]:
        """This node's weight share for a job: the published share (checked against the owner's commitments),
        or with `refresh_job` that job's refreshed share (checked against the owner's refresh commitments)."""
        share = load_party_share(model_dir, party, manifest)  # checked against the owner's commitments
        if refresh_job is not None:  # this job's fresh sharing W_i^t (protocol.weight_refresh)
            keys = read_keys(model_dir / f"party{party}", party, manifest["n_parties"])
            share = refreshed(share, keys, refresh_job)
            # The owner's commitments must open to what this node computed; else an honest node would be
            # accused for the owner's mistake: refuse the job instead.
            entry = read_job_from_ledger(self.led, refresh_job).refresh
            table = decode_cbor(self.led.get_blob(entry.entry.body["commitments"])) if entry is not None else {}
            salts = job_salts(keys, refresh_job, share)
            for name, t in share.items():
                row = table.get(name) if isinstance(table, dict) else None
                if (not isinstance(row, list) or len(row) != manifest["n_parties"]
                        or bytes(row[party]) != commit_tensor(name, t, salts[name], manifest["frac_bits"])):
                    raise DaemonError(f"the owner's refresh commitment of {name} does not match this node's share")
        return share

    # --- challenges ----------------------------------------------------------------------
    def answer_challenge(self, job_id: str) -> None:
        """This node's duties after a job (specs/audit.md sections 2-3), one step per call as the ledger
        allows: once the job is sealed, reveal its challenge beacon; once every beacon is revealed,
        post the derived challenge if nobody has; if the counted challenge opens this node's party,
        post the opening. Entries that do not follow from the derivation are ignored."""
        jdir = self.job_dir(job_id)
        state = decode_cbor((jdir / "state.cbor").read_bytes())
        p, replica = state["party"], state.get("replica", 0)
        st = challenge_state(self.led, job_id)
        view = st.view
        mine = view.replica_roots.get((p, replica))
        if view.replica_nodes.get((p, replica)) != self.node_id or mine is None or p not in view.roots:
            return  # this node's job root does not count (yet): nothing to reveal or open
        if st.seal is None:
            return
        # With replicas the author of the index's root answers for the index at once; a twin whose root equals
        # it steps in after REPLICA_GRACE_S (the author may be gone); a divergent replica answers for itself.
        first = view.roots[p].author == self.node_id
        same = mine.body.root == view.roots[p].body.root
        if p not in view.reveals:
            if same and (first or self._grace_over(job_id, "reveal")):
                secret = (jdir / "secret.bin").read_bytes()
                self.led.append(E.make_entry(self.keys.identity, E.REVEAL, B.Reveal(
                    job_id, p, beacon_value(secret, job_id, p)).to_body()))
                log.info("job %s: revealed the challenge beacon of party %d", job_id, p)
            return
        if st.derived is None:
            return  # other participants have not revealed yet
        if st.counted is None:
            d = st.derived
            self.led.append(E.make_entry(self.keys.identity, E.CHALLENGE, B.Challenge(
                job_id, d.checkpoint_size, d.checkpoint_root, d.seed, tuple(d.opened)).to_body()))
            return
        if p not in st.opened:
            self.handled.add(job_id)
            log.info("job %s: party %d not opened by the challenge", job_id, p)
            return
        if (p, self.node_id) in view.replica_openings or (same and p in view.openings) or p in view.conflicting:
            self.handled.add(job_id)
            return  # answered (before a restart, or by a twin with this root)
        if same and not first and not self._grace_over(job_id, "open"):
            return  # the index root's author opens; this twin waits, then steps in
        self.handled.add(job_id)
        blobs = self.opening_payload(job_id, state)
        if self._blob_server is not None:  # served by this node: the ledger holds the digests only
            public = self._keep_served(job_id, blobs.public) if blobs.public is not None else None
            data = self._keep_served(job_id, blobs.data)
            body = B.Opening(job_id, self.node_id, p, st.counted.index, data, public, True, self._blob_server.url)
        else:
            public = self.led.put_blob(blobs.public) if blobs.public is not None else None
            data = self.led.put_blob(blobs.data)
            body = B.Opening(job_id, self.node_id, p, st.counted.index, data, public)
        self.led.append(E.make_entry(self.keys.identity, E.OPENING, body.to_body()))
        log.info("job %s: opened party %d for challenge #%d", job_id, p, st.counted.index)

    def _grace_over(self, job_id: str, what: str) -> bool:
        """Whether REPLICA_GRACE_S passed since this daemon first asked for (job, what)."""
        since = self._graces.setdefault((job_id, what), time.monotonic())
        return time.monotonic() - since >= REPLICA_GRACE_S

    def opening_payload(self, job_id: str, state: dict) -> OpeningBlobs:
        """The blobs this node posts when its party of `job_id` is validly challenged: its opening."""
        return self.opening_blob(job_id, state)

    def opening_blob(self, job_id: str, state: dict) -> OpeningBlobs:
        """This node's opening of a finished job, rebuilt from what it kept on disk."""
        jdir = self.job_dir(job_id)
        p = state["party"]
        secret = (jdir / "secret.bin").read_bytes()
        transcript = Transcript.reopen(p, jdir, decode_records(state["records"], with_offsets=True))
        try:
            _, salts = commit(transcript.records, secret, job_id.encode(), p)
            model_dir = self.data_dir / "models" / safe_id(state["model_id"], "model id")
            return node_opening(self.opened_transcript(transcript), salts, model_dir, p,
                                [dec_tensor(t) for t in state["tokens"]],
                                refresh_job=job_id if state.get("refresh") else None)
        finally:
            transcript.close()

    def opened_transcript(self, transcript: Transcript):
        """What this node reveals of its transcript in an opening (`records`, `load(step)`): the transcript itself."""
        return transcript
