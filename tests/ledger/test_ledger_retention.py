"""Blob retention (ledger.retention, Ledger.prune, `shardproof ledger prune`) on SQLite and PostgreSQL: only the
opening and release blobs of closed, expired jobs go; model and refresh blobs and anything they share stay; roots
do not change; `ledger check` reports pruned blobs as pruned and still reports a deleted blob that was not."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from ledger import entries as E
from ledger import storage
from ledger.errors import BlobNotFound
from ledger.log import Ledger
from ledger.retention import DAY_MS, plan_prune

from .conftest import ORIGIN, LOG, ident

T0 = 1_700_000_000_000
NOW = T0 + 40 * DAY_MS  # 40 days after the old jobs
ALICE, BOB, CAROL = ident("alice"), ident("bob"), ident("carol")  # node; node + verifier; client


def _entry(who, kind, body, t):
    return E.make_entry(who, kind, body, time=t)


def _job(led: Ledger, job: str, t: int, close: str | None, opener=CAROL, shared: bytes | None = None,
         closer=None) -> dict:
    """A job opened by `opener` at `t` with two openings (each its own blob, one public blob), a release
    and a refresh blob; closed by a verdict (`close="verdict"`, by `closer` or bob) or a job.fail
    (`close="fail"`, by `closer` or the opener), or not at all."""
    own = [led.put_blob(f"{job} opening {p}".encode() * 50) for p in (0, 1)]
    public = shared or led.put_blob(f"{job} public".encode() * 50)
    release = led.put_blob(f"{job} release".encode())
    refresh = led.put_blob(f"{job} refresh".encode())
    es = [_entry(opener, E.JOB_OPEN, {"job_id": job, "model_id": "m", "n_parties": 3, "replicas": 1, "stages": 1,
                                      "dealer": "bob"}, t),
          _entry(CAROL, E.REFRESH, {"job_id": job, "model_id": "m", "commitments": refresh}, t + 1)]
    es += [_entry(ALICE, E.OPENING, {"job_id": job, "node": "alice", "party": p, "challenge": 1, "data": own[p],
                                     "public": public}, t + 2 + p) for p in (0, 1)]
    es.append(_entry(BOB, E.RELEASE, {"job_id": job, "challenge": 1, "data": release}, t + 4))
    if close == "verdict":
        es.append(_entry(closer or BOB, E.VERDICT, {"job_id": job, "outcome": "pass", "accused": [], "reason": ""},
                         t + 5))
    elif close == "fail":
        es.append(_entry(closer or opener, E.JOB_FAIL, {"job_id": job, "reason": "down"}, t + 5))
    led.append_many(es)
    return {"openings": [*own, public, release], "kept": [refresh]}


@pytest.fixture
def jobs(ledger):
    """Jobs of every kind on one ledger (see the names), a model whose manifest is also an opening blob of
    job `shares-manifest`, and a public blob shared by a closed job and an open one."""
    ledger.append(E.registration(CAROL, roles=("client",)))
    manifest = ledger.put_blob(b"manifest" * 40)
    ledger.append(_entry(CAROL, E.MODEL, {"model_id": "m", "manifest": manifest, "n_shares": 3,
                                          "commitments": b"\x01" * 32}, T0))
    shared = ledger.put_blob(b"public shared by two jobs" * 20)
    out = {
        "closed-old": _job(ledger, "closed-old", T0, "verdict"),
        "failed-old": _job(ledger, "failed-old", T0, "fail"),
        "closed-young": _job(ledger, "closed-young", NOW - 2 * DAY_MS, "verdict"),
        "open-old": _job(ledger, "open-old", T0, None),
        "fail-by-outsider": _job(ledger, "fail-by-outsider", T0, "fail", closer=ALICE),
        "verdict-by-non-auditor": _job(ledger, "verdict-by-non-auditor", T0, "verdict", closer=ALICE),
        "shares-open": _job(ledger, "shares-open", T0, "verdict", shared=shared),
        "shares-with-open": _job(ledger, "shares-with-open", T0, None, shared=shared),
    }
    # an opening (of a closed, old job) whose blob is the model's manifest: the manifest stays
    ledger.append_many([
        _entry(CAROL, E.JOB_OPEN, {"job_id": "shares-manifest", "model_id": "m", "n_parties": 3, "replicas": 1,
                                   "stages": 1, "dealer": "bob"}, T0),
        _entry(ALICE, E.OPENING, {"job_id": "shares-manifest", "node": "alice", "party": 0, "challenge": 1,
                                  "data": manifest}, T0 + 1),
        _entry(BOB, E.VERDICT, {"job_id": "shares-manifest", "outcome": "pass", "accused": [], "reason": ""}, T0 + 2)])
    out["manifest"] = manifest
    out["shared"] = shared
    ledger.checkpoint()
    return ledger, out


def test_rule_prunes_only_the_openings_of_closed_expired_jobs(jobs):
    led, j = jobs
    plan = {r.job_id: r for r in plan_prune((le.entry for le in led.read()), NOW, keep_days=30)}
    assert set(plan["closed-old"].digests) == set(j["closed-old"]["openings"])
    assert set(plan["failed-old"].digests) == set(j["failed-old"]["openings"])
    for job in ("closed-young", "open-old", "fail-by-outsider", "verdict-by-non-auditor", "shares-with-open"):
        assert plan[job].digests == [], (job, plan[job].reason)
    assert not plan["closed-young"].expired and plan["closed-young"].closed
    assert plan["open-old"].expired and not plan["open-old"].closed
    # a blob shared with an open job stays (its own blobs and release go); the model manifest never goes
    own = j["shares-open"]["openings"]
    assert set(plan["shares-open"].digests) == {own[0], own[1], own[3]}
    assert plan["shares-manifest"].digests == []
    # the young job goes once it is older than keep_days
    later = {r.job_id: r for r in plan_prune((le.entry for le in led.read()), NOW + 29 * DAY_MS, keep_days=30)}
    assert set(later["closed-young"].digests) == set(j["closed-young"]["openings"])
    with pytest.raises(ValueError):
        plan_prune([], NOW, keep_days=-1)


def test_prune_deletes_only_those_blobs_keeps_every_root_and_the_log_checks_clean(jobs):
    led, j = jobs
    size, root = led.tree_head()
    dry = led.prune(30, now_ms=NOW, dry_run=True)
    want = set(j["closed-old"]["openings"]) | set(j["failed-old"]["openings"]) | {j["shares-open"]["openings"][i] for i in (0, 1, 3)}
    assert {d for d, _, _ in dry.pruned} == want
    assert all(led.get_blob(d) for d in want)  # a dry run deletes nothing
    rep = led.prune(30, now_ms=NOW)
    assert {d for d, _, _ in rep.pruned} == want and rep.freed_bytes > 0
    for d in want:
        with pytest.raises(BlobNotFound):
            led.get_blob(d)
    stay = [j["manifest"], j["shared"]] + [d for name, v in j.items() if isinstance(v, dict) for d in v["kept"]]
    stay += [d for name in ("closed-young", "open-old", "fail-by-outsider", "verdict-by-non-auditor",
                            "shares-with-open") for d in j[name]["openings"]]
    assert all(led.get_blob(d) for d in stay)
    assert led.tree_head() == (size, root)  # leaves cover digests, not bytes
    chk = led.check()
    assert chk.ok and chk.pruned_blobs == len(want), chk.findings
    with led.store.snapshot() as r:
        recorded = {d: at for d, _, at in r.pruned_blobs()}
    assert set(recorded) == want and set(recorded.values()) == {NOW}
    assert led.prune(30, now_ms=NOW).pruned == []  # nothing left: idempotent
    # a pruned blob put again (a late re-post) is simply there; pruning it again keeps its first record
    again = led.put_blob(f"closed-old opening 0".encode() * 50)
    assert again in want and led.check().ok
    assert [d for d, _, _ in led.prune(30, now_ms=NOW + 1).pruned] == [again]
    with led.store.snapshot() as r:
        assert {d: at for d, _, at in r.pruned_blobs()} == recorded


def test_check_still_fails_for_a_blob_deleted_without_retention(jobs):
    led, j = jobs
    led.prune(30, now_ms=NOW)
    victim = j["open-old"]["openings"][0]  # an open job's opening: never pruned
    with pytest.raises(Exception, match="append-only"):  # the trigger refuses a deletion that is not recorded
        with led.engine.begin() as c:
            c.execute(storage.blobs.delete().where(storage.blobs.c.digest == victim))
    _drop_triggers(led)
    with led.engine.begin() as c:
        c.execute(storage.blobs.delete().where(storage.blobs.c.digest == victim))
    chk = led.check()
    assert not chk.ok and "missing" in chk.reason and victim.hex() in chk.reason
    assert chk.pruned_blobs > 0  # the pruned ones are still reported as such, not as damage


def test_check_fails_for_a_blob_recorded_as_pruned_that_retention_never_releases(jobs):
    led, j = jobs
    _drop_triggers(led)
    with led.engine.begin() as c:  # an attacker hides the deletion of the model manifest behind a pruned record
        c.execute(storage.pruned_blobs.insert().values(digest=j["manifest"], size=320, pruned_at=NOW))
        c.execute(storage.blobs.delete().where(storage.blobs.c.digest == j["manifest"]))
    chk = led.check()
    assert not chk.ok and "never releases" in chk.reason


def _drop_triggers(led: Ledger) -> None:
    with led.engine.begin() as c:
        for t in storage.APPEND_ONLY_TABLES:
            for s in storage.drop_trigger_sql(led.backend, t):
                c.execute(text(s))


def test_pruned_blobs_table_is_append_only(jobs):
    led, _ = jobs
    led.prune(30, now_ms=NOW)
    for sql in ("UPDATE pruned_blobs SET size = 0", "DELETE FROM pruned_blobs"):
        with pytest.raises(Exception, match="append-only"):
            with led.engine.begin() as c:
                c.execute(text(sql))


def test_a_ledger_of_schema_v1_migrates_and_can_then_prune(ledger_url):
    """A ledger created before retention (migration 1 only) gains pruned_blobs and the guarded trigger."""
    engine = storage.make_engine(ledger_url)
    with storage.write_tx(engine) as conn:
        storage.schema_migrations.create(conn, checkfirst=True)
        version, name, fn = storage.MIGRATIONS[0]
        fn(conn)
        conn.execute(storage.schema_migrations.insert().values(version=version, name=name))
    engine.dispose()
    led = Ledger.open(ledger_url, origin=ORIGIN, log_identity=LOG)
    try:
        with led.engine.connect() as c:
            assert storage.schema_version(c) == storage.SCHEMA_VERSION >= 2
        led.append_many([E.registration(ALICE), E.registration(BOB, roles=("node", "verifier")),
                         E.registration(CAROL, roles=("client",))])
        d = _job(led, "j", T0, "verdict")["openings"]
        assert {x for x, _, _ in led.prune(1, now_ms=NOW).pruned} == set(d) and led.check().ok
    finally:
        led.close()


def test_cli_prune(tmp_path, capsys):
    """`shardproof ledger prune`: a dry run, the real run (JSON), and bad input (exit 2, one line)."""
    from cli.shardproof import main
    from prover.keys import NodeKeys

    url, key = f"sqlite:///{tmp_path / 'l.db'}", tmp_path / "log.key"
    assert main(["ledger", "init", "--ledger", url, "--key", str(key)]) == 0
    with Ledger.open(url, create=False) as led:
        led.append_many([E.registration(ALICE), E.registration(BOB, roles=("node", "verifier")),
                         E.registration(CAROL, roles=("client",))])
        old = _job(led, "old", T0, "verdict")["openings"]  # entry times of 2023: older than 30 days
        young = _job(led, "young", E.now_ms(), "verdict")["openings"]
    capsys.readouterr()

    def prune(*extra: str) -> tuple[int, dict]:
        rc = main(["ledger", "prune", "--ledger", url, "--key", str(key), "--json", *extra])
        return rc, json.loads(capsys.readouterr().out)

    rc, dry = prune("--dry-run")
    assert rc == 0 and dry["dry_run"] and dry["pruned_blobs"] == 4  # two own openings, public values, release
    rc, out = prune()
    jobs = {x["job_id"]: x for x in out["jobs"]}
    assert rc == 0 and set(jobs["old"]["pruned"]) == {d.hex() for d in old} and jobs["young"]["pruned"] == []
    assert out["freed_bytes"] > 0 and out["in_use_after"] <= out["in_use_before"]
    rc, out = prune("--keep-days", "0")
    assert rc == 0 and set({x["job_id"]: x for x in out["jobs"]}["young"]["pruned"]) == {d.hex() for d in young}
    assert main(["ledger", "prune", "--ledger", url, "--key", str(key)]) == 0  # the table form
    out = capsys.readouterr().out
    assert "freed 0.000 MB" in out and "1 job(s) whose audit window closed have nothing left to prune" in out
    with Ledger.open(url, create=False) as led:
        chk = led.check()
        assert chk.ok and chk.pruned_blobs == 8
    other = tmp_path / "other.key"
    NodeKeys.generate("log").save(other)
    for argv, needle in ((["--key", str(other)], "not this ledger's log key"),
                         (["--key", str(key), "--keep-days", "-1"], "--keep-days"),
                         (["--key", str(key), "--keep-days", "nan"], "--keep-days")):
        rc = main(["ledger", "prune", "--ledger", url, *argv])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_log_operator_prunes_at_start_and_then_once_per_period(jobs):
    """`ledger serve --prune-after-days D`: the operator's loop prunes as `ledger prune --keep-days D` does."""
    import threading
    import time

    from ledger.operator import LogOperator

    led, j = jobs
    op = LogOperator(led, interval=0.05, max_idle=10.0, prune_after_days=30.0, prune_every=3600.0)
    calls = []
    real = led.prune
    led.prune = lambda *a, **k: calls.append(a) or real(*a, **k)  # type: ignore[method-assign]
    stop = threading.Event()
    t = threading.Thread(target=op.serve, args=(stop,))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not calls and time.monotonic() < deadline:
            stop.wait(0.05)
        stop.wait(0.3)  # a few more rounds: no second prune within the period
    finally:
        stop.set()
        t.join(10)
    assert calls == [(30.0,)]
    with pytest.raises(BlobNotFound):  # the old, closed job's openings (entry times of 2023)
        led.get_blob(j["closed-old"]["openings"][0])
    assert led.get_blob(j["open-old"]["openings"][0])  # an open job's stay
