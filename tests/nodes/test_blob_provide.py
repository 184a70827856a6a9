"""Data availability from the author's side: whoever serves blobs (a node its openings, the dealer its releases)
answers each `blob.request` for a blob it has with one `blob.provide`, also across restarts
(prover.blob_server.answer_blob_requests, keep_blob; specs/audit.md section 3)."""
import logging

from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from protocol import bodies as B
from prover.blob_server import answer_blob_requests, keep_blob
from prover.keys import NodeKeys, registration_entry


def _keys(name: str) -> NodeKeys:
    return NodeKeys.generate(name, prg.master_from_int(13, f"test-provide:{name}"))


def _request(led: Ledger, who: NodeKeys, job: str, digest: bytes) -> None:
    led.append(E.make_entry(who.identity, E.BLOB_REQUEST, B.BlobRequest(job, digest).to_body()))


def test_each_request_for_a_served_blob_is_answered_once_by_its_author(tmp_path, caplog):
    led = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}", origin="test.shardproof/provide",
                      log_identity=Identity("log", prg.master_from_int(13, "log")))
    node, auditor = _keys("node-0"), _keys("auditor")
    led.append_many([registration_entry(node, ("node",)), registration_entry(auditor, ("verifier",))])
    served = tmp_path / "served"
    data = b"an opening blob " * 64
    digest = keep_blob(served, data)
    assert (served / digest.hex()).read_bytes() == data and not list(served.glob("*.tmp"))

    def blob_for(job_id: str, d: bytes) -> bytes | None:
        f = served / d.hex()
        return f.read_bytes() if job_id == "job-1" and f.exists() else None

    _request(led, auditor, "job-1", digest)
    _request(led, auditor, "job-1", bytes(32))  # a digest this author does not serve: no answer
    requests = led.subscribe(start=0, kind=E.BLOB_REQUEST)
    answer_blob_requests(led, requests, node.node_id, node.identity, blob_for)
    provides = led.by_job("job-1", kind=E.BLOB_PROVIDE)
    assert [(p.entry.author, p.entry.body["data"]) for p in provides] == [(node.node_id, digest)]
    assert led.get_blob(digest) == data

    _request(led, auditor, "job-1", digest)  # asked again, then a restart re-reads every request
    answer_blob_requests(led, requests, node.node_id, node.identity, blob_for)
    answer_blob_requests(led, led.subscribe(start=0, kind=E.BLOB_REQUEST), node.node_id, node.identity, blob_for)
    assert len(led.by_job("job-1", kind=E.BLOB_PROVIDE)) == 1

    def broken(job_id: str, d: bytes) -> bytes | None:
        raise OSError("disk gone")

    _request(led, auditor, "job-2", digest)
    with caplog.at_level(logging.WARNING, logger="shardproof.blob_server"):
        answer_blob_requests(led, requests, node.node_id, node.identity, broken)  # logged, never raised
    assert "disk gone" in caplog.text
    assert led.by_job("job-2", kind=E.BLOB_PROVIDE) == []
    led.close()
