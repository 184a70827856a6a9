"""Audit a finished private-generation job (specs/audit.md).

1. Broadcast consistency: every party's `opened_root` must be equal (honest parties saw the
   same public openings).
2. Challenge: derived by protocol.challenge after every commitment is sealed and every participant
   revealed its beacon; it names the one share index left closed (the audit privacy budget: never
   all N) and keys the Freivalds columns.
3. Openings: each opened party reveals its step records and salts (which must reproduce its
   committed `views_root`), the public openings, its matmul outputs and its inputs.
4. Replay (verifier.replay) with the dealer's seeds, the opened parties together in one session: the
   first step whose recomputed digest differs from a party's committed one names that party a cheater. A node that refuses a valid challenge
   is a cheater; one that does not answer is unresponsive.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import cbor2
import torch

from ledger import merkle
from mpc_core.domains import OPENED_LEAF, STEP_COMMIT_LEAF
from mpc_core.transcript import tensor_digest
from protocol.challenge import Challenge, closed_index
from protocol.commitments import JobCommitment, verify_records
from protocol.opening import MATMUL_KINDS
from verifier.replay import ReplayResult, replay_parties

DEFAULT_LAMBDA = 40  # worst-case miss probability 2^-40 per cheating matmul (see specs/audit.md)


class Refused(Exception):
    """A node explicitly refused to open a challenged party."""


class Unresponsive(Exception):
    """A node did not answer a challenge in time."""


STATUSES = ("clean", "cheated", "defaulted", "unresponsive", "not opened", "pending", "error")
ACCUSING = ("cheated", "defaulted")  # statuses that name a node (reputation counts them alike)


@dataclass
class PartyVerdict:
    party: int
    status: str  # one of STATUSES
    reason: str = ""
    replay: ReplayResult | None = None
    node: str | None = None  # the node assigned to the party, where the job has an assignment

    def as_dict(self) -> dict:
        return {"party": self.party, "node": self.node, "status": self.status, "reason": self.reason,
                "replay": self.replay.as_dict() if self.replay else None}


@dataclass
class Verdict:
    job_id: str
    mode: str
    lam: int
    closed_party: int
    broadcast_consistent: bool
    parties: list[PartyVerdict] = field(default_factory=list)
    seconds: float = 0.0
    dealer: str | None = None
    dealer_status: str = "ok"  # "ok", "defaulted" (withheld its reveal or release), "cheated" (a release that
    # does not open its commitments or differs from what the last party received)
    dealer_reason: str = ""
    noise: list[dict] = field(default_factory=list)  # entries that did not count (protocol.job_view)
    replicas: list[dict] = field(default_factory=list)  # replicas lost or divergent (ledger_audit.replica_findings)

    @property
    def cheaters(self) -> list[int]:
        return [p.party for p in self.parties if p.status == "cheated"]

    @property
    def defaulted(self) -> list[int]:
        return [p.party for p in self.parties if p.status == "defaulted"]

    @property
    def unresponsive(self) -> list[int]:
        return [p.party for p in self.parties if p.status == "unresponsive"]

    @property
    def errors(self) -> list[int]:
        return [p.party for p in self.parties if p.status == "error"]

    @property
    def pending(self) -> list[int]:
        return [p.party for p in self.parties if p.status == "pending"]

    @property
    def accused_nodes(self) -> list[str]:
        """Node ids named by this verdict (cheated or defaulted), the dealer included if it defaulted."""
        out = [p.node or f"party-{p.party}" for p in self.parties if p.status in ACCUSING]
        out += [r["node"] for r in self.replicas if r["status"] in ACCUSING and r["node"] not in out]
        if self.dealer_status in ACCUSING and self.dealer:
            out.append(self.dealer)
        return out

    @property
    def divergent(self) -> list[str]:
        """Nodes whose job root differs from their index's root and that no opening has judged (replicas)."""
        return [r["node"] for r in self.replicas if r["status"] not in ("unresponsive", "clean")]

    @property
    def clean(self) -> bool:
        return (self.broadcast_consistent and self.dealer_status == "ok" and not self.divergent
                and all(p.status in ("clean", "not opened") for p in self.parties))

    @property
    def outcome(self) -> str:
        """`fail` (someone is accused), `pass`, `error` (the verifier could not decide a party) or `incomplete`."""
        if self.accused_nodes:
            return "fail"
        if self.clean:
            return "pass"
        return "error" if self.errors else "incomplete"

    def as_dict(self) -> dict:
        return {"job_id": self.job_id, "mode": self.mode, "lambda": self.lam, "closed_party": self.closed_party,
                "broadcast_consistent": self.broadcast_consistent, "clean": self.clean, "outcome": self.outcome,
                "cheaters": self.cheaters, "defaulted": self.defaulted, "unresponsive": self.unresponsive,
                "errors": self.errors, "pending": self.pending, "accused": self.accused_nodes,
                "dealer": {"node": self.dealer, "status": self.dealer_status, "reason": self.dealer_reason},
                "parties": [p.as_dict() for p in self.parties], "replicas": self.replicas, "noise": self.noise,
                "seconds": self.seconds}


