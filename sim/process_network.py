"""A deployment on loopback with one OS process per node and one for the dealer.

The nodes are `prover serve` processes and the dealer a `shardproof dealer serve`
process, each with its own key file and data directory; they see each other only
through the ledger and the job's mesh. The calling process plays the
remaining roles: model owner (publishes the shares, each sealed for its node, and
posts every job's refresh commitments from a thread),
client (`run_remote_job`), log operator (signs checkpoints) and auditor. Used by
`shardproof demo` and the multi-process integration tests.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ledger import Ledger
from ledger.errors import LedgerExists
from ledger.operator import init_ledger
from mpc_core import prg
from prover.keys import NodeKeys, registration_entry
from models.gpt import GPT
from prover.model_delivery import publish_and_deliver
from models.publish import publish_model
from prover.owner_service import OwnerService
from prover.remote_client import run_remote_job

REPO = Path(__file__).resolve().parents[1]
ORIGIN = "shardproof/loopback"
PROGRESS_CAP = 5  # a progress-based wait gives up after PROGRESS_CAP idle windows, progress or not
_CPU_BUSY = 0.03  # a child that used at least this share of a core since the last look is working (an idle
# daemon polls at well under 1 %, tests/nodes/test_idle_cpu.py); 3 % still counts a starved one on a busy machine
try:
    _TICK = 1.0 / os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _TICK = 0.0


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a live process has used so far, from /proc; None where that is unreadable."""
    if not _TICK:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * _TICK
    except (OSError, IndexError, ValueError):
        return None


