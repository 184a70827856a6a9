"""Deliberate deviations for testing the audit: `prover serve --cheat KIND[@STEP]` and in-process jobs.

Cheating lives here, never in production code: `install` makes an in-process session cheat for one
party, `CheatingNodeDaemon` is a node daemon (prover.daemon) that deviates where a `--cheat` says, and
`EquivocatingCommunicator` is the networked transport of an equivocating party.

A cheat corrupts one party's computation at the first matching step at or after
STEP (default 0); the corrupted value is used downstream and committed, exactly
as a dishonest node would do to stay self-consistent. Kinds:

  matmul-random   a random error in a matmul output share
  matmul-2^63     a single error of 2^63 in one entry of a matmul output share
  trunc           a wrong truncation (output off by 2^20)
  zeros           skipped work: a matmul output share replaced by zeros
  weights         a wrong (stale) weight share used in place of the published one
  bad-opening     an opening that does not match the party's commitments
  refuse          refusing to open when challenged
  equivocate      sending one peer a different opening share than the others
                  (round STEP; networked parties only: the in-process transport
                  has no per-peer messages)
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Callable

import torch

from mpc_core import prg
from mpc_core.broadcast import BroadcastLog
from mpc_core.mesh import Mesh, MeshCommunicator
from mpc_core.encoding import canonical_cbor
from mpc_core.session import Session
from prover.daemon import NodeDaemon
from prover.keys import NodeKeys
from protocol.opening import MATMUL_KINDS, OpeningBlobs
from sim.cheat_spec import KINDS, NETWORK_ONLY, Cheat, CheatSpecError  # noqa: F401 (the spec, re-exported)


def tamper_steps(session: Session, tamper: Callable[[str, int, dict[str, torch.Tensor]], None]) -> None:
    """Make `session` call `tamper(kind, index, local)` on every step just before recording it; `tamper` may
    modify the local parties' rows in place, so the altered values are used downstream and committed."""
    ref = weakref.ref(session)  # no reference cycle: a dropped session still closes its transcripts at once
    inner = session.__dict__.get("record")  # a cheat installed earlier on this session (another party)

    def record(kind: str, local: dict[str, torch.Tensor], public: dict[str, torch.Tensor] | None = None,
               refs: list[int] | None = None) -> int:
        s = ref()
        tamper(kind, s.next_step_index, local)
        return inner(kind, local, public, refs) if inner is not None else type(s).record(s, kind, local, public, refs)

    session.record = record  # type: ignore[method-assign]  # this instance only


def install(session: Session, party: int, cheat: Cheat) -> dict:
    """Make `session` cheat with `cheat` in `party`'s rows; returns a dict that records where it struck."""
    fired: dict = {}
    if cheat.kind in NETWORK_ONLY and getattr(session.comm, "broadcast_log", None) is None:
        raise CheatSpecError(f"cheat {cheat.kind!r} needs a networked party (prover serve)")
    targets = {"matmul-random": MATMUL_KINDS, "matmul-2^63": MATMUL_KINDS, "zeros": MATMUL_KINDS, "trunc": ("trunc",)}
    if cheat.kind not in targets:
        return fired
    row = session.local_parties.index(party)

    def tamper(kind: str, index: int, local: dict[str, torch.Tensor]) -> None:
        if fired or index < cheat.step or kind not in targets[cheat.kind]:
            return
        out = local["out"][row]
        if cheat.kind == "matmul-random":
            out += prg.ring_tensor(prg.master_from_int(index, "cheat"), b"cheat", index, party, "err", tuple(out.shape))
        elif cheat.kind == "matmul-2^63":
            out.view(-1)[0] += -(2**63)
        elif cheat.kind == "zeros":
            out.zero_()
        elif cheat.kind == "trunc":
            out += 1 << 20
        fired.update(step=index, kind=kind)

    tamper_steps(session, tamper)
    return fired


