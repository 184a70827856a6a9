"""The log operator's role: create a ledger, and sign checkpoints as entries arrive (specs/ledger.md).

`init_ledger` is the one way a ledger is created (`shardproof ledger init`, and every harness);
`LogOperator.serve` is the signing loop (`shardproof ledger serve`): a checkpoint whenever entries
other than checkpoints arrived, at most every `interval` seconds, and at least every `max_idle`
seconds even when nothing arrived, so that the log's clock (deadlines are counted in its signed
checkpoints: specs/audit.md section 6) advances on an idle log too. The operator keeps no state of
its own: a restart resumes.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ledger import entries as E
from ledger.errors import LedgerError, LedgerExists
from ledger.keys import Identity
from ledger.log import Ledger
from ledger.witness import collect_cosignatures

log = logging.getLogger("shardproof.log")

DEFAULT_INTERVAL_S = 1.0
DEFAULT_MAX_IDLE_S = 10.0


def refuse_existing(url: str) -> None:
    """Raise LedgerExists if a ledger is already at `url` (init never touches an existing ledger)."""
    try:
        existing = Ledger.open(url, create=False)
    except LedgerError:
        return  # nothing there (a real storage problem shows when creating)
    size, origin_there = existing.size(), existing.origin
    existing.close()
    raise LedgerExists(f"a ledger already exists at {url} (origin {origin_there!r}, {size} entries); "
                       "init never touches an existing ledger")


def init_ledger(url: str, identity: Identity, origin: str | None = None) -> Ledger:
    """Create the ledger at `url` with `identity` as its log key and sign its first checkpoint. Raises
    LedgerExists if a ledger is there already."""
    refuse_existing(url)
    kw = {"origin": origin} if origin else {}
    led = Ledger.open(url, log_identity=identity, create=True, **kw)
    led.checkpoint()
    return led


def pending_entries(led: Ledger) -> int:
    """How many entries other than checkpoints and witness cosignatures arrived since the latest signed
    checkpoint (a cosignature calling for a new checkpoint would loop)."""
    latest = led.latest_checkpoint()
    size = led.size()
    since = 0 if latest is None else latest.size
    if size <= since:
        return 0
    return size - since - len(led.query(kind=E.CHECKPOINT, start=since)) - len(led.query(kind=E.COSIGN, start=since))


PRUNE_EVERY_S = 86400.0  # `ledger serve --prune-after-days`: prune at start and once a day


@dataclass
class LogOperator:
    """Signs checkpoints for a ledger opened with its log identity; with `prune_after_days`, also prunes
    the blobs the retention rule releases (`Ledger.prune`) at start and every `prune_every` seconds."""

    ledger: Ledger
    interval: float = DEFAULT_INTERVAL_S
    max_idle: float = DEFAULT_MAX_IDLE_S
    prune_after_days: float | None = None
    prune_every: float = PRUNE_EVERY_S
    cosigns_from: int = 0  # the log index from which witness cosignatures are still to be collected

    def prune(self) -> None:
        """Prune once (failures are logged: the next attempt is a day later)."""
        try:
            rep = self.ledger.prune(self.prune_after_days)
            log.info("prune (keep %g days): %d blob(s), %.3f MB freed", self.prune_after_days, len(rep.pruned),
                     rep.freed_bytes / 1e6)
        except LedgerError as exc:
            log.warning("prune failed: %s", exc)

    def collect(self) -> int:
        """Aggregate the witnesses' new cosignatures into the stored checkpoints (ledger.witness); returns
        how many were added."""
        added, self.cosigns_from = collect_cosignatures(self.ledger, self.cosigns_from)
        if added:
            log.info("collected %d witness cosignature(s)", added)
        return added

    def step(self, idle_for: float) -> int | None:
        """Sign a checkpoint if entries arrived, or if the log has been idle for `max_idle` seconds;
        returns the signed size, or None."""
        self.collect()
        new = pending_entries(self.ledger)
        if new > 0 or idle_for >= self.max_idle:
            scp = self.ledger.checkpoint()
            log.info("checkpoint: size %d root %s (%d new entries)", scp.size, scp.root.hex()[:16], new)
            return scp.size
        return None

    def serve(self, stop: threading.Event) -> None:
        """Sign until `stop` is set (a busy or briefly unreachable database is retried)."""
        last = time.monotonic()
        next_prune = last if self.prune_after_days is not None else float("inf")
        while not stop.is_set():
            try:
                if self.step(time.monotonic() - last) is not None:
                    last = time.monotonic()
            except LedgerError as exc:
                log.warning("checkpoint failed, retrying: %s", exc)
            if time.monotonic() >= next_prune:
                self.prune()
                next_prune = time.monotonic() + self.prune_every
            stop.wait(self.interval)
