"""Private generation with one process per party over the TCP mesh on loopback (mpc_core.mesh).

Ranks 0..N-1 are the parties; rank N is the dealer with the client co-located
(the deployment where "the dealer runs inside the client"). Each party loads
only its own published, commitment-checked weight shares. Per step the client
sends party i its one-hot share, the parties run the shared model, party N-1
signals the dealer rank (a marker), every party sends its logit share to the
client, and the client reconstructs, samples and sends the next shares. The
parties run the one party program and the client samples through the one client
loop (protocol.program).
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from mpc_core import prg
from mpc_core.dealer import TrustedDealer
from mpc_core.distributed import run_parties, serve_dealer
from mpc_core.mesh import Mesh
from mpc_core.ring import decode
from mpc_core.shares import additive_split
from mpc_core.session import Session
from prover.errors import ModelError
from models.publish import load_party_share, manifest_config, read_manifest
from protocol.program import client_loop, party_program

LOGITS_READY = 1
READY_FOR_PROMPT = 2


def _onehot(ids: list[int], vocab: int) -> torch.Tensor:
    t = torch.zeros(len(ids), vocab, dtype=torch.int64)
    t[torch.arange(len(ids)), torch.tensor(ids)] = 1
    return t


def _client_shares(values: torch.Tensor, n: int, client_seed: bytes, step: int) -> list[torch.Tensor]:
    return additive_split(values, n, client_seed, b"client", f"tokens:{step}")


def party_main(session: Session, model_dir: str, steps: int, prompt_len: int) -> dict:
    """One party: load its shares, then for each step receive one-hot shares, return logit shares."""
    manifest = read_manifest(model_dir)
    if manifest["n_parties"] != session.n_parties or manifest["frac_bits"] != session.frac_bits:
        raise ModelError(f"model published for {manifest['n_parties']} parties at f = {manifest['frac_bits']}, "
                         f"session has {session.n_parties} at f = {session.frac_bits}")
    shares = {p: load_party_share(model_dir, p, manifest) for p in session.local_parties}  # each verified
    weights = {name: torch.stack([shares[p][name] for p in session.local_parties]) for name in manifest["tensors"]}
    n, V = session.n_parties, manifest_config(manifest).vocab_size
    client = n
    mesh = session.comm.mesh
    started, times = [], []  # when each step's forward pass began; how long it took

    def inputs():
        # The program asks for the prompt once the weights are masked (that needs the dealer): then say so.
        if session.dealer_channel is not None:
            session.dealer_channel.marker(READY_FOR_PROMPT)
        for i in range(steps):
            T = prompt_len if i == 0 else 1
            onehot = mesh.recv_tensor(client, (T, V))
            started.append(time.perf_counter())
            yield onehot.unsqueeze(0)

    for logits in party_program(session, manifest, weights, inputs()):
        times.append(time.perf_counter() - started[-1])
        if session.dealer_channel is not None:
            session.dealer_channel.marker(LOGITS_READY)
        mesh.send_tensor(client, logits.data[0])
    c = session.counters
    return {"seconds": times, "rounds": c.rounds, "bytes_per_party": c.bytes_per_party, "dealer_seconds": c.dealer_seconds}


def client_dealer_main(dealer: TrustedDealer, mesh: Mesh, n_parties: int, prompt_ids: list[int], steps: int, vocab: int,
                       temperature: float, top_k: int | None, seed: int, frac_bits: int) -> dict:
    """Rank N: serve the dealer's corrections and, at each marker, act as the client.

    Markers come from party N-1 in program order: READY_FOR_PROMPT once the weights are
    masked, LOGITS_READY after each forward pass (then every party sends its logit share)."""
    client_seed = prg.master_from_int(seed, "shardproof/client")
    tokens: list[int] = []
    sent: list[list[int]] = []  # what each step fed the parties
    received: list[torch.Tensor] = []  # the logits of the step the client loop asks for next

    def send_tokens(ids: list[int]) -> None:
        for p, sh in enumerate(_client_shares(_onehot(ids, vocab), n_parties, client_seed, len(sent))):
            mesh.send_tensor(p, sh)
        sent.append(list(ids))

    def step(feed: list[int], i: int) -> torch.Tensor:
        # The markers drive this rank: step i's tokens went out before its logits came in (on_marker).
        if i >= len(sent) or sent[i] != list(feed) or not received:
            raise ModelError(f"step {i}: the client loop and the markers disagree")
        return received.pop()

    loop = client_loop(prompt_ids, steps, step, temperature=temperature, top_k=top_k, seed=seed)

    def on_marker(code: int) -> None:
        if code == READY_FOR_PROMPT:
            send_tokens(prompt_ids)
            return
        if code != LOGITS_READY:
            raise ModelError(f"unexpected marker {code}")
        total = torch.zeros(1, vocab, dtype=torch.int64)
        for p in range(n_parties):
            total += mesh.recv_tensor(p, (1, vocab))
        received.append(decode(total, frac_bits))
        nxt = next(loop, None)
        if nxt is None:
            raise ModelError(f"logits after the last of {steps} steps")
        tokens.append(nxt)
        if len(tokens) < steps:
            send_tokens([tokens[-1]])

    served = serve_dealer(dealer, mesh, n_parties - 1, on_marker=on_marker)
    return {"tokens": tokens, "dealer_requests": served}


def generate_multiprocess(model_dir: str | Path, prompt_ids: list[int], max_new_tokens: int, *, temperature: float = 0.0,
                          top_k: int | None = None, seed: int = 0, timeout_s: float = 120.0) -> dict:
    """Run private generation with a process per party; `model_dir` is a published share directory."""
    manifest = read_manifest(model_dir)
    cfg = manifest_config(manifest)
    n = manifest["n_parties"]
    if max_new_tokens < 1:
        raise ModelError("max_new_tokens must be at least 1 in multi-process mode")
    master = prg.master_from_int(seed, "shardproof/generate-mp")
    party = functools.partial(party_main, model_dir=str(model_dir), steps=max_new_tokens, prompt_len=len(prompt_ids))
    client = functools.partial(client_dealer_main, prompt_ids=list(prompt_ids), steps=max_new_tokens,
                               vocab=cfg.vocab_size, temperature=temperature, top_k=top_k, seed=seed,
                               frac_bits=manifest["frac_bits"])
    t0 = time.perf_counter()
    outcomes = run_parties(party, n, master, job=b"generate-mp", timeout_s=timeout_s, dealer_fn=client, record=False)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise ModelError("multi-process generation failed: " + "; ".join(
            f"rank {o.rank}: {o.error_type}: {(o.error or '').splitlines()[0]}" for o in failed))
    return {"tokens": outcomes[n].value["tokens"], "seconds": time.perf_counter() - t0,
            "parties": [o.value for o in outcomes[:n]]}
