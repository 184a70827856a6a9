"""Node keys (key file, permissions, determinism) and private channels (seal/open, every refusal, framing)."""
from __future__ import annotations

import os
import socket
import stat
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc_core import domains
from mpc_core.encoding import canonical_cbor, decode_cbor
from prover import channels as C
from prover.errors import (
    ChannelAuthError,
    ChannelContextError,
    ChannelError,
    ChannelFormatError,
    ChannelKeyError,
    FrameTooLarge,
    InvalidNodeId,
    KeyFileExists,
    KeyFileFormat,
    KeyFilePermissions,
    NodeKeyError,
    PeerClosed,
    ProverError,
    ReplayError,
    TruncatedFrame,
)
from prover.keys import NodeKeys, default_node_id, keygen

OWNER = NodeKeys.generate("owner", seed=b"o" * 32)
NODE = NodeKeys.generate(seed=b"n" * 32)
OTHER = NodeKeys.generate("other", seed=b"x" * 32)
JOB = "job-7"


def sealed(counter: int = 0, payload: bytes = b"weight share 0", purpose: str = C.PURPOSE_WEIGHTS) -> bytes:
    return C.seal(OWNER, NODE.x25519_pub, NODE.node_id, JOB, purpose, payload, counter)


# --- keys -------------------------------------------------------------------------
def test_deterministic_from_seed_and_distinct_per_seed():
    a, b = NodeKeys.generate(seed=b"n" * 32), NodeKeys.generate(seed=b"n" * 32)
    assert a == b and a.public() == b.public() == NODE.public()
    assert NodeKeys.generate(seed=b"m" * 32).public()["ed25519"] != NODE.ed25519_pub
    assert len({NODE.ed25519_pub, NODE.x25519_pub}) == 2 and len(NODE.bls_pub) == 48
    r1, r2 = NodeKeys.generate(), NodeKeys.generate()
    assert r1.seed != r2.seed and r1.node_id != r2.node_id


def test_node_id_default_and_explicit():
    assert NODE.node_id == default_node_id(NODE.ed25519_pub)
    assert NODE.node_id.startswith("node-") and len(NODE.node_id) == 21
    assert OWNER.node_id == "owner" and OWNER.ed25519_pub != NODE.ed25519_pub
    for bad in ["", "a b", "x" * 129, "é", "a/b"]:
        with pytest.raises(InvalidNodeId):
            NodeKeys.generate(bad, seed=b"n" * 32)


def test_keys_reuse_ledger_identity_and_sign():
    from ledger.keys import bls_verify, ed25519_verify

    assert NODE.identity.node_id == NODE.node_id
    assert ed25519_verify(NODE.ed25519_pub, b"m", NODE.sign(b"m"))
    assert "seed" not in repr(NODE) and NODE.seed.hex() not in repr(NODE)
    assert bls_verify(NODE.bls_pub, b"m", NODE.bls_sign(b"m"))


def test_key_file_round_trip_mode_0600_and_no_overwrite(tmp_path):
    path = tmp_path / "node.key"
    k = keygen(path, seed=b"k" * 32)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = NodeKeys.load(path)
    assert back == k and back.public() == k.public()
    before = path.read_bytes()
    with pytest.raises(KeyFileExists):
        keygen(path)
    with pytest.raises(KeyFileExists):
        NodeKeys.generate(seed=b"z" * 32).save(path)
    assert path.read_bytes() == before
    assert decode_cbor(before)["format"] == domains.NODE_KEY_FILE and decode_cbor(before)["v"] == 1


def test_mode_0600_even_with_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        keygen(tmp_path / "k", seed=b"k" * 32)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o610])
def test_refuses_group_or_world_accessible_key_file(tmp_path, mode):
    path = tmp_path / "node.key"
    keygen(path, seed=b"k" * 32)
    os.chmod(path, mode)
    with pytest.raises(KeyFilePermissions):
        NodeKeys.load(path)


