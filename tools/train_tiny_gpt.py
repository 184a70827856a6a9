#!/usr/bin/env python3
"""Train the tiny GPT shipped in models/data/tiny/ (reproducible, one CPU thread).

Corpus: the King James Version, Genesis to 2 Kings, as shipped by Debian's
`bible-kjv-text` package (public domain text; see models/data/tiny/SOURCE.md).
tools/data/kjv_genesis_2kings.txt holds the extracted text ("Book N" chapter
lines, then one verse per line); `--extract` regenerates it from the installed
Debian package (`apt-get install bible-kjv`, which pulls in bible-kjv-text).

Held out: every 20th chapter (chapter index % 20 == 19). The rest trains a
byte-level BPE tokenizer and the model. The prompts file takes 20 verse openings
from held-out chapters.

    .venv/bin/python tools/train_tiny_gpt.py                # train, write models/data/tiny/
    .venv/bin/python tools/train_tiny_gpt.py --extract      # re-extract the corpus first
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import ByteBPETokenizer, GPTConfig, random_model, save_hf_checkpoint  # noqa: E402

CORPUS = ROOT / "tools" / "data" / "kjv_genesis_2kings.txt"
OUT_DIR = ROOT / "prover" / "models" / "data" / "tiny"
VERSE_SPEC = "gen1:1-2ki25:30"
HELD_OUT_EVERY = 20


def extract_corpus(path: Path) -> None:
    """Write Genesis..2 Kings from the Debian `bible` program as 'Book N' lines and verse lines."""
    raw = subprocess.run(["bible", "-l100000", VERSE_SPEC], check=True, capture_output=True, text=True).stdout
    lines = []
    for line in raw.splitlines():
        if m := re.match(r"^(\S.*) (\d+)$", line):
            lines.append(f"{m.group(1)} {m.group(2)}")
        elif m := re.match(r"^\s+\d+ (.*)$", line):
            lines.append(m.group(1).strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_chapters(path: Path) -> list[tuple[str, list[str]]]:
    """[(chapter title, [verse, ...]), ...] from the corpus file."""
    chapters: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"^(?:[123] )?[A-Z][a-z]+ \d+$", line):
            chapters.append((line, []))
        elif line:
            chapters[-1][1].append(line)
    return chapters


def split(chapters: list[tuple[str, list[str]]]) -> tuple[str, str, list[list[str]]]:
    train, val, held = [], [], []
    for i, (_title, verses) in enumerate(chapters):
        if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1:
            val.extend(verses)
            held.append(verses)
        else:
            train.extend(verses)
    return "\n".join(train) + "\n", "\n".join(val) + "\n", held


def make_prompts(held: list[list[str]], n: int = 20, words: int = 6) -> list[str]:
    """Openings (first `words` words) of `n` distinct held-out verses spread evenly over the held-out text."""
    verses = [v for chapter in held for v in chapter if len(v.split()) > words + 4]
    openings = [" ".join(v.split()[:words]) for v in verses]
    prompts: list[str] = []
    for j in range(n):
        k = (j * len(openings)) // n
        while openings[k] in prompts:  # skip repeated openings ("And the LORD spake unto Moses, ...")
            k += 1
        prompts.append(openings[k])
    return prompts


@torch.no_grad()
def evaluate(model, data: torch.Tensor, block: int, batches: int, batch_size: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    model.eval()
    losses = []
    for _ in range(batches):
        ix = torch.randint(len(data) - block - 1, (batch_size,), generator=g)
        x = torch.stack([data[i : i + block] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + block] for i in ix])
        logits = model(x)
        losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).item())
    model.train()
    return sum(losses) / len(losses)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extract", action="store_true", help="re-extract the corpus from the Debian bible-kjv package")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--iters", type=int, default=3500)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop early after this wall time (0: no limit)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t_start = time.time()

    if args.extract:
        extract_corpus(CORPUS)
    corpus_bytes = CORPUS.read_bytes()
    print(f"corpus {CORPUS.relative_to(ROOT)}: {len(corpus_bytes)} bytes, sha256 {hashlib.sha256(corpus_bytes).hexdigest()}")
    chapters = read_chapters(CORPUS)
    train_text, val_text, held = split(chapters)
    print(f"chapters {len(chapters)} (held out {len(held)}); train {len(train_text)} chars, val {len(val_text)} chars")

    t0 = time.time()
    tok = ByteBPETokenizer.train(train_text, args.vocab)
    train_ids = torch.tensor(tok.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.long)
    print(
        f"tokenizer: vocab {tok.vocab_size}, trained in {time.time() - t0:.1f}s; "
        f"train {len(train_ids)} tokens ({len(train_text.encode()) / len(train_ids):.2f} bytes/token), val {len(val_ids)} tokens"
    )

    config = GPTConfig(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
        vocab_size=tok.vocab_size, block_size=args.block, layer_norm_epsilon=1e-5,
    )
    model = random_model(config, seed=args.seed).train()
    print(f"model {config}: {model.num_params():,} parameters")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.99),
    )

    def lr_at(it: int) -> float:
        if it < args.warmup:
            return args.lr * (it + 1) / args.warmup
        frac = (it - args.warmup) / max(1, args.iters - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))

    g = torch.Generator().manual_seed(args.seed)
    history = []
    t_train = time.time()
    it = 0
    for it in range(args.iters):
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        ix = torch.randint(len(train_ids) - args.block - 1, (args.batch,), generator=g)
        x = torch.stack([train_ids[i : i + args.block] for i in ix])  # (B, T)
        y = torch.stack([train_ids[i + 1 : i + 1 + args.block] for i in ix])  # (B, T)
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if it % 50 == 0:
            el = time.time() - t_train
            print(f"iter {it:5d} loss {loss.item():.4f} lr {lr_at(it):.2e} {el:7.1f}s", flush=True)
        if (it + 1) % args.eval_every == 0 or it + 1 == args.iters:
            tr = evaluate(model, train_ids, args.block, 20, 32, seed=1)
            va = evaluate(model, val_ids, args.block, 20, 32, seed=2)
            history.append({"iter": it + 1, "train_loss": round(tr, 4), "val_loss": round(va, 4)})
            print(f"eval iter {it + 1}: train {tr:.4f} val {va:.4f}", flush=True)
        if args.max_minutes and time.time() - t_start > args.max_minutes * 60:
            print(f"stopping at iter {it + 1}: time budget reached", flush=True)
            tr = evaluate(model, train_ids, args.block, 20, 32, seed=1)
            va = evaluate(model, val_ids, args.block, 20, 32, seed=2)
            history.append({"iter": it + 1, "train_loss": round(tr, 4), "val_loss": round(va, 4)})
            break
    train_seconds = time.time() - t_train

    model.eval()
    out = save_hf_checkpoint(model, args.out, tokenizer=tok)
    prompts = make_prompts(held)
    (out / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    report = {
        "corpus": str(CORPUS.relative_to(ROOT)),
        "corpus_sha256": hashlib.sha256(corpus_bytes).hexdigest(),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "config": config.to_dict(),
        "parameters": model.num_params(),
        "iters": it + 1,
        "batch": args.batch,
        "lr": args.lr,
        "seed": args.seed,
        "train_seconds": round(train_seconds, 1),
        "threads": torch.get_num_threads(),
        "history": history,
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print("\nsamples:")
    for i, p in enumerate(prompts[:3]):
        idx = torch.tensor([tok.encode(p)], dtype=torch.long)
        greedy = tok.decode(model.generate(idx, 40, temperature=0)[0, idx.size(1):].tolist())
        sampled = tok.decode(model.generate(idx, 40, temperature=0.8, top_k=40, seed=i)[0, idx.size(1):].tolist())
        print(f"  prompt  : {p!r}\n  greedy  : {greedy!r}\n  sampled : {sampled!r}")
    print(f"\nwrote {out} in {time.time() - t_start:.0f}s total ({train_seconds:.0f}s training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
