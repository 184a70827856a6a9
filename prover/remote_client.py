"""The client of a ledger job run by `prover serve` nodes (specs/audit.md, specs/node-daemon.md).

`run_remote_job` posts `job.open` (params: prompt length, steps, the mesh's
rendezvous, which it listens on) and `job.assign`, joins the job's mesh as the client rank
(prover.wire) and plays the client: sealed one-hot input shares out, sealed
logit shares in, sampling locally through the one client loop
(protocol.program.client_loop). The dealer is a separate role: a
`shardproof dealer serve` daemon named by `dealer=`, or, when the deployment
puts the dealer inside the client, a dealer process this function starts with
the client's own keys (prover.dealer_service).
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import time
from pathlib import Path
from typing import Callable

import torch

from ledger import Ledger
from ledger import entries as E
from mpc_core.encoding import canonical_cbor, tensor_bytes, tensor_from_bytes
from mpc_core.errors import PeerTimeout, TransportError
from mpc_core.replicas import MAX_REPLICAS, Layout, pick
from mpc_core.ring import decode
from mpc_core.shares import additive_split
from prover.channels import MAX_SEALED, PURPOSE_INPUT, PURPOSE_OUTPUT, ReplayGuard, open_, seal
from prover.dealer_service import dealer_process
from prover.errors import ProverError
from prover.keys import NodeKeys, lookup_peer
from prover.ledger_view import standby_check, wait_for
from prover.local_files import safe_id
from protocol.errors import BodyError, JobError
from protocol import bodies as B
from protocol.job_view import (job_failed, last_heartbeat, operator_problem, publication, published_manifest,
                               resume_problem)
from models.publish import manifest_config
from protocol.program import client_loop
from prover.wire import client_rank, dealer_rank, join_job, open_rendezvous


class RemoteJobError(ProverError):
    """The client side of a ledger job failed (unknown node, bad model, failed MPC)."""


class PreflightError(RemoteJobError):
    """A node or the dealer is not ready for a job (not registered, not live, not holding the model)."""


class StandbyRefused(PreflightError):
    """A standby the ledger would never let resume an index of this job (specs/node-daemon.md section 8)."""


class ResumeRefused(RemoteJobError):
    """A job.resume that would not count (protocol.job_view): not posted."""


class AssignmentRefused(PreflightError):
    """The node list can never make a job.assign that counts (a node named twice, or one operator given two
    share indices): waiting does not help."""


OUTPUT_WAIT_TIMEOUTS = 2  # with standbys (R = 1), a step's outputs may take this many timeouts (+5 s)
REPLICA_ROOT_WAIT_S = 15.0  # once every index has a root, how long the client waits for the other replicas' roots
DEFAULT_MAX_HEARTBEAT_AGE_S = 180.0  # 3x the daemons' default --heartbeat interval (60 s)


def assignment_rows(node_ids: list[str], n_parties: int | None = None) -> list[B.Assignment]:
    """The job.assign rows for `node_ids` in rank order (mpc_core.replicas): node i holds share index
    i mod N as replica i div N (N = `n_parties`, default len(node_ids): one replica per index)."""
    n = n_parties or len(node_ids)
    return [B.Assignment(nid, i % n, i // n) for i, nid in enumerate(node_ids)]


def assignment_problem(led: Ledger, node_ids: list[str], n_parties: int | None = None) -> str:
    """Why the rows of `assignment_rows(node_ids, n_parties)` would make a job.assign that does not count
    ("" if they would count, as far as the nodes go): a node named twice, or one operator given two
    indices, the operators read from the nodes' registrations on `led` (an unregistered node is its own
    operator)."""
    rows = assignment_rows(node_ids, n_parties)
    seen: dict[str, B.Assignment] = {}
    for a in rows:
        if a.node in seen:
            b = seen[a.node]
            what = (f"share indices {b.party} and {a.party}" if a.party != b.party
                    else f"share index {a.party} as replicas {b.replica} and {a.replica}")
            return f"node {a.node!r} is named twice ({what}); a node holds one share index of a job, once"
        seen[a.node] = a

    def operator_of(nid: str) -> str:
        peer = lookup_peer(led, nid)
        return peer.operator if peer is not None else nid

    return operator_problem(rows, operator_of)


def standby_plan(led: Ledger, standby: list[str], node_ids: list[str], model_id: str, n: int,
                 replicas: int) -> dict[int, list[str]]:
    """Share index -> the standbys that can resume it, in the order given (specs/node-daemon.md section 8).
    Raises StandbyRefused, before anything is posted, for a standby the ledger would not count: named
    twice or among the job's nodes, unregistered, holding no share of the model, or whose operator holds
    another index of the job."""
    if not standby:
        return {}
    try:
        pub = publication(led, model_id)
    except JobError as exc:
        raise StandbyRefused(str(exc)) from None
    out: dict[int, list[str]] = {}
    for node in standby:
        if standby.count(node) > 1 or node in node_ids:
            raise StandbyRefused(f"standby {node!r} is named twice or is one of the job's nodes")
        peer = lookup_peer(led, node)
        if peer is None or peer.x25519 is None:
            raise StandbyRefused(f"standby {node!r} is not registered with an X25519 key")
        idx = pub.delivered_index(node)
        if idx is None:
            raise StandbyRefused(f"standby {node!r} holds no share of model {model_id} (no delivery to it)")
        out.setdefault(idx, []).append(node)
    rows = assignment_rows(node_ids, n)

    def operator_of(nid: str) -> str:
        peer = lookup_peer(led, nid)
        return peer.operator if peer is not None else nid

    for idx, nodes in out.items():
        for node in nodes:
            why = operator_problem([*(r for r in rows if (r.party, r.replica) != (idx, 0)),
                                    B.Assignment(node, idx, 0)], operator_of)
            if why:
                raise StandbyRefused(f"standby {node!r}: {why}")
    return out


def post_resume(led: Ledger, client_keys: NodeKeys, rs: B.JobResume) -> None:
    """Post `rs` as the job's opener, after checking that it would count (else ResumeRefused, nothing
    written): a finished index, a closed job, a standby not named in job.open or holding no share of the
    index, or a `lost` node that does not hold it are refused (protocol.job_view.resume_problem)."""
    try:
        why = resume_problem(led, rs, client_keys.node_id)
    except JobError as exc:
        why = str(exc)
    if why:
        raise ResumeRefused(f"the job.resume would not count: {why}")
    led.append(E.make_entry(client_keys.identity, E.JOB_RESUME, rs.to_body()))


def preflight(ledger: str | Ledger, node_ids: list[str], model_id: str, dealer: str | None = None,
              max_age_s: float = DEFAULT_MAX_HEARTBEAT_AGE_S, n_parties: int | None = None,
              standby: list[str] | None = None) -> None:
    """Before opening a job: no node is named twice and no operator is given two share indices (else
    AssignmentRefused), every standby could resume an index (else StandbyRefused: `standby_plan`), every
    node and standby (and the dealer daemon, if named) is registered, has posted a `node.heartbeat` of its
    own within `max_age_s` seconds, and each node's lists `model_id`. Raises PreflightError with a one-line
    reason."""
    led = Ledger.open(ledger, create=False) if isinstance(ledger, str) else ledger
    why = assignment_problem(led, node_ids, n_parties)
    if why:
        raise AssignmentRefused(why)
    n = n_parties or len(node_ids)
    standby_plan(led, standby or [], node_ids, model_id, n, len(node_ids) // n)
    now = E.now_ms()
    for role, nid in ([("node", n) for n in [*node_ids, *(standby or [])]]
                      + ([("dealer", dealer)] if dealer is not None else [])):
        if lookup_peer(led, nid) is None:
            raise PreflightError(f"{role} {nid!r} is not registered on the ledger")
        hb = last_heartbeat(led, nid)
        if hb is None:
            raise PreflightError(f"{role} {nid!r} never announced itself on the ledger (no node.heartbeat); "
                                 f"is its daemon running?")
        age = (now - hb.entry.time) / 1000
        if age > max_age_s:
            raise PreflightError(f"{role} {nid!r} last announced itself {age:.0f} s ago (more than {max_age_s:g} s); "
                                 f"is its daemon running?")
        if role == "node" and model_id not in hb.body.models:
            held = ", ".join(hb.body.models[:5]) or "none"
            raise PreflightError(f"node {nid!r} does not hold model {model_id!r} (it holds: {held})")


def one_line(exc: BaseException, limit: int = 400) -> str:
    """The first line of an exception's message (some append C++ stack traces), shortened."""
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else type(exc).__name__
    return first if len(first) <= limit else first[:limit - 3] + "..."


