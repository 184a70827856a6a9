"""Key handling: Ed25519 (per-entry signatures) and BLS12-381 (checkpoints, cosignatures, job roots).

BLS uses the proof-of-possession ciphersuite of draft-irtf-cfrg-bls-signature
(BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_), written in ledger/bls.py over
arkworks' group operations (milliseconds per operation) and checked there against
py_ecc, the reference, which still derives the keys (KeyGen). Verification
results of these pure functions are memoised.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Sequence

from blake3 import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_ecc.bls import G2ProofOfPossession as _BLS  # KeyGen only (HKDF); the rest is ledger.bls

from ledger import bls
from ledger.errors import KeyFormatError
from mpc_core import domains

ED25519_PUB = 32
ED25519_SIG = 64
BLS_PUB = 48
BLS_SIG = 96


# --- Ed25519 ----------------------------------------------------------------
def ed25519_public_bytes(priv: Ed25519PrivateKey) -> bytes:
    """Raw 32-byte public key of an Ed25519 private key."""
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@functools.lru_cache(maxsize=4096)
def _ed_pub(pub: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(pub)


def ed25519_load_public(pub: bytes) -> Ed25519PublicKey:
    """Parse a raw Ed25519 public key (raises KeyFormatError)."""
    if not isinstance(pub, (bytes, bytearray)) or len(pub) != ED25519_PUB:
        raise KeyFormatError("Ed25519 public key must be 32 bytes")
    try:
        return _ed_pub(bytes(pub))
    except Exception as exc:  # noqa: BLE001
        raise KeyFormatError(f"invalid Ed25519 public key: {exc}") from exc


def ed25519_verify(pub: bytes, msg: bytes, sig: bytes) -> bool:
    """True iff `sig` is a valid Ed25519 signature of `msg` under raw key `pub`. Never raises."""
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != ED25519_SIG:
        return False
    try:
        ed25519_load_public(pub).verify(bytes(sig), msg)
        return True
    except (InvalidSignature, KeyFormatError, ValueError, TypeError):
        return False


# --- BLS12-381 (proof-of-possession ciphersuite) ------------------------------
def bls_keygen(ikm: bytes) -> int:
    """BLS secret key from >= 32 bytes of key material (KeyGen of the BLS draft)."""
    if not isinstance(ikm, (bytes, bytearray)) or len(ikm) < 32:
        raise KeyFormatError("BLS key material must be at least 32 bytes")
    return _BLS.KeyGen(bytes(ikm))


def bls_public(sk: int) -> bytes:
    """48-byte compressed G1 public key."""
    try:
        return bls.sk_to_pk(sk)
    except bls.BLSError as exc:
        raise KeyFormatError(str(exc)) from exc


def bls_sign(sk: int, msg: bytes) -> bytes:
    """96-byte compressed G2 signature."""
    try:
        return bls.sign(sk, bytes(msg))
    except bls.BLSError as exc:
        raise KeyFormatError(str(exc)) from exc


@functools.lru_cache(maxsize=1024)
def _bls_verify(pk: bytes, msg: bytes, sig: bytes) -> bool:
    return bls.verify(pk, msg, sig)


def bls_verify(pk: bytes, msg: bytes, sig: bytes) -> bool:
    """True iff `sig` is a valid BLS signature of `msg` under `pk`. Never raises."""
    try:
        if len(pk) != BLS_PUB or len(sig) != BLS_SIG:
            return False
        return _bls_verify(bytes(pk), bytes(msg), bytes(sig))
    except Exception:  # noqa: BLE001
        return False


def bls_aggregate(sigs: Sequence[bytes]) -> bytes:
    """Aggregate signatures into one (raises KeyFormatError on malformed input)."""
    try:
        return bls.aggregate([bytes(s) for s in sigs])
    except Exception as exc:  # noqa: BLE001
        raise KeyFormatError(f"cannot aggregate BLS signatures: {exc}") from exc


@functools.lru_cache(maxsize=1024)
def _bls_fav(pks: tuple[bytes, ...], msg: bytes, sig: bytes) -> bool:
    return bls.fast_aggregate_verify(list(pks), msg, sig)


def bls_fast_aggregate_verify(pks: Sequence[bytes], msg: bytes, sig: bytes) -> bool:
    """True iff `sig` aggregates signatures of `msg` by every key in `pks` (keys must have PoPs). Never raises."""
    try:
        if not pks or any(len(p) != BLS_PUB for p in pks) or len(sig) != BLS_SIG:
            return False
        if len(set(bytes(p) for p in pks)) != len(pks):
            return False
        return _bls_fav(tuple(bytes(p) for p in pks), bytes(msg), bytes(sig))
    except Exception:  # noqa: BLE001
        return False


def bls_aggregate_verify(pks: Sequence[bytes], msgs: Sequence[bytes], sig: bytes) -> bool:
    """True iff `sig` aggregates signatures of msgs[i] by pks[i] (AggregateVerify). Never raises."""
    try:
        if not pks or len(pks) != len(msgs) or len(sig) != BLS_SIG:
            return False
        return bls.aggregate_verify([bytes(p) for p in pks], [bytes(m) for m in msgs], bytes(sig))
    except Exception:  # noqa: BLE001
        return False


def bls_pop_prove(sk: int) -> bytes:
    """Proof of possession of `sk` (96 bytes)."""
    try:
        return bls.pop_prove(sk)
    except bls.BLSError as exc:
        raise KeyFormatError(str(exc)) from exc


@functools.lru_cache(maxsize=1024)
def _bls_pop_verify(pk: bytes, pop: bytes) -> bool:
    return bls.pop_verify(pk, pop)


def bls_pop_verify(pk: bytes, pop: bytes) -> bool:
    """True iff `pop` proves possession of the key behind `pk`. Never raises."""
    try:
        if len(pk) != BLS_PUB or len(pop) != BLS_SIG:
            return False
        return _bls_pop_verify(bytes(pk), bytes(pop))
    except Exception:  # noqa: BLE001
        return False


# --- identities --------------------------------------------------------------
@dataclass
class Identity:
    """A participant's keys: Ed25519 for entries, BLS for cosignatures and job roots.

    Deterministic from a 32-byte seed so that a node can keep one secret.
    """

    node_id: str
    seed: bytes = field(repr=False)
    ed25519: Ed25519PrivateKey = field(init=False, repr=False)
    bls_sk: int = field(init=False, repr=False)
    ed25519_pub: bytes = field(init=False)
    bls_pub: bytes = field(init=False)
    _pop: bytes | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, (bytes, bytearray)) or len(self.seed) != 32:
            raise KeyFormatError("identity seed must be 32 bytes")
        ed_seed = blake3(domains.LEDGER_ED25519_SEED + bytes(self.seed)).digest()
        bls_ikm = blake3(domains.LEDGER_BLS_IKM + bytes(self.seed)).digest()
        self.ed25519 = Ed25519PrivateKey.from_private_bytes(ed_seed)
        self.ed25519_pub = ed25519_public_bytes(self.ed25519)
        self.bls_sk = bls_keygen(bls_ikm)
        self.bls_pub = bls_public(self.bls_sk)

    @classmethod
    def generate(cls, node_id: str) -> "Identity":
        """A fresh identity with a random seed."""
        return cls(node_id, os.urandom(32))

    @property
    def bls_pop(self) -> bytes:
        """Proof of possession of the BLS key (computed once)."""
        if self._pop is None:
            self._pop = bls_pop_prove(self.bls_sk)
        return self._pop

    def sign(self, msg: bytes) -> bytes:
        """Ed25519 signature."""
        return self.ed25519.sign(msg)

    def bls_sign(self, msg: bytes) -> bytes:
        """BLS signature (slow with py_ecc)."""
        return bls_sign(self.bls_sk, msg)
