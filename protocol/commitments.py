"""A node's commitments to its transcript (specs/audit.md).

For each step k of party i:
  views leaf  = canonical_cbor([STEP_COMMIT_LEAF, salt_k, record_k.body()])   salted: records hold
                digests of the party's shares, and a share of a low-entropy value must not be
                guessable from its hash
  opened leaf = canonical_cbor([OPENED_LEAF, k, [[name, digest] for the public openings]])
                unsalted: the openings are public, and honest parties' opened roots are equal
salt_k = stream(node_secret, job, "step:<k>", party, STEP_SALT) (32 bytes), so a node needs to keep
only one secret to re-open any step. The node secret is `replica_secret`: every replica of a share
index derives the same one, so honest replicas (bit-identical transcripts) post equal roots. The two RFC 9162 Merkle roots (ledger.merkle) go on the
ledger in the node's job-root entry.
"""
from __future__ import annotations

from dataclasses import dataclass

import blake3

from ledger import merkle
from mpc_core import prg
from mpc_core.domains import COMMIT_SECRET, JOB_ROOT, OPENED_LEAF, STEP_COMMIT_LEAF, STEP_SALT
from mpc_core.encoding import canonical_cbor
from mpc_core.transcript import StepRecord


def replica_secret(party_seed: bytes, share_salts: bytes, job_id: str, party: int) -> bytes:
    """The node secret of share index `party` in a job: BLAKE3 keyed by the index's dealer seed over
    [COMMIT_SECRET, job, party, BLAKE3(share_salts)], where `share_salts` are the bytes of the index's
    weight-share salt file. Only a holder of both the seed (sealed to the index's replicas by the
    dealer) and the share (the owner's sealed delivery) can derive it; the dealer alone, or the
    owner alone, cannot."""
    return blake3.blake3(canonical_cbor([COMMIT_SECRET, job_id, int(party), blake3.blake3(share_salts).digest()]),
                         key=bytes(party_seed)).digest()


def step_salt(node_secret: bytes, job: bytes, party: int, index: int) -> bytes:
    return prg.stream_bytes(node_secret, job, f"step:{index}", party, STEP_SALT.decode(), 32)


def views_leaf(record: StepRecord, salt: bytes) -> bytes:
    return canonical_cbor([STEP_COMMIT_LEAF, salt, record.body()])


def opened_leaf(record: StepRecord) -> bytes:
    names = sorted(n for n in record.digests if n.startswith("opened."))
    return canonical_cbor([OPENED_LEAF, record.index, [[n, record.digests[n]] for n in names]])


@dataclass(frozen=True)
class JobCommitment:
    """What a node publishes for a job: two Merkle roots and the number of steps."""

    party: int
    steps: int
    views_root: bytes
    opened_root: bytes

    def body(self) -> dict:
        return {"party": self.party, "steps": self.steps, "views_root": self.views_root, "opened_root": self.opened_root}

    @property
    def root(self) -> bytes:
        return job_root(self.views_root, self.opened_root)


def job_root(views_root: bytes, opened_root: bytes) -> bytes:
    """The single root a node signs for a job: BLAKE3(JOB_ROOT || views_root || opened_root)."""
    return blake3.blake3(JOB_ROOT + bytes(views_root) + bytes(opened_root)).digest()


def commit(records: list[StepRecord], node_secret: bytes, job: bytes, party: int) -> tuple[JobCommitment, list[bytes]]:
    """The job commitment and the salts (kept by the node, revealed in an opening)."""
    salts = [step_salt(node_secret, job, party, r.index) for r in records]
    views = [views_leaf(r, s) for r, s in zip(records, salts)]
    opened = [opened_leaf(r) for r in records]
    return JobCommitment(party, len(records), merkle.root_hash(views), merkle.root_hash(opened)), salts


def verify_records(records: list[StepRecord], salts: list[bytes], commitment: JobCommitment) -> bool:
    """Do opened records (with their salts) reproduce the committed roots? Never raises."""
    try:
        if len(records) != commitment.steps or len(salts) != len(records):
            return False
        if any(r.index != k for k, r in enumerate(records)):
            return False
        views = [views_leaf(r, s) for r, s in zip(records, salts)]
        opened = [opened_leaf(r) for r in records]
        return merkle.root_hash(views) == commitment.views_root and merkle.root_hash(opened) == commitment.opened_root
    except Exception:
        return False
