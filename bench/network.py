"""Deployed-path latency behind real network delay: a dealer, N `prover serve` processes and the client in a
network namespace of their own whose loopback delays every packet, against the plaintext model in the same run.

    sudo .venv/bin/python bench/network.py [--delays 0 0.5 5 25] [--tokens 2] [--models tiny [gpt2-small]]
                                           [--parties 3] [--rate 1gbit] [--json PATH]

Needs root (it creates `sp-bench-<pid>` with `ip netns add`, and deletes it at the end, also on failure,
Ctrl-C or SIGTERM). Every process of the deployment (ledger log operator, dealer, nodes, client: this
script's worker part, re-run with `ip netns exec`) runs inside it and uses only its loopback addresses;
no traffic leaves the machine. For each one-way delay D (ms; a round trip is 2D) the loopback carries D
and a rate limit (default 1 Gbit/s): the kernel's netem qdisc where it has one, else a tbf qdisc and an
NFQUEUE delayer process (sim/netns.py, which also says what that needs: iptables). One deployment per
model serves every delay: it is started once, warmed up with a 1-token job without delay (the nodes fetch
their shares), then runs one job of --tokens tokens per delay.

What is reported, per model and delay ("per token": divided by the generated tokens):
- rtt ms: a TCP connect's round trip measured in the namespace just before the job (checks the delay).
- online s/token (nodes): the nodes' program time from their logs (holding the dealer's material to the
  last step: weight masking, prefill, decode), per token; the slowest node.
- client s/token: the client's view of the online phase (group formed -> last token; `shardproof infer
  --json`'s online_seconds_per_token), which also holds the transfer of the dealer's material.
- rounds/token: the nodes' round count from their logs (weight masking, prompt and every token), per
  token; the details split it (setup / prompt / per decode token, from the job's shapes); online dealer
  requests: requests past the dealer's plan.
- MB/party/token: bytes each party sends to all the others, counted from the job's shapes
  (prover.program_counts; the same count as `shardproof infer --json`), and per decode token.
- offline s and MB: the dealer's offline phase from its log (plan, the last party's corrections, their
  bulk transfer; bytes sent to the last party), and the client's view (job opened -> group formed).
- plaintext s/token: the float32 model's greedy generation of the same tokens, in the same worker, right
  before the job (best of 3); x plaintext = online s/token (nodes) / plaintext s/token.
Timings on a machine shared with other work are not final figures; say "under load" when quoting them.
The defaults take about 7 minutes on 2 cores today, 4 of them the 25 ms delay (1822 rounds, each of which
waits on about five one-way trips).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, print_table, write_json

from sim.netns import (DEFAULT_RATE, LoopbackNamespace, NamespaceError, raise_on_termination, tcp_rtt_ms,
                       unavailable_reason)

PROMPT = "And the LORD said unto Moses,"
DELAYS_MS = [0.0, 0.5, 5.0, 25.0]
GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024)


def _load(model_name: str):
    """(model, prompt ids, tokenizer directory or None) of a model name."""
    import torch

    from models import TINY_MODEL_DIR, GPTConfig, load_checkpoint, load_tokenizer, random_model

    if model_name == "tiny":
        return load_checkpoint(TINY_MODEL_DIR), load_tokenizer(TINY_MODEL_DIR).encode(PROMPT), TINY_MODEL_DIR
    if model_name == "gpt2-small":
        g = torch.Generator().manual_seed(1)
        return random_model(GPTConfig(**GPT2_SMALL), seed=0), torch.randint(0, 50257, (16,), generator=g).tolist(), None
    raise SystemExit(f"unknown model {model_name!r} (tiny, gpt2-small)")


def _parse_logs(text: str, job: str) -> dict:
    """The nodes' and the dealer's log lines of one job (None where a line is missing)."""
    runs = re.findall(rf"job {re.escape(job)}: joined the mesh in ([\d.]+) s, received the dealer's material in "
                      rf"([\d.]+) s, ran \d+ steps in ([\d.]+) s \((\d+) rounds, (\d+) online dealer requests\)", text)
    off = re.search(rf"job {re.escape(job)}: offline phase: (\d+) requests planned in ([\d.]+) s, (\d+) bytes of "
                    rf"corrections computed in ([\d.]+) s", text)
    sent = re.search(rf"job {re.escape(job)}: sent party \d+ the plan and its corrections, (\d+) bytes in \d+ sealed "
                     rf"messages, in ([\d.]+) s", text)
    out: dict = {"nodes_reported": len(runs)}
    if runs:
        out.update(online_s=max(float(r[2]) for r in runs), rounds=int(runs[0][3]),
                   online_dealer_requests=max(int(r[4]) for r in runs), material_s=max(float(r[1]) for r in runs))
    if off:
        out.update(planned_requests=int(off[1]), plan_s=float(off[2]), corrections_bytes=int(off[3]),
                   corrections_s=float(off[4]))
    if sent:
        out.update(offline_bytes=int(sent[1]), transfer_s=float(sent[2]))
    return out


def worker(args: argparse.Namespace) -> dict:
    """Inside the namespace: one deployment of `args.model`, one job per delay; returns the rows."""
    import torch

    from models.publish import read_manifest
    from prover.program_counts import program_counts
    from sim.process_network import ProcessNetwork

    ns = LoopbackNamespace(args.namespace, log_dir=args.workdir)
    model, ids, tok_dir = _load(args.model)
    T, n = args.tokens, args.parties
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), T, temperature=0)[0, len(ids):].tolist()
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"deploy-{args.model}-", dir=args.workdir) as d:
        net = ProcessNetwork(f"sqlite:///{d}/ledger.db", d, n_nodes=n, seed=3, timeout_s=args.timeout)
        try:
            model_id = net.publish(model, tok_dir)
            counts = program_counts(read_manifest(net.published[model_id]), len(ids), T, n)
            net.start()
            if not net.wait_ready(120):
                raise SystemExit("a process did not start:\n" + net.logs())
            if args.warmup:
                ns.shape(0.0, args.rate, args.method)
                net.run_job(model_id, ids, 1, "warm-up")  # the nodes fetch their shares; not reported
            for index, delay in enumerate(args.delays):
                method = ns.shape(delay, args.rate, args.method)
                rtt = tcp_rtt_ms()
                plain = min(_timed(lambda: model.generate(torch.tensor([ids]), T, temperature=0)) for _ in range(3))
                job = f"net-{args.model}-{index}"
                print(f"... {args.model}: one-way delay {delay:g} ms ({method}, measured rtt {rtt:.2f} ms), "
                      f"{T} tokens", file=sys.stderr, flush=True)
                out = net.run_job(model_id, ids, T, job)
                delayer_ok = ns.delayer_alive()
                ns.unshape()
                logs = "\n".join(net.log_file(name).read_text(errors="replace")
                                 for name in [net.dealer.node_id] + [node.node_id for node in net.nodes])
                row = {"model": args.model, "parties": n, "tokens": T, "prompt_tokens": len(ids),
                       "one_way_ms": delay, "rtt_ms_nominal": 2 * delay, "rtt_ms_measured": rtt, "method": method,
                       "rate": args.rate, "plaintext_s_per_token": plain / T, "client_s": out["seconds"],
                       "client_offline_s": out["offline_seconds"],
                       "client_online_s_per_token": out["online_seconds"] / T,
                       "receipt_rounds": out["rounds"], "program_rounds": counts.rounds,
                       "bytes_per_party": counts.bytes_per_party,
                       "bytes_per_party_per_token": counts.bytes_per_party / T,
                       "setup_bytes_per_party": counts.setup_bytes_per_party,
                       "setup_rounds": counts.setup_rounds, "prefill_rounds": counts.step_rounds[0],
                       "decode_rounds_per_token": _mean(counts.step_rounds[1:]),
                       "decode_bytes_per_party_per_token": _mean(counts.step_bytes_per_party[1:]),
                       "tokens_equal_plaintext": out["tokens"] == ref, "tokens_out": out["tokens"], "tokens_ref": ref}
                row.update(_parse_logs(logs, job))
                if "online_s" in row:
                    row.update(online_s_per_token=row["online_s"] / T, rounds_per_token=row["rounds"] / T,
                               x_plaintext=row["online_s"] / plain)
                if "plan_s" in row and "transfer_s" in row:
                    row.update(offline_s=row["plan_s"] + row["corrections_s"] + row["transfer_s"],
                               offline_bytes_per_token=row["offline_bytes"] / T)
                if method == "nfqueue":
                    row["delayer"] = ns.delayer_reports[-1] if ns.delayer_reports else None
                    row["delayer_alive_at_end"] = delayer_ok
                rows.append(row)
        finally:
            ns.unshape()
            net.stop()
            net.ledger.close()
    return {"rows": rows}


def _mean(values: tuple[int, ...]) -> float | None:
    return sum(values) / len(values) if values else None


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _run_worker(ns: LoopbackNamespace, args: argparse.Namespace, model_name: str, workdir: str) -> dict:
    """Run the worker for one model inside the namespace (its files under `workdir`); returns its result (or
    {"error": ...})."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--namespace", ns.name, "--model", model_name,
           "--workdir", workdir,
           "--delays", *[f"{d:g}" for d in args.delays], "--tokens", str(args.tokens), "--parties", str(args.parties),
           "--rate", args.rate, "--method", args.method, "--timeout", str(args.timeout)]
    if not args.warmup:
        cmd.append("--no-warmup")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Its own session: a Ctrl-C reaches this process only, which then ends the worker's whole group.
    p = subprocess.Popen(ns.command(cmd), stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                         start_new_session=True)
    try:
        stdout, _ = p.communicate()
    finally:
        if p.poll() is None:
            _end_group(p)
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        return {"error": f"worker for {model_name} exited with {p.returncode}", "rows": []}
    return json.loads(line[len("RESULT "):])


