"""A plaintext GPT-2-family decoder, nanoGPT style, with a KV cache.

This is the reference that every MPC accuracy figure is measured against, so it
is written to be exact and easy to mirror op by op:

- parameter names follow GPT-2 (`transformer.wte`, `transformer.h.{i}.attn.c_attn`, ...),
- every weight is a plain `nn.Linear` / `nn.Embedding` / `nn.LayerNorm`
  (Linear weights are stored (out, in), unlike Hugging Face's Conv1D),
- GeLU is GPT-2's tanh approximation, written out,
- attention is written out (no fused kernels), softmax over masked scores,
- no dropout: the model is for inference and for a small deterministic training run,
- it runs in any float dtype; `model.double()` gives the float64 reference.

Shapes in comments: B batch, T new tokens, P cached (past) tokens, S = P + T,
C = n_embd, nh = n_head, hs = C // nh, V = vocab_size.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn import functional as F

from models.errors import ModelError

# One layer's cache: (keys, values), each (B, nh, P, hs).
LayerKV = tuple[torch.Tensor, torch.Tensor]
PastKV = list[LayerKV]


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of a GPT-2-family decoder (names as in Hugging Face's GPT2Config)."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50257
    block_size: int = 1024  # maximum context length, HF's n_positions
    layer_norm_epsilon: float = 1e-5
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ModelError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ModelError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        eps = self.layer_norm_epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < 1):
            raise ModelError(f"layer_norm_epsilon must be in (0, 1), got {eps!r}")
        if not isinstance(self.bias, bool):
            raise ModelError(f"bias must be a bool, got {self.bias!r}")

    @property
    def n_positions(self) -> int:
        """Hugging Face's name for block_size."""
        return self.block_size

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GeLU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with an optional KV cache."""

    def __init__(self, config: GPTConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # q, k, v projections for all heads in one matrix: weight (3C, C)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias, device=device)
        # output projection: weight (C, C)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias, device=device)

    def forward(self, x: torch.Tensor, past: LayerKV | None = None) -> tuple[torch.Tensor, LayerKV]:
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        qkv = self.c_attn(x)  # (B, T, 3C)
        q, k, v = qkv.split(self.n_embd, dim=2)  # each (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if past is not None:
            past_k, past_v = past  # each (B, nh, P, hs)
            k = torch.cat((past_k, k), dim=2)  # (B, nh, S, hs)
            v = torch.cat((past_v, v), dim=2)  # (B, nh, S, hs)
        present = (k, v)
        S = k.size(2)
        P = S - T
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, S)
        # new token t (absolute position P + t) may attend to keys 0 .. P + t
        allowed = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=P)  # (T, S)
        att = att.masked_fill(~allowed, float("-inf"))  # (B, nh, T, S)
        att = F.softmax(att, dim=-1)  # (B, nh, T, S)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        y = self.c_proj(y)  # (B, T, C)
        return y, present


class MLP(nn.Module):
    """Position-wise feed-forward: Linear(C, 4C), GeLU (tanh), Linear(4C, C)."""

    def __init__(self, config: GPTConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias, device=device)  # weight (4C, C)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias, device=device)  # weight (C, 4C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, 4C)
        h = gelu_tanh(h)  # (B, T, 4C)
        return self.c_proj(h)  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        eps = config.layer_norm_epsilon
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias, device=device)
        self.attn = CausalSelfAttention(config, device=device)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias, device=device)
        self.mlp = MLP(config, device=device)

    def forward(self, x: torch.Tensor, past: LayerKV | None = None) -> tuple[torch.Tensor, LayerKV]:
        a, present = self.attn(self.ln_1(x), past)  # (B, T, C)
        x = x + a
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x, present


class GPT(nn.Module):
    """GPT-2-family decoder with tied input/output embeddings.

    `GPT(config)` builds a deterministic model (Linear/Embedding weights zero,
    LayerNorm weights one) without touching torch's global RNG; use
    `init_weights(generator)` (or `models.random_model`) for GPT-2's
    random initialisation, or `models.load_checkpoint` for trained weights.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ModelError(f"expected a GPTConfig, got {type(config).__name__}")
        self.config = config
        meta = torch.device("meta")  # allocate later, so that no default init runs
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd, device=meta),  # (V, C)
                wpe=nn.Embedding(config.block_size, config.n_embd, device=meta),  # (block_size, C)
                h=nn.ModuleList([Block(config, device=meta) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias, device=meta),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False, device=meta)  # (V, C)
        self.to_empty(device="cpu")
        self.lm_head.weight = self.transformer.wte.weight  # tied: one tensor, two names
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                    p.fill_(1.0)
                else:
                    p.zero_()

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> "GPT":
        """GPT-2 initialisation from `generator`: N(0, 0.02), c_proj scaled by 1/sqrt(2 n_layer)."""
        std = 0.02
        proj_std = std / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=proj_std, generator=generator)
            else:  # wte, wpe, c_attn, c_fc weights
                nn.init.normal_(p, mean=0.0, std=std, generator=generator)
        return self

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights counted once); optionally without position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        past_kv: PastKV | None = None,
        use_cache: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, PastKV]:
        """Logits (B, T, V) for token ids `idx` (B, T), after the `past_kv` tokens if given.

        With `use_cache=True` returns `(logits, new_past)`, where `new_past` holds
        keys and values for all P + T tokens and can be passed back to decode the next token.
        """
        if idx.dim() != 2:
            raise ModelError(f"idx must be (B, T), got shape {tuple(idx.shape)}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise ModelError(f"idx must hold integer token ids, got {idx.dtype}")
        B, T = idx.shape
        if T == 0:
            raise ModelError("idx must hold at least one token")
        n_layer = self.config.n_layer
        if past_kv is not None and len(past_kv) != n_layer:
            raise ModelError(f"past_kv has {len(past_kv)} layers, model has {n_layer}")
        P = 0 if past_kv is None else past_kv[0][0].size(2)
        if P + T > self.config.block_size:
            raise ModelError(f"context of {P + T} tokens exceeds block_size {self.config.block_size}")
        if int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size:
            raise ModelError(f"token ids must lie in [0, {self.config.vocab_size})")

        pos = torch.arange(P, P + T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C)
        pos_emb = self.transformer.wpe(pos)  # (T, C)
        x = tok_emb + pos_emb  # (B, T, C)
        new_past: PastKV = []
        for i, block in enumerate(self.transformer.h):
            x, present = block(x, None if past_kv is None else past_kv[i])  # (B, T, C)
            new_past.append(present)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        if use_cache:
            return logits, new_past
        return logits

    @torch.no_grad()
    def generate_stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Yield the next token ids (B, 1) one at a time, decoding with the KV cache.

        Greedy when `temperature == 0`; otherwise samples from a torch.Generator
        seeded with `seed`. Once the context fills `block_size`, only the last
        `block_size` tokens are kept and recomputed each step (nanoGPT's crop).
        """
        _check_sampling_args(max_new_tokens, temperature, top_k)
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ModelError(f"idx must be (B, T) with T >= 1, got shape {tuple(idx.shape)}")
        generator = torch.Generator(device=idx.device)
        generator.manual_seed(int(seed))
        block = self.config.block_size
        past: PastKV | None = None
        feed = idx[:, -block:]  # (B, T) tokens not yet in the cache
        seq = idx
        for _ in range(max_new_tokens):
            cached = 0 if past is None else past[0][0].size(2)
            if cached + feed.size(1) > block:
                # the window slides: positions shift, so the cache is no longer valid
                past, feed = None, seq[:, -block:]
            logits, past = self(feed, past_kv=past, use_cache=True)  # (B, T, V)
            nxt = sample_next_token(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
            seq = torch.cat((seq, nxt), dim=1)
            feed = nxt
            yield nxt

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> torch.Tensor:
        """Prompt `idx` (B, T) followed by `max_new_tokens` generated tokens: (B, T + max_new_tokens)."""
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, seed))
        return torch.cat([idx, *new], dim=1)


def _check_sampling_args(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ModelError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ModelError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ModelError(f"top_k must be a positive int or None, got {top_k!r}")


def sample_next_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Next token ids (B, 1) from last-position logits (B, V).

    Greedy (argmax, lowest id on ties) when `temperature == 0`; otherwise softmax
    of logits / temperature restricted to the `top_k` largest, sampled with `generator`.
    The MPC client samples with this same function on its reconstructed logits.
    """
    _check_sampling_args(0, temperature, top_k)
    if logits.dim() != 2:
        raise ModelError(f"logits must be (B, V), got shape {tuple(logits.shape)}")
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)  # (B, 1)
    if generator is None:
        raise ModelError("sampling with temperature > 0 needs a seeded torch.Generator")
    logits = logits / temperature  # (B, V)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
