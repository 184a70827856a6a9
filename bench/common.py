"""Shared benchmark plumbing: timing, rich tables, JSON output."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
# The repository root goes first, even when PYTHONPATH already has it: the script's own folder (bench/)
# is sys.path[0], and bench/ledger.py would shadow the ledger package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if p != str(ROOT)]


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Minimum wall time over `repeats` runs (timings here are noisy; the minimum is the most stable)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "platform": platform.platform()}


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="right" if c not in ("op", "model", "phase", "case") else "left")
    for r in rows:
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r])
    Console(stderr=False, width=max(Console().width, 160)).print(t)


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, indent=2, sort_keys=True))
    Console(stderr=True).print(f"wrote {p}")


SHIPPED_PROMPT = "And the LORD said unto Moses,"


def shipped_reference(tokens: int, prompt: str = SHIPPED_PROMPT):
    """The shipped model, its tokenizer, the prompt's ids, the plaintext float32 greedy continuation of
    `tokens` tokens and the seconds it took (the baseline every private run is compared with)."""
    from models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer

    model, tok = load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR)
    ids = tok.encode(prompt)
    t0 = time.perf_counter()
    ref = model.generate(torch.tensor([ids]), tokens, temperature=0)[0, len(ids):].tolist()
    return model, tok, ids, ref, time.perf_counter() - t0