def _end_group(p: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the worker's process group (the worker, its daemons), SIGKILL it after `grace_s` (a daemon
    finishes the job it is in first; the namespace's deletion ends any process left)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _report(results: list[dict], args: argparse.Namespace) -> None:
    rows = [r for res in results for r in res.get("rows", [])]

    def g(r: dict, key: str, scale: float = 1.0):
        v = r.get(key)
        return "-" if v is None else v * scale
    print_table(f"private generation behind network delay (N = {args.parties}, {args.tokens} tokens, "
                f"rate {args.rate}; per token = per generated token)",
                ["model", "one-way ms", "rtt ms (measured)", "online s/token (nodes)", "client s/token",
                 "rounds/token", "MB/party/token", "offline s", "offline MB", "plaintext s/token", "x plaintext",
                 "= plaintext"],
                [[r["model"], r["one_way_ms"], r["rtt_ms_measured"], g(r, "online_s_per_token"),
                  r["client_online_s_per_token"], g(r, "rounds_per_token"), r["bytes_per_party_per_token"] / 1e6,
                  g(r, "offline_s"), g(r, "offline_bytes", 1e-6), r["plaintext_s_per_token"], g(r, "x_plaintext"),
                  str(r["tokens_equal_plaintext"])] for r in rows])
    print_table("details", ["model", "one-way ms", "method", "rounds: setup / prompt / per decode token",
                            "decode MB/party/token", "client offline s", "dealer plan s", "corrections s",
                            "transfer s", "material wait s", "online dealer requests", "delayer late mean/max ms"],
                [[r["model"], r["one_way_ms"], r["method"],
                  f"{r['setup_rounds']} / {r['prefill_rounds']} / " + (f"{r['decode_rounds_per_token']:.0f}"
                                                                      if r["decode_rounds_per_token"] else "-"),
                  g(r, "decode_bytes_per_party_per_token", 1e-6), r["client_offline_s"], g(r, "plan_s"),
                  g(r, "corrections_s"), g(r, "transfer_s"), g(r, "material_s"), g(r, "online_dealer_requests"),
                  (f"{r['delayer']['late_mean_ms']:.3f} / {r['delayer']['late_max_ms']:.2f}"
                   if r.get("delayer") else "-")] for r in rows])
    for res in results:
        if res.get("error"):
            print(res["error"], file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delays", nargs="+", type=float, default=DELAYS_MS, metavar="MS",
                    help="one-way delays in ms (default: 0 0.5 5 25)")
    ap.add_argument("--tokens", type=int, default=2, help="tokens each job generates (default 2)")
    ap.add_argument("--models", nargs="+", default=["tiny"], choices=["tiny", "gpt2-small"],
                    help="tiny: the shipped model (default); gpt2-small: a random GPT-2-small-shaped model "
                         "(slow: minutes per token at 25 ms, and 3 GB of published shares)")
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--rate", default=DEFAULT_RATE, help="loopback rate limit, tc syntax (default 1gbit)")
    ap.add_argument("--method", default="auto", choices=["auto", "netem", "nfqueue"],
                    help="how to delay: netem where the kernel has it (auto), or the NFQUEUE delayer")
    ap.add_argument("--timeout", type=float, default=600.0, help="the daemons' and the client's timeout (s)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the 1-token warm-up job (the first job then includes the nodes fetching shares)")
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--namespace", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tokens < 1 or args.parties < 2 or any(d < 0 for d in args.delays):
        ap.error("--tokens must be >= 1, --parties >= 2 and every delay >= 0")
    if args.worker:
        with raise_on_termination():
            out = worker(args)
        print("RESULT " + json.dumps(out), flush=True)
        return 0
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench/network.py: {reason}", file=sys.stderr)
        return 2
    results = []
    try:
        with (raise_on_termination(), tempfile.TemporaryDirectory(prefix="bench-network-") as workdir,
              LoopbackNamespace.created(f"sp-bench-{os.getpid()}", log_dir=workdir) as ns):
            for model_name in args.models:
                print(f"... {model_name}: namespace {ns.name}", file=sys.stderr, flush=True)
                results.append({"model": model_name, **_run_worker(ns, args, model_name, workdir)})
    except NamespaceError as exc:
        print(f"bench/network.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench/network.py: interrupted (the namespace is deleted)", file=sys.stderr)
        return 130
    _report(results, args)
    write_json(args.json, {"bench": "network", "machine": machine(), "parties": args.parties, "tokens": args.tokens,
                           "rate": args.rate, "delays_ms": args.delays, "results": results})
    return 0 if all(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
