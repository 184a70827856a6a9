"""Audits from the ledger (SQLite and PostgreSQL): challenge, openings, verdict entries, offline evidence, CLI."""
import itertools
import os

import pytest

from ledger import entries as E
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.prg import master_from_int
from sim.adversary import Cheat
from prover.keys import keygen
from sim.local_network import LocalNetwork
from models import GPTConfig, random_model
from verifier.ledger_audit import audit_on_ledger, check_evidence

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
PROMPT = [3, 1, 4]
_db = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def network(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(f"audit{os.getpid()}_{next(_db)}")
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), tmp_path / "model")
    return net, model_id, url


def _run(net, model_id, tmp_path, job_id, cheats=None):
    job = net.run(tmp_path / "model", model_id, PROMPT, 2, job_id=job_id, workdir=tmp_path / job_id, cheats=cheats or {})
    res = audit_on_ledger(net.ledger, job_id, net.verifier, lam=40,
                          respond=lambda ci, ps: net.respond(job, job_id, ci, ps))
    return job, res


def test_honest_job_clean_verdict_on_the_ledger(network, tmp_path):
    net, model_id, _ = network
    _, res = _run(net, model_id, tmp_path, "honest-1")
    assert res.verdict.clean and all(res.checks.values()), (res.verdict.as_dict(), res.checks)
    v = net.ledger.get(res.verdict_index).entry
    assert v.kind == E.VERDICT and v.body["outcome"] == "pass" and v.body["accused"] == []
    ch = net.ledger.get(res.challenge_index).entry.body
    assert len(ch["parties"]) == 2 and res.verdict.closed_party not in ch["parties"]
    # Auditing again later derives the same challenge: the opened set never grows.
    net.ledger.checkpoint()
    again = audit_on_ledger(net.ledger, "honest-1", net.verifier, lam=40)
    assert again.challenge_index == res.challenge_index and again.verdict.closed_party == res.verdict.closed_party


@pytest.mark.parametrize("kind,cheater", [("matmul-random@30", 1), ("trunc@30", 2), ("weights", 1), ("refuse", 1)])
def test_cheater_named_on_the_ledger_with_evidence_that_verifies_offline(network, tmp_path, kind, cheater):
    """A cheater is named with evidence that verifies offline. A deviation inside one step (a wrong product
    or truncation, of a middle or the last party) is proven by that step alone: the bundle leaves out the
    opening and the dealer's release and carries a one-step proof instead; other deviations carry them."""
    net, model_id, _ = network
    node = f"node-{cheater}"
    for attempt in range(16):
        _, res = _run(net, model_id, tmp_path, f"cheat-{kind}-{attempt}", {cheater: Cheat.parse(kind)})
        if res.verdict.closed_party != cheater:
            break
    assert res.verdict.cheaters == [cheater], res.verdict.as_dict()
    v = net.ledger.get(res.verdict_index).entry.body
    assert v["outcome"] == "fail" and v["accused"] == [node]
    bundle = res.evidence[node]
    chk = check_evidence(bundle, net.ledger.log_key)
    assert chk.ok and chk.accused == [node], chk.reasons
    one_step = kind.startswith(("matmul", "trunc"))
    obj = decode_cbor(bundle)
    assert len(obj.get("proofs", [])) == (1 if one_step else 0)
    opening = next(e for e in net.ledger.by_job(res.verdict.job_id, kind=E.OPENING) if e.entry.author == node)
    assert (net.ledger.get_blob(opening.entry.body["data"]) in obj["blobs"]) is not one_step
    if one_step:  # without the proof, the bundle proves nothing (the replay lacks the opening): fail closed
        del obj["proofs"]
        assert not check_evidence(canonical_cbor(obj), net.ledger.log_key).ok
    tampered = bytearray(bundle)
    tampered[len(tampered) // 3] ^= 0x40
    assert not check_evidence(bytes(tampered), net.ledger.log_key).ok
    assert not check_evidence(b"\xa1garbage").ok


def test_cli_audit_and_evidence(tmp_path):
    from cli.verify import main

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), tmp_path / "model")
    _, clean = _run(net, model_id, tmp_path, "cli-clean")
    for attempt in range(16):
        _, res = _run(net, model_id, tmp_path, f"cli-cheat-{attempt}", {0: Cheat.parse("zeros@20")})
        if res.verdict.closed_party != 0:
            break
    # A read-only auditor (no key) re-derives the recorded challenge and judges the posted openings.
    assert main(["audit", "cli-clean", "--ledger", url, "--wait", "0", "--json"]) == 0
    ev_dir = tmp_path / "ev"
    assert main(["audit", f"cli-cheat-{attempt}", "--ledger", url, "--wait", "0", "--evidence-dir", str(ev_dir)]) == 1
    assert main(["audit", "no-such-job", "--ledger", url, "--wait", "0"]) == 2
    path = tmp_path / "bundle.cbor"
    path.write_bytes(res.evidence["node-0"])
    assert main(["evidence", str(path), "--log-key", net.ledger.log_key.hex()]) == 0
    assert main(["evidence", str(path)]) == 0  # the log was pinned by the audits above (trust on first use)
    os.environ["SHARDPROOF_KNOWN_LOGS"] = str(tmp_path / "empty_known_logs")
    assert main(["evidence", str(path)]) == 2  # no pinned key: "unpinned", could not decide, never "proven"
    path.write_bytes(b"not a bundle")
    assert main(["evidence", str(path), "--log-key", net.ledger.log_key.hex()]) == 1
    assert main(["evidence", str(tmp_path / "missing.cbor")]) == 2


