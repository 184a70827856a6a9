"""A deployment on loopback with one OS process per node and one for the dealer.

The nodes are `prover serve` processes and the dealer a `shardproof dealer serve`
process, each with its own key file and data directory; they see each other only
through the ledger and the job's gloo group. The calling process plays the
remaining roles: model owner (publishes the shares, each sealed for its node, and
posts every job's refresh commitments from a thread),
client (`run_remote_job`), log operator (signs checkpoints) and auditor. Used by
`shardproof demo` and the multi-process integration tests.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ledger import Identity, Ledger
from mpc_core import prg
from prover.keys import NodeKeys, registration_entry
from models.gpt import GPT
from prover.model_delivery import publish_and_deliver
from models.publish import publish_model
from prover.owner_service import OwnerService
from prover.remote_client import run_remote_job

REPO = Path(__file__).resolve().parents[1]
ORIGIN = "shardproof/loopback"


class ProcessNetwork:
    """Owner, client, log operator and auditor in this process; dealer and N nodes as child processes."""

    def __init__(self, url: str, workdir: str | Path, n_nodes: int = 3, seed: int = 0, timeout_s: float = 60.0,
                 poll_s: float = 0.1):
        self.url = url
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = n_nodes
        self.timeout_s = timeout_s
        self.poll_s = poll_s

        def keys(name: str) -> NodeKeys:
            return NodeKeys.generate(name, prg.master_from_int(seed, f"shardproof/loopback:{name}"))

        self.log_identity = Identity("log", prg.master_from_int(seed, "shardproof/loopback:log"))
        self.ledger = Ledger.open(url, origin=ORIGIN, log_identity=self.log_identity)
        self.owner, self.client, self.dealer, self.verifier = keys("owner"), keys("client"), keys("dealer"), keys("verifier")
        self.nodes = [keys(f"node-{i}") for i in range(n_nodes)]
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

    def wait_serving(self, name: str, timeout_s: float = 60.0) -> bool:
        """Wait until process `name` logs that it is serving (its signal handlers are installed by then)."""
        deadline = time.monotonic() + timeout_s
        f = self.log_file(name)
        while time.monotonic() < deadline:
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                return False
            with open(f, "rb") as fh:
                fh.seek(self._log_offset.get(name, 0))
                if b" serving" in fh.read():
                    return True
            time.sleep(0.05)
        return False

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

    def start(self, cheats: dict[int, str] | None = None) -> None:
        """Start the owner's refresh service, the dealer and every node (node i with `cheats[i]`, if given)."""
        self.start_owner()
        self.start_dealer()
        for i in range(self.n):
            self.start_node(i, (cheats or {}).get(i))

    def stop_process(self, name: str, timeout_s: float = 30.0) -> int | None:
        """SIGTERM one process and wait for it; returns its exit code (None if it had to be killed)."""
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            self.procs[name] = p
            self.wait_serving(name, timeout_s)  # a SIGTERM before the handler is installed would kill it
            self.procs.pop(name)
            p.send_signal(signal.SIGTERM)
            try:
                return p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
                return None
        return p.returncode

    def restart_node(self, i: int, cheat: str | None = None) -> int | None:
        """Stop node i cleanly and start it again (optionally as a cheater); returns the old exit code."""
        rc = self.stop_process(self.nodes[i].node_id)
        self.start_node(i, cheat)
        return rc

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
        """Run one job on the nodes with the dealer daemon; returns run_remote_job's result."""
        return run_remote_job(self.url, self.client, [k.node_id for k in self.nodes], model_id, prompt_ids, steps,
                              job_id, dealer=self.dealer.node_id, timeout_s=self.timeout_s, **kw)

    def audit(self, job_id: str, lam: int = 40, mode: str = "freivalds", wait_s: float | None = None):
        """Seal the job with a checkpoint, then audit it; the daemons answer the challenge themselves."""
        from verifier.ledger_audit import audit_on_ledger

        self.ledger.checkpoint()
        return audit_on_ledger(self.ledger, job_id, self.verifier.identity, lam=lam, mode=mode,
                               wait_s=self.timeout_s if wait_s is None else wait_s)

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """True once every started process is serving; False if one died or the time ran out."""
        deadline = time.monotonic() + timeout_s
        return all(self.wait_serving(n, max(0.0, deadline - time.monotonic())) for n in list(self.procs))
