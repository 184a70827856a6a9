"""Private channels: authenticated encryption from a registered sender to a registered recipient.

Pattern: one-way Noise `K` (equivalently HPKE mode_auth, RFC 9180 section
5.1.3) built only from `cryptography`'s X25519, HKDF-SHA256 and
ChaCha20-Poly1305. Every message carries a fresh sender ephemeral key;
the AEAD key comes from DH(ephemeral, recipient static) || DH(sender static,
recipient static), so only the holder of the recipient's static key can open
it and only the holder of the sender's static key can have sealed it. The
cleartext header (sender, recipient, job, purpose, counter, ephemeral key)
and both static public keys are the associated data. A `ReplayGuard` accepts
a strictly increasing counter per (sender, recipient, job, purpose).
Formats and the exact guarantees: specs/channels.md.
"""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mpc_core import domains
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.errors import EncodingError
from prover.errors import (
    ChannelAuthError,
    ChannelContextError,
    ChannelFormatError,
    ChannelKeyError,
    FrameTooLarge,
    PeerClosed,
    ReplayError,
    TruncatedFrame,
)

CHANNEL_VERSION = 1
X25519_PUB = 32
TAG_BYTES = 16  # Poly1305 tag
MAX_ID = 128  # sender, recipient and job ids (as on the ledger)
MAX_PURPOSE = 64
MAX_COUNTER = (1 << 64) - 1
MAX_PAYLOAD = 64 << 20  # larger payloads are split into several messages (consecutive counters)
MAX_OVERHEAD = 1024  # CBOR envelope, ids, ephemeral key, tag
MAX_SEALED = MAX_PAYLOAD + TAG_BYTES + MAX_OVERHEAD
FRAME_HEADER = struct.Struct(">I")  # 4-byte big-endian length prefix
DEFAULT_MAX_FRAME = MAX_SEALED
_FIELDS = ("tag", "v", "sender", "recipient", "job", "purpose", "ctr", "eph", "ct")

# Suggested purposes (free text is allowed; the purpose is bound into the AD).
PURPOSE_WEIGHTS = "owner.weights"  # model owner -> node: a weight share
PURPOSE_DEALER = "dealer.material"  # dealer -> node: seeds or correction shares
PURPOSE_INPUT = "client.input"  # client -> node: input shares
PURPOSE_OUTPUT = "node.output"  # node -> client: output shares


class StaticKeys(Protocol):
    """What a channel endpoint needs: its id and its static X25519 key pair (e.g. prover.keys.NodeKeys)."""

    @property
    def node_id(self) -> str: ...

    x25519: X25519PrivateKey
    x25519_pub: bytes


@dataclass(frozen=True)
class Opened:
    """An authenticated, decrypted channel message."""

    sender: str
    recipient: str
    job: str
    purpose: str
    counter: int
    payload: bytes


# --- field checks ---------------------------------------------------------
def _text(v: Any, name: str, max_len: int) -> str:
    if not isinstance(v, str) or not 1 <= len(v) <= max_len:
        raise ChannelFormatError(f"{name} must be a string of 1..{max_len} characters")
    return v


