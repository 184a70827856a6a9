"""The MPC twin of models.gpt: the same GPT-2 decoder run on secret shares.

Every weight is a SharedTensor; Linear weights (and the tied embedding, once
as a lookup table and once as the LM head) are masked once per job
(F = W - b with a fixed dealer mask b), so a decode step opens
activation-sized values only. The KV cache is shared too and masked row by
row (MaskedCache). Token ids enter as a secret-shared one-hot row (integer
shares) times the masked embedding table; logits leave only as shares that
the client adds up. Shapes: T new tokens, P cached, S = P + T, C = n_embd,
nh heads of size hs, V vocabulary. Batch size is 1.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from mpc_core import MaskedCache, MaskedWeight, Session, SharedTensor
from mpc_core.protocols import arithmetic as A
from models.errors import ModelError
from models.gpt import GPT, GPTConfig

MASK_VALUE = -1e4  # added to scores a token may not attend to (exp(-1e4) is 0 in MPC and float)

LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def state_dict_for_sharing(model: GPT) -> dict[str, torch.Tensor]:
    """The tensors a model owner shares: GPT-2 names, float64, the tied head stored once (wte)."""
    sd = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    return sd


def expected_names(config: GPTConfig) -> list[str]:
    names = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"]
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        names += [p + "ln_1.weight", p + "ln_1.bias", p + "ln_2.weight", p + "ln_2.bias"]
        for lin in LINEARS:
            names += [p + lin + ".weight", p + lin + ".bias"]
    if not config.bias:
        names = [n for n in names if not n.endswith(".bias")]
    return names


class SharedGPT:
    """A GPT-2-family decoder whose weights, activations and KV cache are secret-shared."""

    def __init__(self, session: Session, config: GPTConfig, weights: Mapping[str, SharedTensor]):
        missing = [n for n in expected_names(config) if n not in weights]
        if missing:
            raise ModelError(f"shared weights lack {missing[:3]}{'...' if len(missing) > 3 else ''}")
        self.session, self.config = session, config
        self.w = dict(weights)
        C, V = config.n_embd, config.vocab_size
        for name in expected_names(config):
            want = (V, C) if name.endswith("wte.weight") else None
            if want and tuple(self.w[name].shape) != want:
                raise ModelError(f"{name} has shape {tuple(self.w[name].shape)}, expected {want}")
        # 1. Mask every weight matrix once for this job: x @ W^T uses F = W^T - b.
        self.masked: dict[str, MaskedWeight] = {}
        for i in range(config.n_layer):
            for lin in LINEARS:
                name = f"transformer.h.{i}.{lin}.weight"
                self.masked[name] = self.w[name].transpose(0, 1).mask(name + ".T")  # (in, out)
        self.masked["wte"] = self.w["transformer.wte.weight"].mask("transformer.wte.weight")  # (V, C) lookup
        self.masked["lm_head"] = self.w["transformer.wte.weight"].transpose(0, 1).mask("lm_head.weight.T")  # (C, V)
        # The masked matrices now stand for the weights; drop the share copies (a node keeps its
        # share file on disk for audits), which halves the resident weight memory.
        for name in list(self.w):
            if name.endswith("wte.weight") or any(name.endswith(lin + ".weight") for lin in LINEARS):
                del self.w[name]
        self.reset_cache()

    @classmethod
    def from_plain_model(cls, session: Session, model: GPT, owner_seed: bytes | None = None) -> "SharedGPT":
        """Share a plaintext model as its owner would (simulations and tests)."""
        sd = state_dict_for_sharing(model)
        weights = {k: SharedTensor.from_plain(session, v, owner_seed) for k, v in sorted(sd.items())}
        return cls(session, model.config, weights)

    def reset_cache(self) -> None:
        """Start a new sequence: empty KV caches (new masks are keyed by the sequence number)."""
        cfg = self.config
        nh, hs, L = cfg.n_head, cfg.head_size, cfg.block_size
        seq = getattr(self, "_seq", -1) + 1
        self._seq = seq
        self.k_cache = [MaskedCache(self.session, f"seq{seq}.h{i}.k", (nh, hs, L), dim=2) for i in range(cfg.n_layer)]
        self.v_cache = [MaskedCache(self.session, f"seq{seq}.h{i}.v", (nh, L, hs), dim=1) for i in range(cfg.n_layer)]
        self.length = 0

    # --- the network -----------------------------------------------------------------
    def _linear(self, x: SharedTensor, layer: int, lin: str) -> SharedTensor:
        p = f"transformer.h.{layer}.{lin}"
        return x @ self.masked[p + ".weight"] + self.w[p + ".bias"] if self.config.bias else x @ self.masked[p + ".weight"]

    def _ln(self, x: SharedTensor, prefix: str) -> SharedTensor:
        bias = self.w.get(prefix + ".bias") if self.config.bias else None
        return x.layer_norm(self.w[prefix + ".weight"], bias, eps=self.config.layer_norm_epsilon)

    def _attention(self, x: SharedTensor, layer: int) -> SharedTensor:
        cfg = self.config
        T, C = x.shape
        nh, hs = cfg.n_head, cfg.head_size
        qkv = self._linear(x, layer, "attn.c_attn")  # (T, 3C)
        q = qkv[:, 0:C].reshape(T, nh, hs).transpose(0, 1)  # (nh, T, hs)
        k = qkv[:, C:2 * C].reshape(T, nh, hs).transpose(0, 1)  # (nh, T, hs)
        v = qkv[:, 2 * C:3 * C].reshape(T, nh, hs).transpose(0, 1)  # (nh, T, hs)
        self.k_cache[layer].append(k.transpose(1, 2))  # cache K^T: (nh, hs, S)
        self.v_cache[layer].append(v)  # cache V: (nh, S, hs)
        S = self.k_cache[layer].length
        P = S - T
        att = (q @ self.k_cache[layer]) * (1.0 / math.sqrt(hs))  # (nh, T, S)
        if T > 1:
            allowed = torch.ones(T, S, dtype=torch.bool).tril(diagonal=P)  # (T, S)
            att = att + torch.zeros(T, S, dtype=torch.float64).masked_fill(~allowed, MASK_VALUE)
        att = att.softmax(-1)  # (nh, T, S)
        y = att @ self.v_cache[layer]  # (nh, T, hs)
        y = y.transpose(0, 1).reshape(T, C)  # (T, C): heads side by side
        return self._linear(y, layer, "attn.c_proj")

    def forward(self, onehot: torch.Tensor, all_logits: bool = True) -> SharedTensor:
        """Logit shares (T, V) (or (1, V) for the last position) for one-hot token shares (P_local, T, V).

        The one-hot shares are integers (0/1, no fixed-point scale), so the embedding
        lookup is an exact masked product with no truncation."""
        s, cfg = self.session, self.config
        if onehot.dim() != 3 or onehot.shape[-1] != cfg.vocab_size:
            raise ModelError(f"one-hot shares must be (parties, T, {cfg.vocab_size}), got {tuple(onehot.shape)}")
        T = onehot.shape[1]
        P = self.length
        if P + T > cfg.block_size:
            raise ModelError(f"context of {P + T} tokens exceeds block_size {cfg.block_size}")
        with s.scope("embed"):
            tok = SharedTensor(s, A.fixed_matmul(s, onehot, self.masked["wte"].opened, self.masked["wte"].key,
                                                   refs=self.masked["wte"].refs))
        x = tok + self.w["transformer.wpe.weight"][P:P + T]  # (T, C)
        for i in range(cfg.n_layer):
            x = x + self._attention(self._ln(x, f"transformer.h.{i}.ln_1"), i)  # (T, C)
            h = self._linear(self._ln(x, f"transformer.h.{i}.ln_2"), i, "mlp.c_fc").gelu()  # (T, 4C)
            x = x + self._linear(h, i, "mlp.c_proj")  # (T, C)
        self.length = P + T
        if not all_logits:
            x = x[T - 1:T]  # (1, C)
        x = self._ln(x, "transformer.ln_f")
        return x @ self.masked["lm_head"]  # (T, V)


def share_tokens(session: Session, token_ids: list[int], vocab_size: int) -> torch.Tensor:
    """The client's one-hot integer shares (P_local, T, V) for token ids."""
    if any((not isinstance(t, int)) or t < 0 or t >= vocab_size for t in token_ids):
        raise ModelError(f"token ids must be ints in [0, {vocab_size})")
    onehot = torch.zeros(len(token_ids), vocab_size, dtype=torch.int64)
    onehot[torch.arange(len(token_ids)), torch.tensor(token_ids, dtype=torch.int64)] = 1
    return SharedTensor.from_ring(session, onehot)


def client_reconstruct(logits: SharedTensor) -> torch.Tensor:
    """What the client does with the logit shares the parties send it: add them up (float64)."""
    from mpc_core.ring import decode

    if len(logits.session.local_parties) != logits.session.n_parties:
        raise ModelError("reconstruction needs every party's share (the client receives all of them)")
    return decode(logits.data.sum(0), logits.session.frac_bits)
