"""A throwaway Linux network namespace whose loopback carries a one-way delay and a rate limit.

Used by bench/network.py and tests/nodes/test_netem.py to run a deployment (ledger, dealer, nodes,
client) behind real latency on one machine: every process runs inside the namespace (`command()`
prefixes `ip netns exec NAME`), uses only its loopback addresses, and no traffic leaves it. Needs
root and the `ip` and `tc` tools (iproute2).

The delay applies to every packet leaving through the namespace's `lo`, so a round trip takes twice
the one-way delay. Two ways to get it, the first that works:
- `netem`: the kernel's qdisc, `tc qdisc replace dev lo root netem delay Dms rate R`.
- `nfqueue`, for kernels built without netem: a `tbf` qdisc limits the rate, an iptables NFQUEUE rule
  (iptables-legacy or iptables, IPv4 and IPv6) hands every packet leaving through `lo` to a delayer
  process in the namespace (`python -m sim.netns delay`, this module's `run_delayer`) that lets each
  one go `D` ms after it arrived, in order. A user-space delayer adds its own scheduling lateness (it
  reports it when it stops); `tcp_rtt_ms` measures the round trip that results.

Deleting the namespace (`delete`, also on failure: `LoopbackNamespace.created` and
`raise_on_termination`) first ends the processes still in it, which are the caller's own.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

NAME_PREFIX = "sp-"
DEFAULT_RATE = "1gbit"
QUEUE_NUM = 7  # the NFQUEUE number the delayer binds (per namespace)
_NETEM_LIMIT = 100_000  # packets netem may hold (its default of 1000 drops packets at 25 ms and 1 Gbit/s)


class NamespaceError(RuntimeError):
    """A namespace could not be created, shaped or deleted."""


def _run(argv: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a command; raise NamespaceError with its stderr when it fails and `check`."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NamespaceError(f"{' '.join(argv)}: {exc}") from exc
    if check and p.returncode != 0:
        raise NamespaceError(f"{' '.join(argv)}: {(p.stderr or p.stdout).strip() or f'exit {p.returncode}'}")
    return p


def unavailable_reason() -> str | None:
    """Why this process cannot create namespaces (not root, no `ip` or `tc`), or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "creating a network namespace needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (iproute2)"
    return None


