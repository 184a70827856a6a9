"""Private text generation: the client's loop around a secret-shared GPT.

The client secret-shares the prompt as one-hot integer rows, the parties run
the shared model and return logit shares, the client adds them up, samples the
next token locally (greedy, temperature, top-k, seeded; the one client loop,
protocol.program.client_loop) and shares it back.
In-process, every party and the client live in this process; the arithmetic,
randomness and transcripts are exactly those of the multi-process run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from mpc_core import Session
from mpc_core.prg import master_from_int
from models.gpt import GPT
from models.gpt_mpc import SharedGPT, client_reconstruct, share_tokens
from protocol.program import client_loop


@dataclass
class GenerationStats:
    """Where the time and the bytes went during one private generation."""

    parties: int
    setup_seconds: float = 0.0  # sharing + masking the weights (once per job)
    prefill_seconds: float = 0.0
    decode_seconds: list[float] = field(default_factory=list)
    dealer_seconds: float = 0.0
    rounds: int = 0
    bytes_per_party: int = 0
    setup_bytes_per_party: int = 0
    prefill_bytes_per_party: int = 0
    decode_bytes_per_party: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "logits"}


class PrivateGenerator:
    """A job: one session, the model shared and masked once, then any number of steps."""

    def __init__(self, model: GPT, parties: int, seed: int = 0, *, master_seed: bytes | None = None,
                 record: bool = False, job: bytes = b"generate"):
        self.config = model.config
        self.session = Session.in_process(parties, master_seed or master_from_int(seed, "shardproof/generate"),
                                          job=job, record=record)
        self.stats = GenerationStats(parties=parties)
        t0 = time.perf_counter()
        self.model = SharedGPT.from_plain_model(self.session, model)
        self.stats.setup_seconds = time.perf_counter() - t0
        self.stats.setup_bytes_per_party = self.session.counters.bytes_per_party

    def reset(self) -> None:
        """Start a new sequence in the same job (weights stay masked; fresh KV-cache masks)."""
        self.model.reset_cache()
        self.stats = GenerationStats(parties=self.stats.parties, setup_seconds=self.stats.setup_seconds,
                                     setup_bytes_per_party=self.stats.setup_bytes_per_party)

    def step(self, token_ids: list[int], all_logits: bool = False) -> torch.Tensor:
        """Feed tokens (prompt or one sampled token); return the reconstructed logits (T or 1, V)."""
        shares = share_tokens(self.session, token_ids, self.config.vocab_size)
        return client_reconstruct(self.model.forward(shares, all_logits=all_logits))

    def generate(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, seed: int = 0, keep_logits: bool = False) -> Iterator[int]:
        """Yield new token ids one at a time (KV-cached decode after the prompt's prefill)."""
        c = self.session.counters

        def timed_step(feed: list[int], i: int) -> torch.Tensor:
            if self.model.length + len(feed) > self.config.block_size:
                raise ValueError(f"context of {self.model.length + len(feed)} tokens exceeds block_size")
            b0, t0 = c.bytes_per_party, time.perf_counter()
            logits = self.step(feed)
            dt = time.perf_counter() - t0
            if i == 0:
                self.stats.prefill_seconds = dt
                self.stats.prefill_bytes_per_party = c.bytes_per_party - b0
            else:
                self.stats.decode_seconds.append(dt)
                self.stats.decode_bytes_per_party.append(c.bytes_per_party - b0)
            if keep_logits:
                self.stats.logits.append(logits[-1].clone())
            return logits

        for nxt in client_loop(prompt_ids, max_new_tokens, timed_step, temperature=temperature, top_k=top_k,
                               seed=seed):
            self.stats.tokens.append(nxt)
            self.stats.dealer_seconds = c.dealer_seconds
            self.stats.rounds = c.rounds
            self.stats.bytes_per_party = c.bytes_per_party
            yield nxt


def generate_private(model: GPT, prompt_ids: list[int], max_new_tokens: int, parties: int = 3,
                     temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> tuple[list[int], GenerationStats]:
    """Generate `max_new_tokens` privately; returns the new token ids and the run's stats."""
    g = PrivateGenerator(model, parties, seed)
    tokens = list(g.generate(prompt_ids, max_new_tokens, temperature, top_k, seed))
    return tokens, g.stats