closed_party = closed_index  # the one share index the audit leaves unopened (protocol.challenge)


def _plain_record(r, salt) -> bool:
    """The record and salt hold only the types a step record has (so plain CBOR is the canonical encoding)."""
    if type(r.index) is not int or type(r.kind) is not str or type(r.scope) is not str or type(salt) is not bytes:
        return False
    if not isinstance(r.shapes, dict) or not isinstance(r.digests, dict) or set(r.shapes) != set(r.digests):
        return False
    for n, d in r.digests.items():
        sh = r.shapes[n]
        if type(n) is not str or type(d) is not bytes or type(sh) is not list or any(type(x) is not int for x in sh):
            return False
    return type(r.ops) is list and type(r.refs) is list and all(type(k) is int for k in r.refs) and \
        all(_plain_value(op) for op in r.ops)


def _plain_value(v) -> bool:
    """v is made of lists, ints (not bools) and strings only."""
    if type(v) is list:
        return all(_plain_value(x) for x in v)
    return type(v) is int or type(v) is str


def records_match(records: list, salts: list, commitment: JobCommitment) -> bool:
    """protocol.commitments.verify_records with the same leaves (views: [STEP_COMMIT_LEAF, salt, body];
    opened: [OPENED_LEAF, index, [[name, digest], ...]]) encoded without the generic canonical-CBOR type
    walk once every field has been checked to have its plain type; anything else goes to verify_records.
    Never raises."""
    try:
        if len(records) != commitment.steps or len(salts) != len(records):
            return False
        if any(r.index != k for k, r in enumerate(records)):
            return False
        if not all(_plain_record(r, s) for r, s in zip(records, salts)):
            return verify_records(records, salts, commitment)
        dumps = cbor2.dumps
        views, opened = [], []
        for r, salt in zip(records, salts):
            names = sorted(r.digests)
            views.append(dumps([STEP_COMMIT_LEAF, salt, r.body()], canonical=True))
            opened.append(dumps([OPENED_LEAF, r.index, [[n, r.digests[n]] for n in names if n.startswith("opened.")]],
                                canonical=True))
        return merkle.root_hash(views) == commitment.views_root and merkle.root_hash(opened) == commitment.opened_root
    except Exception:
        return False


def first_unfaithful_output(records: list, outs: Callable[[int], torch.Tensor | None]) -> int | None:
    """The first matrix-product step whose opened output does not open that step's committed `out` digest
    (None if all do). An exact replay recomputes products and would otherwise never look at them. Never raises."""
    for r in records:
        if r.kind not in MATMUL_KINDS or "out" not in r.digests:
            continue
        try:
            z = outs(r.index)
            ok = z is not None and tensor_digest("out", z) == r.digests["out"]
        except Exception:
            ok = False
        if not ok:
            return r.index
    return None


