"""`shardproof infer`: the plaintext path, JSON output, exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.shardproof import main
from models import ByteBPETokenizer, GPTConfig, TINY_MODEL_DIR, load_model_and_tokenizer, random_model, save_hf_checkpoint

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"text", "tokens", "seconds", "seconds_per_token", "parties", "job_id",
        "rounds_per_token", "bytes_per_party_per_token", "offline_seconds", "online_seconds_per_token",
        "replicas", "dropped", "resumed"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("infer") / "model"
    tok = ByteBPETokenizer.train("the light and the darkness, the evening and the morning. " * 30, 300)
    model = random_model(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=tok.vocab_size, block_size=32), seed=3)
    save_hf_checkpoint(model, d, tokenizer=tok)
    return d


def _json_run(capsys, *args: str) -> dict:
    rc = main(["infer", "--plaintext", "--json", *args])
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def test_plaintext_json_greedy_matches_the_model(capsys, ckpt):
    prompt = "the evening and"
    got = _json_run(capsys, "--model", str(ckpt), "--prompt", prompt, "--max-new-tokens", "7", "--temperature", "0")
    assert set(got) == KEYS
    assert got["parties"] == 0
    model, tok = load_model_and_tokenizer(ckpt)
    idx = torch.tensor([tok.encode(prompt)])
    want = model.generate(idx, 7, temperature=0)[0, idx.size(1) :].tolist()
    assert got["tokens"] == want
    assert got["text"] == tok.decode(want)
    assert got["seconds"] >= 0 and got["seconds_per_token"] == pytest.approx(got["seconds"] / 7, abs=1e-5)
    # no parties, no communication: the whole time is the online time
    assert got["rounds_per_token"] == 0 and got["bytes_per_party_per_token"] == 0 and got["offline_seconds"] == 0
    assert got["online_seconds_per_token"] == got["seconds_per_token"]


def test_plaintext_sampling_follows_the_seed(capsys, ckpt):
    args = ["--model", str(ckpt), "--prompt", "the light", "--max-new-tokens", "12", "--temperature", "1.5", "--top-k", "50"]
    a = _json_run(capsys, *args, "--seed", "1")
    b = _json_run(capsys, *args, "--seed", "1")
    c = _json_run(capsys, *args, "--seed", "2")
    assert a["tokens"] == b["tokens"]
    assert a["tokens"] != c["tokens"]


def test_plaintext_text_output_streams_prompt_and_continuation(capsys, ckpt):
    rc = main(["infer", "--plaintext", "--model", str(ckpt), "--prompt", "the light", "--max-new-tokens", "5", "--temperature", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    model, tok = load_model_and_tokenizer(ckpt)
    idx = torch.tensor([tok.encode("the light")])
    assert out == tok.decode(model.generate(idx, 5, temperature=0)[0].tolist()) + "\n"


def test_missing_model_dir_exits_2(capsys, tmp_path):
    assert main(["infer", "--plaintext", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "not found" in capsys.readouterr().err


def test_model_dir_without_tokenizer_exits_2(capsys, tmp_path):
    save_hf_checkpoint(random_model(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=300, block_size=8), 0), tmp_path)
    assert main(["infer", "--plaintext", "--model", str(tmp_path), "--prompt", "x"]) == 2
    assert "tokenizer.json" in capsys.readouterr().err


def test_empty_prompt_exits_2(capsys, ckpt):
    assert main(["infer", "--plaintext", "--model", str(ckpt), "--prompt", ""]) == 2


@pytest.mark.parametrize("bad", [["--max-new-tokens", "-1"], ["--temperature", "-0.5"], ["--top-k", "0"], ["--parties", "x"]])
def test_bad_arguments_exit_2(ckpt, bad):
    with pytest.raises(SystemExit) as e:
        main(["infer", "--plaintext", "--model", str(ckpt), "--prompt", "x", *bad])
    assert e.value.code == 2


@pytest.mark.parametrize("extra", [[], ["--processes"]], ids=["in-process", "processes"])
def test_mpc_path_generates_what_plaintext_generates(capsys, ckpt, extra):
    args = ["--model", str(ckpt), "--prompt", "the evening and", "--max-new-tokens", "5", "--temperature", "0"]
    plain = _json_run(capsys, *args)
    rc = main(["infer", "--json", "--parties", "3", *extra, *args])
    got = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(got) == KEYS
    assert got["parties"] == 3
    assert got["tokens"] == plain["tokens"] and got["text"] == plain["text"]
    assert got["rounds_per_token"] > 0 and got["bytes_per_party_per_token"] > 0
    assert got["offline_seconds"] > 0 and got["online_seconds_per_token"] > 0
    assert got["online_seconds_per_token"] * 5 <= got["seconds"] + 1e-3


def test_mpc_counters_are_the_programs(capsys, ckpt):
    """Rounds and bytes depend on the job's shapes only: in-process, one process per party and the count a
    ledger client makes from the shapes (prover.program_counts) agree."""
    from models.publish import publish_model
    from mpc_core.prg import master_from_int
    from prover.program_counts import program_counts

    args = ["--model", str(ckpt), "--prompt", "the evening and", "--max-new-tokens", "3", "--temperature", "0",
            "--parties", "3", "--json"]
    got = {}
    for name, extra in (("in-process", []), ("processes", ["--processes"])):
        assert main(["infer", *args, *extra]) == 0
        got[name] = json.loads(capsys.readouterr().out)
    a, b = got["in-process"], got["processes"]
    assert a["rounds_per_token"] == b["rounds_per_token"] > 0
    assert a["bytes_per_party_per_token"] == b["bytes_per_party_per_token"] > 0
    model, tok = load_model_and_tokenizer(ckpt)
    manifest = publish_model(model, 3, ckpt.parent / "published", master_from_int(0, "owner"))
    pc = program_counts(manifest, len(tok.encode("the evening and")), 3)
    assert len(pc.step_rounds) == 3 and pc.setup_rounds > 0
    assert pc.rounds / 3 == pytest.approx(a["rounds_per_token"], abs=1e-3)
    assert pc.bytes_per_party / 3 == pytest.approx(a["bytes_per_party_per_token"], abs=0.1)


@pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").is_file(), reason="shipped tiny model not trained yet")
def test_console_entry_with_the_default_shipped_model():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "cli.shardproof", "infer", "--plaintext", "--json", "--prompt", "And the LORD said unto",
         "--max-new-tokens", "8", "--temperature", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert set(got) == KEYS and got["parties"] == 0 and len(got["tokens"]) == 8 and got["text"]