class EquivocatingCommunicator(MeshCommunicator):
    """For `equivocate`: a networked party that sends the highest-numbered peer an altered message in the
    first round at or after `cheat.step`, and every other message honestly."""

    def __init__(self, mesh: Mesh, n_parties: int, broadcast_log: BroadcastLog | None, cheat: Cheat,
                 replicas: int = 1):
        if broadcast_log is None:
            raise CheatSpecError("per-peer messages need a broadcast log (the rounds are chained per peer)")
        super().__init__(mesh, n_parties, broadcast_log=broadcast_log, replicas=replicas)
        self.cheat = cheat
        self.victim = max(self.peers)
        self.fired: dict = {}

    def _message_for(self, round_index: int, peer: int, mine: torch.Tensor) -> torch.Tensor:
        if self.fired or round_index < self.cheat.step or peer != self.victim:
            return mine
        self.fired.update(round=round_index, peer=peer)
        return altered(mine)


def stale_share(share: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For `weights`: `share` with one weight one unit off (a stale share), in place of the published one."""
    name = sorted(n for n in share if n.endswith("c_fc.weight"))[0]
    share[name] = share[name].clone()
    share[name].view(-1)[0] += 1
    return share


def refusal_blob() -> bytes:
    """For `refuse`: what a node posts instead of its opening."""
    return canonical_cbor({"refused": "node declines to open"})


class _BadOpeningView:
    """A transcript as a `bad-opening` cheater reveals it: one matmul output altered."""

    def __init__(self, transcript, cheat: Cheat):
        self.records = transcript.records
        self._honest = transcript.load
        self._target = bad_opening_step(transcript.records, cheat)

    def load(self, index: int) -> dict[str, torch.Tensor]:
        data = self._honest(index)
        return {**data, "out": altered(data["out"])} if index == self._target else data


def opened_transcript(transcript, cheat: Cheat | None):
    """What a node with `cheat` reveals of `transcript` in an opening (`records`, `load(step)`)."""
    return _BadOpeningView(transcript, cheat) if cheat is not None and cheat.kind == "bad-opening" else transcript


def bad_opening_step(records, cheat: Cheat) -> int:
    """The matmul step whose output a `bad-opening` cheater alters in its opening."""
    return next(r.index for r in records if r.index >= cheat.step and r.kind in MATMUL_KINDS)


def altered(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` off by one in its first entry (what a bad opening reveals instead)."""
    t = t.clone()
    t.view(-1)[0] += 1
    return t


class CheatingNodeDaemon(NodeDaemon):
    """`prover serve --cheat`: a node daemon that deviates as `cheat` says and is honest otherwise."""

    def __init__(self, ledger_url: str, keys: NodeKeys, data_dir: str | os.PathLike, cheat: Cheat,
                 poll_s: float = 0.2, timeout_s: float = 60.0):
        super().__init__(ledger_url, keys, data_dir, poll_s=poll_s, timeout_s=timeout_s)
        self.cheat = cheat

    def make_communicator(self, mesh: Mesh, n_parties: int, bcast: BroadcastLog, replicas: int = 1
                          ) -> MeshCommunicator:
        if self.cheat.kind == "equivocate":
            return EquivocatingCommunicator(mesh, n_parties, bcast, self.cheat, replicas)
        return super().make_communicator(mesh, n_parties, bcast, replicas)

    def make_session(self, comm: MeshCommunicator, dealer, job: bytes, jdir: Path,
                     frac_bits: int) -> Session:
        session = super().make_session(comm, dealer, job, jdir, frac_bits)
        install(session, comm.party, self.cheat)
        return session

    def weight_share(self, model_dir: Path, manifest: dict, party: int,
                     refresh_job: str | None) -> dict[str, torch.Tensor]:
        share = super().weight_share(model_dir, manifest, party, refresh_job)
        return stale_share(share) if self.cheat.kind == "weights" else share

    def opening_payload(self, job_id: str, state: dict) -> OpeningBlobs:
        if self.cheat.kind == "refuse":
            return OpeningBlobs(refusal_blob())
        return super().opening_payload(job_id, state)

    def opened_transcript(self, transcript):
        return opened_transcript(transcript, self.cheat)

    def served_blob(self, digest: bytes) -> bytes | None:
        return None if self.cheat.kind == "withhold" else super().served_blob(digest)

    def provided_blob(self, job_id: str, digest: bytes) -> bytes | None:
        return None if self.cheat.kind == "withhold" else super().provided_blob(job_id, digest)