def fail_job(led: Ledger, client_keys: NodeKeys, job_id: str, reason: str, opened_after: int = 0) -> bool:
    """Close `job_id` on the ledger with a `job.fail`, if this client opened it (at an index >= `opened_after`)
    and it is not closed yet. Returns whether a job.fail was posted."""
    opens = led.query(job_id=job_id, kind=E.JOB_OPEN, limit=1)
    if not opens or opens[0].entry.author != client_keys.node_id or opens[0].index < opened_after:
        return False
    if job_failed(led, job_id) is not None:
        return False
    led.append(E.make_entry(client_keys.identity, E.JOB_FAIL, B.JobFail(job_id, reason).to_body()))
    return True


def run_remote_job(ledger_url: str, client_keys: NodeKeys, node_ids: list[str], model_id: str, prompt_ids: list[int],
                   steps: int, job_id: str, *, dealer_log: bool = False, **kwargs) -> dict:
    """Run one job (`_run_remote_job`, whose keyword arguments this takes); if it fails once opened, close it
    on the ledger with a `job.fail` and raise RemoteJobError with a one-line cause (the original is its
    __cause__). With `dealer_log`, the in-client dealer's stderr goes to `dealer-<job>.log` in its state dir."""
    led = Ledger.open(ledger_url, create=False)
    size_before = led.size()
    try:
        return _run_remote_job(ledger_url, client_keys, node_ids, model_id, prompt_ids, steps, job_id,
                               dealer_log=dealer_log, **kwargs)
    except (Exception, KeyboardInterrupt) as exc:
        reason = "interrupted by the client" if isinstance(exc, KeyboardInterrupt) else one_line(exc)
        try:
            fail_job(led, client_keys, job_id, reason, opened_after=size_before)
        except Exception:  # noqa: BLE001 - closing the job is best effort; the cause below matters more
            pass
        if not isinstance(exc, RemoteJobError):
            raise
        where = ""
        log_file = Path(kwargs.get("state_dir") or Path.cwd()) / f"dealer-{job_id}.log"
        if dealer_log and kwargs.get("dealer") is None and log_file.exists():
            where = f" (dealer log: {log_file})"
        raise RemoteJobError(reason + where) from exc
    finally:
        led.close()