def _counter(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_COUNTER:
        raise ChannelFormatError(f"counter must be an integer in [0, 2^64 - 1], got {v!r}")
    return v


def _pub(v: Any, name: str) -> X25519PublicKey:
    if not isinstance(v, (bytes, bytearray)) or len(v) != X25519_PUB:
        raise ChannelKeyError(f"{name} must be a 32-byte X25519 public key")
    try:
        return X25519PublicKey.from_public_bytes(bytes(v))
    except ValueError as exc:
        raise ChannelKeyError(f"{name} is not a valid X25519 public key: {exc}") from exc


def _associated_data(header: Mapping[str, Any], sender_pub: bytes, recipient_pub: bytes) -> bytes:
    """CHANNEL_AD || canonical_cbor(header without tag, plus both static public keys)."""
    return domains.CHANNEL_AD + canonical_cbor(
        {**header, "sender_pub": bytes(sender_pub), "recipient_pub": bytes(recipient_pub)}
    )


def _key_nonce(es: bytes, ss: bytes, ad: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=32 + 12, salt=domains.CHANNEL_KDF, info=ad).derive(es + ss)
    return okm[:32], okm[32:]


# --- seal / open ------------------------------------------------------------
def seal(
    sender: StaticKeys,
    recipient_x25519_pub: bytes,
    recipient_id: str,
    job: str,
    purpose: str,
    payload: bytes,
    counter: int,
) -> bytes:
    """Encrypt and authenticate `payload` for `recipient_id` (whose registered X25519 key is given).

    The counter must be strictly increasing per (sender, recipient, job, purpose) for
    the recipient to accept the messages (see `SealStream`)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ChannelFormatError(f"payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ChannelFormatError(f"payload of {len(payload)} bytes > {MAX_PAYLOAD}; split it over several messages")
    header = {
        "v": CHANNEL_VERSION,
        "sender": _text(sender.node_id, "sender id", MAX_ID),
        "recipient": _text(recipient_id, "recipient id", MAX_ID),
        "job": _text(job, "job id", MAX_ID),
        "purpose": _text(purpose, "purpose", MAX_PURPOSE),
        "ctr": _counter(counter),
    }
    rpub = _pub(recipient_x25519_pub, "recipient X25519 key")
    eph = X25519PrivateKey.generate()
    header["eph"] = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        es = eph.exchange(rpub)
        ss = sender.x25519.exchange(rpub)
    except ValueError as exc:  # all-zero shared secret: a low-order recipient key
        raise ChannelKeyError(f"recipient X25519 key is unusable: {exc}") from exc
    ad = _associated_data(header, sender.x25519_pub, bytes(recipient_x25519_pub))
    key, nonce = _key_nonce(es, ss, ad)
    ct = ChaCha20Poly1305(key).encrypt(nonce, payload, ad)
    return canonical_cbor({"tag": domains.CHANNEL_MSG, **header, "ct": ct})


def parse_header(sealed: bytes) -> dict[str, Any]:
    """The unauthenticated header of a sealed message (to look up the sender's key); raises ChannelFormatError."""
    if not isinstance(sealed, (bytes, bytearray, memoryview)):
        raise ChannelFormatError(f"sealed message must be bytes, got {type(sealed).__name__}")
    if len(sealed) > MAX_SEALED:
        raise ChannelFormatError(f"sealed message of {len(sealed)} bytes > {MAX_SEALED}")
    try:
        obj = decode_cbor(bytes(sealed))
    except EncodingError as exc:
        raise ChannelFormatError(f"not a canonical CBOR channel message: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != set(_FIELDS):
        raise ChannelFormatError("not a channel message (wrong fields)")
    if obj["tag"] != domains.CHANNEL_MSG:
        raise ChannelFormatError("not a channel message (wrong tag)")
    if obj["v"] != CHANNEL_VERSION:
        raise ChannelFormatError(f"channel message version {obj['v']!r} not supported (this code: {CHANNEL_VERSION})")
    _text(obj["sender"], "sender id", MAX_ID)
    _text(obj["recipient"], "recipient id", MAX_ID)
    _text(obj["job"], "job id", MAX_ID)
    _text(obj["purpose"], "purpose", MAX_PURPOSE)
    _counter(obj["ctr"])
    if not isinstance(obj["eph"], bytes) or len(obj["eph"]) != X25519_PUB:
        raise ChannelFormatError("ephemeral key must be 32 bytes")
    if not isinstance(obj["ct"], bytes) or not TAG_BYTES <= len(obj["ct"]) <= MAX_PAYLOAD + TAG_BYTES:
        raise ChannelFormatError("ciphertext has an impossible length")
    return obj


def open_(
    recipient: StaticKeys,
    sealed: bytes,
    sender_x25519_pub: bytes | Callable[[str], bytes | None],
    *,
    sender: str | None = None,
    job: str | None = None,
    purpose: str | None = None,
    replay: "ReplayGuard | None" = None,
) -> Opened:
    """Authenticate and decrypt a message sealed for `recipient`.

    `sender_x25519_pub` is the sender's registered X25519 key, or a function from a
    sender id to it (None: unknown sender). `sender`, `job` and `purpose`, when given,
    must match the message. With `replay`, the counter must exceed the last one
    accepted on its stream; it is recorded only once the message authenticates."""
    h = parse_header(sealed)
    if h["recipient"] != recipient.node_id:
        raise ChannelContextError(f"message is for {h['recipient']!r}, not {recipient.node_id!r}")
    for name, want in (("sender", sender), ("job", job), ("purpose", purpose)):
        if want is not None and h[name] != want:
            raise ChannelContextError(f"message {name} is {h[name]!r}, expected {want!r}")
    spub = sender_x25519_pub(h["sender"]) if callable(sender_x25519_pub) else sender_x25519_pub
    if spub is None:
        raise ChannelKeyError(f"no registered X25519 key for sender {h['sender']!r}")
    spub_key = _pub(spub, "sender X25519 key")
    stream = (h["sender"], h["recipient"], h["job"], h["purpose"])
    if replay is not None:
        replay.check(stream, h["ctr"])
    try:
        es = recipient.x25519.exchange(X25519PublicKey.from_public_bytes(h["eph"]))
    except ValueError as exc:
        raise ChannelAuthError(f"ephemeral key is unusable: {exc}") from exc
    try:
        ss = recipient.x25519.exchange(spub_key)
    except ValueError as exc:
        raise ChannelKeyError(f"sender X25519 key is unusable: {exc}") from exc
    header = {k: h[k] for k in _FIELDS if k not in ("tag", "ct")}
    ad = _associated_data(header, bytes(spub), recipient.x25519_pub)
    key, nonce = _key_nonce(es, ss, ad)
    try:
        payload = ChaCha20Poly1305(key).decrypt(nonce, h["ct"], ad)
    except InvalidTag as exc:
        raise ChannelAuthError("message does not authenticate (wrong key, or tampered ciphertext or header)") from exc
    if replay is not None:
        replay.accept(stream, h["ctr"])
    return Opened(h["sender"], h["recipient"], h["job"], h["purpose"], h["ctr"], payload)


# --- session-keyed stream (dealer corrections) -----------------------------------
CORRECTION_KEY_BYTES = 32


def _correction_ad(job: str, op_index: int, request: Any) -> bytes:
    return domains.DEALER_CORRECTION_AD + canonical_cbor([job, op_index, request])


def _correction_nonce(op_index: int) -> bytes:
    return _counter(op_index).to_bytes(8, "little") + bytes(4)


def seal_correction(key: bytes, job: str, op_index: int, request: Any, payload: bytes) -> bytes:
    """Encrypt the dealer's answer to request #`op_index` under the job's correction key.

    The key travels once, inside the Noise-K-sealed seed message to the last party; each
    op index is used once per key, so the nonce (the op index) never repeats. The request
    descriptor is bound as associated data."""
    if not isinstance(key, (bytes, bytearray)) or len(key) != CORRECTION_KEY_BYTES:
        raise ChannelKeyError("a correction key is 32 bytes")
    return ChaCha20Poly1305(bytes(key)).encrypt(_correction_nonce(op_index), bytes(payload),
                                                _correction_ad(job, op_index, request))


def open_correction(key: bytes, job: str, op_index: int, request: Any, sealed: bytes) -> bytes:
    """Decrypt a sealed correction; raises ChannelAuthError if it was not sealed for this job, op and request."""
    if not isinstance(key, (bytes, bytearray)) or len(key) != CORRECTION_KEY_BYTES:
        raise ChannelKeyError("a correction key is 32 bytes")
    try:
        return ChaCha20Poly1305(bytes(key)).decrypt(_correction_nonce(op_index), bytes(sealed),
                                                    _correction_ad(job, op_index, request))
    except InvalidTag as exc:
        raise ChannelAuthError(f"correction #{op_index} does not authenticate") from exc


# --- replay protection ---------------------------------------------------------
Stream = tuple[str, str, str, str]  # (sender, recipient, job, purpose)


class ReplayGuard:
    """Highest accepted counter per (sender, recipient, job, purpose); thread-safe.

    In memory; `state()`/`ReplayGuard(state)` let a daemon persist it across restarts."""

    def __init__(self, state: Mapping[Stream, int] | None = None) -> None:
        self._last: dict[Stream, int] = dict(state or {})
        self._lock = threading.Lock()

    def check(self, stream: Stream, counter: int) -> None:
        """Raise ReplayError unless `counter` is above the stream's last accepted counter."""
        with self._lock:
            last = self._last.get(stream)
        if last is not None and counter <= last:
            raise ReplayError(f"counter {counter} on stream {stream} is not above the last accepted ({last})")

    def accept(self, stream: Stream, counter: int) -> None:
        """Record `counter` as accepted (atomically re-checking it); raises ReplayError if it is stale."""
        with self._lock:
            last = self._last.get(stream)
            if last is not None and counter <= last:
                raise ReplayError(f"counter {counter} on stream {stream} is not above the last accepted ({last})")
            self._last[stream] = counter

    def last(self, stream: Stream) -> int | None:
        """The last accepted counter of a stream, or None."""
        with self._lock:
            return self._last.get(stream)

    def forget_job(self, job: str) -> None:
        """Drop the streams of a finished job (its id must never be reused)."""
        with self._lock:
            for s in [s for s in self._last if s[2] == job]:
                del self._last[s]

    def state(self) -> dict[Stream, int]:
        """A copy of the per-stream counters."""
        with self._lock:
            return dict(self._last)


class SealStream:
    """Sender side of one stream: seals with counters start, start+1, ...; thread-safe."""

    def __init__(
        self, sender: StaticKeys, recipient_id: str, recipient_x25519_pub: bytes, job: str, purpose: str, start: int = 0
    ) -> None:
        self.sender = sender
        self.recipient_id = _text(recipient_id, "recipient id", MAX_ID)
        self.recipient_x25519_pub = bytes(recipient_x25519_pub)
        _pub(self.recipient_x25519_pub, "recipient X25519 key")
        self.job = _text(job, "job id", MAX_ID)
        self.purpose = _text(purpose, "purpose", MAX_PURPOSE)
        self._next = _counter(start)
        self._lock = threading.Lock()

    def seal(self, payload: bytes) -> bytes:
        """Seal the next message of the stream."""
        with self._lock:
            ctr = _counter(self._next)
            self._next += 1
        return seal(self.sender, self.recipient_x25519_pub, self.recipient_id, self.job, self.purpose, payload, ctr)


# --- socket framing ------------------------------------------------------------
def send_frame(sock: Any, data: bytes, max_len: int = DEFAULT_MAX_FRAME) -> None:
    """Send `data` with a 4-byte big-endian length prefix; raises FrameTooLarge above `max_len`."""
    if len(data) > min(max_len, 0xFFFFFFFF):
        raise FrameTooLarge(f"frame of {len(data)} bytes > {min(max_len, 0xFFFFFFFF)}")
    sock.sendall(FRAME_HEADER.pack(len(data)))
    sock.sendall(data)


def _recv_exact(sock: Any, n: int, what: str) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            if got == 0 and what == "header":
                raise PeerClosed("connection closed")
            raise TruncatedFrame(f"connection closed after {got} of {n} {what} bytes")
        got += k
    return bytes(buf)


def recv_frame(sock: Any, max_len: int = DEFAULT_MAX_FRAME) -> bytes:
    """Receive one length-prefixed frame.

    Raises PeerClosed on a clean close before a frame, TruncatedFrame on a close inside
    one, and FrameTooLarge (before reading or allocating the body) above `max_len`.
    After any of these the connection is out of sync and must be closed."""
    head = _recv_exact(sock, FRAME_HEADER.size, "header")
    (n,) = FRAME_HEADER.unpack(head)
    if n > max_len:
        raise FrameTooLarge(f"frame of {n} bytes > {max_len}")
    if n == 0:
        return b""
    return _recv_exact(sock, n, "body")
