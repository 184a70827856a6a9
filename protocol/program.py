"""The one party program and the one client loop of a private-generation job.

A node daemon, every in-process or multi-process harness, and the auditor's replay all run
`party_program`: the audit must re-run exactly the program a party ran, so there is one.
Every client (in-process, processes, ledger nodes) samples through `client_loop`.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch

from models.gpt import sample_next_token
from models.gpt_mpc import SharedGPT
from models.publish import manifest_config
from mpc_core import Session, SharedTensor
from protocol.errors import ProtocolError


def party_program(session: Session, manifest: dict, weights: Mapping[str, torch.Tensor],
                  inputs: Iterable[torch.Tensor]) -> Iterator[SharedTensor]:
    """Run the job's steps for the session's local parties; yields each step's logit shares.

    1. Load the weight shares: `weights[name]` has the party axis first (P_local, ...), one row per
       local party, for every tensor of the manifest (in sorted name order, as the dealer's
       material is consumed in program order).
    2. For each input (P_local, T, V) of one-hot token shares (the prompt, then one token per
       step): one forward pass of the shared GPT with its KV cache; yield the last position's
       logit shares (P_local, 1, V)."""
    shared = {n: SharedTensor.from_shares(session, weights[n]) for n in sorted(manifest["tensors"])}
    model = SharedGPT(session, manifest_config(manifest), shared)
    for onehot in inputs:
        yield model.forward(onehot, all_logits=False)


def run_party_program(session: Session, manifest: dict, weights: Mapping[str, torch.Tensor],
                      inputs: Iterable[torch.Tensor]) -> None:
    """`party_program` run to its end (the replay's form: outputs are checked through the transcript)."""
    for _ in party_program(session, manifest, weights, inputs):
        pass


def stack_parties(per_party: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack one tensor per party on a new party axis; every one must be an int64 tensor of one shape.
    Raises ProtocolError (the tensors come from openings: attacker-controlled)."""
    if not per_party or any(not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.shape != per_party[0].shape
                            for t in per_party):
        raise ProtocolError("the parties' tensors differ in type or shape")
    return torch.stack(list(per_party))


def program_for_parties(manifest: dict, weights: Sequence[Mapping[str, torch.Tensor]],
                        tokens: Sequence[Sequence[torch.Tensor]]) -> Callable[[Session], None]:
    """The program the given parties ran, on one session holding them all (in the order given): their
    weight shares and one-hot input shares stacked on the party axis. Raises ProtocolError if the
    parties' inputs do not line up."""
    if len(weights) != len(tokens) or len({len(t) for t in tokens}) > 1:
        raise ProtocolError("the parties' inputs do not line up")

    def program(s: Session) -> None:
        stacked = {n: stack_parties([w[n] for w in weights]) for n in sorted(manifest["tensors"])}
        run_party_program(s, manifest, stacked, (stack_parties(list(step)) for step in zip(*tokens)))
    return program


def client_loop(prompt_ids: Sequence[int], max_new_tokens: int, step: Callable[[list[int], int], torch.Tensor], *,
                temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> Iterator[int]:
    """The client's side of private generation; yields each new token id.

    1. Feed the prompt (step 0), then the last sampled token (steps 1..max_new_tokens-1):
       `step(feed, i)` shares the fed tokens with the parties, runs their step and returns the
       reconstructed logits (T or 1, V) as float.
    2. Sample the next token from the last row locally (greedy at temperature 0; else seeded
       temperature / top-k sampling); nodes never see it."""
    gen = torch.Generator().manual_seed(int(seed))
    feed = list(prompt_ids)
    for i in range(max_new_tokens):
        logits = step(feed, i)
        nxt = int(sample_next_token(logits[-1:].to(torch.float64), temperature, top_k,
                                    gen if temperature > 0 else None)[0, 0])
        feed = [nxt]
        yield nxt