class BackgroundJob:
    """A job that runs in a thread of this process (`ProcessNetwork.start_job`), so that a test can kill or
    freeze nodes meanwhile; `wait` gives its result or its error."""

    def __init__(self, run: Callable[[], dict]):
        self.result: dict | None = None
        self.error: BaseException | None = None

        def go() -> None:
            try:
                self.result = run()
            except Exception as exc:  # noqa: BLE001 - handed to the test by wait()
                self.error = exc

        self._thread = threading.Thread(target=go, daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> "BackgroundJob":
        """Wait for the client to finish; TimeoutError if it is still running after `timeout_s` (it hung)."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the client is still running after {timeout_s:.0f} s")
        return self


class ProcessNetwork:
    """Owner, client, log operator and auditor in this process; dealer and N nodes as child processes."""

    def __init__(self, url: str, workdir: str | Path, n_nodes: int = 3, seed: int = 0, timeout_s: float = 60.0,
                 poll_s: float = 0.1, replicas: int = 1):
        self.url = url
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = n_nodes  # share indices; with replicas, nodes[i] is replica i div n of index i mod n
        self.replicas = replicas
        self.timeout_s = timeout_s  # the daemons' and the client's --timeout; the harness's idle window
        self.poll_s = poll_s

        def keys(name: str) -> NodeKeys:
            return NodeKeys.generate(name, prg.master_from_int(seed, f"shardproof/loopback:{name}"))

        self.log_keys = keys("log")  # the log operator: `shardproof ledger serve` (start_log)
        self.log_identity = self.log_keys.identity
        try:
            self.ledger = init_ledger(url, self.log_identity, ORIGIN)  # what `shardproof ledger init` does
        except LedgerExists:
            self.ledger = Ledger.open(url, origin=ORIGIN, log_identity=self.log_identity)
        self.owner, self.client, self.dealer, self.verifier = keys("owner"), keys("client"), keys("dealer"), keys("verifier")
        self.nodes = [keys(f"node-{i}") for i in range(n_nodes * replicas)]
        known = {r.node_id for r in self.ledger.registrations()}
        regs = [registration_entry(self.owner, ("owner",)), registration_entry(self.client, ("client",)),
                registration_entry(self.dealer, ("dealer",), "127.0.0.1"),
                registration_entry(self.verifier, ("verifier",))]
        regs += [registration_entry(k, ("node",), "127.0.0.1") for k in self.nodes]
        new = [r for r in regs if r.author not in known]
        if new:
            self.ledger.append_many(new)
        for k in self.nodes + [self.dealer]:
            if not self._key_file(k.node_id).exists():
                k.save(self._key_file(k.node_id))
        if not self._key_file("log").exists():
            self.log_keys.save(self._key_file("log"))
        self.procs: dict[str, subprocess.Popen] = {}
        self._log_offset: dict[str, int] = {}
        self.published: dict[str, Path] = {}  # model id -> the owner's publication directory
        self._owner_thread: threading.Thread | None = None

    # --- paths --------------------------------------------------------------------------
    def _key_file(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def data_dir(self, name: str) -> Path:
        return self.dir / f"data-{name}"

    def log_file(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    # --- model owner --------------------------------------------------------------------
    def publish(self, model: GPT, tokenizer_dir: str | Path | None = None, owner_seed: int = 1) -> str:
        """Publish `model` as N shares: the manifest on the ledger, node i's share sealed for node i
        (prover.model_delivery; a node fetches it when its first job needs it). Returns the model id."""
        out = self.dir / f"published-{len(self.published)}"
        publish_model(model, self.n, out, prg.master_from_int(owner_seed, "owner"), tokenizer_dir=tokenizer_dir)
        model_id = publish_and_deliver(self.ledger, self.owner, out, [k.node_id for k in self.nodes])
        self.published[model_id] = out
        return model_id

    def start_owner(self) -> None:
        """The owner online, in a thread of this process: per-job refresh commitments (prover.owner_service)."""
        if self._owner_thread is not None:
            return
        self._owner_stop = threading.Event()
        led = Ledger.open(self.url, create=False)
        service = OwnerService(led, self.owner, self.published, poll_s=self.poll_s)

        def loop() -> None:
            try:
                service.run(self._owner_stop)
            finally:
                led.close()
        self._owner_thread = threading.Thread(target=loop, name="owner", daemon=True)
        self._owner_thread.start()

    def stop_owner(self) -> None:
        if self._owner_thread is not None:
            self._owner_stop.set()
            self._owner_thread.join(30)
            self._owner_thread = None

    # --- processes ----------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        f = self.log_file(name)
        self._log_offset[name] = f.stat().st_size if f.exists() else 0
        with open(f, "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    # --- progress-based waits ------------------------------------------------------------
    def _progress_mark(self, names: list[str] | None = None) -> tuple:
        """What moves while the deployment works: the ledger's size, the process logs' sizes, and
        (per live process) its CPU time."""
        try:
            size = self.ledger.size()
        except Exception:  # a ledger that cannot be read now is no progress, not an error of the wait
            size = -1
        names = list(self.procs) if names is None else names
        logs = tuple(self.log_file(n).stat().st_size if self.log_file(n).exists() else 0 for n in names)
        cpu = tuple(_cpu_seconds(self.procs[n].pid) if n in self.procs else None for n in names)
        return size, logs, cpu

    def wait_until(self, predicate: Callable[[], bool], idle_s: float | None = None, names: list[str] | None = None,
                   poll_s: float = 0.05, alive: Callable[[], bool] | None = None) -> bool:
        """Poll `predicate()` until it is true. Gives up only after `idle_s` (default: timeout_s) without
        progress -- the ledger grew, a process log grew, or one of the processes (`names`, default all)
        used CPU like a working process, not a polling one: a peer that is still answering is not dead --
        or after PROGRESS_CAP idle windows in all, or as soon as `alive()` (if given) turns false."""
        idle_s = self.timeout_s if idle_s is None else idle_s
        start = last_progress = time.monotonic()
        mark, mark_t = self._progress_mark(names), start
        while True:
            if predicate():
                return True
            now = time.monotonic()
            if (alive is not None and not alive()) or now - last_progress >= idle_s or now - start >= PROGRESS_CAP * idle_s:
                return bool(predicate())
            if now - mark_t >= 1.0:
                new = self._progress_mark(names)
                busy = any(a is not None and b is not None and b - a >= _CPU_BUSY * (now - mark_t)
                           for a, b in zip(mark[2], new[2]))
                if new[0] > mark[0] or new[1] != mark[1] or busy:
                    last_progress = now
                mark, mark_t = new, now
            time.sleep(poll_s)

    def wait_serving(self, name: str, timeout_s: float = 60.0) -> bool:
        """Wait until process `name` logs that it is serving (its signal handlers are installed by then).

        `timeout_s` is an idle window: a process that is still starting up (using CPU, writing its
        log) is waited for, up to PROGRESS_CAP windows; one that exited is not."""
        f = self.log_file(name)

        def serving() -> bool:
            with open(f, "rb") as fh:
                fh.seek(self._log_offset.get(name, 0))
                return b" serving" in fh.read()

        def alive() -> bool:
            p = self.procs.get(name)
            return p is not None and p.poll() is None
        return alive() and self.wait_until(lambda: alive() and serving(), timeout_s, names=[name], alive=alive)

    def start_dealer(self) -> None:
        name = self.dealer.node_id
        self._spawn(name, [sys.executable, "-m", "cli.shardproof", "dealer", "serve", "--ledger", self.url,
                           "--key", str(self._key_file(name)), "--data", str(self.data_dir(name)),
                           "--poll", str(self.poll_s), "--timeout", str(self.timeout_s)])

    def start_node(self, i: int, cheat: str | None = None) -> None:
        name = self.nodes[i].node_id
        cmd = [sys.executable, "-m", "cli.prover", "serve", "--ledger", self.url, "--key", str(self._key_file(name)),
               "--data", str(self.data_dir(name)), "--poll", str(self.poll_s), "--timeout", str(self.timeout_s)]
        if cheat:
            cmd += ["--cheat", cheat]
        self._spawn(name, cmd)

    def start_log(self, interval_s: float = 0.5, max_idle_s: float = 5.0) -> None:
        """The log operator as its own process: `shardproof ledger serve` signs checkpoints as entries arrive."""
        if "log" in self.procs:
            return
        self._spawn("log", [sys.executable, "-m", "cli.shardproof", "ledger", "serve", "--ledger", self.url, "--key",
                            str(self._key_file("log")), "--interval", str(interval_s), "--max-idle", str(max_idle_s)])

    def start(self, cheats: dict[int, str] | None = None, replicas: int | None = None) -> None:
        """Start the log operator, the owner's refresh service, the dealer and the nodes of the first
        `replicas` replicas (default all; node i with `cheats[i]`, if given)."""
        self.start_log()
        self.start_owner()
        self.start_dealer()
        for i in range(self.n * (self.replicas if replicas is None else replicas)):
            self.start_node(i, (cheats or {}).get(i))

    def stop_process(self, name: str, timeout_s: float = 30.0) -> int | None:
        """SIGTERM one process and wait for it; returns its exit code (None if it had to be killed)."""
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            self.procs[name] = p
            self.wait_serving(name, timeout_s)  # a SIGTERM before the handler is installed would kill it
            p.send_signal(signal.SIGTERM)
            # A daemon that is still busy (finishing a poll, answering a challenge) is waited for.
            self.wait_until(lambda: p.poll() is not None, timeout_s, names=[name])
            self.procs.pop(name)
            try:
                return p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
                return None
        return p.returncode

    def kill_node(self, i: int) -> float:
        """SIGKILL node i (a crash: no clean shutdown) and reap it; returns time.perf_counter() at the kill."""
        name = self.nodes[i].node_id
        p = self.procs.pop(name)
        p.kill()
        at = time.perf_counter()
        p.wait(10)
        return at

    def restart_node(self, i: int, cheat: str | None = None) -> int | None:
        """Stop node i cleanly and start it again (optionally as a cheater), waiting until it serves;
        returns the old exit code."""
        rc = self.stop_process(self.nodes[i].node_id)
        self.start_node(i, cheat)
        if self.wait_serving(self.nodes[i].node_id, self.timeout_s):
            self.wait_settled(self.nodes[i].node_id, self.timeout_s)
        return rc

    def wait_settled(self, name: str, max_s: float = 60.0, window_s: float = 1.0) -> bool:
        """Wait (at most `max_s`) until process `name` is back to polling: a restarted daemon first goes
        over the challenges of every job it ran before; a job posted meanwhile waits for its join."""
        p = self.procs.get(name)
        if p is None or _cpu_seconds(p.pid) is None:
            return False
        deadline = time.monotonic() + max_s
        prev, t = _cpu_seconds(p.pid), time.monotonic()
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(window_s)
            cur, now = _cpu_seconds(p.pid), time.monotonic()
            if cur is None:
                return False
            if cur - prev < _CPU_BUSY * (now - t):
                return True
            prev, t = cur, now
        return False

    def stop(self) -> dict[str, int | None]:
        """Stop every process (and the owner's thread); returns the processes' exit codes."""
        codes = {name: self.stop_process(name) for name in list(self.procs)}
        self.stop_owner()
        return codes

    def __enter__(self) -> "ProcessNetwork":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.ledger.close()

    def logs(self, tail: int = 3000) -> str:
        """The tail of every process log (for failure messages)."""
        out = []
        for name in [self.dealer.node_id] + [k.node_id for k in self.nodes]:
            f = self.log_file(name)
            if f.exists():
                out.append(f"--- {name}\n" + f.read_text(errors="replace")[-tail:])
        return "\n".join(out)

    # --- client, log operator, auditor ------------------------------------------------------
    def run_job(self, model_id: str, prompt_ids: list[int], steps: int, job_id: str, **kw) -> dict:
        """Run one job on the nodes with the dealer daemon (or, with dealer=None, a dealer inside the client);
        returns run_remote_job's result."""
        kw.setdefault("replicas", self.replicas)
        nodes = [k.node_id for k in self.nodes[:self.n * kw["replicas"]]]
        kw.setdefault("dealer", self.dealer.node_id)  # None: the dealer runs inside the client
        kw.setdefault("state_dir", self.dir)
        return run_remote_job(self.url, self.client, nodes, model_id, prompt_ids, steps,
                              job_id, timeout_s=self.timeout_s, **kw)

    def start_job(self, model_id: str, prompt_ids: list[int], steps: int, job_id: str, **kw) -> BackgroundJob:
        """`run_job` in a thread of this process: returns at once (`BackgroundJob.wait` for the outcome)."""
        return BackgroundJob(lambda: self.run_job(model_id, prompt_ids, steps, job_id, **kw))

    def audit(self, job_id: str, lam: int = 40, mode: str = "freivalds", wait_s: float | None = None):
        """Audit a job once the log operator sealed it; the daemons reveal and answer the challenge themselves.

        With `wait_s` None the audit waits for the answers as long as the deployment makes progress
        (`wait_until`, idle window timeout_s); a number is a fixed wait, as `shardproof verify audit --wait`."""
        from verifier.ledger_audit import audit_on_ledger

        # The log operator (start_log) seals the job; the participants reveal their challenge beacons once
        # they see the seal (protocol.challenge).
        revealed = self.wait_until(lambda: self._revealed(job_id)) if wait_s is None else None
        if wait_s is not None:
            return audit_on_ledger(self.ledger, job_id, self.verifier.identity, lam=lam, mode=mode, wait_s=wait_s)

        def respond(_challenge_index: int, parties: list[int]) -> None:
            self.wait_until(lambda: self._all_answered(job_id, parties))
        return audit_on_ledger(self.ledger, job_id, self.verifier.identity, lam=lam, mode=mode, respond=respond,
                               wait_s=1.0 if revealed else 0.0)

    def _revealed(self, job_id: str) -> bool:
        """Every participant of the job revealed its challenge beacon."""
        from protocol.job_view import challenge_state

        return challenge_state(self.ledger, job_id).derived is not None

    def _all_answered(self, job_id: str, parties: list[int]) -> bool:
        """Every challenged party posted an opening (or a refusal) and the dealer its release."""
        from protocol.job_view import challenge_state

        view = challenge_state(self.ledger, job_id).view
        return view.release is not None and all(p in view.openings for p in parties)

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """True once every started process is serving; False if one died or made no progress for `timeout_s`."""
        return all(self.wait_serving(n, timeout_s) for n in list(self.procs))
