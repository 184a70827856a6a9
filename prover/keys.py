"""A participant's key material and its key file. Formats: specs/keys.md.

One 32-byte seed (from os.urandom) determines three keys:
  - Ed25519 (ledger entry signatures) and BLS12-381 (job-root cosignatures,
    proof-of-possession ciphersuite), both through `ledger.keys.Identity`;
  - X25519 (static key of the private channels, prover/channels.py).

The same type serves nodes, the model owner, the dealer and clients: they
differ only in the roles they register with. The key file is deterministic
CBOR, created with mode 0600, never overwritten, and refused when group or
world can read it.
"""
from __future__ import annotations

import hmac
import os
import re
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blake3 import blake3
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import entries as E
from ledger.keys import Identity
from mpc_core import domains
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.errors import EncodingError
from prover.errors import InvalidNodeId, KeyFileExists, KeyFileFormat, KeyFilePermissions, NodeKeyError

if TYPE_CHECKING:
    from ledger.log import Ledger

KEY_FILE_FORMAT = domains.NODE_KEY_FILE
KEY_FILE_VERSION = 1
KEY_FILE_MODE = 0o600
MAX_KEY_FILE_BYTES = 4096
SEED_BYTES = 32
X25519_PUB = 32
NODE_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_KEY_FILE_FIELDS = {"format", "v", "node_id", "seed", "ed25519", "bls", "x25519"}


def validate_node_id(node_id: Any) -> str:
    """`node_id` if it is 1..128 characters of [A-Za-z0-9._:@-]; raises InvalidNodeId otherwise."""
    if not isinstance(node_id, str) or NODE_ID_RE.fullmatch(node_id) is None:
        raise InvalidNodeId(f"node id {node_id!r} must be 1..128 characters of [A-Za-z0-9._:@-]")
    return node_id


def default_node_id(ed25519_pub: bytes) -> str:
    """The stable default node id of an Ed25519 public key: "node-" + 16 hex of BLAKE3(NODE_ID || pub)."""
    return "node-" + blake3(domains.NODE_ID + bytes(ed25519_pub)).hexdigest()[:16]


