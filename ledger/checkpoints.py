"""Checkpoints (signed tree heads) and witness cosignatures, BLS12-381 proof-of-possession suite.

A checkpoint commits to (origin, size, root, hash) of the log, as the signed
tree head of RFC 9162 section 4.10. It is signed by the log's BLS key;
witnesses that have checked consistency with what they saw before
(RFC 9162 section 2.1.4) add cosignatures, and all signatures aggregate into
one (FastAggregateVerify over the same message). signers[0] is always the log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ledger import merkle
from ledger.errors import (
    BadCheckpointSignature,
    CheckpointError,
    CheckpointOutOfOrder,
    InconsistentCheckpoint,
)
from ledger.keys import BLS_PUB, BLS_SIG, Identity, bls_aggregate, bls_fast_aggregate_verify, bls_verify
from mpc_core import domains
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.errors import EncodingError

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """An unsigned tree head."""

    origin: str
    size: int
    root: bytes
    hash: str = "blake3"

    def to_obj(self) -> dict:
        return {"v": CHECKPOINT_VERSION, "origin": self.origin, "size": self.size, "root": self.root, "hash": self.hash}

    def message(self) -> bytes:
        """The bytes every (co)signer signs."""
        return domains.LEDGER_CHECKPOINT + canonical_cbor(self.to_obj())


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint with the aggregate BLS signature of `signers` (log first, then witnesses)."""

    checkpoint: Checkpoint
    signers: tuple[bytes, ...]
    sig: bytes

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root

    @property
    def log_key(self) -> bytes:
        return self.signers[0]

    def to_obj(self) -> dict:
        return {"checkpoint": self.checkpoint.to_obj(), "signers": list(self.signers), "sig": self.sig}

    def encode(self) -> bytes:
        return canonical_cbor(self.to_obj())

    def verify(self, log_key: bytes | None = None, witnesses: Sequence[bytes] = (), quorum: int = 0) -> bool:
        """True iff the aggregate signature verifies, signers[0] is `log_key` (when given) and at
        least `quorum` of `witnesses` cosigned. Never raises."""
        try:
            if log_key is not None and self.signers[0] != bytes(log_key):
                return False
            if quorum and len(set(self.signers[1:]) & {bytes(w) for w in witnesses}) < quorum:
                return False
            return bls_fast_aggregate_verify(self.signers, self.checkpoint.message(), self.sig)
        except Exception:  # noqa: BLE001
            return False


def checkpoint_from_obj(obj: Any) -> SignedCheckpoint:
    """Parse a signed-checkpoint map (raises CheckpointError on any malformation)."""
    try:
        if not isinstance(obj, dict) or set(obj) != {"checkpoint", "signers", "sig"}:
            raise CheckpointError("signed checkpoint must be a map {checkpoint, signers, sig}")
        c = obj["checkpoint"]
        if not isinstance(c, dict) or set(c) != {"v", "origin", "size", "root", "hash"}:
            raise CheckpointError("checkpoint must be a map {v, origin, size, root, hash}")
        if c["v"] != CHECKPOINT_VERSION:
            raise CheckpointError(f"checkpoint version {c['v']!r} not supported")
        if not isinstance(c["origin"], str) or not 0 < len(c["origin"]) <= 256:
            raise CheckpointError("checkpoint origin must be a non-empty str")
        if not isinstance(c["size"], int) or isinstance(c["size"], bool) or c["size"] < 0:
            raise CheckpointError("checkpoint size must be a uint")
        if not isinstance(c["root"], bytes) or len(c["root"]) != merkle.DIGEST_SIZE:
            raise CheckpointError("checkpoint root must be 32 bytes")
        if c["hash"] not in merkle.HASH_NAMES:
            raise CheckpointError(f"checkpoint hash {c['hash']!r} unknown")
        signers = obj["signers"]
        if (
            not isinstance(signers, list)
            or not 1 <= len(signers) <= 1024
            or not all(isinstance(s, bytes) and len(s) == BLS_PUB for s in signers)
            or len(set(signers)) != len(signers)
        ):
            raise CheckpointError("signers must be 1..1024 distinct 48-byte BLS keys")
        if not isinstance(obj["sig"], bytes) or len(obj["sig"]) != BLS_SIG:
            raise CheckpointError("checkpoint signature must be 96 bytes")
        return SignedCheckpoint(Checkpoint(c["origin"], c["size"], c["root"], c["hash"]), tuple(signers), obj["sig"])
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"malformed checkpoint: {exc}") from exc


def decode_checkpoint(data: bytes) -> SignedCheckpoint:
    """Parse canonical CBOR bytes of a signed checkpoint."""
    try:
        obj = decode_cbor(data)
    except EncodingError as exc:
        raise CheckpointError(f"checkpoint is not canonical CBOR: {exc}") from exc
    return checkpoint_from_obj(obj)


def sign_checkpoint(cp: Checkpoint, log: Identity) -> SignedCheckpoint:
    """The log signs a tree head."""
    return SignedCheckpoint(cp, (log.bls_pub,), log.bls_sign(cp.message()))


def add_cosignature(scp: SignedCheckpoint, witness_pub: bytes, cosig: bytes) -> SignedCheckpoint:
    """Aggregate one witness cosignature (checked on its own first) into a signed checkpoint."""
    if witness_pub in scp.signers:
        raise BadCheckpointSignature("this key already signed the checkpoint")
    if not bls_verify(witness_pub, scp.checkpoint.message(), cosig):
        raise BadCheckpointSignature("cosignature does not verify")
    return SignedCheckpoint(scp.checkpoint, scp.signers + (bytes(witness_pub),), bls_aggregate([scp.sig, cosig]))


def conflicting(a: SignedCheckpoint, b: SignedCheckpoint) -> bool:
    """Two checkpoints of the same origin and size with different roots (a split view)."""
    return (
        a.checkpoint.origin == b.checkpoint.origin
        and a.checkpoint.hash == b.checkpoint.hash
        and a.size == b.size
        and a.root != b.root
    )


class Witness:
    """A witness: cosigns a checkpoint only if it is signed by the log and consistent with the last one it cosigned.

    State is (size, root) of the last cosigned checkpoint; RFC 9162 section 8.2 (split-view defence).
    """

    def __init__(self, identity: Identity, log_key: bytes, origin: str) -> None:
        self.identity = identity
        self.log_key = bytes(log_key)
        self.origin = origin
        self.size = 0
        self.root: bytes | None = None

    def cosign(self, scp: SignedCheckpoint, consistency: Sequence[bytes]) -> bytes:
        """Check and cosign; returns the witness's BLS signature (raises CheckpointError)."""
        cp = scp.checkpoint
        if cp.origin != self.origin:
            raise CheckpointError(f"checkpoint origin {cp.origin!r} is not {self.origin!r}")
        if not scp.verify(self.log_key):
            raise BadCheckpointSignature("checkpoint is not signed by the log")
        if cp.size < self.size:
            raise CheckpointOutOfOrder(f"checkpoint size {cp.size} < last cosigned {self.size}")
        if self.root is not None and not merkle.verify_consistency(
            self.size, cp.size, self.root, cp.root, consistency, cp.hash
        ):
            raise InconsistentCheckpoint(
                f"checkpoint ({cp.size}, {cp.root.hex()[:16]}) is not consistent with ({self.size}, {self.root.hex()[:16]})"
            )
        sig = self.identity.bls_sign(cp.message())
        self.size, self.root = cp.size, cp.root
        return sig

