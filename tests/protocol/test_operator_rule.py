"""The operator rule (issue #13 item 5, specs/threat-model.md "Replicas and operators"): a job.assign that
gives one operator two share indices of a job does not count; nodes declare their operator at registration,
and a node that declares none is its own operator."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from ledger import Identity, Ledger
from ledger import entries as E
from ledger.errors import SchemaError
from protocol import bodies as B
from protocol.job_view import first_registration, operator_problem, read_job, read_job_from_ledger

OPENER, DEALER = Identity("client", b"C" * 32), Identity("dealer", b"D" * 32)
NODES = {n: Identity(n, n.encode()[-1:] * 32) for n in ("node-a", "node-b", "node-c", "node-d", "node-e", "node-f",
                                                         "node-g")}


@dataclass(frozen=True)
class Leaf:
    index: int
    entry: E.Entry


def _open(n: int = 3, replicas: int = 1) -> E.Entry:
    return E.make_entry(OPENER, E.JOB_OPEN, B.JobOpen("j1", "m", n, DEALER.node_id, OPENER.node_id,
                                                      replicas).to_body(), time=1)


def _assign(*rows: tuple[str, int] | tuple[str, int, int]) -> E.Entry:
    return E.make_entry(OPENER, E.JOB_ASSIGN, B.JobAssign("j1", tuple(B.Assignment(*r) for r in rows)).to_body(),
                        time=2)


def _regs(operators: dict[str, str | None], first_index: int = 0) -> dict[str, Leaf]:
    """Registrations of the nodes at indexes first_index, first_index + 1, ... (None: no operator declared)."""
    return {n: Leaf(first_index + i, E.registration(NODES[n], endpoint="h:1", operator=op, time=0))
            for i, (n, op) in enumerate(operators.items())}


def _view(regs: dict[str, Leaf] | None, *rows, at: int = 10):
    replicas = 1 + max((r[2] for r in rows if len(r) > 2), default=0)
    entries = [Leaf(at, _open(replicas=replicas)), Leaf(at + 1, _assign(*rows))]
    return read_job("j1", entries, registration=None if regs is None else regs.get)


THREE = (("node-a", 0), ("node-b", 1), ("node-c", 2))


def test_two_share_indices_to_one_operator_is_noise_naming_the_operator():
    regs = _regs({"node-a": "acme", "node-b": "acme", "node-c": None})
    view = _view(regs, *THREE)
    assert view.assign is None and view.nodes == {}
    (noise,) = view.noise
    assert noise.kind == E.JOB_ASSIGN and noise.author == OPENER.node_id and noise.index == 11
    assert "operator 'acme'" in noise.reason and "0 (node 'node-a')" in noise.reason
    assert "1 (node 'node-b')" in noise.reason


def test_distinct_operators_count():
    regs = _regs({"node-a": "acme", "node-b": "globex", "node-c": "initech"})
    view = _view(regs, *THREE)
    assert view.noise == [] and view.nodes == {0: "node-a", 1: "node-b", 2: "node-c"}


def test_a_node_that_declares_no_operator_is_its_own():
    regs = _regs({"node-a": None, "node-b": None, "node-c": None})
    assert all(E.registered_operator(le.entry) == n and "operator" not in le.entry.body for n, le in regs.items())
    assert _view(regs, *THREE).assign is not None
    # a node declaring another node's id as its operator shares that node's operator
    regs = _regs({"node-a": None, "node-b": "node-a", "node-c": None})
    view = _view(regs, *THREE)
    assert view.assign is None and "operator 'node-a'" in view.noise[0].reason
    # without registrations (an evidence bundle that carries none), every node is its own operator
    assert _view(None, *THREE).assign is not None


def test_replicas_one_operator_may_hold_replicas_of_one_index_but_never_two_indices():
    regs = _regs({"node-a": "acme", "node-b": "globex", "node-c": "initech", "node-d": "acme", "node-e": "globex",
                  "node-f": "initech"})
    same_index = _view(regs, *THREE, ("node-d", 0, 1), ("node-e", 1, 1), ("node-f", 2, 1))
    assert same_index.assign is not None and same_index.noise == []
    assert same_index.nodes_of(0) == ["node-a", "node-d"] and same_index.replicas == 2
    # acme: index 0 (node-a) and a replica of index 2
    other_index = _view(regs, *THREE, ("node-g", 0, 1), ("node-e", 1, 1), ("node-d", 2, 1))
    assert other_index.assign is None
    assert "operator 'acme'" in other_index.noise[0].reason and "2 (node 'node-d')" in other_index.noise[0].reason


def test_only_a_registration_before_the_assignment_counts():
    """A registration posted after the job.assign cannot change a job already assigned (the view of a log
    prefix never changes): the node is its own operator for that job."""
    late = _regs({"node-a": "acme", "node-b": "acme", "node-c": None}, first_index=20)
    assert _view(late, *THREE, at=10).assign is not None
    early = _regs({"node-a": "acme", "node-b": "acme", "node-c": None}, first_index=0)
    assert _view(early, *THREE, at=10).assign is None
    # a lookup that answers with something other than the node's own registration is ignored
    forged = {"node-b": Leaf(1, E.registration(NODES["node-a"], operator="acme", time=0)),
              "node-a": Leaf(0, E.registration(NODES["node-a"], operator="acme", time=0))}
    assert _view(forged, *THREE).assign is not None


def test_operator_problem_and_registered_operator():
    ops = {"a": "x", "b": "y", "c": "x"}.__getitem__
    assert operator_problem([B.Assignment("a", 0), B.Assignment("b", 1)], ops) == ""
    why = operator_problem([B.Assignment("a", 0), B.Assignment("b", 1), B.Assignment("c", 2)], ops)
    assert why.startswith("operator 'x' is given two share indices: 0 (node 'a') and 2 (node 'c')")
    assert operator_problem([B.Assignment("a", 0), B.Assignment("c", 0, 1)], ops) == ""
    with pytest.raises(SchemaError):
        E.registered_operator(_open())
    with pytest.raises(SchemaError):
        E.registration(NODES["node-a"], operator="")  # an operator id is 1..128 characters


def test_read_job_from_ledger_reads_the_operators_from_the_registrations(tmp_path):
    with Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", origin="test.shardproof/operators",
                     log_identity=Identity("log", b"L" * 32)) as led:
        led.append_many([E.registration(OPENER, ("client",), time=0), E.registration(DEALER, ("dealer",), time=0)]
                        + [E.registration(NODES[n], endpoint="h:1", operator=op, time=0)
                           for n, op in (("node-a", "acme"), ("node-b", "acme"), ("node-c", None), ("node-d", None))])
        assert first_registration(led, "node-a").entry.body["operator"] == "acme"
        assert first_registration(led, "nobody") is None
        led.append_many([_open(), _assign(*THREE)])
        view = read_job_from_ledger(led, "j1")
        assert view.assign is None and "operator 'acme'" in view.noise[0].reason
        led.append_many([
            E.make_entry(OPENER, E.JOB_OPEN, B.JobOpen("j2", "m", 3, DEALER.node_id).to_body(), time=1),
            E.make_entry(OPENER, E.JOB_ASSIGN, B.JobAssign("j2", (B.Assignment("node-a", 0), B.Assignment("node-d", 1),
                                                                  B.Assignment("node-c", 2))).to_body(), time=2)])
        assert read_job_from_ledger(led, "j2").nodes == {0: "node-a", 1: "node-d", 2: "node-c"}


def test_an_evidence_bundle_applies_the_operator_rule_from_its_registrations(tmp_path):
    """Offline, the bundle's verified registrations give the operators: an assignment the ledger treats
    as noise cannot count in a bundle either (the same read_job, the same rule)."""
    from ledger.evidence import export_bundle, verify_bundle
    from verifier.ledger_audit import check_evidence

    with Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", origin="test.shardproof/operators",
                     log_identity=Identity("log", b"L" * 32)) as led:
        led.append_many([E.registration(OPENER, ("client",), time=0), E.registration(DEALER, ("dealer",), time=0)]
                        + [E.registration(NODES[n], endpoint="h:1", operator=op, time=0)
                           for n, op in (("node-a", "acme"), ("node-b", "acme"), ("node-c", None))])
        reg_b = first_registration(led, "node-b").index
        # a bundle carries the registrations of its entries' authors (an audit's bundle: every node's job root)
        idx = led.append_many([_open(), _assign(*THREE)] + [
            E.make_entry(NODES[n], E.HEARTBEAT, B.Heartbeat(n, ()).to_body(), time=3) for n in ("node-a", "node-b")])
        led.checkpoint()
        bundle = export_bundle(led, idx)
        rep = verify_bundle(bundle, led.log_key)
        assert rep.ok, rep.reasons
        assert rep.registrations["node-b"][0] == reg_b
        assert E.registered_operator(rep.registrations["node-b"][1]) == "acme"
        res = check_evidence(bundle, led.log_key)
        assert not res.ok and res.accused == []
        assert "the bundle holds no counted job.assign (job.assign: operator 'acme'" in " ".join(res.reasons)


def test_a_replicated_job_needs_every_replica_of_every_index_once():
    six = (*THREE, ("node-d", 0, 1), ("node-e", 1, 1), ("node-f", 2, 1))
    assert _view(None, *six).assign is not None
    for rows, why in [(six[:5], "exactly one node per share index 0..2 and replica 0..1"),
                      ((*six[:5], ("node-f", 1, 1)), "exactly one node per share index 0..2 and replica 0..1"),
                      ((*six[:5], ("node-a", 2, 1)), "gives one node two share indices or replicas")]:
        view = read_job("j1", [Leaf(10, _open(replicas=2)), Leaf(11, _assign(*rows))])
        assert view.assign is None and why in view.noise[0].reason, (rows, view.noise)


def test_more_replicas_than_a_job_may_have_do_not_count():
    from mpc_core.replicas import MAX_REPLICAS

    R = MAX_REPLICAS + 1
    rows = [(f"n{p}-{r}", p, r) for r in range(R) for p in range(3)]
    view = read_job("j1", [Leaf(10, _open(replicas=R)), Leaf(11, _assign(*rows))])
    assert view.assign is None and f"1..{MAX_REPLICAS}" in view.noise[0].reason
