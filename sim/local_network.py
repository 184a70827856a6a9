"""A whole deployment in one process, on a real ledger: owner, dealer, client, N nodes, verifier.

Every role has its own signing identity and posts what it would post in a
deployment: registrations, the model publication (manifest blob), the job
(open, assignment, dealer seed commitments), each node's BLS-signed job root,
a checkpoint that seals them, and, when challenged, the nodes' openings and the
dealer's seed release. The MPC itself runs in-process (sim.local_job); the
networked daemons (`prover serve`) post the same entries.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import blake3

from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from mpc_core.encoding import canonical_cbor, decode_cbor
from sim.adversary import Cheat
from sim.local_job import Job, run_job
from models.gpt import GPT
from models.publish import MANIFEST_FILE, publish_model
from protocol.opening import node_opening

ORIGIN = "shardproof/local"
JOB_ROOT_TAG = b"shardproof/audit/job-root/v1"


def combined_root(views_root: bytes, opened_root: bytes) -> bytes:
    """The single root a node BLS-signs: BLAKE3(tag || views_root || opened_root)."""
    return blake3.blake3(JOB_ROOT_TAG + views_root + opened_root).digest()


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
            workdir: str | Path, seed: int = 0, cheats: dict[int, Cheat] | None = None) -> Job:
        n = len(self.nodes)
        led = self.ledger
        led.append(E.make_entry(self.client, E.JOB_OPEN, {
            "job_id": job_id, "model_id": model_id, "n_parties": n, "replicas": 1, "stages": 1,
            "dealer": self.dealer.node_id, "client": self.client.node_id,
            "params": {"prompt_len": len(prompt_ids), "steps": steps}}))
        led.append(E.make_entry(self.client, E.JOB_ASSIGN, {"job_id": job_id, "assignments": [
            {"node": nd.node_id, "party": p, "replica": 0, "stage": 0} for p, nd in enumerate(self.nodes)]}))
        job = run_job(model_dir, prompt_ids, steps, workdir=workdir, seed=seed, job_id=job_id.encode(), cheats=cheats)
        led.append(E.make_entry(self.dealer, E.DEALER_COMMIT, {"job_id": job_id, "seeds": [
            {"party": p, "commitment": c} for p, c in enumerate(job.session.dealer.seed_commitments())]}))
        roots = []
        for p, nd in enumerate(self.nodes):
            c = job.parties[p].commitment
            root = combined_root(c.views_root, c.opened_root)
            sig = nd.bls_sign(E.job_root_message(job_id, nd.node_id, p, 0, root, c.steps))
            roots.append(E.make_entry(nd, E.JOB_ROOT, {
                "job_id": job_id, "node": nd.node_id, "party": p, "replica": 0, "root": root, "n_steps": c.steps,
                "bls_sig": sig, "meta": {"views_root": c.views_root, "opened_root": c.opened_root}}))
        led.append_many(roots)
        led.checkpoint()  # seals every commitment before any challenge can exist
        return job

    # --- answering a challenge ----------------------------------------------------------
    def respond(self, job: Job, job_id: str, challenge_index: int, parties: list[int], withhold: tuple[int, ...] = ()) -> None:
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
                data = led.put_blob(canonical_cbor({"refused": "node declines to open"}))
            else:
                data = led.put_blob(node_opening(st.transcript, st.salts, manifest_dir, p, st.token_shares, st.cheat))
            posted.append(E.make_entry(nd, E.OPENING, {"job_id": job_id, "node": nd.node_id, "party": p,
                                                       "challenge": challenge_index, "data": data}))
        release = {"seeds": {str(p): job.seed(p) for p in parties}}
        if job.n_parties - 1 in parties:
            release["corrections"] = _corrections_blob(job)
        data = led.put_blob(canonical_cbor(release))
        posted.append(E.make_entry(self.dealer, E.OPENING, {"job_id": job_id, "node": self.dealer.node_id,
                                                            "party": job.n_parties - 1 if job.n_parties - 1 in parties else parties[0],
                                                            "challenge": challenge_index, "data": data,
                                                            "meta": {"role": "dealer"}}))
        led.append_many(posted)


def _corrections_blob(job: Job) -> bytes:
    """The last party's correction shares for every request of the job, in op order."""
    from protocol.opening import enc_tensor
    log = job.session.request_log
    out = []
    for op_index, req in enumerate(log):
        corr = job.session.dealer.correction(req, op_index)
        out.append([req.describe(), {k: enc_tensor(v) for k, v in sorted(corr.items())}])
    return canonical_cbor(out)


def read_manifest_blob(led: Ledger, model_id: str) -> dict:
    for e in led.query(kind=E.MODEL):
        if e.entry.body["model_id"] == model_id:
            return json.loads(led.get_blob(e.entry.body["manifest"]))
    raise KeyError(model_id)


def decode_release(data: bytes) -> dict:
    obj = decode_cbor(data)
    return {"seeds": {int(k): bytes(v) for k, v in obj["seeds"].items()}, "corrections": obj.get("corrections")}
