"""Private generation benchmark: prefill and decode latency, MPC at N = 2, 3, 4 vs plaintext in the same run.

For each model (the shipped tiny model, a random GPT-2-small-shaped model) and
party count, a fresh worker process shares and masks the weights, prefills a
prompt and decodes greedily; it reports seconds per token (prefill and decode
separately), dealer (offline) seconds, bytes sent per party per token, peak
memory, and whether the tokens equal the plaintext reference's. Plaintext
timings are measured in the same worker. With --agreement it also runs the
top-1 agreement figures (teacher-forced positions and greedy continuations).

Usage: python bench/generate.py [--models tiny gpt2-small] [--parties 2 3 4] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, print_table, write_json  # noqa: E402

import torch  # noqa: E402

GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024)


def load(model_name: str):
    from models import TINY_MODEL_DIR, GPTConfig, load_checkpoint, load_tokenizer, random_model

    if model_name == "tiny":
        model, tok = load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR)
        prompts = [p for p in (TINY_MODEL_DIR / "prompts.txt").read_text().splitlines() if p.strip()]
        return model, [tok.encode(p) for p in prompts]
    if model_name == "gpt2-small":
        model = random_model(GPTConfig(**GPT2_SMALL), seed=0)
        g = torch.Generator().manual_seed(1)
        return model, [torch.randint(0, 50257, (16,), generator=g).tolist() for _ in range(20)]
    raise SystemExit(f"unknown model {model_name}")


def worker(model_name: str, parties: int, tokens: int, prompt_index: int) -> dict:
    """One configuration in a fresh process (so peak memory is this configuration's)."""
    torch.set_num_threads(2)
    from prover.generation import PrivateGenerator

    model, prompts = load(model_name)
    ids = prompts[prompt_index]
    t0 = time.perf_counter()
    with torch.no_grad():
        _, past = model(torch.tensor([ids]), use_cache=True)
    t_plain_prefill = time.perf_counter() - t0
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), tokens, temperature=0)[0, len(ids):].tolist()
        # plaintext decode timing: cached single-token steps
        feed, steps = torch.tensor([[ref[0]]]), []
        for t in ref[1:]:
            t1 = time.perf_counter()
            _, past = model(feed, past_kv=past, use_cache=True)
            steps.append(time.perf_counter() - t1)
            feed = torch.tensor([[t]])
    t_plain_decode = sorted(steps)[len(steps) // 2] if steps else float("nan")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gen = PrivateGenerator(model, parties, seed=0)
    got = list(gen.generate(ids, tokens))
    st = gen.stats
    decode = sorted(st.decode_seconds)[len(st.decode_seconds) // 2] if st.decode_seconds else float("nan")
    return {
        "model": model_name, "parties": parties, "prompt_tokens": len(ids), "new_tokens": tokens,
        "setup_s": st.setup_seconds,
        "prefill_s_per_token": st.prefill_seconds / len(ids), "plain_prefill_s_per_token": t_plain_prefill / len(ids),
        "decode_s_per_token": decode, "plain_decode_s_per_token": t_plain_decode,
        "decode_ratio": decode / t_plain_decode, "prefill_ratio": st.prefill_seconds / t_plain_prefill,
        "dealer_s_total": st.dealer_seconds,
        "prefill_bytes_per_party_per_token": st.prefill_bytes_per_party / len(ids),
        "decode_bytes_per_party_per_token": (sum(st.decode_bytes_per_party) / len(st.decode_bytes_per_party)
                                             if st.decode_bytes_per_party else 0),
        "setup_bytes_per_party": st.setup_bytes_per_party,
        "peak_rss_gb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "peak_rss_gb_before_mpc": rss0 / 1e6,
        "peak_rss_gb_per_party_est": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1e6 / parties,
        "tokens_equal_plaintext": got == ref,
    }


def agreement(model_name: str, parties: int, n_prompts: int, tokens: int, positions: int) -> dict:
    """Greedy continuations identical to plaintext, and teacher-forced top-1 agreement over positions."""
    torch.set_num_threads(2)
    from prover.generation import PrivateGenerator

    model, prompts = load(model_name)
    model = model.double()
    same = 0
    for ids in prompts[:n_prompts]:
        ref = model.generate(torch.tensor([ids]), tokens, temperature=0)[0, len(ids):].tolist()
        got = list(PrivateGenerator(model, parties, seed=0).generate(ids, tokens))
        same += got == ref
    # teacher forcing: held-out token windows (each within one context), logits at every position
    stream = [t for ids in prompts for t in ids]
    if model_name == "tiny":
        from models import TINY_MODEL_DIR, load_tokenizer
        stream = load_tokenizer(TINY_MODEL_DIR).encode((ROOT / "tools/data/kjv_genesis_2kings.txt").read_text()[-20000:])
    width = min(100, model.config.block_size)
    gen = PrivateGenerator(model, parties, seed=1)
    agree = total = 0
    max_err = ref_max = 0.0
    for start in range(0, positions, width):
        seq = stream[start * 10:start * 10 + min(width, positions - start)]
        gen.reset()
        logits = gen.step(seq, all_logits=True)
        with torch.no_grad():
            ref_logits = model(torch.tensor([seq]))[0]
        agree += int((logits.argmax(-1) == ref_logits.argmax(-1)).sum())
        total += len(seq)
        max_err = max(max_err, float((logits - ref_logits).abs().max()))
        ref_max = max(ref_max, float(ref_logits.abs().max()))
    return {"model": model_name, "parties": parties, "greedy_identical": same, "greedy_prompts": min(n_prompts, len(prompts)),
            "greedy_tokens": tokens, "positions": total, "top1_agreement": agree / total,
            "max_abs_logit_err": max_err, "ref_logit_range": ref_max}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "gpt2-small"])
    ap.add_argument("--parties", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--agreement", action="store_true", help="also measure agreement figures")
    ap.add_argument("--agreement-prompts", type=int, default=20)
    ap.add_argument("--agreement-tokens", type=int, default=32)
    ap.add_argument("--agreement-positions", type=int, default=200)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "PARTIES", "KIND"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        model_name, parties, kind = args.worker[0], int(args.worker[1]), args.worker[2]
        if kind == "latency":
            out = worker(model_name, parties, args.tokens, 0)
        else:
            out = agreement(model_name, parties, args.agreement_prompts, args.agreement_tokens, args.agreement_positions)
        print("RESULT " + json.dumps(out))
        return 0

    def spawn(model_name, parties, kind):
        cmd = [sys.executable, __file__, "--worker", model_name, str(parties), kind, "--tokens", str(args.tokens),
               "--agreement-prompts", str(args.agreement_prompts), "--agreement-tokens", str(args.agreement_tokens),
               "--agreement-positions", str(args.agreement_positions)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(p.stdout[-2000:], p.stderr[-4000:], file=sys.stderr)
            return {"model": model_name, "parties": parties, "error": p.stderr[-500:]}
        return json.loads(line[7:])

    rows, agree = [], []
    for model_name in args.models:
        for n in args.parties:
            print(f"... {model_name} N={n}", file=sys.stderr, flush=True)
            rows.append(spawn(model_name, n, "latency"))
        if args.agreement:
            agree.append(spawn(model_name, 3, "agreement"))
    cols = ["model", "N", "prefill s/tok", "plain", "decode s/tok", "plain", "decode ratio", "dealer s",
            "decode B/party/tok", "peak GB (proc)", "same tokens"]
    print_table("private generation vs plaintext (same run)", cols, [
        [r["model"], r["parties"], r.get("prefill_s_per_token", "-"), r.get("plain_prefill_s_per_token", "-"),
         r.get("decode_s_per_token", "-"), r.get("plain_decode_s_per_token", "-"), r.get("decode_ratio", "-"),
         r.get("dealer_s_total", "-"), r.get("decode_bytes_per_party_per_token", "-"),
         r.get("peak_rss_gb_process", "-"), r.get("tokens_equal_plaintext", r.get("error", "-"))] for r in rows])
    if agree:
        print_table("agreement with the float64 plaintext reference (N = 3)",
                    ["model", "greedy identical", "top-1 agreement", "positions", "max abs logit err"],
                    [[a["model"], f"{a.get('greedy_identical')}/{a.get('greedy_prompts')}", a.get("top1_agreement"),
                      a.get("positions"), a.get("max_abs_logit_err")] for a in agree])
    write_json(args.json, {"bench": "generate", "machine": machine(), "rows": rows, "agreement": agree})
    return 0


if __name__ == "__main__":
    sys.exit(main())
