"""Audit a finished private-generation job (specs/audit.md).

1. Broadcast consistency: every party's `opened_root` must be equal (honest parties saw the
   same public openings).
2. Challenge (Fiat-Shamir): seed = BLAKE3(CHALLENGE || canonical_cbor([job, commitments])), computed
   only after every commitment is fixed; it names the one share index left closed (the audit
   privacy budget: never all N) and keys the Freivalds columns.
3. Openings: each opened party reveals its step records and salts (which must reproduce its
   committed `views_root`), the public openings, its matmul outputs and its inputs.
4. Replay (verifier.replay) with the dealer's seed for that party: the first step whose recomputed
   digest differs from the committed one names the cheater. A node that refuses a valid challenge
   is a cheater; one that does not answer is unresponsive.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import blake3

from mpc_core.domains import CHALLENGE
from mpc_core.encoding import canonical_cbor
from prover.commitments import JobCommitment, verify_records
from verifier.replay import ReplayResult, replay_party

DEFAULT_LAMBDA = 40  # worst-case miss probability 2^-40 per cheating matmul (see specs/audit.md)


class Refused(Exception):
    """A node explicitly refused to open a challenged party."""


class Unresponsive(Exception):
    """A node did not answer a challenge in time."""


@dataclass
class PartyVerdict:
    party: int
    status: str  # "clean", "cheated", "unresponsive", "not opened"
    reason: str = ""
    replay: ReplayResult | None = None

    def as_dict(self) -> dict:
        return {"party": self.party, "status": self.status, "reason": self.reason,
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

    @property
    def cheaters(self) -> list[int]:
        return [p.party for p in self.parties if p.status == "cheated"]

    @property
    def unresponsive(self) -> list[int]:
        return [p.party for p in self.parties if p.status == "unresponsive"]

    @property
    def clean(self) -> bool:
        return self.broadcast_consistent and not self.cheaters and not self.unresponsive

    def as_dict(self) -> dict:
        return {"job_id": self.job_id, "mode": self.mode, "lambda": self.lam, "closed_party": self.closed_party,
                "broadcast_consistent": self.broadcast_consistent, "clean": self.clean, "cheaters": self.cheaters,
                "unresponsive": self.unresponsive, "parties": [p.as_dict() for p in self.parties],
                "seconds": self.seconds}


def derive_challenge(job_id: bytes, commitments: list[JobCommitment]) -> bytes:
    """The challenge seed, a function of the sealed commitments only."""
    return blake3.blake3(CHALLENGE + canonical_cbor([job_id, [c.body() for c in commitments]])).digest()


def closed_party(challenge: bytes, n_parties: int) -> int:
    """The one share index the audit leaves unopened."""
    return int.from_bytes(challenge[:8], "little") % n_parties


def audit(job_id: bytes, commitments: list[JobCommitment], *, n_parties: int,
          get_opening: Callable[[int], tuple], get_program: Callable[[int], Callable],
          get_seed: Callable[[int], bytes], get_corrections: Callable[[int], Callable | None],
          mode: str = "freivalds", lam: int = DEFAULT_LAMBDA, frac_bits: int = 16) -> Verdict:
    """Audit one job; never raises on what nodes supply."""
    t0 = time.perf_counter()
    roots = {c.opened_root for c in commitments}
    challenge = derive_challenge(job_id, commitments)
    closed = closed_party(challenge, n_parties)
    v = Verdict(job_id.decode(errors="replace"), mode, lam, closed, len(roots) == 1)
    by_party = {c.party: c for c in commitments}
    for p in range(n_parties):
        if p == closed:
            v.parties.append(PartyVerdict(p, "not opened", "closed by the challenge"))
            continue
        if p not in by_party:
            v.parties.append(PartyVerdict(p, "unresponsive", "no job commitment"))
            continue
        try:
            records, salts, opened, outs = get_opening(p)
        except Refused as exc:
            v.parties.append(PartyVerdict(p, "cheated", f"refused to open a valid challenge: {exc}"))
            continue
        except Unresponsive as exc:
            v.parties.append(PartyVerdict(p, "unresponsive", str(exc)))
            continue
        except Exception as exc:  # a malformed opening is the node's fault
            v.parties.append(PartyVerdict(p, "cheated", f"malformed opening: {type(exc).__name__}: {exc}"))
            continue
        if not verify_records(records, salts, by_party[p]):
            v.parties.append(PartyVerdict(p, "cheated", "opened records do not match the committed roots"))
            continue
        result = replay_party(get_program(p), party=p, n_parties=n_parties, job=job_id, seed=get_seed(p),
                              records=records, opened=opened, outs=outs, corrections=get_corrections(p),
                              mode=mode, lam=lam, challenge_seed=challenge, frac_bits=frac_bits)
        if result.ok:
            v.parties.append(PartyVerdict(p, "clean", "every step matches", result))
        elif result.finding is not None:
            f = result.finding
            v.parties.append(PartyVerdict(p, "cheated", f"step {f.step}: {f.what} differs", result))
        else:
            v.parties.append(PartyVerdict(p, "cheated", f"opening could not be replayed: {result.error}", result))
    v.seconds = time.perf_counter() - t0
    return v


def audit_local_job(job, *, mode: str = "freivalds", lam: int = DEFAULT_LAMBDA) -> Verdict:
    """Audit a job run in this process (prover.job.run_job), honouring its parties' cheats at opening time."""
    from prover.cheats import altered, bad_opening_step
    from prover.job import opening, party_program

    def get_opening(p: int):
        st = job.parties[p]
        if st.cheat is not None and st.cheat.kind == "refuse":
            raise Refused(f"party {p} declined")
        records, salts, opened, outs = opening(st)
        if st.cheat is not None and st.cheat.kind == "bad-opening":
            target = bad_opening_step(records, st.cheat)
            return records, salts, opened, lambda k: altered(outs(k)) if k == target else outs(k)
        return records, salts, opened, outs

    commitments = [job.parties[p].commitment for p in range(job.n_parties)]
    return audit(job.job_id, commitments, n_parties=job.n_parties, get_opening=get_opening,
                 get_program=lambda p: party_program(job.model_dir, p, job.parties[p].token_shares),
                 get_seed=job.seed, get_corrections=job.corrections, mode=mode, lam=lam,
                 frac_bits=job.session.frac_bits)