def x25519_public_bytes(priv: X25519PrivateKey) -> bytes:
    """Raw 32-byte X25519 public key."""
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class NodeKeys:
    """Ed25519 + BLS12-381 (a `ledger.keys.Identity`) and X25519 keys derived from one seed.

    `repr` shows only the node id and public-key prefixes, never the seed.
    """

    __slots__ = ("identity", "x25519", "x25519_pub")

    def __init__(self, seed: bytes, node_id: str | None = None) -> None:
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise NodeKeyError(f"seed must be {SEED_BYTES} bytes")
        seed = bytes(seed)
        if node_id is not None:
            validate_node_id(node_id)
        ident = Identity(node_id or "node-pending", seed)
        if node_id is None:
            ident.node_id = default_node_id(ident.ed25519_pub)  # the id depends on the key it names
        self.identity: Identity = ident
        self.x25519: X25519PrivateKey = X25519PrivateKey.from_private_bytes(
            blake3(domains.NODE_X25519_SEED + seed).digest()
        )
        self.x25519_pub: bytes = x25519_public_bytes(self.x25519)

    # --- construction ------------------------------------------------------
    @classmethod
    def generate(cls, node_id: str | None = None, seed: bytes | None = None) -> "NodeKeys":
        """Fresh keys from os.urandom (or from `seed`, for tests and reproducible setups)."""
        return cls(os.urandom(SEED_BYTES) if seed is None else seed, node_id)

    # --- public view -------------------------------------------------------
    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def seed(self) -> bytes:
        return bytes(self.identity.seed)

    @property
    def ed25519_pub(self) -> bytes:
        return self.identity.ed25519_pub

    @property
    def bls_pub(self) -> bytes:
        return self.identity.bls_pub

    @property
    def bls_pop(self) -> bytes:
        """BLS proof of possession (computed once, then cached)."""
        return self.identity.bls_pop

    def sign(self, msg: bytes) -> bytes:
        """Ed25519 signature."""
        return self.identity.sign(msg)

    def bls_sign(self, msg: bytes) -> bytes:
        """BLS signature (proof-of-possession ciphersuite)."""
        return self.identity.bls_sign(msg)

    def public(self) -> dict[str, Any]:
        """Node id and public keys, as they appear in the key file and the registration."""
        return {"node_id": self.node_id, "ed25519": self.ed25519_pub, "bls": self.bls_pub, "x25519": self.x25519_pub}

    def __repr__(self) -> str:
        return f"NodeKeys(node_id={self.node_id!r}, ed25519={self.ed25519_pub.hex()[:16]}..., x25519={self.x25519_pub.hex()[:16]}...)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeKeys) and self.node_id == other.node_id and hmac.compare_digest(self.seed, other.seed)

    __hash__ = None  # type: ignore[assignment]

    # --- key file ----------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The key file contents (deterministic CBOR; contains the secret seed)."""
        return canonical_cbor(
            {"format": KEY_FILE_FORMAT, "v": KEY_FILE_VERSION, "seed": self.seed, **self.public()}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "NodeKeys":
        """Parse key-file contents; the stored public keys must match the ones the seed derives."""
        if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_KEY_FILE_BYTES:
            raise KeyFileFormat(f"key file must be at most {MAX_KEY_FILE_BYTES} bytes")
        try:
            obj = decode_cbor(bytes(data))
        except EncodingError as exc:
            raise KeyFileFormat(f"key file is not canonical CBOR: {exc}") from exc
        if not isinstance(obj, dict) or obj.get("format") != KEY_FILE_FORMAT:
            raise KeyFileFormat(f"not a {KEY_FILE_FORMAT} file")
        if obj.get("v") != KEY_FILE_VERSION:
            raise KeyFileFormat(f"key file version {obj.get('v')!r} not supported (this code: {KEY_FILE_VERSION})")
        if set(obj) != _KEY_FILE_FIELDS:
            raise KeyFileFormat(f"key file fields {sorted(map(str, obj))} != {sorted(_KEY_FILE_FIELDS)}")
        seed = obj["seed"]
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise KeyFileFormat(f"key file seed must be {SEED_BYTES} bytes")
        try:
            keys = cls(seed, validate_node_id(obj["node_id"]))
        except NodeKeyError as exc:
            raise KeyFileFormat(f"key file: {exc}") from exc
        for name, value in keys.public().items():
            if obj[name] != value:
                raise KeyFileFormat(f"key file is inconsistent: stored {name} does not match its seed")
        return keys

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file with mode 0600; raises KeyFileExists rather than overwrite anything."""
        data = self.to_bytes()
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), KEY_FILE_MODE)
        except FileExistsError as exc:
            raise KeyFileExists(f"{os.fspath(path)} already exists; refusing to overwrite a key file") from exc
        except OSError as exc:
            raise NodeKeyError(f"cannot create {os.fspath(path)}: {exc.strerror or exc}") from exc
        try:
            os.fchmod(fd, KEY_FILE_MODE)  # umask can only remove bits; make the mode exact anyway
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            fd = -1
            try:
                os.unlink(path)  # we created it (O_EXCL): do not leave a partial key behind
            except OSError:
                pass
            raise NodeKeyError(f"cannot write {os.fspath(path)}: {exc.strerror or exc}") from exc
        finally:
            if fd >= 0:
                os.close(fd)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "NodeKeys":
        """Read a key file; refuses symlinks, non-regular files and any group/other permission bit."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError as exc:
            raise NodeKeyError(f"no key file at {os.fspath(path)}") from exc
        except OSError as exc:
            if os.path.islink(path):
                raise KeyFilePermissions(f"{os.fspath(path)} is a symbolic link; refusing to read a key through it") from exc
            raise NodeKeyError(f"cannot open {os.fspath(path)}: {exc.strerror or exc}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyFilePermissions(f"{os.fspath(path)} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyFilePermissions(
                    f"{os.fspath(path)} has mode {stat.S_IMODE(st.st_mode):04o}; a key file must not be "
                    f"accessible to group or others (chmod 600)"
                )
            chunks: list[bytes] = []
            total = 0
            while total <= MAX_KEY_FILE_BYTES:
                chunk = os.read(fd, MAX_KEY_FILE_BYTES + 1 - total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            raise NodeKeyError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        return cls.from_bytes(b"".join(chunks))


def keygen(path: str | os.PathLike[str], node_id: str | None = None, seed: bytes | None = None) -> NodeKeys:
    """Generate keys (random seed unless given) and write them to a new 0600 key file."""
    keys = NodeKeys.generate(node_id, seed)
    keys.save(path)
    return keys


# --- peers, as registered on the ledger ---------------------------------------
@dataclass(frozen=True)
class PeerKeys:
    """A participant's public keys and endpoint from its `node.register` entry."""

    node_id: str
    index: int
    roles: tuple[str, ...]
    ed25519: bytes
    bls: bytes
    x25519: bytes | None
    endpoint: str | None
    operator: str = ""  # who runs it: the registration's `operator`, else its own node id (set by lookup_peer)


def lookup_peer(ledger: "Ledger", node_id: str) -> PeerKeys | None:
    """The registration of `node_id` on `ledger` (its self-signed `node.register` entry), or None."""
    found = ledger.query(kind=E.REGISTER, author=node_id, limit=1)
    if not found:
        return None
    le = found[0]
    b = le.body
    return PeerKeys(
        node_id=le.author,
        index=le.index,
        roles=tuple(b["roles"]),
        ed25519=b["ed25519"],
        bls=b["bls"],
        x25519=b.get("x25519"),
        endpoint=b.get("endpoint"),
        operator=E.registered_operator(le.entry),
    )


def validate_operator_id(operator: Any) -> str:
    """`operator` if it is an operator id (the same alphabet as node ids: 1..128 characters of
    [A-Za-z0-9._:@-]); raises InvalidNodeId otherwise."""
    if not isinstance(operator, str) or NODE_ID_RE.fullmatch(operator) is None:
        raise InvalidNodeId(f"operator id {operator!r} must be 1..128 characters of [A-Za-z0-9._:@-]")
    return operator


def registration_entry(keys: NodeKeys, roles: tuple[str, ...] = ("node",), endpoint: str | None = None,
                       operator: str | None = None) -> E.Entry:
    """The self-signed `node.register` entry for `keys`: Ed25519, BLS (+ proof of possession), X25519, endpoint,
    and the operator that runs the node if given (None: none declared, the node is its own operator).
    Raises InvalidNodeId for a malformed operator id."""
    if operator is not None:
        validate_operator_id(operator)
    return E.registration(keys.identity, roles=roles, endpoint=endpoint, x25519=keys.x25519_pub, operator=operator)
