"""`shardproof infer`: generate text from a prompt, privately over MPC (or --plaintext for the reference).

    shardproof infer --prompt "And the LORD said unto Moses," --max-new-tokens 40 --plaintext
    shardproof infer --model DIR --prompt TEXT --max-new-tokens N --parties 3 --json
    shardproof infer --ledger URL --nodes node-0,node-1,node-2 --key client.key --model-id M --prompt TEXT
    shardproof infer --ledger URL --nodes a0,b0,c0,a1,b1,c1 --replicas 2 ...   (two replicas per share index)
    shardproof infer --ledger URL --nodes a,b,c --standby d ...   (d resumes its share index if lost)

`--json` prints exactly {"text", "tokens", "seconds", "seconds_per_token", "parties", "job_id",
"rounds_per_token", "bytes_per_party_per_token", "offline_seconds", "online_seconds_per_token",
"replicas", "dropped", "resumed"}:
text is the generated continuation, tokens its token ids, seconds the generation
wall time (model loading excluded), parties 0 for plaintext, job_id null for plaintext.
What the run cost, "per token" meaning divided by the number of generated tokens:
  rounds_per_token           communication rounds the parties ran (each one waits for a message
                             from every other party): masking the weight shares, the prompt's
                             pass and every new token's, per token (on a ledger: the count the
                             parties signed in their broadcast receipts)
  bytes_per_party_per_token  bytes one party sent to all the others over the same job, per token
                             (on a ledger: counted from the job's shapes, which fix them)
  offline_seconds            preparing the job before the prompt's pass could start: in-process,
                             sharing and masking the weights; --processes, starting the parties and
                             loading and masking their shares; on a ledger, from opening the job
                             until its group formed (the dealer's offline phase, the nodes joining)
  online_seconds_per_token   the passes themselves (the prompt's and each new token's, the dealer's
                             material they fetch or expand included), per token; on a ledger, from
                             the group forming to the last token (so also the last party receiving
                             the dealer's prepared material and the nodes masking their shares)
  replicas                   nodes per share index (--replicas; 1 off the ledger)
  dropped                    {node: why} for the replicas lost during the job (a replica that
                             dies or is cut off leaves the job to its twins; empty without replicas)
                             and for the nodes a standby took over
  resumed                    [{party, lost, standby, step, seconds}] for each share index a --standby
                             took over mid-job (step: the token step it resumed at; seconds: from
                             the loss showing to the standby holding the index, inputs re-sent)
Plaintext: 0 rounds, 0 bytes, 0 offline seconds, online_seconds_per_token = seconds_per_token.
An MPC run prints its job id on stderr first (`job: ID`; --job-id chooses it, default
job-<12 hex>): the id `verify audit JOB` and `shardproof ledger get --job JOB` take.

On a ledger (--ledger, or --nodes with a configured ledger), before opening the job every
node (and the --dealer daemon) must be registered, have posted a node.heartbeat within
--max-heartbeat-age seconds, and (nodes) list --model-id; no node may be named twice and no
operator (`prover register --operator`, default the node itself) may hold two share indices;
else exit 2 with one line, and nothing is posted.
A job that fails once opened is closed on the ledger with a job.fail entry and its reason.
--ledger and --key default to $SHARDPROOF_LEDGER / $SHARDPROOF_KEY, else `ledger` / `key`
in ~/.config/shardproof/config.toml.
Exit 0: generated. Exit 2: bad input, a node not ready, or the job failed (one line; details
with --verbose).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from cli.common import EXIT_INCOMPLETE, EXIT_OK


@dataclass
class RunCounts:
    """What a private run cost (the module docstring says what each figure means); a runner fills it
    once the run is over. `complete`, if set, fills the rest after the run is timed."""

    rounds: int = 0
    bytes_per_party: int = 0
    offline_seconds: float = 0.0
    online_seconds: float = 0.0
    replicas: int = 1
    dropped: dict = field(default_factory=dict)  # node -> why it was lost (replicas)
    resumed: list = field(default_factory=list)  # the standbys' take-overs (--standby)
    complete: Callable[["RunCounts"], None] | None = None


@dataclass(frozen=True)
class InferenceRequest:
    """What one `shardproof infer` run asks for (already validated)."""

    model_dir: Path
    prompt: str
    prompt_ids: list[int]
    max_new_tokens: int
    parties: int
    temperature: float
    top_k: int | None
    seed: int


def run_plaintext_inference(request: InferenceRequest, model, tokenizer) -> Iterator[int]:
    """Yield generated token ids one at a time from the plaintext reference model."""
    import torch

    idx = torch.tensor([request.prompt_ids], dtype=torch.long)  # (1, T)
    for nxt in model.generate_stream(
        idx, request.max_new_tokens, temperature=request.temperature, top_k=request.top_k, seed=request.seed
    ):
        yield int(nxt[0, 0])


def run_mpc_inference(request: InferenceRequest, model_dir: Path, processes: bool = False,
                      counts: RunCounts | None = None) -> Iterator[int]:
    """Yield generated token ids from a private run over `request.parties` parties; fill `counts` at the end.

    The client secret-shares the prompt as one-hot rows, the parties return logit
    shares, and the client reconstructs and samples locally with
    `models.sample_next_token` (same temperature / top_k / seeded generator as
    the plaintext path). In-process by default; with `processes`, the model is
    published to share files and each party runs in its own process over the TCP mesh.
    """
    from models import load_checkpoint

    model = load_checkpoint(model_dir)
    if processes:
        import tempfile

        from mpc_core.prg import master_from_int
        from prover.distributed_generation import generate_multiprocess
        from models.publish import publish_model

        if request.max_new_tokens == 0:
            return
        with tempfile.TemporaryDirectory(prefix="shardproof-shares-") as d:
            publish_model(model, request.parties, d, master_from_int(request.seed, "shardproof/owner"),
                          tokenizer_dir=model_dir)
            out = generate_multiprocess(d, request.prompt_ids, request.max_new_tokens,
                                        temperature=request.temperature, top_k=request.top_k, seed=request.seed)
        yield from out["tokens"]
        if counts is not None:
            parties = out["parties"]
            counts.rounds, counts.bytes_per_party = int(parties[0]["rounds"]), int(parties[0]["bytes_per_party"])
            counts.online_seconds = max(sum(p["seconds"]) for p in parties)
            counts.offline_seconds = max(0.0, out["seconds"] - counts.online_seconds)
        return
    from prover.generation import PrivateGenerator

    gen = PrivateGenerator(model, request.parties, seed=request.seed)
    yield from gen.generate(request.prompt_ids, request.max_new_tokens, request.temperature, request.top_k,
                            request.seed)
    if counts is not None:
        st = gen.stats
        counts.rounds, counts.bytes_per_party = st.rounds, st.bytes_per_party
        counts.offline_seconds = st.setup_seconds
        counts.online_seconds = st.prefill_seconds + sum(st.decode_seconds)


def run_ledger_inference(request: InferenceRequest, args: argparse.Namespace,
                         counts: RunCounts | None = None) -> Iterator[int]:
    """Open a job on the ledger and run it on registered `prover serve` nodes; this process is the
    client, and the dealer too unless --dealer names a `shardproof dealer serve` daemon. Fills `counts`
    at the end (the bytes, counted from the job's shapes, once the run is timed)."""
    from prover.keys import NodeKeys
    from prover.remote_client import run_remote_job

    if request.max_new_tokens == 0:
        return
    job_id = args.job_id or new_job_id()
    keys = getattr(args, "client_keys", None) or NodeKeys.load(args.key)
    out = run_remote_job(args.ledger, keys, [n for n in args.nodes.split(",") if n], args.model_id,
                         request.prompt_ids, request.max_new_tokens, job_id, dealer=args.dealer,
                         state_dir=args.dealer_state or Path.cwd(), timeout_s=args.timeout,
                         dealer_log=not args.verbose, replicas=args.replicas, standby=_ids(args.standby),
                         temperature=request.temperature, top_k=request.top_k, seed=request.seed)
    yield from out["tokens"]
    if counts is not None:
        counts.offline_seconds, counts.online_seconds = out["offline_seconds"], out["online_seconds"]
        counts.replicas, counts.dropped, counts.resumed = out["replicas"], out["dropped"], out["resumed"]

        def complete(c: RunCounts) -> None:
            """The bytes (and, without receipts on the ledger, the rounds) from the job's shapes."""
            from ledger import Ledger
            from protocol.job_view import published_manifest
            from prover.program_counts import program_counts

            led = Ledger.open(args.ledger, create=False)
            try:
                manifest = published_manifest(led, args.model_id)
            finally:
                led.close()
            pc = program_counts(manifest, len(request.prompt_ids), request.max_new_tokens, request.parties)
            c.bytes_per_party = pc.bytes_per_party
            c.rounds = out["rounds"] if out["rounds"] is not None else pc.rounds
        counts.complete = complete


def _ids(text: str | None) -> list[str]:
    return [n for n in (text or "").split(",") if n]


def new_job_id() -> str:
    """A fresh random job id: job-<12 hex>."""
    import os

    return f"job-{os.urandom(6).hex()}"


def _job_id(text: str) -> str:
    """An argparse type: a job id that can name files and directories (as prover.local_files.safe_id; checked
    here without importing it, so that torch is not loaded before `run` sets its log level)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9._:@-]{1,128}", text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (1-128 of: letters, digits, . _ : @ -)")
    return text


def _replicas(text: str) -> int:
    """An argparse type: replicas per share index, 1..8 (mpc_core.replicas.MAX_REPLICAS)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"must be 1..8, got {value}")
    return value


