"""Where a private decode step spends its time and bytes, by op (outermost scope).

Usage: python tools/profile_decode.py [--model tiny|gpt2-small] [--parties 3] [--tokens 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from prover.generation import PrivateGenerator  # noqa: E402
from models import TINY_MODEL_DIR, GPTConfig, load_checkpoint, random_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny", choices=["tiny", "gpt2-small"])
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_checkpoint(TINY_MODEL_DIR) if args.model == "tiny" else random_model(
        GPTConfig(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024), seed=0)
    g = PrivateGenerator(model, args.parties, seed=0)
    it = g.generate(list(range(5, 13)), args.tokens + 1)
    next(it)  # prefill
    before = g.session.counters.snapshot()
    for _ in it:
        pass
    d = g.session.counters.since(before)
    n = args.tokens
    total = sum(g.stats.decode_seconds)
    t = Table(title=f"decode profile: {args.model}, N={args.parties}, per token ({total / n:.3f} s/token)")
    for c in ("op", "s/token", "share", "rounds/token", "MB/party/token"):
        t.add_column(c, justify="left" if c == "op" else "right")
    for name, v in sorted(d.by_op.items(), key=lambda kv: -kv[1].seconds):
        t.add_row(name, f"{v.seconds / n:.4f}", f"{100 * v.seconds / total:.1f}%", f"{v.rounds / n:.0f}",
                  f"{v.bytes_per_party / n / 1e6:.2f}")
    other = total - sum(v.seconds for v in d.by_op.values())
    t.add_row("(outside ops: glue, sharing, reconstruction)", f"{other / n:.4f}", f"{100 * other / total:.1f}%", "", "")
    Console(width=140).print(t)
    print(f"dealer/offline seconds per token (inside the ops above): {d.dealer_seconds / n:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
