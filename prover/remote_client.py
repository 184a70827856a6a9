"""The client and dealer of a ledger job run by `prover serve` nodes (specs/audit.md, specs/channels.md).

`run_remote_job` posts `job.open` (params: prompt length, steps, the gloo
rendezvous), `job.assign` and `dealer.commit`, joins the job's group as rank N,
sends each party its dealer seed sealed on a private channel, serves the last
party's correction requests, and plays the client: sealed one-hot shares out,
sealed logit shares in, sampling locally. The dealer keeps a small state file
(master seed and the request log in op order; mode 0600) so that
`release_for_challenge` can later post the seed release an auditor needs.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ledger import Ledger
from ledger import entries as E
from mpc_core.dealer import Request, TrustedDealer
from mpc_core.distributed import free_port, serve_dealer
from mpc_core.encoding import canonical_cbor, decode_cbor, tensor_bytes, tensor_from_bytes
from mpc_core.ring import decode
from mpc_core.shares import additive_split
from prover.channels import PURPOSE_DEALER, PURPOSE_INPUT, PURPOSE_OUTPUT, ReplayGuard, open_, seal
from prover.daemon import (LOGITS_READY, READY_FOR_PROMPT, RemoteJobError, challenge_is_derived, join_group,
                           leave_group, recv_bytes, safe_id, send_bytes, wait_for, write_secret)
from prover.keys import NodeKeys, lookup_peer
from prover.local_network import read_manifest_blob
from prover.models.gpt import sample_next_token
from prover.models.publish import manifest_config
from prover.opening import enc_tensor

STATE_FORMAT = "shardproof/dealer-state/v1"


def _onehot(ids: list[int], vocab: int) -> torch.Tensor:
    t = torch.zeros(len(ids), vocab, dtype=torch.int64)
    t[torch.arange(len(ids)), torch.tensor(ids)] = 1
    return t


class _LoggingDealer:
    """A TrustedDealer that records every request it answers, in op order."""

    def __init__(self, dealer: TrustedDealer):
        self.dealer = dealer
        self.log: list[list] = []

    def correction(self, req: Request, op_index: int):
        if op_index != len(self.log):
            raise RemoteJobError(f"dealer: request #{op_index} out of order (expected #{len(self.log)})")
        self.log.append(req.describe())
        return self.dealer.correction(req, op_index)


def _request(desc: list) -> Request:
    def tup(p):
        return tuple(tup(q) for q in p) if isinstance(p, list) else p
    kind, params = desc
    return Request(kind, tuple(tup(p) for p in params))


def run_remote_job(ledger_url: str, client_keys: NodeKeys, node_ids: list[str], model_id: str, prompt_ids: list[int],
                   steps: int, job_id: str, master_seed: bytes | None = None, port: int | None = None,
                   timeout_s: float = 60.0, state_file: str | os.PathLike | None = None,
                   temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> dict:
    """Run one private-generation job on the registered nodes `node_ids` (party i = node_ids[i]).

    `client_keys` acts as client and dealer. Returns {tokens, job_id, seconds, dealer_requests, state_file}."""
    safe_id(job_id, "job id")
    if steps < 1 or not prompt_ids:
        raise RemoteJobError("a job needs a prompt and at least one step")
    led = Ledger.open(ledger_url, create=False)
    n = len(node_ids)
    try:
        manifest = read_manifest_blob(led, model_id)
    except KeyError:
        raise RemoteJobError(f"no model {model_id!r} published on the ledger") from None
    if manifest["n_parties"] != n:
        raise RemoteJobError(f"model has {manifest['n_parties']} shares, {n} nodes given")
    vocab = manifest_config(manifest).vocab_size
    peers = []
    for nid in node_ids:
        peer = lookup_peer(led, nid)
        if peer is None or peer.x25519 is None:
            raise RemoteJobError(f"node {nid!r} is not registered with an X25519 key")
        peers.append(peer)
    master = master_seed or os.urandom(32)
    job = job_id.encode()
    dealer = _LoggingDealer(TrustedDealer(master, job, n))
    port = port or free_port()
    me = client_keys.node_id
    led.append_many([
        E.make_entry(client_keys.identity, E.JOB_OPEN, {
            "job_id": job_id, "model_id": model_id, "n_parties": n, "replicas": 1, "stages": 1, "dealer": me,
            "client": me, "params": {"prompt_len": len(prompt_ids), "steps": steps, "rendezvous": f"127.0.0.1:{port}"}}),
        E.make_entry(client_keys.identity, E.JOB_ASSIGN, {"job_id": job_id, "assignments": [
            {"node": nid, "party": p, "replica": 0, "stage": 0} for p, nid in enumerate(node_ids)]}),
        E.make_entry(client_keys.identity, E.DEALER_COMMIT, {"job_id": job_id, "seeds": [
            {"party": p, "commitment": c} for p, c in enumerate(dealer.dealer.seed_commitments())]}),
    ])
    client_seed = os.urandom(32)
    gen = torch.Generator().manual_seed(int(seed))
    guard = ReplayGuard()
    tokens: list[int] = []

    def send_tokens(ids: list[int]) -> None:
        step = len(tokens)
        shares = additive_split(_onehot(ids, vocab), n, client_seed, job, f"tokens:{step}")
        for p, sh in enumerate(shares):
            send_bytes(seal(client_keys, peers[p].x25519, node_ids[p], job_id, PURPOSE_INPUT,
                            tensor_bytes(sh.contiguous()), step), p)

    def on_marker(code: int) -> None:
        if code == READY_FOR_PROMPT:
            send_tokens(list(prompt_ids))
            return
        if code != LOGITS_READY:
            raise RemoteJobError(f"unexpected marker {code}")
        total = torch.zeros(1, vocab, dtype=torch.int64)
        for p in range(n):
            opened = open_(client_keys, recv_bytes(p), peers[p].x25519, sender=node_ids[p], job=job_id,
                           purpose=PURPOSE_OUTPUT, replay=guard)
            if opened.counter != len(tokens):
                raise RemoteJobError(f"logit share #{opened.counter} from party {p}, #{len(tokens)} was due")
            total += tensor_from_bytes(opened.payload, (1, vocab))
        logits = decode(total, manifest["frac_bits"])
        tokens.append(int(sample_next_token(logits, temperature, top_k, gen if temperature > 0 else None)[0, 0]))
        if len(tokens) < steps:
            send_tokens([tokens[-1]])

    t0 = time.perf_counter()
    join_group(f"127.0.0.1:{port}", n, n, timeout_s)
    try:
        for p in range(n):
            send_bytes(seal(client_keys, peers[p].x25519, node_ids[p], job_id, PURPOSE_DEALER,
                            dealer.dealer.party_seed(p), 0), p)
        served = serve_dealer(dealer, n - 1, on_marker=on_marker)
    except RemoteJobError:
        raise
    except Exception as exc:
        raise RemoteJobError(f"job {job_id}: {type(exc).__name__}: {exc}") from exc
    finally:
        leave_group()
    if len(tokens) != steps:
        raise RemoteJobError(f"job {job_id}: {len(tokens)} of {steps} tokens before the nodes stopped")
    # The job counts as done once every party's job root is on the ledger (a checkpoint can then seal them).
    if not wait_for(lambda: len({e.entry.body["party"] for e in led.by_job(job_id, kind=E.JOB_ROOT)}) == n, timeout_s):
        raise RemoteJobError(f"job {job_id}: not every node posted its job root within {timeout_s} s")
    path = Path(state_file) if state_file is not None else Path.cwd() / f"dealer-{job_id}.cbor"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_secret(path, canonical_cbor({"format": STATE_FORMAT, "job_id": job_id, "n_parties": n, "master_seed": master,
                                       "requests": dealer.log}))
    return {"tokens": tokens, "job_id": job_id, "seconds": time.perf_counter() - t0, "dealer_requests": served,
            "state_file": str(path)}


def release_for_challenge(ledger_url: str, dealer_keys: NodeKeys, state_file: str | os.PathLike, job_id: str) -> int:
    """Post the dealer's seed release for `job_id`'s challenge (as LocalNetwork.respond does); returns its index.

    Releases the seeds of the challenged parties only, and the last party's corrections when it
    is challenged. Refuses (RemoteJobError) when there is no challenge or it does not follow from
    the first sealing checkpoint (releasing then could break the audit privacy budget)."""
    led = Ledger.open(ledger_url, create=False)
    state = decode_cbor(Path(state_file).read_bytes())
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("job_id") != job_id:
        raise RemoteJobError(f"{state_file} is not the dealer state of job {job_id}")
    challenges = led.by_job(job_id, kind=E.CHALLENGE)
    if not challenges:
        raise RemoteJobError(f"no challenge for job {job_id} yet")
    ch = challenges[0]
    n = state["n_parties"]
    if not challenge_is_derived(led, job_id, ch.entry.body, n):
        raise RemoteJobError(f"challenge #{ch.index} does not follow from the sealing checkpoint")
    parties = list(ch.entry.body["parties"])
    dealer = TrustedDealer(bytes(state["master_seed"]), job_id.encode(), n)
    release: dict = {"seeds": {str(p): dealer.party_seed(p) for p in parties}}
    if n - 1 in parties:
        out = []
        for op_index, desc in enumerate(state["requests"]):
            req = _request(desc)
            corr = dealer.correction(req, op_index)
            out.append([req.describe(), {k: enc_tensor(v) for k, v in sorted(corr.items())}])
        release["corrections"] = canonical_cbor(out)
    data = led.put_blob(canonical_cbor(release))
    return led.append(E.make_entry(dealer_keys.identity, E.OPENING, {
        "job_id": job_id, "node": dealer_keys.node_id, "party": n - 1 if n - 1 in parties else parties[0],
        "challenge": ch.index, "data": data, "meta": {"role": "dealer"}}))