def test_refuses_symlink_missing_and_directory(tmp_path):
    keygen(tmp_path / "real", seed=b"k" * 32)
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(KeyFilePermissions):
        NodeKeys.load(tmp_path / "link")
    with pytest.raises(NodeKeyError):
        NodeKeys.load(tmp_path / "missing")
    with pytest.raises(NodeKeyError):
        keygen(tmp_path / "no-such-dir" / "k")


def _write_0600(path, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(fd, data)
    os.close(fd)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: b"\xff garbage",
        lambda o: canonical_cbor({**o, "format": "something/else"}),
        lambda o: canonical_cbor({**o, "v": 2}),
        lambda o: canonical_cbor({**o, "extra": 1}),
        lambda o: canonical_cbor({k: v for k, v in o.items() if k != "x25519"}),
        lambda o: canonical_cbor({**o, "seed": b"short"}),
        lambda o: canonical_cbor({**o, "x25519": bytes(32)}),  # inconsistent with the seed
        lambda o: canonical_cbor({**o, "node_id": "bad id"}),
        lambda o: canonical_cbor(o) + b"\x00",  # trailing bytes
        lambda o: b"\x00" * 5000,  # too large
    ],
)
def test_refuses_malformed_key_file(tmp_path, mutate):
    obj = decode_cbor(NODE.to_bytes())
    path = tmp_path / "k"
    _write_0600(path, mutate(obj))
    with pytest.raises(KeyFileFormat):
        NodeKeys.load(path)


# --- seal / open --------------------------------------------------------------------
def test_seal_open_round_trip_and_fresh_ciphertexts():
    m = sealed(3, b"secret")
    got = C.open_(NODE, m, OWNER.x25519_pub, sender="owner", job=JOB, purpose=C.PURPOSE_WEIGHTS)
    assert got == C.Opened("owner", NODE.node_id, JOB, C.PURPOSE_WEIGHTS, 3, b"secret")
    assert b"secret" not in m and sealed(3, b"secret") != m  # fresh ephemeral key per message
    assert C.open_(NODE, sealed(0, b""), OWNER.x25519_pub).payload == b""
    assert C.open_(NODE, m, lambda sid: {"owner": OWNER.x25519_pub}.get(sid)).payload == b"secret"
    h = decode_cbor(m)
    assert h["tag"] == domains.CHANNEL_MSG and set(h) == set(C._FIELDS)


def test_node_to_client_direction_works_too():
    m = C.seal(NODE, OTHER.x25519_pub, "other", JOB, C.PURPOSE_OUTPUT, b"logit shares", 0)
    assert C.open_(OTHER, m, NODE.x25519_pub).payload == b"logit shares"


def test_wrong_recipient_key_and_wrong_sender_key():
    m = sealed()
    impostor = NodeKeys(b"x" * 32, NODE.node_id)  # claims the node's id, holds another key
    with pytest.raises(ChannelAuthError):
        C.open_(impostor, m, OWNER.x25519_pub)
    with pytest.raises(ChannelAuthError):  # sealed by someone else than the registered sender key
        C.open_(NODE, m, OTHER.x25519_pub)
    forged = C.seal(NodeKeys(b"f" * 32, "owner"), NODE.x25519_pub, NODE.node_id, JOB, "p", b"x", 0)
    with pytest.raises(ChannelAuthError):  # an attacker using the owner's id without its static key
        C.open_(NODE, forged, OWNER.x25519_pub)
    with pytest.raises(ChannelContextError):
        C.open_(OTHER, m, OWNER.x25519_pub)  # addressed to another node id


