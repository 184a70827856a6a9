"""BLS signatures over BLS12-381, proof-of-possession ciphersuite (draft-irtf-cfrg-bls-signature-05).

    ciphersuite  BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_   (public keys in G1, signatures in G2)
    PoP tag      BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_

The group operations, hash_to_curve (RFC 9380, BLS12381G2_XMD:SHA-256_SSWU_RO_) and pairings come
from py_arkworks_bls12381 (Rust, arkworks); this module writes the draft's algorithms on top of
them, section by section. KeyGen (section 2.3, pure HKDF) stays with py_ecc, the draft's Python
reference, which tests/ledger/test_bls.py also uses to check every algorithm here byte for byte.
py_ecc alone takes about 0.2 s to sign and 0.9 s to verify on this machine; this takes milliseconds.
Points are the ZCash compressed encodings (48 bytes in G1, 96 in G2); an encoding that does not
re-encode to itself (e.g. the infinity flag with other bits set) is refused, as py_ecc refuses it.
"""
from __future__ import annotations

from typing import Sequence

from py_arkworks_bls12381 import G1Point, G2Point, GT, Scalar

DST_SIG = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
DST_POP = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
CURVE_ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
PUB_BYTES = 48
SIG_BYTES = 96

_P1 = G1Point()  # the generator of G1
_NEG_P1 = -_P1
_G1_ID = G1Point.identity()


class BLSError(ValueError):
    """A secret key out of range, or a point encoding that does not decode (signing and aggregating)."""


def _scalar(sk: int) -> Scalar:
    if not isinstance(sk, int) or isinstance(sk, bool) or not 0 < sk < CURVE_ORDER:
        raise BLSError("a BLS secret key is an integer in [1, r - 1]")
    return Scalar(sk)


def _pubkey_point(pk: bytes) -> G1Point | None:
    """KeyValidate (section 2.5): the point of a valid public key, else None (never raises)."""
    try:
        if len(pk) != PUB_BYTES:
            return None
        p = G1Point.from_compressed_bytes(bytes(pk))  # decodes on the curve
        if p.to_compressed_bytes() != bytes(pk):  # one encoding per point (the flag bits included)
            return None
        if p == _G1_ID or not p.is_in_subgroup():
            return None
        return p
    except Exception:  # noqa: BLE001 - any decoding failure is "not a valid key"
        return None


def _signature_point(sig: bytes) -> G2Point | None:
    """signature_to_point and the subgroup check of CoreVerify (section 2.7), else None (never raises)."""
    try:
        if len(sig) != SIG_BYTES:
            return None
        s = G2Point.from_compressed_bytes(bytes(sig))
        if s.to_compressed_bytes() != bytes(sig):  # one encoding per point
            return None
        return s if s.is_in_subgroup() else None
    except Exception:  # noqa: BLE001
        return None


def sk_to_pk(sk: int) -> bytes:
    """SkToPk (section 2.4): SK * P1, compressed."""
    return (_P1 * _scalar(sk)).to_compressed_bytes()


def _core_sign(sk: int, message: bytes, dst: bytes) -> bytes:
    """CoreSign (section 2.6): SK * hash_to_point(message)."""
    return (G2Point.hash_to_curve(bytes(message), dst) * _scalar(sk)).to_compressed_bytes()


def _core_verify_point(pk: G1Point, message: bytes, sig: bytes, dst: bytes) -> bool:
    s = _signature_point(sig)
    if s is None:
        return False
    # e(PK, H(m)) == e(P1, S)  <=>  e(PK, H(m)) * e(-P1, S) == 1
    return bool(GT.pairing_check([pk, _NEG_P1], [G2Point.hash_to_curve(bytes(message), dst), s]))


def _core_verify(pk: bytes, message: bytes, sig: bytes, dst: bytes) -> bool:
    """CoreVerify (section 2.7)."""
    p = _pubkey_point(pk)
    return p is not None and _core_verify_point(p, message, sig, dst)


def sign(sk: int, message: bytes) -> bytes:
    """Sign (section 3.3 -> CoreSign with the ciphersuite's DST)."""
    return _core_sign(sk, message, DST_SIG)


def verify(pk: bytes, message: bytes, sig: bytes) -> bool:
    """Verify (section 3.3). Never raises."""
    try:
        return _core_verify(pk, message, sig, DST_SIG)
    except Exception:  # noqa: BLE001
        return False


def aggregate(sigs: Sequence[bytes]) -> bytes:
    """Aggregate (section 2.8): the sum of the signature points (at least one). Raises BLSError."""
    if not sigs:
        raise BLSError("nothing to aggregate")
    total = None
    for sig in sigs:
        try:
            s = G2Point.from_compressed_bytes(bytes(sig))
        except Exception as exc:  # noqa: BLE001
            raise BLSError(f"a signature does not decode: {exc}") from exc
        if s.to_compressed_bytes() != bytes(sig):
            raise BLSError("a signature is not in its canonical encoding")
        total = s if total is None else total + s
    return total.to_compressed_bytes()


def aggregate_verify(pks: Sequence[bytes], messages: Sequence[bytes], sig: bytes) -> bool:
    """AggregateVerify of the PoP scheme (section 3.3.4 -> CoreAggregateVerify, section 2.9):
    e(P1, S) == prod e(PK_i, H(m_i)). Never raises."""
    try:
        if not pks or len(pks) != len(messages):
            return False
        points = [_pubkey_point(pk) for pk in pks]
        if any(p is None for p in points):
            return False
        s = _signature_point(sig)
        if s is None:
            return False
        hashes = [G2Point.hash_to_curve(bytes(m), DST_SIG) for m in messages]
        return bool(GT.pairing_check([*points, _NEG_P1], [*hashes, s]))
    except Exception:  # noqa: BLE001
        return False


def fast_aggregate_verify(pks: Sequence[bytes], message: bytes, sig: bytes) -> bool:
    """FastAggregateVerify (section 3.3.4): Verify under the sum of the keys (each with a PoP). Never raises."""
    try:
        if not pks:
            return False
        points = [_pubkey_point(pk) for pk in pks]
        if any(p is None for p in points):
            return False
        total = points[0]
        for p in points[1:]:
            total = total + p
        if total == _G1_ID:  # KeyValidate of the aggregate key
            return False
        return _core_verify_point(total, message, sig, DST_SIG)
    except Exception:  # noqa: BLE001
        return False


def pop_prove(sk: int) -> bytes:
    """PopProve (section 3.3.2): CoreSign of SkToPk(SK) under the PoP tag."""
    return _core_sign(sk, sk_to_pk(sk), DST_POP)


def pop_verify(pk: bytes, proof: bytes) -> bool:
    """PopVerify (section 3.3.3). Never raises."""
    try:
        return _core_verify(pk, pk, proof, DST_POP)
    except Exception:  # noqa: BLE001
        return False
