"""shardproof ledger: an append-only, tamper-evident RFC 9162 Merkle log with signed checkpoints,
proofs, a blob store, subscriptions and offline evidence bundles. Formats: specs/ledger.md.

    from ledger import Ledger, Identity, entries as E
    led = Ledger.open("sqlite:///ledger.db", origin="example/ledger", log_identity=log_id)
    led.append(E.registration(node_id, roles=("node",), endpoint="host:port"))
"""
from ledger import entries
from ledger.checkpoints import Checkpoint, SignedCheckpoint, Witness
from ledger.errors import LedgerError
from ledger.evidence import verify_bundle
from ledger.keys import Identity
from ledger.log import Ledger, LoggedEntry, Registration, open_ledger
from ledger.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "Checkpoint",
    "Identity",
    "Ledger",
    "LedgerError",
    "LoggedEntry",
    "Registration",
    "SignedCheckpoint",
    "Witness",
    "consistency_proof",
    "entries",
    "inclusion_proof",
    "leaf_hash",
    "open_ledger",
    "root_hash",
    "verify_bundle",
    "verify_consistency",
    "verify_inclusion",
]
