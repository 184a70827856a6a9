"""Checkpoint I/O in the Hugging Face GPT-2 layout: round trips, transformers parity, bad inputs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prover.errors import CheckpointError
from models.errors import ModelsError
from models import (
    ByteBPETokenizer,
    GPTConfig,
    load_checkpoint,
    load_model_and_tokenizer,
    load_tokenizer,
    random_model,
    save_hf_checkpoint,
)
from models.checkpoint import config_to_hf

CONV1D = re.compile(r"\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")


def _hand_made_hf_tensors(model, prefix: bool) -> dict[str, torch.Tensor]:
    """HF GPT2 tensors written out by hand: Conv1D weights (in, out), causal-mask buffers, tied lm_head."""
    out = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue
        name = k if prefix else k[len("transformer.") :]
        out[name] = (v.t() if CONV1D.search(k) else v).float().contiguous().clone()
    n = model.config.block_size
    for i in range(model.config.n_layer):
        p = "transformer." if prefix else ""
        out[f"{p}h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        out[f"{p}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    out["lm_head.weight"] = model.transformer.wte.weight.detach().float().clone()
    return out


def _write_dir(d: Path, config: GPTConfig, tensors: dict[str, torch.Tensor], fmt: str = "safetensors", **cfg_over) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    cfg = {**config_to_hf(config), **cfg_over}
    (d / "config.json").write_text(json.dumps(cfg))
    if fmt == "safetensors":
        save_file(tensors, str(d / "model.safetensors"))
    else:
        torch.save(tensors, str(d / "pytorch_model.bin"))
    return d


def test_save_load_round_trip_identical_logits(tmp_path, make_ids):
    config = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=300, block_size=16)
    model32 = random_model(config, seed=21)
    tok = ByteBPETokenizer.train("in the beginning was the word " * 20, 300)
    save_hf_checkpoint(model32, tmp_path / "ck", tokenizer=tok)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    # the file holds Conv1D (in, out) weights and no duplicate lm_head, as Hugging Face writes it
    raw = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert "lm_head.weight" not in raw
    C = config.n_embd
    assert raw["transformer.h.0.attn.c_attn.weight"].shape == (C, 3 * C)
    assert raw["transformer.h.0.mlp.c_proj.weight"].shape == (4 * C, C)
    loaded, tok2 = load_model_and_tokenizer(tmp_path / "ck")
    idx = make_ids((2, 16), config.vocab_size, seed=1)
    assert torch.equal(loaded(idx), model32.eval()(idx))
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert tok2.merges == tok.merges


@pytest.mark.parametrize("fmt,prefix", [("safetensors", True), ("bin", False), ("bin", True), ("safetensors", False)])
def test_hand_made_hf_layout_loads_to_identical_logits(tmp_path, small_config, make_ids, fmt, prefix):
    ref = random_model(small_config, seed=5)
    d = _write_dir(tmp_path / "hf", small_config, _hand_made_hf_tensors(ref, prefix), fmt=fmt)
    loaded = load_checkpoint(d)
    idx = make_ids((1, 20), small_config.vocab_size, seed=2)
    assert torch.equal(loaded(idx), ref.eval()(idx))


def test_load_as_float64(tmp_path, small_config, make_ids):
    ref = random_model(small_config, seed=5)
    save_hf_checkpoint(ref, tmp_path / "ck")
    m = load_checkpoint(tmp_path / "ck", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    idx = make_ids((1, 10), small_config.vocab_size, seed=3)
    torch.testing.assert_close(m(idx), ref.double()(idx), rtol=0, atol=0)


# ---- bad inputs ----------------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_path_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "f")


def test_missing_config(tmp_path, small_config):
    save_hf_checkpoint(random_model(small_config, 0), tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_checkpoint(tmp_path)


def test_missing_weights(tmp_path, small_config):
    save_hf_checkpoint(random_model(small_config, 0), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing weights"):
        load_checkpoint(tmp_path)


def test_missing_tokenizer(tmp_path, small_config):
    save_hf_checkpoint(random_model(small_config, 0), tmp_path)
    with pytest.raises(CheckpointError, match="missing tokenizer.json"):
        load_tokenizer(tmp_path)


def test_bad_tokenizer_file(tmp_path, small_config):
    save_hf_checkpoint(random_model(small_config, 0), tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="bad tokenizer.json"):
        load_tokenizer(tmp_path)


def test_malformed_config_json(tmp_path, small_config):
    save_hf_checkpoint(random_model(small_config, 0), tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda c: c.pop("n_head"), r"missing keys \['n_head'\]"),
        (lambda c: c.pop("n_positions"), "missing keys"),
        (lambda c: c.update(model_type="llama"), "model_type"),
        (lambda c: c.update(activation_function="relu"), "activation_function"),
        (lambda c: c.update(n_inner=7), "n_inner"),
        (lambda c: c.update(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (lambda c: c.update(tie_word_embeddings=False), "tie_word_embeddings"),
        (lambda c: c.update(n_head=5), "divisible"),
        (lambda c: c.update(n_layer="2"), "n_layer"),
    ],
)
def test_bad_config_values(tmp_path, small_config, edit, match):
    save_hf_checkpoint(random_model(small_config, 0), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    edit(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path)


def _tensors(small_config, seed=0):
    return _hand_made_hf_tensors(random_model(small_config, seed), prefix=True)


def test_wrong_shape(tmp_path, small_config):
    t = _tensors(small_config)
    t["transformer.h.1.mlp.c_fc.weight"] = t["transformer.h.1.mlp.c_fc.weight"].t().contiguous()  # (out, in): not Conv1D
    _write_dir(tmp_path, small_config, t)
    with pytest.raises(CheckpointError, match=r"shape mismatch for transformer\.h\.1\.mlp\.c_fc\.weight"):
        load_checkpoint(tmp_path)


def test_config_disagrees_with_weights(tmp_path, small_config):
    t = _tensors(small_config)
    _write_dir(tmp_path, small_config, t, vocab_size=small_config.vocab_size + 1)
    with pytest.raises(CheckpointError, match="shape mismatch for transformer.wte.weight"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights(tmp_path, small_config, value):
    t = _tensors(small_config)
    t["transformer.h.0.attn.c_proj.bias"][3] = value
    _write_dir(tmp_path, small_config, t, fmt="bin")
    with pytest.raises(CheckpointError, match=r"non-finite values .* in transformer\.h\.0\.attn\.c_proj\.bias"):
        load_checkpoint(tmp_path)


def test_unexpected_tensor(tmp_path, small_config):
    t = _tensors(small_config)
    t["transformer.h.9.ln_1.weight"] = torch.ones(small_config.n_embd)
    _write_dir(tmp_path, small_config, t)
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        load_checkpoint(tmp_path)


def test_missing_tensor(tmp_path, small_config):
    t = _tensors(small_config)
    del t["transformer.ln_f.bias"]
    _write_dir(tmp_path, small_config, t)
    with pytest.raises(CheckpointError, match=r"missing tensors .*ln_f\.bias"):
        load_checkpoint(tmp_path)


def test_untied_lm_head(tmp_path, small_config):
    t = _tensors(small_config)
    t["lm_head.weight"] = t["lm_head.weight"] + 1.0
    _write_dir(tmp_path, small_config, t)
    with pytest.raises(CheckpointError, match="untied"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_weight_file(tmp_path, small_config, name):
    _write_dir(tmp_path, small_config, {})
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)


def test_pickled_objects_are_refused(tmp_path, small_config):
    _write_dir(tmp_path, small_config, _tensors(small_config), fmt="bin")
    torch.save({"w": torch.ones(2), "evil": GPTConfig()}, str(tmp_path / "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match="cannot read"):  # weights_only=True rejects arbitrary objects
        load_checkpoint(tmp_path)


def test_sharded_checkpoint_is_reported(tmp_path, small_config):
    _write_dir(tmp_path, small_config, {})
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded"):
        load_checkpoint(tmp_path)


def test_errors_share_a_root():
    assert issubclass(CheckpointError, ModelsError)  # the models layer's own tree (models/errors.py)


def test_non_float_dtype_is_refused(tmp_path, small_config):
    save_hf_checkpoint(random_model(small_config, 0), tmp_path)
    with pytest.raises(ModelsError, match="floating-point"):
        load_checkpoint(tmp_path, dtype=torch.int64)
