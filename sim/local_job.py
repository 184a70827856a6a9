"""An auditable private-generation job run with every party in this process.

Each party keeps its transcript on disk (spilled step tensors), its one-hot
input shares per step, and a node secret for commitment salts; at the end it
commits (protocol.commitments). The parties run the one party program and the
client samples through the one client loop (protocol.program); `party_program`
rebuilds exactly the program a party ran, for the auditor's replay.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mpc_core import Session
from mpc_core import prg
from mpc_core.transcript import StepRecord, Transcript
from protocol.challenge import DEALER_SLOT, Challenge, beacon_value, derive
from sim.adversary import Cheat, install, stale_share
from protocol.commitments import JobCommitment, commit
from protocol import program as protocol_program
from protocol.program import client_loop, program_for_parties
from models.gpt_mpc import client_reconstruct, share_tokens
from models.publish import load_party_share, manifest_config, read_manifest


@dataclass
class PartyState:
    """What node `party` keeps after a job (its local disk, in a deployment)."""

    party: int
    transcript: Transcript
    token_shares: list[torch.Tensor]
    node_secret: bytes
    commitment: JobCommitment | None = None
    salts: list[bytes] = field(default_factory=list)
    cheat: Cheat | None = None
    fired: dict = field(default_factory=dict)


@dataclass
class Job:
    job_id: bytes
    model_dir: Path
    n_parties: int
    prompt_len: int
    steps: int
    tokens: list[int]
    session: Session
    parties: dict[int, PartyState]

    def challenge(self) -> Challenge:
        """The job's challenge by the one derivation (protocol.challenge): in-process there is no log, so
        the sealing checkpoint is the empty one (size 0); the beacons are the parties' and the dealer's."""
        jid = self.job_id.decode()
        roots = [self.parties[p].commitment.root for p in range(self.n_parties)]
        reveals = [beacon_value(self.parties[p].node_secret, jid, p) for p in range(self.n_parties)]
        reveals.append(beacon_value(self.session.dealer.master_seed, jid, DEALER_SLOT))
        return derive(jid, self.n_parties, 0, bytes(32), roots, reveals)

    def seed(self, party: int) -> bytes:
        """The dealer releases a party's seed against a recorded challenge."""
        return self.session.dealer.party_seed(party)

    def corrections(self, party: int) -> Callable | None:
        """The dealer's correction shares, revealed with the last party's seed."""
        if party != self.n_parties - 1:
            return None
        return lambda req, i: self.session.dealer.correction(req, i)


def _weights(session: Session, model_dir: Path, manifest: dict, cheats: dict[int, Cheat]) -> dict[str, torch.Tensor]:
    """The local parties' weight shares (P_local, ...) by name, a `weights` cheater's one stale."""
    shares = {p: load_party_share(model_dir, p, manifest) for p in session.local_parties}
    for p, c in cheats.items():
        if c.kind == "weights":
            stale_share(shares[p])
    return {n: torch.stack([shares[p][n] for p in session.local_parties]) for n in sorted(manifest["tensors"])}


def run_job(model_dir: str | Path, prompt_ids: list[int], max_new_tokens: int, *, workdir: str | Path, seed: int = 0,
            job_id: bytes | None = None, cheats: dict[int, Cheat] | None = None, temperature: float = 0.0,
            top_k: int | None = None) -> Job:
    """Run a private generation job; every party spills its transcript under `workdir`."""
    cheats = cheats or {}
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    n = manifest["n_parties"]
    cfg = manifest_config(manifest)
    job_id = job_id or f"job-{seed}".encode()
    master = prg.master_from_int(seed, "shardproof/job-dealer")
    tdir = Path(workdir) / "transcripts"
    session = Session.in_process(n, master, job=job_id, transcript_dir=str(tdir), frac_bits=manifest["frac_bits"])
    fired = {p: install(session, p, c) for p, c in cheats.items()}
    token_shares: dict[int, list[torch.Tensor]] = {p: [] for p in range(n)}
    fed: list[torch.Tensor] = []  # the one-hot shares of the step the program asks for next
    program = protocol_program.party_program(session, manifest, _weights(session, model_dir, manifest, cheats),
                                             iter(fed.pop, None))

    def step(feed: list[int], i: int) -> torch.Tensor:
        onehot = share_tokens(session, feed, cfg.vocab_size)
        for row, p in enumerate(session.local_parties):
            token_shares[p].append(onehot[row].clone())
        fed.append(onehot)
        return client_reconstruct(next(program))

    tokens = list(client_loop(prompt_ids, max_new_tokens, step, temperature=temperature, top_k=top_k, seed=seed))
    program.close()
    parties = {}
    for p in range(n):
        secret = prg.master_from_int(seed * 1000 + p, "node-secret")  # a node draws its own in a deployment
        st = PartyState(p, session.transcripts[p], token_shares[p], secret, cheat=cheats.get(p), fired=fired.get(p, {}))
        st.commitment, st.salts = commit(st.transcript.records, secret, job_id, p)
        parties[p] = st
    return Job(job_id, model_dir, n, len(prompt_ids), max_new_tokens, tokens, session, parties)


def party_program(model_dir: Path, party: int, token_shares: list[torch.Tensor]) -> Callable[[Session], None]:
    """The program party `party` ran (protocol.program), driven by its own inputs (published share, token shares)."""
    def program(s: Session) -> None:
        manifest = read_manifest(model_dir)
        share = load_party_share(model_dir, party, manifest)  # checked against the manifest commitments
        program_for_parties(manifest, [share], [token_shares])(s)
    return program


def opening(state: PartyState) -> tuple[list[StepRecord], list[bytes], Callable, Callable]:
    """What node `party` reveals for a full audit: records with salts, public openings, matmul outputs."""
    t = state.transcript
    opened = lambda k: {n: v for n, v in t.load(k).items() if n.startswith("opened.")}  # noqa: E731
    outs = lambda k: t.load(k).get("out")  # noqa: E731
    return list(t.records), list(state.salts), opened, outs