def test_audit_key_from_keygen_can_post(tmp_path):
    from cli.verify import main
    from ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), tmp_path / "model")
    job = net.run(tmp_path / "model", model_id, PROMPT, 2, job_id="keyed", workdir=tmp_path / "w")
    keys = keygen(tmp_path / "auditor.key", node_id="auditor-1", seed=master_from_int(3))
    from prover.keys import registration_entry
    net.ledger.append(registration_entry(keys, roles=("verifier",)))
    # Without openings the auditor posts the challenge, waits briefly and reports the audit pending (exit 2):
    # before the job's deadline nothing else is posted, so nobody is reported about while answers are due.
    assert main(["audit", "keyed", "--ledger", url, "--key", str(tmp_path / "auditor.key"), "--wait", "0.5"]) == 2
    led = Ledger.open(url, create=False)
    ch = led.by_job("keyed", kind=E.CHALLENGE)
    assert len(ch) == 1 and ch[0].entry.author == "auditor-1"
    net.respond(job, "keyed", ch[0].index, ch[0].entry.body["parties"])
    assert main(["audit", "keyed", "--ledger", url, "--key", str(tmp_path / "auditor.key"), "--wait", "0", "--json"]) == 0
    verdicts = led.by_job("keyed", kind=E.VERDICT)
    assert [v.entry.body["outcome"] for v in verdicts] == ["pass"]
    # A rerun reports the existing verdict and posts nothing new.
    assert main(["audit", "keyed", "--ledger", url, "--key", str(tmp_path / "auditor.key"), "--wait", "0"]) == 0
    assert len(led.by_job("keyed", kind=E.VERDICT)) == 1


def _post_opening(net, job_id, party, ci, blob):
    """Node `party` posts `blob` (bytes, or an opening's OpeningBlobs) as its opening."""
    from protocol.opening import OpeningBlobs

    blobs = blob if isinstance(blob, OpeningBlobs) else OpeningBlobs(blob)
    body = {"job_id": job_id, "node": net.nodes[party].node_id, "party": party, "challenge": ci,
            "data": net.ledger.put_blob(blobs.data)}
    if blobs.public is not None:
        body["public"] = net.ledger.put_blob(blobs.public)
    net.ledger.append(E.make_entry(net.nodes[party], E.OPENING, body))


