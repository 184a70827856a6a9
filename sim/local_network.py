"""A whole deployment in one process, on a real ledger: owner, dealer, client, N nodes, verifier.

Every role has its own signing identity and posts what it would post in a
deployment: registrations, the model publication (manifest blob), the job
(open, assignment, dealer seed commitments), each node's BLS-signed job root,
a checkpoint that seals them, and, when challenged, the nodes' openings and the
dealer's seed release. The MPC itself runs in-process (sim.local_job); the
networked daemons (`prover serve`) post the same entries.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from sim.adversary import Cheat, opened_transcript, refusal_blob
from sim.local_job import Job, run_job
from models.gpt import GPT
from models.publish import MANIFEST_FILE, publish_model
from protocol import bodies as B
from protocol.challenge import DEALER_SLOT, beacon_commitment, beacon_value
from protocol.opening import OpeningBlobs, correction_items, corrections_head, encode_release, node_opening

ORIGIN = "shardproof/local"


def _ident(name: str, seed: int) -> Identity:
    return Identity(name, prg.master_from_int(seed, f"identity:{name}"))


@dataclass
class LocalNetwork:
    ledger: Ledger
    log: Identity
    owner: Identity
    dealer: Identity
    client: Identity
    verifier: Identity
    nodes: list[Identity]

    @classmethod
    def create(cls, url: str, n_nodes: int = 3, seed: int = 0) -> "LocalNetwork":
        log = _ident("log", seed)
        led = Ledger.open(url, origin=ORIGIN, log_identity=log)
        net = cls(led, log, _ident("owner", seed), _ident("dealer", seed), _ident("client", seed),
                  _ident("verifier", seed), [_ident(f"node-{i}", seed) for i in range(n_nodes)])
        known = {r.node_id for r in led.registrations()} if hasattr(led, "registrations") else set()
        regs = [(net.owner, ("owner",)), (net.dealer, ("dealer",)), (net.client, ("client",)),
                (net.verifier, ("verifier",))] + [(n, ("node",)) for n in net.nodes]
        new = [E.registration(i, roles=r, endpoint=f"127.0.0.1:{29500 + k}") for k, (i, r) in enumerate(regs)
               if i.node_id not in known]
        if new:
            led.append_many(new)
        return net

    # --- model owner ------------------------------------------------------------------
    def publish(self, model: GPT, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> str:
        manifest = publish_model(model, len(self.nodes), out_dir, prg.master_from_int(1, "owner"),
                                 tokenizer_dir=tokenizer_dir)
        blob = (Path(out_dir) / MANIFEST_FILE).read_bytes()
        digest = self.ledger.put_blob(blob)
        self.ledger.append(E.make_entry(self.owner, E.MODEL, {
            "model_id": manifest["model_id"][:64], "manifest": digest, "n_shares": len(self.nodes),
            "commitments": bytes.fromhex(manifest["model_id"])}))
        return manifest["model_id"][:64]

    # --- client + dealer + nodes: one job ---------------------------------------------
    def run(self, model_dir: str | Path, model_id: str, prompt_ids: list[int], steps: int, *, job_id: str,
            workdir: str | Path, seed: int = 0, cheats: dict[int, Cheat] | None = None, open_deadline: int = 3,
            reveal: bool = True, withhold_roots: tuple[int, ...] = (),
            root_changes: dict[int, dict] | None = None) -> Job:
        """Run a job and post what each role posts, up to the sealing checkpoint; with `reveal`, every
        participant then reveals its challenge beacon (`reveal_beacons`). The parties in
        `withhold_roots` never post their job root nor reveal (the job is then never sealed);
        `root_changes` maps a party to fields replaced in its job root's body (`disputes=[q]`: it
        says party q's broadcast receipt was bad)."""
        n = len(self.nodes)
        led = self.ledger
        led.append(E.make_entry(self.client, E.JOB_OPEN, B.JobOpen(
            job_id, model_id, n, self.dealer.node_id, self.client.node_id,
            params={"prompt_len": len(prompt_ids), "steps": steps, "open_deadline": open_deadline}).to_body()))
        led.append(E.make_entry(self.client, E.JOB_ASSIGN, B.JobAssign(job_id, tuple(
            B.Assignment(nd.node_id, p) for p, nd in enumerate(self.nodes))).to_body()))
        job = run_job(model_dir, prompt_ids, steps, workdir=workdir, seed=seed, job_id=job_id.encode(), cheats=cheats)
        dealer = job.session.dealer
        led.append(E.make_entry(self.dealer, E.DEALER_COMMIT, B.DealerCommit(
            job_id, dict(enumerate(dealer.seed_commitments())),
            beacon_commitment(job_id, DEALER_SLOT, beacon_value(dealer.master_seed, job_id, DEALER_SLOT))).to_body()))
        changes = root_changes or {}
        led.append_many([self.job_root_entry(job, job_id, p, **changes.get(p, {})) for p in range(n)
                         if p not in withhold_roots])
        led.checkpoint()  # seals every commitment before any challenge can exist
        if reveal:
            self.reveal_beacons(job, job_id, withhold=withhold_roots)
        return job

    def job_root_entry(self, job: Job, job_id: str, p: int, **changes) -> E.Entry:
        """Node p's signed `node.job_root` (its commitment, beacon commitment, BLS signature)."""
        nd, c = self.nodes[p], job.parties[p].commitment
        beacon = beacon_commitment(job_id, p, beacon_value(job.parties[p].node_secret, job_id, p))
        sig = nd.bls_sign(E.job_root_message(job_id, nd.node_id, p, 0, c.root, c.steps))
        corrections = None
        if p == len(self.nodes) - 1:  # the last party commits to the corrections it received
            corrections = corrections_head(correction_items(job.session.dealer, job.session.request_log))
        body = B.JobRoot(job_id, nd.node_id, p, 0, c.root, c.steps, sig, c.views_root, c.opened_root, beacon,
                         corrections=corrections).to_body()
        return E.make_entry(nd, E.JOB_ROOT, {**body, **changes})

    def reveal_entry(self, job: Job, job_id: str, slot: int | str) -> E.Entry:
        """The participant of `slot` (a party, or the dealer) reveals its beacon value."""
        if slot == DEALER_SLOT:
            value = beacon_value(job.session.dealer.master_seed, job_id, DEALER_SLOT)
            return E.make_entry(self.dealer, E.REVEAL, B.Reveal(job_id, None, value).to_body())
        value = beacon_value(job.parties[slot].node_secret, job_id, slot)
        return E.make_entry(self.nodes[slot], E.REVEAL, B.Reveal(job_id, slot, value).to_body())

    def reveal_beacons(self, job: Job, job_id: str, withhold: tuple = ()) -> None:
        """Every participant not in `withhold` reveals its beacon (after the seal)."""
        slots = [*range(len(self.nodes)), DEALER_SLOT]
        self.ledger.append_many([self.reveal_entry(job, job_id, s) for s in slots if s not in withhold])

    # --- answering a challenge ----------------------------------------------------------
    def respond(self, job: Job, job_id: str, challenge_index: int, parties: list[int], withhold: tuple[int, ...] = (),
                release: bool = True) -> None:
        """Nodes post their openings (or refuse; those in `withhold` stay silent); the dealer releases the seeds."""
        led = self.ledger
        manifest_dir = job.model_dir
        posted = []
        for p in parties:
            if p in withhold:
                continue
            st = job.parties[p]
            nd = self.nodes[p]
            if st.cheat is not None and st.cheat.kind == "refuse":
                blobs = OpeningBlobs(refusal_blob())
            else:
                blobs = node_opening(opened_transcript(st.transcript, st.cheat), st.salts, manifest_dir, p,
                                     st.token_shares)
            public = led.put_blob(blobs.public) if blobs.public is not None else None
            data = led.put_blob(blobs.data)
            posted.append(E.make_entry(nd, E.OPENING, B.Opening(job_id, nd.node_id, p, challenge_index, data,
                                                                public).to_body()))
        if release:
            dealer = job.session.dealer
            corrections = correction_items(dealer, job.session.request_log) if job.n_parties - 1 in parties else None
            data = led.put_blob(encode_release({p: job.seed(p) for p in parties}, corrections))
            posted.append(E.make_entry(self.dealer, E.RELEASE, B.DealerRelease(job_id, challenge_index, data).to_body()))
        led.append_many(posted)
