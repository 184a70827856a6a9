"""Blob retention: which blobs a log operator may delete once a job's audit window has closed (specs/ledger.md
section 6.1). Pure: it reads decoded entries, never storage; `Ledger.prune` applies it.

The rule. A job is *closed* when it has a `verdict` by an author registered with the verifier role, or
a `job.fail` by the author of its `job.open`. A job is *expired* when its newest entry (entry times: the
authors' clocks) is more than `keep_days` days older than `now`. The blobs referenced by the `opening`
and `dealer.release` entries of a job that is closed and expired (each node's own opening, the
public-values blob, the dealer's seeds and the last party's correction shares: what only an audit of
that job reads) may be pruned, unless some entry that stays references the same digest: any entry of
another kind (`model.publish` manifests, `model.refresh` commitments, verdict evidence, step digests),
or an opening or release of a job that is not both closed and expired. Entry bytes are never
touched, and leaves cover digests, not blob bytes: pruning changes no root.

Times come from the entries' authors. A future-dated entry only delays pruning of its job; an old
date cannot make a job expire while any later entry of it (the verdict, say) is recent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ledger import entries as E

DEFAULT_KEEP_DAYS = 30.0
DAY_MS = 86_400_000
PRUNABLE_KINDS = (E.OPENING, E.RELEASE, E.BLOB_PROVIDE)  # the only entries whose blobs ever go: what only the job's audit reads


@dataclass
class JobRetention:
    """What the rule says about one job that has prunable blobs."""

    job_id: str
    newest_ms: int  # the newest entry time of the job
    closed: bool  # a verdict by an auditor, or the opener's job.fail
    expired: bool  # newest entry older than keep_days
    digests: list[bytes] = field(default_factory=list)  # its opening blobs that may go now (empty if kept)

    @property
    def reason(self) -> str:
        """Why the job's blobs go or stay, in words."""
        if not self.closed:
            return "no verdict or job.fail yet: the audit window is open"
        if not self.expired:
            return "the newest entry is younger than the retention period"
        if not self.digests:
            return "nothing left to prune"
        return "audit window closed"

    def as_dict(self) -> dict:
        return {"job_id": self.job_id, "newest_ms": self.newest_ms, "closed": self.closed, "expired": self.expired,
                "blobs": [d.hex() for d in self.digests], "reason": self.reason}


@dataclass
class _Job:
    opener: str | None = None
    newest_ms: int = 0
    verdict: bool = False
    fail_authors: set[str] = field(default_factory=set)
    opening_blobs: list[bytes] = field(default_factory=list)


class RetentionIndex:
    """What the retention rule needs from a log, gathered entry by entry in log order (`add`)."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._auditors: set[str] = set()
        self._kept: set[bytes] = set()  # referenced by an entry whose blobs are never pruned

    def add(self, entry: E.Entry) -> None:
        """Take one (valid, decoded) entry into account."""
        if entry.kind == E.REGISTER and "verifier" in entry.body.get("roles", ()):
            self._auditors.add(entry.author)
        refs = entry.blob_refs()
        job_id = entry.job_id
        if entry.kind not in PRUNABLE_KINDS or job_id is None:
            self._kept.update(refs)
        if job_id is None:
            return
        j = self._jobs.setdefault(job_id, _Job())
        j.newest_ms = max(j.newest_ms, int(entry.time))
        if entry.kind == E.JOB_OPEN and j.opener is None:
            j.opener = entry.author
        elif entry.kind == E.VERDICT and entry.author in self._auditors:
            j.verdict = True
        elif entry.kind == E.JOB_FAIL:
            j.fail_authors.add(entry.author)
        elif entry.kind in PRUNABLE_KINDS:
            j.opening_blobs.extend(refs)

    def _closed(self, j: _Job) -> bool:
        return j.verdict or (j.opener is not None and j.opener in j.fail_authors)

    def plan(self, now_ms: int, keep_days: float) -> list[JobRetention]:
        """Every job with opening blobs, and which of them may be pruned at `now_ms` keeping `keep_days`."""
        if not keep_days >= 0:
            raise ValueError(f"keep_days must be a number >= 0, not {keep_days!r}")
        limit = int(now_ms) - int(keep_days * DAY_MS)
        out = [JobRetention(job_id, j.newest_ms, self._closed(j), j.newest_ms < limit)
               for job_id, j in self._jobs.items() if j.opening_blobs]
        stay = set(self._kept)
        for r in out:
            if not (r.closed and r.expired):
                stay.update(self._jobs[r.job_id].opening_blobs)
        for r in out:
            if r.closed and r.expired:
                r.digests = [d for d in dict.fromkeys(self._jobs[r.job_id].opening_blobs) if d not in stay]
                stay.update(r.digests)  # a blob shared by two jobs is listed once
        return out

    def prunable(self) -> set[bytes]:
        """Every digest that the rule would ever prune from this log (at any time, with any keep_days):
        the opening blobs of closed jobs that no other kind of entry and no open job references. A blob
        recorded as pruned that is not among them was not pruned by retention."""
        out: set[bytes] = set()
        for r in self.plan(now_ms=E.U64 + 1, keep_days=0):
            out.update(r.digests)
        return out


def plan_prune(entries: Iterable[E.Entry], now_ms: int, keep_days: float = DEFAULT_KEEP_DAYS) -> list[JobRetention]:
    """The retention rule over a log's entries in log order (see the module docstring)."""
    idx = RetentionIndex()
    for e in entries:
        idx.add(e)
    return idx.plan(now_ms, keep_days)


@dataclass
class PruneReport:
    """What `Ledger.prune` did (or, with `dry_run`, would do)."""

    keep_days: float
    now_ms: int
    dry_run: bool
    jobs: list[JobRetention] = field(default_factory=list)
    pruned: list[tuple[bytes, int, int]] = field(default_factory=list)  # (digest, size, stored size)
    in_use_before: int | None = None  # bytes of the store in use (SQLite pages), None if unknown
    in_use_after: int | None = None

    @property
    def freed_bytes(self) -> int:
        """Stored bytes of the pruned blobs."""
        return sum(stored for _, _, stored in self.pruned)

    def as_dict(self) -> dict:
        gone = {d: (size, stored) for d, size, stored in self.pruned}
        jobs = []
        for j in self.jobs:
            now = [d for d in j.digests if d in gone]
            jobs.append({**j.as_dict(), "pruned": [d.hex() for d in now],
                         "pruned_bytes": sum(gone[d][1] for d in now)})
        return {"keep_days": self.keep_days, "now_ms": self.now_ms, "dry_run": self.dry_run,
                "pruned_blobs": len(self.pruned), "freed_bytes": self.freed_bytes,
                "original_bytes": sum(size for _, size, _ in self.pruned),
                "in_use_before": self.in_use_before, "in_use_after": self.in_use_after, "jobs": jobs}