def receipt_rounds(led: Ledger, job_id: str) -> int | None:
    """The number of rounds the parties of `job_id` ran, as their peers signed it in the broadcast receipts
    of the job roots on the ledger (the count most receipts hold, the larger on a tie; None if no job root
    holds a receipt). A figure for users, not evidence: a cheating party can sign any count."""
    counts: collections.Counter[int] = collections.Counter()
    for le in led.by_job(job_id, kind=E.JOB_ROOT):
        try:
            counts.update(r.count for r in B.JobRoot.from_entry(le.entry).receipts)
        except BodyError:  # a malformed job root tells nothing about the rounds
            continue
    return max(counts, key=lambda c: (counts[c], c)) if counts else None


def _onehot(ids: list[int], vocab: int) -> torch.Tensor:
    t = torch.zeros(len(ids), vocab, dtype=torch.int64)
    t[torch.arange(len(ids)), torch.tensor(ids)] = 1
    return t


def _run_remote_job(ledger_url: str, client_keys: NodeKeys, node_ids: list[str], model_id: str, prompt_ids: list[int],
                    steps: int, job_id: str, *, dealer: str | None = None, master_seed: bytes | None = None,
                    port: int | None = None, timeout_s: float = 60.0, state_dir: str | os.PathLike | None = None,
                    temperature: float = 0.0, top_k: int | None = None, seed: int = 0, keep_logits: bool = False,
                    dealer_log: bool = False, replicas: int = 1, standby: list[str] | None = None,
                    on_token: Callable[[int, int], None] | None = None) -> dict:
    """Run one private-generation job on the registered nodes `node_ids` (party i = node_ids[i]; with
    `replicas` R, node i is replica i div N of share index i mod N: `assignment_rows`).

    `dealer` names a registered dealer daemon; None runs the dealer inside the client (a child
    process with the client's keys, its state file under `state_dir`). Returns {tokens, job_id,
    seconds, state_file (None with an external dealer), offline_seconds, online_seconds, rounds},
    and with `keep_logits` the reconstructed ring-encoded logits of every step (what only the
    client ever sees). As the client sees them: `offline_seconds` from opening the job until its
    group formed (the dealer joins once its offline phase is done), `online_seconds` from then to
    the last token; `rounds` is the parties' round count from their broadcast receipts on the
    ledger (None if no job root holds a receipt). With replicas, each step's inputs go to every live
    replica of an index and its output is taken from the lowest live one; `dropped` lists the nodes
    lost on the way (with why) and `divergent` the nodes whose output differed from their index's.
    With `standby` nodes, a share index that loses every node mid-job is handed to a standby holding it
    (`job.resume`, specs/node-daemon.md section 8) and the job goes on; `resumed` lists each take-over.
    `on_token(i, token)` is called as each token arrives."""
    safe_id(job_id, "job id")
    if steps < 1 or not prompt_ids:
        raise RemoteJobError("a job needs a prompt and at least one step")
    led = Ledger.open(ledger_url, create=False)
    if not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise RemoteJobError(f"replicas must be 1..{MAX_REPLICAS}, got {replicas!r}")
    if len(node_ids) % replicas:
        raise RemoteJobError(f"{len(node_ids)} nodes do not make {replicas} replicas of every share index")
    n = len(node_ids) // replicas
    why = assignment_problem(led, node_ids, n)
    if why:  # before posting anything: the nodes would not serve such a job (protocol.job_view)
        raise AssignmentRefused(why)
    try:
        manifest = published_manifest(led, model_id)
    except JobError:
        raise RemoteJobError(f"no model {model_id!r} published on the ledger") from None
    if manifest["n_parties"] != n:
        raise RemoteJobError(f"model has {manifest['n_parties']} shares, {n} nodes given"
                             + (f" per replica ({len(node_ids)} for {replicas} replicas)" if replicas > 1 else ""))
    layout = Layout(n, replicas)
    vocab = manifest_config(manifest).vocab_size
    node_ids = list(node_ids)  # a standby takes a lost node's place in it
    standby_of = standby_plan(led, standby or [], node_ids, model_id, n, replicas)
    peers = []
    for nid in node_ids:
        peer = lookup_peer(led, nid)
        if peer is None or peer.x25519 is None:
            raise RemoteJobError(f"node {nid!r} is not registered with an X25519 key")
        peers.append(peer)
    me = client_keys.node_id
    if dealer is not None and lookup_peer(led, dealer) is None:
        raise RemoteJobError(f"dealer {dealer!r} is not registered")
    listener, rendezvous = open_rendezvous() if not port else (None, f"127.0.0.1:{port}")
    job = job_id.encode()
    t_open = time.perf_counter()
    led.append_many([
        E.make_entry(client_keys.identity, E.JOB_OPEN, {
            "job_id": job_id, "model_id": model_id, "n_parties": n, "replicas": replicas, "stages": 1,
            "dealer": dealer or me, "client": me,
            "params": {"prompt_len": len(prompt_ids), "steps": steps, "rendezvous": rendezvous,
                       **({"standby": list(standby)} if standby else {})}}),
        E.make_entry(client_keys.identity, E.JOB_ASSIGN,
                     B.JobAssign(job_id, tuple(assignment_rows(node_ids, n))).to_body()),
    ])
    inside = None
    state_file = None
    if dealer is None:
        sdir = Path(state_dir) if state_dir is not None else Path.cwd()
        state_file = sdir / f"dealer-{job_id}.cbor"
        if dealer_log:  # created here, so that a failure before the child starts still names a log that exists
            (sdir / f"dealer-{job_id}.log").touch(mode=0o600, exist_ok=True)
        inside = multiprocessing.get_context("spawn").Process(
            target=dealer_process, args=(ledger_url, client_keys.to_bytes(), job_id, str(sdir), timeout_s, master_seed,
                                         str(sdir / f"dealer-{job_id}.log") if dealer_log else None),
            daemon=True)
        inside.start()
    client_seed = os.urandom(32)
    guard = ReplayGuard()
    tokens: list[int] = []
    kept: list[torch.Tensor] = []
    live = set(range(layout.party_ranks))  # party ranks not lost yet
    dropped: dict[str, str] = {}  # node -> why the client lost it
    divergent: set[str] = set()
    feeds: list[list[int]] = []  # every step's input tokens (a standby gets their shares again)
    lostd: dict[int, TransportError] = {}  # ranks lost during the current step's outputs (replicas)
    # With replicas a rank silent after the timeout is dropped only if a twin answered (the others are waited
    # for longer: they may be held up behind it, mpc_core.mesh); a standby's catch-up may take a while.
    output_wait = OUTPUT_WAIT_TIMEOUTS * timeout_s + 5.0 if replicas == 1 and standby_of else None
    i_now = [0]  # the current step
    resumed: list[dict] = []

    def lose(rank: int, exc: Exception, i: int) -> bool:
        """A node is gone: stop talking to it; if that leaves its index with none, hand the index to a standby
        (True: the standby holds replica 0's rank now) or fail the job."""
        p = layout.party_of(rank)
        if replicas == 1 and standby_of.get(p) and not isinstance(exc, PeerTimeout):
            resume(rank, exc, i)
            return True
        if replicas == 1:
            raise exc
        live.discard(rank)
        mesh.drop(rank)
        dropped.setdefault(node_ids[rank], f"{type(exc).__name__}: {one_line(exc)}")
        if not any(r in live for r in layout.ranks_of(p)) and standby_of.get(p) and not isinstance(exc, PeerTimeout):
            resume(rank, exc, i)
            return True
        if not any(r in live for r in layout.ranks_of(p)):
            raise RemoteJobError(f"job {job_id}: every replica of share index {p} is lost ("
                                 + "; ".join(f"{node_ids[r]}: {dropped.get(node_ids[r], '?')}"
                                             for r in layout.ranks_of(p)) + ")")
        return False

    def resume(rank: int, exc: Exception, i: int) -> int:
        """Every node of share index p lost its rank (`rank` last): hand the index to its next standby at step
        `i` (specs/node-daemon.md section 8, steps 2-5): post job.resume, admit the standby's signed rejoin at
        replica 0's rank, then send it the steps done and every input so far. Returns that rank."""
        t_lost = time.perf_counter()
        p = layout.party_of(rank)
        dropped.setdefault(node_ids[rank], f"{type(exc).__name__}: {one_line(exc)}")
        rank = layout.rank(p, 0)  # the standby takes replica 0's place (protocol.job_view)
        lost = node_ids[rank]
        node = standby_of[p].pop(0)
        try:
            post_resume(led, client_keys, B.JobResume(job_id, p, node, lost))
        except ResumeRefused as err:
            raise RemoteJobError(f"job {job_id}: node {lost} is lost and {err}") from err
        key = lookup_peer(led, node)
        try:
            mesh.admit_rejoin(rank, standby_check(led, job_id, p), time.monotonic() + timeout_s,
                              live={*live, dealer_rank(n, replicas)})
            mesh.send(rank, canonical_cbor([i]))
            node_ids[rank], peers[rank] = node, key
            live.add(rank)
            for k, feed in enumerate(feeds):
                shares = additive_split(_onehot(feed, vocab), n, client_seed, job, f"tokens:{k}")
                mesh.send(rank, seal(client_keys, key.x25519, node, job_id, PURPOSE_INPUT,
                                     tensor_bytes(shares[p].contiguous()), k))
        except TransportError as err:
            raise RemoteJobError(f"job {job_id}: standby {node} did not take over party {p}: {err}") from err
        resumed.append({"party": p, "lost": lost, "standby": node, "step": i,
                        "seconds": round(time.perf_counter() - t_lost, 3)})
        return rank

    def hold(j: int, why: Exception) -> int | None:
        """A rank lost while the step's outputs arrive: None if a twin of its index is live (it is dropped
        after the exchange), else its index's standby takes over (the rank it holds now). Only a closed stream
        is handed over: when every rank of an index is merely silent, the client cannot tell which rank the
        others are held up behind (with replicas the silent one is found by its twins: mpc_core.mesh)."""
        p = layout.party_of(j)
        if (not standby_of.get(p) or isinstance(why, PeerTimeout)
                or any(r != j and r in live and r not in (lostd or {}) for r in layout.ranks_of(p))):
            return None
        live.discard(j)
        mesh.drop(j)
        return resume(j, why, i_now[0])

    def step(feed: list[int], i: int) -> torch.Tensor:
        """Send step i's sealed one-hot shares of `feed` to the nodes; their sealed logit shares, added up."""
        feeds.append(list(feed))
        shares = additive_split(_onehot(feed, vocab), n, client_seed, job, f"tokens:{i}")
        for rank in sorted(live):
            p = layout.party_of(rank)
            try:
                mesh.send(rank, seal(client_keys, peers[rank].x25519, node_ids[rank], job_id, PURPOSE_INPUT,
                                     tensor_bytes(shares[p].contiguous()), i))
            except TransportError as exc:
                lose(rank, exc, i)  # a standby that takes over gets this step's input with the others
        total = torch.zeros(1, vocab, dtype=torch.int64)
        # Every live rank's output at once: a loss shows whichever rank the others wait on (with a standby,
        # the peers of a lost party hold until it takes over, so waiting on one of them first would stall).
        lostd.clear()
        i_now[0] = i
        try:
            raws = mesh._exchange({}, MAX_SEALED, lostd if replicas > 1 else None, tuple(sorted(live)),
                                  hold if standby_of else None, output_wait,
                                  {r: layout.party_of(r) for r in live} if replicas > 1 else None)
        except TransportError as exc:
            raise RemoteJobError(f"job {job_id}: a node was lost at step {i}: {exc}") from exc
        for rank, exc in list(lostd.items()):
            if rank not in raws:
                lose(rank, exc, i)
        for p in range(n):
            copies: dict[int, bytes] = {}
            for rank in layout.ranks_of(p):
                if rank not in raws:
                    continue
                opened = open_(client_keys, bytes(raws[rank]), peers[rank].x25519, sender=node_ids[rank], job=job_id,
                               purpose=PURPOSE_OUTPUT, replay=guard)
                if opened.counter != i:
                    raise RemoteJobError(f"logit share #{opened.counter} from party {p}, #{i} was due")
                copies[rank] = opened.payload
            if not copies:
                raise RemoteJobError(f"job {job_id}: no replica of share index {p} answered step {i}")
            used, differ = pick(copies)
            divergent.update(node_ids[r] for r in differ)
            total += tensor_from_bytes(copies[used], (1, vocab))
        if keep_logits:
            kept.append(total.clone())
        return decode(total, manifest["frac_bits"])

    t0 = time.perf_counter()
    try:
        try:
            mesh = join_job(rendezvous, client_rank(n, replicas), n, job_id, timeout_s, listener=listener,
                            replicas=replicas, resumable=bool(standby_of))
        except Exception as exc:  # a party or the dealer never joined, or died while the group formed
            raise RemoteJobError(f"job {job_id}: the job's mesh did not form: {type(exc).__name__}: {exc}") from exc
        t_group = time.perf_counter()
        try:
            for nxt in client_loop(prompt_ids, steps, step, temperature=temperature, top_k=top_k, seed=seed):
                tokens.append(nxt)
                if on_token is not None:
                    on_token(len(tokens) - 1, nxt)
            t_last = time.perf_counter()
        except RemoteJobError:
            raise
        except Exception as exc:
            raise RemoteJobError(f"job {job_id}: {type(exc).__name__}: {exc}") from exc
        finally:
            mesh.close()
    finally:
        if listener is not None:
            listener.close()  # join_job closed it already unless the job failed before
        if inside is not None:
            inside.join(timeout=timeout_s)
            if inside.is_alive():
                inside.kill()
                inside.join(5)
    if inside is not None and inside.exitcode != 0:
        raise RemoteJobError(f"job {job_id}: the dealer process exited with code {inside.exitcode}")
    # The job counts as done once every party's job root is on the ledger (a checkpoint can then seal them).
    if not wait_for(lambda: len({e.entry.body["party"] for e in led.by_job(job_id, kind=E.JOB_ROOT)}) == n, timeout_s):
        raise RemoteJobError(f"job {job_id}: not every node posted its job root within {timeout_s} s")
    if replicas > 1:  # the replicas still live post theirs too (a short wait: the job is done without them)
        want = {(layout.party_of(r), layout.replica_of(r)) for r in live}
        wait_for(lambda: want <= {(e.entry.body["party"], e.entry.body["replica"])
                                  for e in led.by_job(job_id, kind=E.JOB_ROOT)}, min(timeout_s, REPLICA_ROOT_WAIT_S))
    out = {"tokens": tokens, "job_id": job_id, "seconds": time.perf_counter() - t0,
           "state_file": str(state_file) if state_file is not None else None,
           "offline_seconds": t_group - t_open, "online_seconds": t_last - t_group, "rounds": receipt_rounds(led, job_id),
           "replicas": replicas, "dropped": dropped, "divergent": sorted(divergent), "resumed": resumed}
    if keep_logits:
        out["logits"] = kept
    return out