def test_unknown_sender_and_bad_public_keys():
    with pytest.raises(ChannelKeyError):
        C.open_(NODE, sealed(), lambda sid: None)
    with pytest.raises(ChannelKeyError):
        C.open_(NODE, sealed(), b"short")
    with pytest.raises(ChannelKeyError):
        C.open_(NODE, sealed(), bytes(32))  # low-order point: all-zero shared secret
    with pytest.raises(ChannelKeyError):
        C.seal(OWNER, bytes(32), NODE.node_id, JOB, "p", b"x", 0)
    with pytest.raises(ChannelKeyError):
        C.seal(OWNER, b"\x01" * 31, NODE.node_id, JOB, "p", b"x", 0)


def test_flipped_ciphertext_bit():
    obj = decode_cbor(sealed())
    ct = bytearray(obj["ct"])
    ct[0] ^= 1
    with pytest.raises(ChannelAuthError):
        C.open_(NODE, canonical_cbor({**obj, "ct": bytes(ct)}), OWNER.x25519_pub)
    with pytest.raises(ChannelAuthError):  # truncated tag
        C.open_(NODE, canonical_cbor({**obj, "ct": obj["ct"][:-1]}), OWNER.x25519_pub)


@pytest.mark.parametrize(
    "field,value",
    [("job", "job-8"), ("purpose", C.PURPOSE_DEALER), ("sender", "other"), ("ctr", 1), ("eph", OTHER.x25519_pub)],
)
def test_tampered_header_fails_authentication(field, value):
    obj = decode_cbor(sealed())
    with pytest.raises(ChannelAuthError):
        C.open_(NODE, canonical_cbor({**obj, field: value}), OWNER.x25519_pub)


def test_tampered_low_order_ephemeral():
    obj = decode_cbor(sealed())
    with pytest.raises(ChannelAuthError):
        C.open_(NODE, canonical_cbor({**obj, "eph": bytes(32)}), OWNER.x25519_pub)


@pytest.mark.parametrize("kw", [{"job": "job-8"}, {"purpose": C.PURPOSE_DEALER}, {"sender": "other"}])
def test_unexpected_job_purpose_or_sender(kw):
    with pytest.raises(ChannelContextError):
        C.open_(NODE, sealed(), OWNER.x25519_pub, **kw)


def test_replay_guard_strictly_increasing_per_stream():
    g = C.ReplayGuard()
    m0, m1, m5 = sealed(0), sealed(1), sealed(5)
    assert C.open_(NODE, m0, OWNER.x25519_pub, replay=g).counter == 0
    with pytest.raises(ReplayError):
        C.open_(NODE, m0, OWNER.x25519_pub, replay=g)
    assert C.open_(NODE, m5, OWNER.x25519_pub, replay=g).counter == 5  # gaps are allowed
    with pytest.raises(ReplayError):
        C.open_(NODE, m1, OWNER.x25519_pub, replay=g)  # older than the last accepted
    # another purpose (or job) is another stream
    assert C.open_(NODE, sealed(0, purpose=C.PURPOSE_DEALER), OWNER.x25519_pub, replay=g).counter == 0
    assert g.last(("owner", NODE.node_id, JOB, C.PURPOSE_WEIGHTS)) == 5
    restored = C.ReplayGuard(g.state())
    with pytest.raises(ReplayError):
        C.open_(NODE, m5, OWNER.x25519_pub, replay=restored)
    g.forget_job(JOB)
    assert g.state() == {}


def test_unauthenticated_message_does_not_advance_the_counter():
    g = C.ReplayGuard()
    obj = decode_cbor(sealed(9))
    bad = canonical_cbor({**obj, "ct": bytes(len(obj["ct"]))})
    with pytest.raises(ChannelAuthError):
        C.open_(NODE, bad, OWNER.x25519_pub, replay=g)
    assert g.state() == {}
    assert C.open_(NODE, sealed(1), OWNER.x25519_pub, replay=g).counter == 1


