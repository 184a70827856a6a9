"""Checkpoint I/O in the Hugging Face GPT-2 layout, from local directories only (never a hub).

A checkpoint directory holds:
- `config.json`: GPT2Config fields (n_layer, n_head, n_embd, vocab_size, n_positions, layer_norm_epsilon, ...),
- `model.safetensors` or `pytorch_model.bin`: the weights, with HF's Conv1D layout (weight (in, out))
  for `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`; keys with or without the `transformer.` prefix,
- optionally `tokenizer.json`: a `ByteBPETokenizer` (shardproof's own format).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from models.errors import CheckpointError, ModelError, TokenizerError
from models.gpt import GPT, GPTConfig
from models.tokenizer import ByteBPETokenizer

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_BIN_FILE = "pytorch_model.bin"
TOKENIZER_FILE = "tokenizer.json"

# Weights that HF stores as Conv1D (in, out); our nn.Linear stores (out, in).
_CONV1D = re.compile(r"^h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
# Non-parameter buffers that HF GPT-2 checkpoints may carry (the causal mask).
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")

_REQUIRED_CONFIG = ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")
# Config values that would change the computation in ways this model does not implement.
_SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


def _require_dir(path: str | Path) -> Path:
    d = Path(path)
    if not d.exists():
        raise CheckpointError(f"checkpoint directory not found: {d}")
    if not d.is_dir():
        raise CheckpointError(f"checkpoint path is not a directory: {d}")
    return d


def config_from_hf(cfg: Mapping[str, Any]) -> GPTConfig:
    """GPTConfig from a Hugging Face GPT-2 `config.json` dict; rejects what this model cannot run."""
    if not isinstance(cfg, Mapping):
        raise CheckpointError("config.json must hold a JSON object")
    model_type = cfg.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise CheckpointError(f"config.json: unsupported model_type {model_type!r} (only 'gpt2')")
    missing = [k for k in _REQUIRED_CONFIG if k not in cfg]
    if missing:
        raise CheckpointError(f"config.json: missing keys {missing}")
    act = cfg.get("activation_function", "gelu_new")
    if act not in _SUPPORTED_ACTIVATIONS:
        raise CheckpointError(f"config.json: unsupported activation_function {act!r} (need one of {_SUPPORTED_ACTIVATIONS})")
    n_inner = cfg.get("n_inner")
    if n_inner is not None and n_inner != 4 * cfg["n_embd"]:
        raise CheckpointError(f"config.json: n_inner={n_inner!r} unsupported (must be null or 4 * n_embd)")
    unsupported = {
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
    }
    for key, want in unsupported.items():
        if key in cfg and cfg[key] != want:
            raise CheckpointError(f"config.json: {key}={cfg[key]!r} unsupported (must be {want!r})")
    if "n_ctx" in cfg and cfg["n_ctx"] != cfg["n_positions"]:
        raise CheckpointError(f"config.json: n_ctx ({cfg['n_ctx']}) differs from n_positions ({cfg['n_positions']})")
    try:
        return GPTConfig(
            n_layer=cfg["n_layer"],
            n_head=cfg["n_head"],
            n_embd=cfg["n_embd"],
            vocab_size=cfg["vocab_size"],
            block_size=cfg["n_positions"],
            layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-5)),
            bias=True,
        )
    except (ModelError, TypeError, ValueError) as e:
        raise CheckpointError(f"config.json: {e}") from None


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A Hugging Face GPT-2 `config.json` dict for `config` (loadable by transformers too)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "n_inner": None,
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "attn_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
    }


def read_config(path: str | Path) -> GPTConfig:
    """GPTConfig of the checkpoint directory `path`."""
    d = _require_dir(path)
    f = d / CONFIG_FILE
    if not f.is_file():
        raise CheckpointError(f"missing {CONFIG_FILE} in {d}")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {f}: {e}") from None
    return config_from_hf(cfg)


def _read_weights(d: Path) -> dict[str, torch.Tensor]:
    st, pt = d / SAFETENSORS_FILE, d / TORCH_BIN_FILE
    if st.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(st), device="cpu"))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot read {st}: {e}") from None
    if pt.is_file():
        try:
            sd = torch.load(str(pt), map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many types (UnpicklingError, RuntimeError, EOFError, ...)
            raise CheckpointError(f"cannot read {pt}: {type(e).__name__}: {e}") from None
        if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{pt} does not hold a flat dict of tensors")
        return dict(sd)
    if (d / (SAFETENSORS_FILE + ".index.json")).is_file() or (d / (TORCH_BIN_FILE + ".index.json")).is_file():
        raise CheckpointError(f"sharded checkpoints are not supported: {d}")
    raise CheckpointError(f"missing weights in {d}: need {SAFETENSORS_FILE} or {TORCH_BIN_FILE}")


def hf_to_state_dict(hf: Mapping[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state dict (float32, Linear (out, in), `transformer.` prefix) from HF GPT-2 tensors."""
    lm_head = None
    out: dict[str, torch.Tensor] = {}
    for key, t in hf.items():
        if key == "lm_head.weight":
            lm_head = t
            continue
        k = key[len("transformer."):] if key.startswith("transformer.") else key
        if _IGNORED.match(k):
            continue
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise CheckpointError(f"tensor {key!r} is not a floating-point tensor")
        t = t.detach().to(torch.float32)
        if _CONV1D.match(k):
            if t.dim() != 2:
                raise CheckpointError(f"tensor {key!r} must be 2-D, got shape {tuple(t.shape)}")
            t = t.t()  # Conv1D (in, out) -> Linear (out, in)
        out["transformer." + k] = t.contiguous()
    expected = _expected_shapes(config)
    unexpected = sorted(k for k in out if k not in expected)
    if unexpected:
        raise CheckpointError(f"unexpected tensors in checkpoint: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    missing = sorted(k for k in expected if k not in out and k != "lm_head.weight")
    if missing:
        raise CheckpointError(f"missing tensors in checkpoint: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    for k, shape in expected.items():
        if k == "lm_head.weight":
            continue
        if tuple(out[k].shape) != shape:
            raise CheckpointError(f"shape mismatch for {k}: checkpoint has {tuple(out[k].shape)}, config needs {shape}")
        if not torch.isfinite(out[k]).all():
            raise CheckpointError(f"non-finite values (NaN or Inf) in {k}")
    if lm_head is not None:
        wte = out["transformer.wte.weight"]
        if tuple(lm_head.shape) != tuple(wte.shape) or not torch.equal(lm_head.detach().to(torch.float32), wte):
            raise CheckpointError("lm_head.weight differs from transformer.wte.weight: untied heads are not supported")
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def _expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}


def load_checkpoint(path: str | Path, dtype: torch.dtype = torch.float32) -> GPT:
    """The GPT stored in the HF-layout directory `path`, in eval mode, as `dtype`."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ModelError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    d = _require_dir(path)
    config = read_config(d)
    sd = hf_to_state_dict(_read_weights(d), config)
    model = GPT(config)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"cannot load weights from {d}: {e}") from None
    return model.to(dtype).eval()


def load_tokenizer(path: str | Path) -> ByteBPETokenizer:
    """The `tokenizer.json` of the checkpoint directory `path`."""
    d = _require_dir(path)
    f = d / TOKENIZER_FILE
    if not f.is_file():
        raise CheckpointError(f"missing {TOKENIZER_FILE} in {d}")
    try:
        return ByteBPETokenizer.load(f)
    except TokenizerError as e:
        raise CheckpointError(f"bad {TOKENIZER_FILE} in {d}: {e}") from None


def load_model_and_tokenizer(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[GPT, ByteBPETokenizer]:
    """Model and tokenizer of one checkpoint directory; checks that their vocabularies agree."""
    model = load_checkpoint(path, dtype=dtype)
    tok = load_tokenizer(path)
    if tok.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"tokenizer has {tok.vocab_size} ids but the model only {model.config.vocab_size}")
    return model, tok


def state_dict_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """HF GPT-2 tensors (Conv1D weights (in, out), `transformer.` prefix, no tied lm_head) of `model`."""
    out: dict[str, torch.Tensor] = {}
    for key, t in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to transformer.wte.weight, as HF saves it
        k = key[len("transformer."):]
        t = t.detach().to("cpu")
        if _CONV1D.match(k):
            t = t.t()  # Linear (out, in) -> Conv1D (in, out)
        out[key] = t.contiguous().clone()
    return out


def save_hf_checkpoint(model: GPT, path: str | Path, tokenizer: ByteBPETokenizer | None = None) -> Path:
    """Write `model` (float32) in the HF GPT-2 layout: config.json, model.safetensors (+ tokenizer.json)."""
    from safetensors.torch import save_file

    if not isinstance(model, GPT):
        raise CheckpointError(f"expected a GPT, got {type(model).__name__}")
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(torch.float32) for k, v in state_dict_to_hf(model).items()}
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise CheckpointError(f"refusing to save non-finite values in {k}")
    (d / CONFIG_FILE).write_text(json.dumps(config_to_hf(model.config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(tensors, str(d / SAFETENSORS_FILE), metadata={"format": "pt"})
    if tokenizer is not None:
        if tokenizer.vocab_size > model.config.vocab_size:
            raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}")
        tokenizer.save(d / TOKENIZER_FILE)
    return d


def random_model(config: GPTConfig, seed: int) -> GPT:
    """A GPT with GPT-2's random initialisation drawn from a torch.Generator seeded with `seed`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ModelError(f"seed must be an int, got {seed!r}")
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return GPT(config).init_weights(g).eval()
