"""Benchmark mpc_core ops against plaintext torch measured in the same run.

Per op and party count: online seconds, dealer seconds, plaintext seconds,
online/plaintext ratio, rounds, bytes sent per party, max abs error against
float64. Usage: python bench/mpc_ops.py [--json PATH] [--parties 2 3] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, machine, print_table, write_json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mpc_core import Session, SharedTensor, decode, encode  # noqa: E402
from mpc_core.prg import master_from_int  # noqa: E402


def _g(seed):
    return torch.Generator().manual_seed(seed)


def cases():
    """(name, make inputs, mpc fn(session, shared inputs), plaintext fn on float32, float64 reference)."""
    x32 = lambda *s: torch.randn(*s, generator=_g(sum(s)), dtype=torch.float64)  # noqa: E731
    return [
        ("matmul 32x768 @ 768x768", lambda: (x32(32, 768), x32(768, 768) * 0.05),
         lambda s, a, b: a @ b, lambda a, b: a @ b),
        ("matmul 1x768 @ 768x3072", lambda: (x32(1, 768), x32(768, 3072) * 0.05),
         lambda s, a, b: a @ b, lambda a, b: a @ b),
        ("matmul 1x768 @ 768x3072 (fixed-b, per call)", lambda: (x32(1, 768), x32(768, 3072) * 0.05),
         "fixed", lambda a, b: a @ b),
        ("softmax 12x32x32", lambda: (x32(12, 32, 32) * 3,), lambda s, a: a.softmax(-1), lambda a: a.softmax(-1)),
        ("softmax 1x50257", lambda: (x32(1, 50257) * 3,), lambda s, a: a.softmax(-1), lambda a: a.softmax(-1)),
        ("layer_norm 32x768", lambda: (x32(32, 768) * 2,), lambda s, a: a.layer_norm(eps=1e-5),
         lambda a: F.layer_norm(a, (768,), eps=1e-5)),
        ("gelu 32x3072", lambda: (x32(32, 3072) * 2,), lambda s, a: a.gelu(), lambda a: F.gelu(a, approximate="tanh")),
    ]


def run_case(name, make, mpc, plain, n, repeats):
    inputs = make()
    ref = plain(*[decode(encode(t)) for t in inputs])
    f32 = [t.float() for t in inputs]
    t_plain, _ = best_of(lambda: plain(*f32), max(repeats, 5))

    def once():
        s = Session.in_process(n, master_from_int(0))
        shared = [SharedTensor.from_plain(s, t) for t in inputs]
        if mpc == "fixed":
            mw = shared[1].mask("w")
            before = s.counters.snapshot()
            import time
            t0 = time.perf_counter()
            out = shared[0] @ mw
            total = time.perf_counter() - t0
            delta = s.counters.since(before)
        else:
            before = s.counters.snapshot()
            import time
            t0 = time.perf_counter()
            out = mpc(s, *shared)
            total = time.perf_counter() - t0
            delta = s.counters.since(before)
        val = out.reveal()
        return total, delta, val

    best = None
    for _ in range(repeats):
        total, delta, val = once()
        online = total - delta.dealer_seconds
        if best is None or online < best[0]:
            best = (online, delta.dealer_seconds, delta, val)
    online, dealer, delta, val = best
    return {
        "op": name, "parties": n, "online_s": online, "dealer_s": dealer, "plaintext_s": t_plain,
        "ratio": online / t_plain if t_plain > 0 else float("inf"), "rounds": delta.rounds,
        "bytes_per_party": delta.bytes_per_party, "max_abs_err": float((val - ref).abs().max()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=None)
    ap.add_argument("--parties", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=None, help="substring filter on op names")
    args = ap.parse_args(argv)
    rows = []
    for name, make, mpc, plain in cases():
        if args.only and args.only not in name:
            continue
        for n in args.parties:
            rows.append(run_case(name, make, mpc, plain, n, args.repeats))
    cols = ["op", "N", "online s", "dealer s", "plaintext s", "online/plain", "rounds", "bytes/party", "max abs err"]
    print_table("mpc_core ops vs plaintext (float32 torch, same run)", cols,
                [[r["op"], r["parties"], r["online_s"], r["dealer_s"], r["plaintext_s"], r["ratio"], r["rounds"],
                  r["bytes_per_party"], r["max_abs_err"]] for r in rows])
    write_json(args.json, {"bench": "mpc_ops", "machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