def test_seal_stream_counts_up():
    s = C.SealStream(OWNER, NODE.node_id, NODE.x25519_pub, JOB, C.PURPOSE_WEIGHTS, start=10)
    g = C.ReplayGuard()
    got = [C.open_(NODE, s.seal(bytes([i])), OWNER.x25519_pub, replay=g) for i in range(3)]
    assert [o.counter for o in got] == [10, 11, 12] and [o.payload for o in got] == [b"\x00", b"\x01", b"\x02"]


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\x00garbage", canonical_cbor([1, 2]), canonical_cbor({"tag": domains.CHANNEL_MSG}), "text", None],
)
def test_garbage_messages(data):
    with pytest.raises(ChannelFormatError):
        C.open_(NODE, data, OWNER.x25519_pub)


@pytest.mark.parametrize(
    "field,value",
    [("tag", b"other/tag"), ("v", 2), ("ctr", -1), ("ctr", 1 << 64), ("eph", b"\x01" * 31), ("job", ""),
     ("ct", b"short"), ("sender", 5), ("purpose", "p" * 65)],
)
def test_wrongly_shaped_messages(field, value):
    obj = decode_cbor(sealed())
    with pytest.raises(ChannelFormatError):
        C.open_(NODE, canonical_cbor({**obj, field: value}), OWNER.x25519_pub)


def test_non_canonical_encoding_refused():
    import cbor2

    obj = decode_cbor(sealed())
    with pytest.raises(ChannelFormatError):
        C.open_(NODE, cbor2.dumps(dict(reversed(list(obj.items())))), OWNER.x25519_pub)


@pytest.mark.parametrize(
    "kw",
    [{"counter": -1}, {"counter": 1 << 64}, {"counter": True}, {"job": ""}, {"purpose": ""}, {"recipient_id": "r" * 129},
     {"payload": "text"}],
)
def test_seal_refuses_bad_arguments(kw):
    args = {"recipient_id": NODE.node_id, "job": JOB, "purpose": "p", "payload": b"x", "counter": 0, **kw}
    with pytest.raises(ChannelFormatError):
        C.seal(OWNER, NODE.x25519_pub, **args)


def test_errors_are_typed():
    assert issubclass(ChannelError, ProverError)
    for e in (ChannelAuthError, ChannelContextError, ChannelFormatError, ChannelKeyError, ReplayError, FrameTooLarge,
              TruncatedFrame, PeerClosed):
        assert issubclass(e, ChannelError)


_MSG = sealed(0, b"property payload")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pos=st.integers(0, len(_MSG) - 1), mask=st.integers(1, 255))
def test_any_single_byte_flip_is_rejected(pos, mask):
    data = bytearray(_MSG)
    data[pos] ^= mask
    with pytest.raises(ChannelError):
        C.open_(NODE, bytes(data), OWNER.x25519_pub)


# --- framing -----------------------------------------------------------------------
def test_frame_round_trip_over_a_socket_pair():
    a, b = socket.socketpair()
    with a, b:
        for payload in [b"", b"x", sealed()]:
            C.send_frame(a, payload)
            assert C.recv_frame(b) == payload
        a.close()
        with pytest.raises(PeerClosed):
            C.recv_frame(b)


@pytest.mark.parametrize("raw", [b"\x00\x00", struct.pack(">I", 10) + b"abc"])
def test_truncated_frames(raw):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(raw)
        a.close()
        with pytest.raises(TruncatedFrame):
            C.recv_frame(b)


def test_oversized_frames():
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(FrameTooLarge):
            C.send_frame(a, b"x" * 11, max_len=10)
        a.sendall(struct.pack(">I", 0xFFFFFFFF) + b"garbage")  # refused before reading or allocating the body
        with pytest.raises(FrameTooLarge):
            C.recv_frame(b, max_len=1 << 20)


def test_garbage_frame_body_is_a_format_error():
    a, b = socket.socketpair()
    with a, b:
        C.send_frame(a, b"\xa1\x61x\x01 not a message")
        with pytest.raises(ChannelFormatError):
            C.open_(NODE, C.recv_frame(b), OWNER.x25519_pub)