@pytest.mark.parametrize("garbage", [b"\xff\x00garbage", b"\xa1\x61x\x01", None])
def test_garbage_openings_give_a_verdict_not_a_crash(tmp_path, garbage):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), tmp_path / "model")
    job = net.run(tmp_path / "model", model_id, PROMPT, 2, job_id="g", workdir=tmp_path / "w")
    victim = {}

    def respond(ci, parties):
        p = parties[0]
        victim["p"] = p
        net.respond(job, "g", ci, parties, withhold=(p,))  # the others open, the dealer releases ...
        # ... and node p posts garbage bytes, a wrong map, or records cut short
        if garbage is None:
            from sim.local_job import opening
            from protocol.opening import encode_opening
            records, salts, _, _ = opening(job.parties[p])
            t = job.parties[p].transcript
            blob = encode_opening(records[:-1], salts[:-1], t.load, {}, [])
        else:
            blob = garbage
        _post_opening(net, "g", p, ci, blob)

    res = audit_on_ledger(net.ledger, "g", net.verifier, lam=8, respond=respond)
    pv = next(p for p in res.verdict.parties if p.party == victim["p"])
    assert pv.status == "cheated" and res.verdict.cheaters == [victim["p"]]
    assert ("malformed" in pv.reason) or ("committed roots" in pv.reason), pv.reason
    assert all(p.status in ("clean", "not opened") for p in res.verdict.parties if p.party != victim["p"])


def test_missing_dealer_release_is_pending_then_the_dealer_defaults_never_the_nodes(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), tmp_path / "model")
    job = net.run(tmp_path / "model", model_id, PROMPT, 2, job_id="d", workdir=tmp_path / "w")

    def respond(ci, parties):  # nodes open, the dealer stays silent
        from sim.local_job import opening
        from protocol.opening import encode_opening
        from models.publish import load_party_share
        import json as _json
        for p in parties:
            st = job.parties[p]
            records, salts, _, _ = opening(st)
            salts_w = _json.loads((tmp_path / "model" / f"party{p}" / "salts.json").read_text())
            blob = encode_opening(records, salts, st.transcript.load, load_party_share(tmp_path / "model", p),
                                  st.token_shares, {k: bytes.fromhex(v) for k, v in salts_w.items()})
            _post_opening(net, "d", p, ci, blob)

    res = audit_on_ledger(net.ledger, "d", net.verifier, lam=8, respond=respond)
    assert res.verdict.cheaters == [] and len(res.verdict.pending) == 2 and res.verdict_index is None
    for _ in range(3):  # the job's open_deadline: 3 signed checkpoints after the challenge
        net.ledger.checkpoint()
    res = audit_on_ledger(net.ledger, "d", net.verifier, lam=8)
    assert res.verdict.cheaters == [] and res.verdict.defaulted == [] and len(res.verdict.unresponsive) == 2
    assert res.verdict.dealer_status == "defaulted" and res.verdict.accused_nodes == [net.dealer.node_id]
    body = net.ledger.get(res.verdict_index).entry.body
    assert body["outcome"] == "fail" and body["accused"] == [net.dealer.node_id]


def test_two_different_openings_for_one_challenge_is_cheating(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    net = LocalNetwork.create(url, 3, seed=0)
    model_id = net.publish(random_model(CFG, seed=4), tmp_path / "model")
    job = net.run(tmp_path / "model", model_id, PROMPT, 2, job_id="two", workdir=tmp_path / "w")
    victim = {}

    def respond(ci, parties):
        net.respond(job, "two", ci, parties)
        victim["p"] = parties[-1]
        _post_opening(net, "two", parties[-1], ci, b"another story")

    res = audit_on_ledger(net.ledger, "two", net.verifier, lam=8, respond=respond)
    assert res.verdict.cheaters == [victim["p"]]
    assert "two different openings" in next(p.reason for p in res.verdict.parties if p.party == victim["p"])