def _seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0.0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: an integer >= lo."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0.0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _default_model_dir() -> Path:
    from models import TINY_MODEL_DIR

    return TINY_MODEL_DIR


def register(sub: argparse._SubParsersAction, name: str) -> None:
    """Add the `infer` subcommand to `sub`."""
    p = sub.add_parser(
        name,
        help="generate text from a prompt (privately over MPC, or --plaintext)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, default=None, metavar="DIR",
                   help="checkpoint directory in the HF GPT-2 layout with tokenizer.json (default: the shipped tiny model)")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--max-new-tokens", type=_non_negative_int, default=32, metavar="N", help="tokens to generate (default 32)")
    p.add_argument("--parties", type=_positive_int, default=2, metavar="N", help="MPC share holders (default 2; ignored with --plaintext)")
    p.add_argument("--plaintext", action="store_true", help="run the plaintext reference model locally (no MPC)")
    p.add_argument("--processes", action="store_true",
                   help="one process per party over the TCP mesh on loopback instead of in-process")
    net = p.add_argument_group("on a ledger, with `prover serve` nodes")
    net.add_argument("--ledger", default=None, metavar="URL",
                     help="open the job on this ledger (sqlite:///path, postgresql://...) and run it on --nodes "
                     "(default with --nodes: $SHARDPROOF_LEDGER, else `ledger` in ~/.config/shardproof/config.toml)")
    net.add_argument("--nodes", default=None, metavar="ID,ID,...",
                     help="registered node ids; party i is the i-th (with --replicas R: N R ids, the i-th is "
                     "replica i div N of share index i mod N, e.g. a0,b0,c0,a1,b1,c1 for N = 3, R = 2)")
    net.add_argument("--replicas", type=_replicas, default=1, metavar="R",
                     help="nodes per share index, 1-8 (default 1). Each replica holds its index's share and runs "
                     "the same program; the job finishes while every index keeps one live replica, and a replica "
                     "whose job root differs from its twins' shows on the ledger (divergence)")
    net.add_argument("--standby", default=None, metavar="ID,ID,...",
                     help="registered nodes that hold a share of the model and stand by: if every node of a share "
                     "index is lost mid-job (every replica, with --replicas), the client hands the index to a "
                     "standby holding it "
                     "(job.resume), which recomputes the lost node's part from the peers' recorded messages and "
                     "the job goes on with the same tokens")
    net.add_argument("--key", type=Path, default=None, metavar="FILE",
                     help="the client's key file (also the dealer's without --dealer; default: $SHARDPROOF_KEY, "
                     "else `key` in the config file)")
    net.add_argument("--dealer", default=None, metavar="ID", help="a registered dealer daemon (default: the dealer "
                     "runs inside this client)")
    net.add_argument("--model-id", default=None, help="id of the published model (its model.publish entry)")
    net.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                     help="seconds to wait for the job's group to form and for each step (default 60); with "
                     "replicas a silent (cut-off) replica is dropped after one S, and a step held up behind it is "
                     "waited for up to 3 S")
    net.add_argument("--max-heartbeat-age", type=_seconds, default=180.0, metavar="S",
                     help="refuse nodes (and the dealer) whose last node.heartbeat is older (default 180: 3x the "
                     "daemons' default --heartbeat of 60)")
    net.add_argument("--wait-ready", type=_seconds, default=0.0, metavar="S",
                     help="wait up to S seconds for the nodes (and the dealer) to announce themselves before "
                          "refusing (default 0: check once)")
    net.add_argument("--dealer-state", type=Path, default=None, metavar="DIR",
                     help="where the in-client dealer keeps what it must release to an auditor, as "
                     "dealer-<job>.cbor (default: the current directory)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (default 0)")
    p.add_argument("--temperature", type=_temperature, default=0.8, metavar="T", help="0 for greedy (default 0.8)")
    p.add_argument("--top-k", type=_positive_int, default=40, metavar="K", help="sample among the K most likely tokens (default 40)")
    p.add_argument("--job-id", type=_job_id, default=None, metavar="ID",
                   help="the job's id (1-128 of: letters, digits, . _ : @ -; default: job-<12 random hex>)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text: the text, its "
                   "tokens, the time, and what the run cost (rounds_per_token, bytes_per_party_per_token, "
                   "offline_seconds, online_seconds_per_token: see above)")
    p.add_argument("--verbose", action="store_true",
                   help="on failure, the full cause (tracebacks, transport messages; the in-client dealer logs to the terminal)")
    p.set_defaults(func=run)


