"""Agreement of private generation with the float64 plaintext reference on the shipped model.

Issue targets: greedy 32-token continuations identical for at least 19 of 20
prompts; teacher-forced next-token top-1 agreement of at least 99.5% over 200
held-out positions; the largest absolute logit error is printed (-s shows it).
"""
from pathlib import Path

import pytest
import torch

from prover.generation import PrivateGenerator
from models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tools" / "data" / "kjv_genesis_2kings.txt"

pytestmark = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").is_file(), reason="no shipped model")


@pytest.fixture(scope="module")
def shipped():
    model = load_checkpoint(TINY_MODEL_DIR).double()
    return model, load_tokenizer(TINY_MODEL_DIR)


@pytest.fixture(scope="module")
def generator(shipped):
    return PrivateGenerator(shipped[0], parties=3, seed=0)


@pytest.mark.parametrize("n_prompts,need", [pytest.param(2, 2, id="first-2-all"),
                                             pytest.param(20, 19, marks=pytest.mark.soak, id="19-of-20")])
def test_greedy_continuations_identical_to_plaintext(shipped, generator, n_prompts, need):
    """32-token greedy continuations of the shipped prompts: at least 19 of 20 identical (make soak); make
    test runs the first 2, which are identical (the run is deterministic: any drift shows)."""
    model, tok = shipped
    prompts = [p for p in (TINY_MODEL_DIR / "prompts.txt").read_text().splitlines() if p.strip()]
    assert len(prompts) == 20
    same, diffs = 0, []
    for p in prompts[:n_prompts]:
        ids = tok.encode(p)
        ref = model.generate(torch.tensor([ids]), 32, temperature=0)[0, len(ids):].tolist()
        generator.reset()
        got = list(generator.generate(ids, 32))
        same += got == ref
        if got != ref:
            diffs.append((p, tok.decode(got), tok.decode(ref)))
    print(f"\ngreedy 32-token continuations identical: {same}/{n_prompts}")
    assert same >= need, diffs


def test_top1_agreement_over_200_held_out_positions(shipped, generator):
    model, tok = shipped
    text = CORPUS.read_text()[-20000:]  # the tail of the corpus is the held-out validation split
    ids = tok.encode(text)
    block = model.config.block_size
    windows = [ids[i:i + 100] for i in (0, 1000)]  # 2 x 100 positions, each within one context
    agree, total, max_err = 0, 0, 0.0
    for w in windows:
        assert len(w) == 100 <= block
        generator.reset()
        got = generator.step(w, all_logits=True)
        with torch.no_grad():
            ref = model(torch.tensor([w]))[0]
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += len(w)
        max_err = max(max_err, float((got - ref).abs().max()))
    print(f"\ntop-1 agreement {agree}/{total}; largest absolute logit error {max_err:.4g}")
    assert total == 200 and agree / total >= 0.995