class LoopbackNamespace:
    """One named network namespace with its loopback up, shaped by `shape` (delay, rate)."""

    def __init__(self, name: str, log_dir: str | os.PathLike | None = None):
        if not name or len(name) > 64 or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789-_." for c in name):
            raise NamespaceError(f"not a namespace name: {name!r}")
        self.name = name
        self.log_dir = None if log_dir is None else str(log_dir)  # where the delayer's log goes (default: $TMPDIR)
        self.method: str | None = None  # "netem" or "nfqueue" once shaped
        self.delay_ms = 0.0
        self._delayer: subprocess.Popen | None = None
        self._delayer_log: Path | None = None
        self._rules: list[list[str]] = []  # iptables commands whose -D undoes what they added
        self.delayer_reports: list[dict] = []  # what each stopped delayer reported (its packets, its lateness)

    # --- life cycle -------------------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def created(cls, name: str, log_dir: str | os.PathLike | None = None) -> Iterator["LoopbackNamespace"]:
        """Create the namespace, yield it, and delete it at the end, also on an exception, Ctrl-C or (with
        `raise_on_termination` in force) SIGTERM/SIGHUP."""
        ns = cls(name, log_dir)
        try:
            ns.create()
            yield ns
        finally:
            with _signals_blocked():
                ns.delete()

    def exists(self) -> bool:
        p = _run(["ip", "netns", "list"], check=False)
        return any(line.split()[0] == self.name for line in p.stdout.splitlines() if line.strip())

    def create(self) -> None:
        """Add the namespace and bring its loopback up. Raises NamespaceError (with the reason) if it cannot."""
        reason = unavailable_reason()
        if reason is not None:
            raise NamespaceError(reason)
        _run(["ip", "netns", "add", self.name])
        try:
            _run(self.command(["ip", "link", "set", "lo", "up"]))
        except NamespaceError:
            _run(["ip", "netns", "delete", self.name], check=False)
            raise

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        """The processes running inside the namespace now."""
        p = _run(["ip", "netns", "pids", self.name], check=False)
        return [int(x) for x in p.stdout.split() if x.isdigit()]

    def end_processes(self, grace_s: float = 5.0) -> list[int]:
        """SIGTERM every process still in the namespace, SIGKILL those left after `grace_s`; returns their pids."""
        found = [pid for pid in self.pids() if pid != os.getpid()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(_alive(pid) for pid in found):
                time.sleep(0.05)
            if not any(_alive(pid) for pid in found):
                break
        return found

    def delete(self) -> None:
        """Undo the shaping, end the processes left inside, and delete the namespace (idempotent)."""
        with contextlib.suppress(NamespaceError):
            self.unshape()
        if not self.exists():
            return
        self.end_processes()
        _run(["ip", "netns", "delete", self.name])

    # --- shaping ----------------------------------------------------------------------------------
    def netem_available(self) -> bool:
        """Whether the kernel's netem qdisc can be installed on the namespace's loopback."""
        p = _run(self.command(["tc", "qdisc", "replace", "dev", "lo", "root", "netem", "delay", "0ms"]), check=False)
        if p.returncode == 0:
            _run(self.command(["tc", "qdisc", "del", "dev", "lo", "root"]), check=False)
        return p.returncode == 0

    def shape(self, delay_ms: float, rate: str = DEFAULT_RATE, method: str = "auto") -> str:
        """Delay every packet leaving through the loopback by `delay_ms` (one way) and limit its rate to
        `rate` (tc syntax). `method`: "netem", "nfqueue" or "auto" (netem where the kernel has it).
        Replaces any earlier shaping; returns the method used. Works from inside the namespace too."""
        if delay_ms < 0:
            raise NamespaceError(f"a delay cannot be negative: {delay_ms}")
        self.unshape()
        if method == "auto":
            method = "netem" if self.netem_available() else "nfqueue"
        if method == "netem":
            _run(self.command(["tc", "qdisc", "replace", "dev", "lo", "root", "netem", "delay", f"{delay_ms:g}ms",
                               "rate", rate, "limit", str(_NETEM_LIMIT)]))
        elif method == "nfqueue":
            # tbf holds at most `latency` of traffic at `rate`; the burst must exceed lo's 64 KiB frames
            _run(self.command(["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", rate, "burst", "512kb",
                               "latency", "2s"]))
            if delay_ms > 0:
                self._start_delayer(delay_ms)
        else:
            raise NamespaceError(f"unknown shaping method {method!r}")
        self.method, self.delay_ms = method, float(delay_ms)
        return method

    def unshape(self) -> None:
        """Remove the delay and the rate limit (and stop the delayer)."""
        errors = []
        for rule in reversed(self._rules):
            p = _run(self.command([rule[0], "-D", *rule[2:]]), check=False)
            if p.returncode != 0:
                errors.append(p.stderr.strip())
        self._rules = []
        self._stop_delayer()
        if self.method is not None:
            _run(self.command(["tc", "qdisc", "del", "dev", "lo", "root"]), check=False)
        self.method, self.delay_ms = None, 0.0
        if errors:
            raise NamespaceError("; ".join(errors))

    def _start_delayer(self, delay_ms: float) -> None:
        """Start the NFQUEUE delayer inside the namespace, wait until it holds the queue, then queue lo's traffic."""
        fd, log = tempfile.mkstemp(prefix=f"{self.name}-delayer-", suffix=".log", dir=self.log_dir)
        os.close(fd)
        self._delayer_log = Path(log)
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(log, "ab") as out:
            self._delayer = subprocess.Popen(
                self.command([sys.executable, "-m", "sim.netns", "delay", "--queue", str(QUEUE_NUM),
                              "--ms", f"{delay_ms:g}"]), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
        deadline = time.monotonic() + 30
        while b"bound" not in self._delayer_log.read_bytes():
            if self._delayer.poll() is not None or time.monotonic() > deadline:
                text = self._delayer_log.read_text(errors="replace")
                self._stop_delayer()
                raise NamespaceError(f"the delayer did not start: {text.strip()[-500:]}")
            time.sleep(0.05)
        for family in (("iptables-legacy", "iptables"), ("ip6tables-legacy", "ip6tables")):
            rule = ["-A", "OUTPUT", "-o", "lo", "-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM)]
            tried = []
            for tool in family:
                if shutil.which(tool) is None:
                    continue
                p = _run(self.command([tool, *rule]), check=False)
                if p.returncode == 0:
                    self._rules.append([tool, *rule])
                    break
                tried.append(f"{tool}: {p.stderr.strip()}")
            else:
                self.unshape()
                raise NamespaceError("cannot queue loopback traffic to the delayer (needs iptables with the "
                                     "NFQUEUE target): " + ("; ".join(tried) or "no iptables command"))

    def _stop_delayer(self) -> None:
        p, self._delayer = self._delayer, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if self._delayer_log is not None:
            for line in self._delayer_log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        self.delayer_reports.append(json.loads(line))
            self._delayer_log.unlink(missing_ok=True)
            self._delayer_log = None

    def delayer_alive(self) -> bool | None:
        """Whether the delayer is running (None: this shaping has none)."""
        return None if self._delayer is None else self._delayer.poll() is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while cleaning up (a second Ctrl-C must not leave the namespace)."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Terminated(SystemExit):
    """SIGTERM or SIGHUP arrived (raised so that `finally` blocks run)."""


@contextlib.contextmanager
def raise_on_termination() -> Iterator[None]:
    """Within this block, SIGTERM and SIGHUP raise Terminated in the main thread (Ctrl-C already raises
    KeyboardInterrupt), so that the cleanup in `finally` blocks runs."""
    def handler(signum: int, _frame) -> None:
        raise Terminated(128 + signum)
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def tcp_rtt_ms(samples: int = 7) -> float:
    """The median time of a TCP connect to a listener on 127.0.0.1 (one round trip: SYN, SYN-ACK), in ms,
    as this process's network namespace delivers it."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(samples)
    times = []
    try:
        for _ in range(samples):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t0 = time.perf_counter()
            c.connect(srv.getsockname())
            times.append(time.perf_counter() - t0)
            c.close()
            srv.accept()[0].close()
    finally:
        srv.close()
    return statistics.median(times) * 1e3


# --- the NFQUEUE delayer ------------------------------------------------------------------------
_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_QUEUE = 3
_NFQNL_MSG_PACKET, _NFQNL_MSG_CONFIG, _NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
_NFQA_PACKET_HDR, _NFQA_VERDICT_HDR = 1, 2
_NFQA_CFG_CMD, _NFQA_CFG_PARAMS, _NFQA_CFG_QUEUE_MAXLEN, _NFQA_CFG_MASK, _NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
_NFQNL_CFG_CMD_BIND = 1
_NFQNL_COPY_META = 1
_NFQA_CFG_F_GSO = 4
_NF_ACCEPT = 1
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_NLMSG_ERROR = 2
_SOL_NETLINK, _NETLINK_NO_ENOBUFS = 270, 5
_SO_RCVBUFFORCE = 33
_RT_PRIORITY = 20


def _nlattr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _nfq_message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = _NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (_NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


def _packet_ids(data: bytes) -> Iterator[int]:
    """The packet ids of the NFQUEUE packet messages in one netlink datagram."""
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16:
            return
        if kind == (_NFNL_SUBSYS_QUEUE << 8) | _NFQNL_MSG_PACKET:
            a = off + 20  # after nlmsghdr and nfgenmsg
            while a + 4 <= off + length:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if akind & 0x3FFF == _NFQA_PACKET_HDR:
                    yield struct.unpack_from("!I", data, a + 4)[0]
                    break
                a += (alen + 3) & ~3
        elif kind == _NLMSG_ERROR:
            err = struct.unpack_from("=i", data, off + 16)[0]
            if err:
                raise OSError(-err, f"netlink: {os.strerror(-err)}")
        off += (length + 3) & ~3


def _bind_queue(queue: int) -> socket.socket:
    """A netlink socket bound to NFQUEUE `queue`, copying packet metadata only (GSO packets whole)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
    sock.bind((0, 0))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 64 << 20)
    with contextlib.suppress(OSError):
        sock.setsockopt(_SOL_NETLINK, _NETLINK_NO_ENOBUFS, 1)
    bind = _nlattr(_NFQA_CFG_CMD, struct.pack("!BxH", _NFQNL_CFG_CMD_BIND, 0))
    params = (_nlattr(_NFQA_CFG_PARAMS, struct.pack("!IB", 0, _NFQNL_COPY_META))
              + _nlattr(_NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 1 << 16))
              + _nlattr(_NFQA_CFG_FLAGS, struct.pack("!I", _NFQA_CFG_F_GSO))
              + _nlattr(_NFQA_CFG_MASK, struct.pack("!I", _NFQA_CFG_F_GSO)))
    for seq, attrs in enumerate((bind, params), start=1):
        sock.send(_nfq_message(_NFQNL_MSG_CONFIG, queue, attrs, seq, _NLM_F_REQUEST | _NLM_F_ACK))
        data = sock.recv(1 << 16)
        kind = struct.unpack_from("=IH", data)[1] if len(data) >= 16 else None
        err = struct.unpack_from("=i", data, 16)[0] if kind == _NLMSG_ERROR and len(data) >= 20 else 0
        if kind != _NLMSG_ERROR or err:
            sock.close()
            raise OSError(-err, f"binding NFQUEUE {queue}: {os.strerror(-err) if err else 'no acknowledgement'}")
    sock.setblocking(False)
    return sock


def run_delayer(queue: int, delay_ms: float) -> dict:
    """Hold every packet of NFQUEUE `queue` for `delay_ms` after it arrived, then accept it (in arrival order),
    until SIGTERM or SIGINT, at real-time priority where allowed. Prints `bound` once it holds the queue; returns
    (and prints as one JSON line) its packet count and how late it let packets go after it received them
    (scheduling lateness, ms; the wait before it received them is not seen)."""
    stop = []
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.append(1))
    # Real-time priority: a delayer that waits for a core behind busy processes delays packets by more than
    # asked, unseen (nfqueue gives no enqueue time to measure it against). It sleeps in select() between
    # packets; the kernel's RT throttling keeps a share of every core for the others in any case.
    realtime = True
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(_RT_PRIORITY))
    except (AttributeError, OSError):
        realtime = False
    sock = _bind_queue(queue)
    print("bound", flush=True)
    delay = delay_ms / 1e3
    pending: collections.deque[tuple[float, int]] = collections.deque()
    packets, late_sum, late_max, seq = 0, 0.0, 0.0, 100
    while not stop:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else 0.2
        try:
            ready, _, _ = select.select([sock], [], [], timeout)
        except InterruptedError:
            continue
        if ready:
            now = time.monotonic()
            while True:
                try:
                    data = sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    break
                for pid in _packet_ids(data):
                    pending.append((now + delay, pid))
        now = time.monotonic()
        last = None
        while pending and pending[0][0] <= now:
            due, last = pending.popleft()
            late = now - due
            packets, late_sum, late_max = packets + 1, late_sum + late, max(late_max, late)
        if last is not None:  # accept every queued packet up to `last` at once
            seq += 1
            sock.send(_nfq_message(_NFQNL_MSG_VERDICT_BATCH, queue,
                                   _nlattr(_NFQA_VERDICT_HDR, struct.pack("!II", _NF_ACCEPT, last)), seq))
    if pending:  # let what is still held go before the queue disappears
        sock.send(_nfq_message(_NFQNL_MSG_VERDICT_BATCH, queue,
                               _nlattr(_NFQA_VERDICT_HDR, struct.pack("!II", _NF_ACCEPT, pending[-1][1])), seq + 1))
    sock.close()
    report = {"delay_ms": delay_ms, "realtime": realtime, "packets": packets, "late_mean_ms": late_sum / packets * 1e3 if packets else 0.0,
              "late_max_ms": late_max * 1e3}
    print(json.dumps(report), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.netns", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("delay", help="the NFQUEUE delayer (run inside the namespace; LoopbackNamespace starts it)")
    d.add_argument("--queue", type=int, default=QUEUE_NUM)
    d.add_argument("--ms", type=float, required=True, help="one-way delay in milliseconds")
    args = ap.parse_args(argv)
    if args.cmd == "delay":
        run_delayer(args.queue, args.ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
