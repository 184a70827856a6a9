"""Which job.resume counts (protocol.job_view, specs/ledger.md; issue 13 item 4): only the opener's, for an
index 0..N-2 of an R = 1 job that has no root yet and no job.fail, naming a standby job.open names that
holds that index's share and no index of the job, with `lost` the index's node, under the operator rule.
A counted one makes the standby the index's node; every other one is noise that names why."""
from __future__ import annotations

from dataclasses import dataclass

from ledger import Identity
from ledger import entries as E
from protocol import bodies as B
from protocol.job_view import read_job

OPENER, DEALER, OTHER = Identity("client", b"C" * 32), Identity("dealer", b"D" * 32), Identity("eve", b"E" * 32)
NODES = {n: Identity(n, n.encode()[-1:] * 32) for n in ("node-a", "node-b", "node-c", "node-d", "node-e", "node-f",
                                                         "node-g")}
# the publication delivers index i to node-a/b/c, again to node-d/e/f, and index 0 to node-g
DELIVERIES = [{"party": i % 3, "node": n, "bytes": 1, "chunks": []} for i, n in enumerate(NODES)]


@dataclass(frozen=True)
class Leaf:
    index: int
    entry: E.Entry


def _entries(standby=("node-d", "node-e", "node-f"), replicas: int = 1) -> list[Leaf]:
    pub = E.make_entry(OPENER, E.MODEL, B.ModelPublish("m", b"\0" * 32, 3, b"\1" * 32,
                                                       {"deliveries": DELIVERIES}).to_body(), time=0)
    jo = E.make_entry(OPENER, E.JOB_OPEN, B.JobOpen("j1", "m", 3, DEALER.node_id, OPENER.node_id, replicas,
                                                    params={"standby": list(standby)}).to_body(), time=1)
    rows = [B.Assignment(n, i % 3, i // 3) for i, n in enumerate(list(NODES)[:3 * replicas])]  # node-g: spare
    ja = E.make_entry(OPENER, E.JOB_ASSIGN, B.JobAssign("j1", tuple(rows)).to_body(), time=2)
    return [Leaf(0, pub), Leaf(1, jo), Leaf(2, ja)]


def _resume(party: int, standby: str, lost: str, author: Identity = OPENER) -> E.Entry:
    return E.make_entry(author, E.JOB_RESUME, B.JobResume("j1", party, standby, lost).to_body(), time=3)


def _view(*extra: E.Entry, base: list[Leaf] | None = None, regs=None):
    entries = base if base is not None else _entries()
    entries = entries + [Leaf(10 + i, e) for i, e in enumerate(extra)]
    models = [le for le in entries if le.entry.kind == E.MODEL]
    return read_job("j1", [le for le in entries if le.entry.kind != E.MODEL], models, regs)


def _root(node: str, party: int) -> E.Entry:
    return E.make_entry(NODES[node], E.JOB_ROOT, B.JobRoot("j1", node, party, 0, b"\2" * 32, 5, b"\3" * 96,
                                                           b"\4" * 32, b"\5" * 32, b"\6" * 32).to_body(), time=3)


def test_a_counted_resumption_makes_the_standby_the_index_node():
    assert _view(_resume(2, "node-f", "node-c")).resumes[2].body.standby == "node-f"  # the last index too
    view = _view(_resume(0, "node-d", "node-a"))
    assert view.noise == [] and view.resumes[0].body.standby == "node-d"
    assert view.replica_nodes[(0, 0)] == "node-d" and view.nodes_of(0) == ["node-d"]
    assert view.replaced == {(0, 0): "node-a"}
    # the standby's root counts, the lost node's (posted after) does not
    view = _view(_resume(0, "node-d", "node-a"), _root("node-d", 0), _root("node-a", 0))
    assert view.roots[0].author == "node-d" and len(view.noise) == 1 and "not assigned" in view.noise[0].reason


def _noise(*extra: E.Entry, **kw) -> str:
    view = _view(*extra, **kw)
    assert view.resumes == {}, view.resumes
    (why,) = [x.reason for x in view.noise if x.kind == E.JOB_RESUME]
    return why


def test_every_refused_resumption_is_noise_that_says_why():
    assert "not by the job's opener" in _noise(_resume(0, "node-d", "node-a", OTHER))
    assert "holds no share of index 1" in _noise(_resume(1, "node-d", "node-b"))  # node-d holds index 0
    assert "outside 0..2" in _noise(_resume(3, "node-f", "node-c"))
    assert "does not name as a standby" in _noise(_resume(0, "node-d", "node-a"), base=_entries(standby=()))
    assert "'node-b' was lost, but share index 0's replica 0 is 'node-a'" in _noise(_resume(0, "node-d", "node-b"))
    assert "already holds a share index" in _noise(_resume(0, "node-b", "node-a"),
                                                    base=_entries(standby=("node-b",)))
    assert "already finished" in _noise(_root("node-a", 0), _resume(0, "node-d", "node-a"))
    fail = E.make_entry(OPENER, E.JOB_FAIL, B.JobFail("j1", "gone").to_body(), time=3)
    assert "after the job was closed" in _noise(fail, _resume(0, "node-d", "node-a"))
    assert "already holds a share index" in _noise(_resume(0, "node-d", "node-a"), base=_entries(replicas=2))


def test_with_replicas_the_standby_takes_replica_0s_place():
    view = _view(_resume(0, "node-g", "node-a"), base=_entries(standby=("node-g",), replicas=2))
    assert view.noise == [] and view.replica_nodes[(0, 0)] == "node-g" and view.nodes_of(0) == ["node-g", "node-d"]
    assert view.replaced == {(0, 0): "node-a"}


def test_a_second_resumption_of_an_index_does_not_count():
    view = _view(_resume(0, "node-d", "node-a"), _resume(0, "node-d", "node-a"))
    assert view.resumes[0].index == 10 and [x.reason for x in view.noise] == ["a later job.resume of share index 0"]


def test_the_operator_rule_holds_for_the_standby():
    regs = {n: Leaf(-1, E.registration(NODES[n], endpoint="h:1", operator=op, time=0))
            for n, op in {"node-a": None, "node-b": "acme", "node-c": None, "node-d": "acme"}.items()}
    view = _view(_resume(0, "node-d", "node-a"), regs=regs.get)
    assert view.resumes == {} and "operator 'acme'" in view.noise[0].reason
