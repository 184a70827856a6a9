"""Openings in two blobs on a real ledger (in-process network): the opened parties of a job share one
public-values blob; a public blob that differs from what a party recorded is caught as before and the
evidence carries it; after retention prunes a closed job's openings, `ledger check` passes and an audit of
the job says "could not decide" (error), never "cheated", and posts nothing."""
from __future__ import annotations

import torch

from ledger import entries as E
from mpc_core.encoding import canonical_cbor, decode_cbor
from models import GPTConfig, random_model
from protocol.opening import decode_public, enc_tensor, node_opening
from sim.local_network import LocalNetwork
from verifier.ledger_audit import audit_on_ledger, check_evidence

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]
FAR_FUTURE = E.now_ms() + 365 * 86_400_000  # `now` for prune: every job of this test is old enough


def _net(tmp_path):
    net = LocalNetwork.create(f"sqlite:///{tmp_path / 'ledger.db'}", 3, seed=0)
    return net, net.publish(random_model(CFG, seed=4), tmp_path / "model")


def _openings(net, job_id):
    return {le.entry.body["party"]: le.entry.body for le in net.ledger.by_job(job_id, kind=E.OPENING)}


def test_two_openings_share_one_public_blob_and_a_pruned_job_audits_as_could_not_decide(tmp_path):
    net, model_id = _net(tmp_path)
    job = net.run(tmp_path / "model", model_id, PROMPT, 2, job_id="j", workdir=tmp_path / "j")
    res = audit_on_ledger(net.ledger, "j", net.verifier, lam=40, respond=lambda ci, ps: net.respond(job, "j", ci, ps))
    assert res.verdict.clean and res.verdict_index is not None, res.verdict.as_dict()
    ops = _openings(net, "j")
    assert len(ops) == 2 and len({b["public"] for b in ops.values()}) == 1 and len({b["data"] for b in ops.values()}) == 2
    public = next(iter(ops.values()))["public"]
    assert decode_public(decode_cbor(net.ledger.get_blob(public)))  # one stored blob holds the job's public values

    size = net.ledger.size()
    rep = net.ledger.prune(0, now_ms=FAR_FUTURE)
    release = net.ledger.by_job("j", kind=E.RELEASE)[0].entry.body["data"]
    assert {d for d, _, _ in rep.pruned} == {public, release, *(b["data"] for b in ops.values())}
    chk = net.ledger.check()
    assert chk.ok and chk.pruned_blobs == 4, chk.findings
    for force in (False, True):
        again = audit_on_ledger(net.ledger, "j", net.verifier, lam=40, force=force)
        v = again.verdict
        assert v.outcome == "error" and v.accused_nodes == [] and v.cheaters == [], v.as_dict()
        assert v.dealer_status == "ok", v.as_dict()  # a pruned release is nobody's fault
        opened = [p for p in v.parties if p.status != "not opened"]
        assert len(opened) == 2 and all(p.status == "error" and "blob unavailable" in p.reason for p in opened)
    assert net.ledger.size() == size  # nothing posted that the auditor cannot stand behind


def _tampered_public(blob: bytes) -> bytes:
    """The public-values blob with one opened value changed by one."""
    pub = decode_public(decode_cbor(blob))
    step = min(pub)
    name = sorted(pub[step])[0]
    t = pub[step][name].clone()
    t.view(-1)[0] += 1
    pub[step][name] = t
    return canonical_cbor({k: {n: enc_tensor(x) for n, x in d.items()} for k, d in pub.items()})


def test_a_different_public_blob_is_caught_and_an_inline_opening_still_counts(tmp_path):
    """Party `victim` posts its honest own blob with a public blob of its own making: cheated, with evidence
    that verifies offline (the bundle carries both blobs). The other opened party posts the form before the
    split (public values inline): clean."""
    net, model_id = _net(tmp_path)
    job = net.run(tmp_path / "model", model_id, PROMPT, 2, job_id="t", workdir=tmp_path / "t")
    chosen = {}

    def respond(ci, parties):
        victim, other = parties  # a challenge opens two of the three share indices
        chosen.update(victim=victim, other=other)
        posted = []
        for p in parties:
            st = job.parties[p]
            blobs = node_opening(st.transcript, st.salts, tmp_path / "model", p, st.token_shares)
            body = {"job_id": "t", "node": net.nodes[p].node_id, "party": p, "challenge": ci}
            if p == victim:
                body.update(data=net.ledger.put_blob(blobs.data),
                            public=net.ledger.put_blob(_tampered_public(blobs.public)))
            else:
                inline = canonical_cbor({**decode_cbor(blobs.data), "public": decode_cbor(blobs.public)})
                body.update(data=net.ledger.put_blob(inline))
            posted.append(E.make_entry(net.nodes[p], E.OPENING, body))
        net.ledger.append_many(posted)
        net.respond(job, "t", ci, parties, withhold=tuple(parties))  # the dealer's release only

    res = audit_on_ledger(net.ledger, "t", net.verifier, lam=40, respond=respond)
    v = res.verdict
    assert v.cheaters == [chosen["victim"]], v.as_dict()
    assert "opened." in next(p for p in v.parties if p.party == chosen["victim"]).reason  # the replay's comparison
    assert next(p for p in v.parties if p.party == chosen["other"]).status == "clean", v.as_dict()
    node = net.nodes[chosen["victim"]].node_id
    chk = check_evidence(res.evidence[node], net.ledger.log_key)
    assert chk.ok and chk.accused == [node], chk.reasons


def test_public_values_of_honest_parties_are_identical(tmp_path):
    """The premise of storing them once: every party of a job opened the same public values."""
    from sim.local_job import run_job

    net, model_id = _net(tmp_path)
    job = run_job(tmp_path / "model", PROMPT, 2, workdir=tmp_path / "w", seed=1, job_id=b"x")
    blobs = [node_opening(st.transcript, st.salts, tmp_path / "model", p, st.token_shares).public
             for p, st in sorted(job.parties.items())]
    assert len(set(blobs)) == 1
    assert all(isinstance(t, torch.Tensor) for d in decode_public(decode_cbor(blobs[0])).values() for t in d.values())