def _err(message: str) -> None:
    print(f"shardproof infer: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run `shardproof infer`; returns the exit code."""
    import os

    if not args.verbose:  # before torch loads: no C++ messages or stack traces from native code on the terminal
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from ledger import LedgerError
    from mpc_core import MPCError
    from prover.errors import ProverError
    from protocol.errors import ProtocolError
    from models.errors import ModelsError
    from models import load_checkpoint, load_tokenizer

    from cli.common import ConfigError, configured

    model_dir: Path = args.model if args.model is not None else _default_model_dir()
    if not model_dir.is_dir():
        _err(f"model directory not found: {model_dir}")
        return EXIT_INCOMPLETE
    if args.nodes is not None and not args.plaintext:
        try:  # flag > environment > config file
            if args.ledger is None:
                args.ledger = configured("ledger")
            if args.key is None and configured("key") is not None:
                args.key = Path(configured("key"))
        except ConfigError as e:
            _err(str(e))
            return EXIT_INCOMPLETE
    if args.ledger is not None:
        missing = [f"--{n}" for n in ("nodes", "key", "model-id") if getattr(args, n.replace("-", "_")) is None]
        if missing or args.plaintext or args.processes:
            _err(f"--ledger needs {', '.join(missing) or 'no --plaintext/--processes'}")
            return EXIT_INCOMPLETE
        n_nodes = len([n for n in args.nodes.split(",") if n])
        if n_nodes % args.replicas:
            _err(f"--replicas {args.replicas} needs a multiple of {args.replicas} nodes, got {n_nodes}")
            return EXIT_INCOMPLETE
        args.parties = n_nodes // args.replicas
        from prover.keys import NodeKeys

        try:
            args.client_keys = NodeKeys.load(args.key)  # before any output: a bad key file is one line, exit 2
        except (ProverError, ModelsError) as e:
            _err(f"bad key file: {e}")
            return EXIT_INCOMPLETE
        from prover.remote_client import AssignmentRefused, PreflightError, StandbyRefused, preflight

        import time as _time

        ready_by = _time.monotonic() + args.wait_ready
        try:
            while True:
                try:
                    preflight(args.ledger, [n for n in args.nodes.split(",") if n], args.model_id, args.dealer,
                              args.max_heartbeat_age, n_parties=args.parties, standby=_ids(args.standby))
                    break
                except (AssignmentRefused, StandbyRefused):
                    raise  # waiting does not change who runs the nodes or what they hold
                except PreflightError:
                    if _time.monotonic() >= ready_by:
                        raise
                    _time.sleep(1.0)  # --wait-ready: the daemons may still be starting
        except PreflightError as e:
            _err(f"not starting the job: {e}")
            return EXIT_INCOMPLETE
        except LedgerError as e:
            _err(f"cannot read the ledger {args.ledger}: {e}")
            return EXIT_INCOMPLETE
    if not args.plaintext and args.parties < 2:
        _err(f"MPC needs at least 2 parties, got {args.parties}")
        return EXIT_INCOMPLETE
    try:
        tokenizer = load_tokenizer(model_dir)
        prompt_ids = tokenizer.encode(args.prompt)
    except (ProverError, ModelsError) as e:
        _err(str(e))
        return EXIT_INCOMPLETE
    if not prompt_ids:
        _err("the prompt is empty")
        return EXIT_INCOMPLETE
    request = InferenceRequest(
        model_dir=model_dir,
        prompt=args.prompt,
        prompt_ids=prompt_ids,
        max_new_tokens=args.max_new_tokens,
        parties=0 if args.plaintext else args.parties,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )

    if args.plaintext:
        try:
            model = load_checkpoint(model_dir)
        except (ProverError, ModelsError) as e:
            _err(str(e))
            return EXIT_INCOMPLETE
        if tokenizer.vocab_size > model.config.vocab_size:
            _err(f"tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}")
            return EXIT_INCOMPLETE

    job_id = None
    if not args.plaintext:
        job_id = args.job_id = args.job_id or new_job_id()
        print(f"job: {job_id}", file=sys.stderr, flush=True)
    try:
        counts = RunCounts() if args.json and not args.plaintext else None
        if args.plaintext:
            stream = run_plaintext_inference(request, model, tokenizer)
        elif args.ledger is not None:
            stream = run_ledger_inference(request, args, counts)
        else:
            stream = run_mpc_inference(request, model_dir, processes=args.processes, counts=counts)
        return _emit(request, tokenizer, stream, as_json=args.json, job_id=job_id, counts=counts)
    except (ProverError, ModelsError, LedgerError, MPCError, ProtocolError, OSError) as e:
        if args.verbose:
            import traceback

            traceback.print_exception(e, file=sys.stderr)
        _err(str(e) if args.verbose else (str(e).strip().splitlines() or [type(e).__name__])[0])
        return EXIT_INCOMPLETE


def _emit(request: InferenceRequest, tokenizer, stream: Iterator[int], as_json: bool, job_id: str | None = None,
          counts: RunCounts | None = None) -> int:
    """Consume `stream`, showing progress on stderr and the text on stdout (or JSON at the end, with what the
    run cost from `counts`; None: a plaintext run)."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    err = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
    )
    label = "plaintext" if request.parties == 0 else f"MPC, {request.parties} parties"
    task = progress.add_task(f"generating ({label})", total=request.max_new_tokens, rate="")
    decoder = tokenizer.stream_decoder()
    shown = Text(request.prompt, style="dim")
    # On a terminal the text streams inside the live display and is printed once at the end;
    # when stdout is piped it streams to stdout directly.
    in_live = err.is_terminal and sys.stdout.isatty() and not as_json
    stream_stdout = not as_json and not in_live
    tokens: list[int] = []
    text_parts: list[str] = []
    if stream_stdout:
        sys.stdout.write(request.prompt)
        sys.stdout.flush()

    def on_token(tok: int, elapsed: float) -> None:
        tokens.append(tok)
        piece = decoder.push([tok])
        text_parts.append(piece)
        if stream_stdout and piece:
            sys.stdout.write(piece)
            sys.stdout.flush()
        if in_live:
            shown.append(piece)
        progress.update(task, advance=1, rate=f"{len(tokens) / elapsed:.1f} tok/s" if elapsed > 0 else "")

    start = time.perf_counter()
    _drain(stream, on_token, start, Live(Group(shown, progress), console=err, transient=True) if in_live else
           (progress if err.is_terminal else None))
    seconds = time.perf_counter() - start
    tail = decoder.flush()
    text_parts.append(tail)
    text = "".join(text_parts)

    if as_json:
        if counts is not None and counts.complete is not None:
            counts.complete(counts)
        per_token = 1.0 / len(tokens) if tokens else 0.0
        c = counts or RunCounts(online_seconds=seconds)
        print(json.dumps({
            "text": text,
            "tokens": tokens,
            "seconds": round(seconds, 6),
            "seconds_per_token": round(seconds * per_token, 6),
            "parties": request.parties,
            "job_id": job_id,
            "rounds_per_token": round(c.rounds * per_token, 3),
            "bytes_per_party_per_token": round(c.bytes_per_party * per_token, 1),
            "offline_seconds": round(c.offline_seconds, 6),
            "online_seconds_per_token": round(c.online_seconds * per_token, 6),
            "replicas": c.replicas,
            "dropped": c.dropped,
            "resumed": c.resumed,
        }))
    elif in_live:
        print(request.prompt + text)
    else:
        sys.stdout.write(tail + "\n")
        sys.stdout.flush()
    if not err.is_terminal:
        rate = f"{len(tokens) / seconds:.1f} tok/s" if seconds > 0 else "-"
        err.print(f"generated {len(tokens)} tokens in {seconds:.2f}s ({rate}, {label})", highlight=False)
    return EXIT_OK


def _drain(stream: Iterator[int], on_token: Callable[[int, float], None], start: float, display) -> None:
    if display is None:
        for tok in stream:
            on_token(tok, time.perf_counter() - start)
        return
    with display:
        for tok in stream:
            on_token(tok, time.perf_counter() - start)