def audit(job_id: bytes, commitments: list[JobCommitment], *, challenge: Challenge, n_parties: int,
          get_opening: Callable[[int], tuple], get_program: Callable[[int], Callable],
          get_seed: Callable[[int], bytes], get_corrections: Callable[[int], Callable | None],
          mode: str = "freivalds", lam: int = DEFAULT_LAMBDA, frac_bits: int = 16,
          get_joint_program: Callable[[tuple[int, ...]], Callable] | None = None) -> Verdict:
    """Audit one job; never raises on what nodes supply.

    With `get_joint_program(parties)` (the program of several parties on one session, inputs stacked on the
    party axis), every opened party whose records match its commitment is replayed in one joint replay
    (verifier.replay.replay_parties); without it, each on its own."""
    t0 = time.perf_counter()
    roots = {c.opened_root for c in commitments}
    closed = challenge.closed
    v = Verdict(job_id.decode(errors="replace"), mode, lam, closed, len(roots) == 1)
    by_party = {c.party: c for c in commitments}
    verdicts: dict[int, PartyVerdict] = {}
    ready: dict[int, tuple] = {}
    for p in range(n_parties):
        if p == closed:
            verdicts[p] = PartyVerdict(p, "not opened", "closed by the challenge")
            continue
        if p not in by_party:
            verdicts[p] = PartyVerdict(p, "unresponsive", "no job commitment")
            continue
        try:
            records, salts, opened, outs = get_opening(p)
        except Refused as exc:
            verdicts[p] = PartyVerdict(p, "cheated", f"refused to open a valid challenge: {exc}")
            continue
        except Unresponsive as exc:
            verdicts[p] = PartyVerdict(p, "unresponsive", str(exc))
            continue
        except Exception as exc:  # a malformed opening is the node's fault
            verdicts[p] = PartyVerdict(p, "cheated", f"malformed opening: {type(exc).__name__}: {exc}")
            continue
        if not records_match(records, salts, by_party[p]):
            verdicts[p] = PartyVerdict(p, "cheated", "opened records do not match the committed roots")
            continue
        bad = first_unfaithful_output(records, outs) if mode == "exact" else None  # Freivalds mode checks them itself
        if bad is not None:
            verdicts[p] = PartyVerdict(p, "cheated", f"step {bad}: opened output does not match its commitment")
            continue
        ready[p] = (records, opened, outs)
    parties = tuple(ready)

    def program_for(ps: tuple[int, ...]) -> Callable:
        if len(ps) == 1:
            return get_program(ps[0])
        if get_joint_program is None:
            raise ValueError("no joint program")
        return get_joint_program(ps)

    kw = dict(n_parties=n_parties, job=job_id, seeds={p: get_seed(p) for p in parties},
              records={p: ready[p][0] for p in parties}, opened={p: ready[p][1] for p in parties},
              outs={p: ready[p][2] for p in parties},
              corrections=get_corrections(n_parties - 1) if n_parties - 1 in ready else None,
              mode=mode, lam=lam, challenge_seed=challenge.seed, frac_bits=frac_bits)
    if get_joint_program is not None:
        results = replay_parties(program_for, parties=parties, **kw)
    else:
        results = [replay_parties(program_for, parties=(p,), **kw)[0] for p in parties]
    for p, result in zip(parties, results):
        verdicts[p] = replay_verdict(p, result)
    v.parties = [verdicts[p] for p in range(n_parties)]
    v.seconds = time.perf_counter() - t0
    return v


def replay_verdict(p: int, result: ReplayResult) -> PartyVerdict:
    """The verdict on party `p` from its replay."""
    if result.ok:
        return PartyVerdict(p, "clean", "every step matches", result)
    if result.finding is not None:
        f = result.finding
        return PartyVerdict(p, "cheated", f"step {f.step} ({f.kind} in {f.scope or 'top level'}): {f.what} differs",
                            result)  # the op kind and layer travel in the verdict entry's reason
    # The opening passed every structural check before the replay: an exception inside the replay is
    # the verifier's own failure (or the dealer's material), never evidence against the node.
    return PartyVerdict(p, "error", f"the replay could not decide: {result.error}", result)
