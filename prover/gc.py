"""Garbage collection of a node's and a dealer's per-job data once the job's audit window has closed.

`prover gc` and `shardproof dealer gc` (cli/gc.py). A job's data may go when nothing can still ask
for it: read through `protocol.job_view.challenge_state`,

- node (DIR/jobs/<job>/: spill files, state, secret): the job failed here, or its job root does not
  count, or the counted challenge did not open this node's party, or this node's opening of it is
  posted; never while the challenge is pending (not sealed, beacons missing, not posted) or while
  the counted challenge opens this party and no opening is posted;
- dealer (DIR/dealer/dealer-<job>.cbor: master seed, request log): the dealer did not finish the
  job, or its release for the counted challenge is posted, or the job was closed (`job.fail`)
  before every commitment was on the ledger;

and the data is older than `keep_days` (the status file's or the state file's modification time).
Without a ledger only jobs that failed here are removed.

What is removed is replaced by a tombstone so that a restarted daemon still never runs or serves the
job again: the node's `status` becomes `collected` (skipped like `done`/`failed`, and no challenge is
answered from it), the dealer's state file keeps only {format, job_id, status: "collected"}.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mpc_core.encoding import canonical_cbor, decode_cbor
from protocol.errors import JobError
from protocol.job_view import challenge_state
from prover.errors import ProverError
from prover.local_files import write_secret

COLLECTED = "collected"  # the node's status / the dealer's state status of a job whose data gc removed
DAY_S = 86400.0


class GcError(ProverError):
    """Bad gc input: a data directory that does not exist, a negative age."""


@dataclass
class GcItem:
    job_id: str
    path: str
    bytes: int
    reason: str


@dataclass
class GcReport:
    data: str
    role: str  # "node" or "dealer"
    keep_days: float
    dry_run: bool
    removed: list[GcItem] = field(default_factory=list)
    kept: list[GcItem] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(i.bytes for i in self.removed)

    def as_dict(self) -> dict:
        return {"data": self.data, "role": self.role, "keep_days": self.keep_days, "dry_run": self.dry_run,
                "freed_bytes": self.freed_bytes, "removed": [asdict(i) for i in self.removed],
                "kept": [asdict(i) for i in self.kept]}


def _tree_bytes(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _check(data_dir: Path, keep_days: float) -> None:
    if not isinstance(keep_days, (int, float)) or keep_days != keep_days or keep_days < 0:
        raise GcError(f"--keep-days must be a number >= 0, not {keep_days!r}")
    if not data_dir.is_dir():
        raise GcError(f"no data directory {data_dir}")


# --- node ----------------------------------------------------------------------------------
def node_job_verdict(led, job_id: str, status: str, party: int | None) -> tuple[bool, str]:
    """(removable, why) for a node's job by the ledger's challenge state (`led` None: failed jobs only)."""
    if led is None:
        if status == "failed":
            return True, "the job failed here"
        return False, "no ledger given: cannot tell whether a challenge may still open it"
    if party is None:  # no state.cbor: the job root (posted after it) was never posted
        return True, f"the job {'failed' if status == 'failed' else 'stopped'} here before its job root"
    try:
        st = challenge_state(led, job_id)
    except JobError as exc:
        if status == "failed":
            return True, "the job failed here (and is no job on this ledger)"
        return False, f"not a job on this ledger ({exc}): kept"
    view = st.view
    if party not in view.roots:
        return True, "this party's job root does not count: nothing can open it"
    if st.counted is None:
        return False, f"challenge pending: {st.problem or 'no derived challenge posted yet'}"
    if party not in st.opened:
        return True, "party not opened by the counted challenge"
    if party in view.openings or party in view.conflicting:
        return True, "opening posted"
    return False, "opened by the counted challenge; no opening posted yet"


def node_gc(data_dir: str | os.PathLike, keep_days: float, led=None, dry_run: bool = False,
            now: float | None = None) -> GcReport:
    """Remove the job data under DIR/jobs/ whose audit window has closed (module docstring)."""
    d = Path(data_dir)
    _check(d, keep_days)
    now = time.time() if now is None else now
    rep = GcReport(str(d), "node", keep_days, dry_run)
    jobs = d / "jobs"
    for jdir in sorted(p for p in jobs.iterdir() if p.is_dir()) if jobs.is_dir() else []:
        sf = jdir / "status"
        status = sf.read_text().strip() if sf.exists() else ""
        if status == COLLECTED:
            continue
        size = _tree_bytes(jdir) - (sf.stat().st_size if sf.exists() else 0)
        job_id = jdir.name
        if status not in ("started", "done", "failed"):
            rep.kept.append(GcItem(job_id, str(jdir), size, f"unknown status {status!r}: kept"))
            continue
        age_days = (now - sf.stat().st_mtime) / DAY_S
        if age_days < keep_days:
            rep.kept.append(GcItem(job_id, str(jdir), size, f"younger than {keep_days:g} days"))
            continue
        party = None
        if (jdir / "state.cbor").exists():
            try:
                party = int(decode_cbor((jdir / "state.cbor").read_bytes())["party"])
            except Exception as exc:  # noqa: BLE001 - an unreadable state is kept for the operator to look at
                rep.kept.append(GcItem(job_id, str(jdir), size, f"unreadable state.cbor ({exc}): kept"))
                continue
        ok, why = node_job_verdict(led, job_id, status, party)
        if not ok:
            rep.kept.append(GcItem(job_id, str(jdir), size, why))
            continue
        rep.removed.append(GcItem(job_id, str(jdir), size, why))
        if not dry_run:
            _collect_node_job(jdir)
    return rep


def _collect_node_job(jdir: Path) -> None:
    """Tombstone first (a daemon running meanwhile skips the job from then on), then remove the rest."""
    tmp = jdir / "status.tmp"
    tmp.write_text(COLLECTED)
    os.replace(tmp, jdir / "status")
    for p in sorted(jdir.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.name == "status" and p.parent == jdir:
            continue
        if p.is_dir():
            p.rmdir()
        else:
            p.unlink()


# --- dealer --------------------------------------------------------------------------------
def dealer_job_verdict(led, job_id: str, status: str) -> tuple[bool, str]:
    if status != "done":
        return True, f"the dealer did not finish the job (status {status!r}): nothing to release"
    if led is None:
        return False, "no ledger given: cannot tell whether a challenge may still need the release"
    try:
        st = challenge_state(led, job_id)
    except JobError as exc:
        return False, f"not a job on this ledger ({exc}): kept"
    view = st.view
    if st.counted is not None and view.release is not None:
        return True, "release posted"
    if view.fail is not None and not view.committed:
        return True, "the job was closed (job.fail) before every commitment"
    if st.counted is None:
        return False, f"challenge pending: {st.problem or 'no derived challenge posted yet'}"
    return False, "counted challenge posted; no release yet"


def dealer_gc(data_dir: str | os.PathLike, keep_days: float, led=None, dry_run: bool = False,
              now: float | None = None) -> GcReport:
    """Reduce the dealer state files under DIR/dealer/ whose audit window has closed to tombstones."""
    from prover.dealer_service import STATE_FORMAT

    d = Path(data_dir)
    _check(d, keep_days)
    now = time.time() if now is None else now
    rep = GcReport(str(d), "dealer", keep_days, dry_run)
    sdir = d / "dealer"
    for f in sorted(sdir.glob("dealer-*.cbor")) if sdir.is_dir() else []:
        size = f.stat().st_size
        try:
            state = decode_cbor(f.read_bytes())
            job_id, status = str(state["job_id"]), str(state.get("status", ""))
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"format {state.get('format')!r}")
        except Exception as exc:  # noqa: BLE001 - not ours to delete
            rep.kept.append(GcItem(f.name, str(f), size, f"unreadable dealer state ({exc}): kept"))
            continue
        if status == COLLECTED:
            continue
        if (now - f.stat().st_mtime) / DAY_S < keep_days:
            rep.kept.append(GcItem(job_id, str(f), size, f"younger than {keep_days:g} days"))
            continue
        ok, why = dealer_job_verdict(led, job_id, status)
        if not ok:
            rep.kept.append(GcItem(job_id, str(f), size, why))
            continue
        tomb = canonical_cbor({"format": STATE_FORMAT, "job_id": job_id, "status": COLLECTED})
        served = sdir / "served" / job_id  # the releases it served for the job (prover.dealer_service)
        served_size = sum(p.stat().st_size for p in served.iterdir()) if served.is_dir() else 0
        rep.removed.append(GcItem(job_id, str(f), max(0, size - len(tomb)) + served_size, why))
        if not dry_run:
            write_secret(f, tomb)  # the file stays: a dealer never serves a job with a state file again
            if served.is_dir():
                shutil.rmtree(served)
    return rep
