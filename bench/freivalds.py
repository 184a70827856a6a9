"""Benchmark Freivalds checks over Z_2^64 against exact int64 recomputation and the float32 product.

The checked step is a party's fixed-weight matmul output z = c + a@F + e@b (m x d inputs, d x n
weights), as audited per token. Per shape and lam, measured in the same run:
  float32   x @ W in plaintext (the product being protected)
  exact     recompute z (two int64 products) and compare
  cold      one Freivalds check alone, incl. R from the PRG and F@R, b@R
  stack/st  per-step cost in a stacked batch of 12 steps sharing F and b (F@R, b@R paid once)
  fold/st   per-step cost of the odd-coefficient fold of 12 steps (single-deviation bound only)
  F,b@R     the shared part of a batch (paid once per batch); marginal/st = stack/st - F,b@R / 12
  prime     one column over F_p, p = 2^61-1 (21-bit limbs in int64), cold, for comparison
Usage: python bench/freivalds.py [--json PATH] [--repeats 3] [--lams 1 8 20 40]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, machine, print_table, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mpc_core.prg import master_from_int  # noqa: E402
from verifier.freivalds import (PRIME_61, FreivaldsContext, _mulmod_p, _reduce_p, exact_check,  # noqa: E402
                                challenge_matrix, freivalds_batch, freivalds_check,
                                prime_freivalds_check)

SHAPES = [(1, 768, 768), (1, 768, 3072), (32, 768, 768), (16, 768, 3072)]
BATCH = 12
SEED = master_from_int(0, "bench/freivalds")


def ring(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy(rng.integers(-2**63, 2**63 - 1, size=shape, dtype=np.int64, endpoint=True))


def step(rng, m, d, F, b):
    a, e, c = ring(rng, m, d), ring(rng, m, d), ring(rng, m, F.shape[1])
    return c + a @ F + e @ b, [c, (a, F), (e, b)]


def run_shape(m, d, n, lams, repeats):
    rng = np.random.default_rng(m * d + n)
    F, b = ring(rng, d, n), ring(rng, d, n)
    steps = [step(rng, m, d, F, b) for _ in range(BATCH)]
    z, terms = steps[0]
    x32, w32 = torch.randn(m, d), torch.randn(d, n)
    t_f32, _ = best_of(lambda: x32 @ w32, max(repeats, 5))
    t_exact, res = best_of(lambda: exact_check(z, terms), repeats)
    assert_ok(res)
    ctx = FreivaldsContext(b"bench", 0, 1)
    pz, pterms = prime_step(rng, m, d, n)
    t_prime, res = best_of(lambda: prime_freivalds_check(pz, pterms, 1, SEED, ctx), repeats)
    assert_ok(res)
    rows = []
    for lam in lams:
        t_cold, res = best_of(lambda: freivalds_check(z, terms, lam, seed=SEED, context=ctx), repeats)
        assert_ok(res)
        t_stack, res = best_of(lambda: freivalds_batch(steps, lam, SEED, ctx), repeats)
        assert_ok(res)
        t_fold, res = best_of(lambda: freivalds_batch(steps, lam, SEED, ctx, mode="fold-odd"), repeats)
        assert_ok(res)
        r = challenge_matrix(SEED, ctx, n, lam)
        t_br, _ = best_of(lambda: (F @ r, b @ r), repeats)
        rows.append({"shape": f"{m}x{d} @ {d}x{n}", "m": m, "d": d, "n": n, "lam": lam,
                     "float32_s": t_f32, "exact_s": t_exact, "cold_s": t_cold,
                     "stack_per_step_s": t_stack / BATCH, "fold_per_step_s": t_fold / BATCH,
                     "prime_1col_s": t_prime, "shared_br_s": t_br, "batch": BATCH})
    return rows


def prime_step(rng, m, d, n):
    """A step over F_p: z = c + a@F + e@b mod p (products formed exactly with 21-bit limbs)."""
    a, e, c = (ring(rng, m, d) & PRIME_61, ring(rng, m, d) & PRIME_61, ring(rng, m, n) & PRIME_61)
    F, b = ring(rng, d, n) & PRIME_61, ring(rng, d, n) & PRIME_61
    a, e, c, F, b = (torch.where(t == PRIME_61, torch.zeros_like(t), t) for t in (a, e, c, F, b))
    zp = _reduce_p(_reduce_p(c + _mulmod_p(a, F)) + _mulmod_p(e, b))
    return zp, [c, (a, F), (e, b)]


def assert_ok(res) -> None:
    if not res.ok:
        raise SystemExit("benchmark check failed on honest data")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lams", type=int, nargs="+", default=[1, 8, 20, 40])
    p.add_argument("--shapes", type=int, nargs="+", default=None, help="m d n triples (default: the four GPT-2 shapes)")
    args = p.parse_args(argv)
    shapes = SHAPES if not args.shapes else [tuple(args.shapes[i:i + 3]) for i in range(0, len(args.shapes), 3)]
    rows = [r for s in shapes for r in run_shape(*s, args.lams, args.repeats)]
    ms = lambda t: t * 1e3  # noqa: E731
    print_table(f"Freivalds over Z_2^64 vs exact int64 recompute (ms; batch of {BATCH} steps sharing F, b)",
                ["case", "lam", "float32", "exact", "cold", "cold/exact", "stack/st", "stack/exact",
                 "fold/st", "fold/exact", "F,b@R", "marginal/st", "prime 1col"],
                [[r["shape"], r["lam"], ms(r["float32_s"]), ms(r["exact_s"]), ms(r["cold_s"]),
                  r["cold_s"] / r["exact_s"], ms(r["stack_per_step_s"]), r["stack_per_step_s"] / r["exact_s"],
                  ms(r["fold_per_step_s"]), r["fold_per_step_s"] / r["exact_s"], ms(r["shared_br_s"]),
                  ms(max(r["stack_per_step_s"] - r["shared_br_s"] / BATCH, 0.0)), ms(r["prime_1col_s"])]
                 for r in rows])
    write_json(args.json, {"machine": machine(), "rows": rows, "batch": BATCH})
    return 0


if __name__ == "__main__":
    sys.exit(main())
