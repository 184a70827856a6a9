"""`shardproof demo`: private text generation with the shipped model, side by side with plaintext.

Three parties (in this process) hold additive shares of the model's weights;
the client shares its prompt, the parties run the transformer on shares, and
only the client reconstructs the logits. The plaintext reference runs the same
prompt so you can compare token for token. (The networked demo with a ledger,
nodes and an audit arrives with the nodes issue.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from cli.common import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK

DEFAULT_PROMPT = "And the LORD said unto Moses,"


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="private generation demo (MPC next to plaintext)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parties", type=int, default=3, help="share holders (default 3)")
    p.add_argument("--tokens", type=int, default=24, help="tokens to generate (default 24)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--seed", type=int, default=0, help="dealer and sharing seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _block_check(parties: int, seed: int) -> list[dict]:
    """One transformer block's nonlinear pieces on shares vs float64 (a quick sanity table)."""
    import torch
    import torch.nn.functional as F

    from mpc_core import decode, encode, simulate

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 64, generator=g, dtype=torch.float64) * 2
    w = torch.randn(64, 64, generator=g, dtype=torch.float64) * 0.1
    q = lambda t: decode(encode(t))  # noqa: E731
    cases = [
        ("layer_norm", lambda a: a.layer_norm(), lambda a: F.layer_norm(a, (64,))),
        ("matmul", lambda a: a @ w, lambda a: a @ q(w)),
        ("attention softmax", lambda a: ((a @ a.transpose(0, 1)) * 0.125).softmax(-1),
         lambda a: ((a @ a.T) * 0.125).softmax(-1)),
        ("gelu", lambda a: a.gelu(), lambda a: F.gelu(a, approximate="tanh")),
    ]
    rows = []
    for name, mpc, ref in cases:
        out, st = simulate(mpc, x, parties=parties, seed=seed, record=False)
        rows.append({"op": name, "max_abs_err": float((out - ref(q(x))).abs().max()), "rounds": st.rounds,
                     "bytes_per_party": st.bytes_per_party})
    return rows


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.panel import Panel
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from prover.errors import ProverError
    from prover.generation import PrivateGenerator
    from prover.models import TINY_MODEL_DIR, load_checkpoint, load_tokenizer

    out = Console(stderr=args.json)
    if args.parties < 2:
        print("shardproof demo: MPC needs at least 2 parties", file=sys.stderr)
        return EXIT_INCOMPLETE
    try:
        model = load_checkpoint(TINY_MODEL_DIR)
        tok = load_tokenizer(TINY_MODEL_DIR)
    except ProverError as exc:
        print(f"shardproof demo: cannot load the shipped model: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    ids = tok.encode(args.prompt)
    out.print(Panel.fit(f"model: {TINY_MODEL_DIR.name} ({model.num_params():,} parameters, "
                        f"{model.config.n_layer} layers)\nparties: {args.parties} (additive shares over Z_2^64, "
                        f"16 fractional bits)\nprompt: {args.prompt!r}", title="shardproof demo"))

    t0 = time.perf_counter()
    rows = _block_check(args.parties, args.seed)
    table = Table(title="one transformer block on shares vs float64")
    for c in ("op", "max abs error", "rounds", "bytes/party"):
        table.add_column(c, justify="left" if c == "op" else "right")
    for r in rows:
        table.add_row(r["op"], f"{r['max_abs_err']:.2e}", str(r["rounds"]), f"{r['bytes_per_party']:,}")
    out.print(table)

    t_plain = time.perf_counter()
    ref = model.double().generate(torch.tensor([ids]), args.tokens, temperature=0)[0, len(ids):].tolist()
    t_plain = time.perf_counter() - t_plain

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True))
    with progress:
        task = progress.add_task("sharing and masking weights", total=None)
        gen = PrivateGenerator(model, args.parties, args.seed)
        progress.update(task, description=f"generating privately ({args.parties} parties)", total=args.tokens)
        mpc = []
        for t in gen.generate(ids, args.tokens):
            mpc.append(t)
            progress.advance(task)
    st = gen.stats
    identical = mpc == ref
    agree = sum(a == b for a, b in zip(mpc, ref))
    side = Table(title="greedy continuation")
    side.add_column("MPC (client's view)")
    side.add_column("plaintext reference")
    side.add_row(tok.decode(mpc), tok.decode(ref))
    out.print(side)
    dec = sum(st.decode_seconds) / max(len(st.decode_seconds), 1)
    summary = {
        "prompt": args.prompt, "parties": args.parties, "text": tok.decode(mpc), "text_plaintext": tok.decode(ref),
        "tokens": mpc, "identical": identical, "agreeing_tokens": agree,
        "setup_seconds": st.setup_seconds, "prefill_seconds": st.prefill_seconds,
        "decode_seconds_per_token": dec, "plaintext_seconds_per_token": t_plain / max(args.tokens, 1),
        "dealer_seconds": st.dealer_seconds, "rounds": st.rounds, "bytes_per_party": st.bytes_per_party,
        "block_check": rows, "seconds": time.perf_counter() - t0,
    }
    out.print(Panel.fit(
        f"identical to plaintext: {'yes' if identical else f'no ({agree}/{len(ref)} tokens agree)'}\n"
        f"setup (share + mask weights): {st.setup_seconds:.2f} s, prefill: {st.prefill_seconds:.2f} s, "
        f"decode: {dec:.3f} s/token (plaintext {summary['plaintext_seconds_per_token']:.4f} s/token)\n"
        f"dealer (offline) time: {st.dealer_seconds:.2f} s, rounds: {st.rounds:,}, "
        f"sent per party: {st.bytes_per_party / 1e6:.1f} MB", title="result"))
    if args.json:
        print(json.dumps(summary))
    return EXIT_OK if identical else EXIT_FAILED
