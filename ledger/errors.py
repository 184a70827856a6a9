"""The LedgerError tree: every refusal in ledger/ is one of these, never an assert.

Verifiers (`verify_*`, `check_*`) return bools or reports and never raise on
attacker-controlled input; everything that writes raises one of these and
writes nothing.
"""
from __future__ import annotations


class LedgerError(Exception):
    """Root of all ledger errors."""


# --- entries ---------------------------------------------------------------
class EntryError(LedgerError):
    """An entry is refused."""


class MalformedEntry(EntryError):
    """Truncated, garbage or non-canonical CBOR, or a wrong envelope shape."""


class UnknownKind(EntryError):
    """The entry kind is not one this schema version knows."""


class UnsupportedVersion(EntryError):
    """The entry (or bundle, or database) schema version is not supported."""


class SchemaError(EntryError):
    """A body field is missing, unexpected, or of the wrong type or size."""


class EntryTooLarge(EntryError):
    """The encoded entry exceeds MAX_ENTRY_BYTES; put large payloads in blobs."""


class DuplicateEntry(EntryError):
    """The exact same signed entry is already in the log (replay)."""


class DuplicateJob(EntryError):
    """A `job.open` names a job id that an earlier `job.open` in the log already opened."""


# --- authors and signatures ------------------------------------------------
class AuthError(LedgerError):
    """Authorship cannot be established."""


class BadSignature(AuthError):
    """A signature is missing, malformed or does not verify."""


class UnknownAuthor(AuthError):
    """The author has no registration entry in the log."""


class DuplicateRegistration(AuthError):
    """A node id is already registered."""


class KeyFormatError(AuthError):
    """Key bytes have the wrong length or are not a valid point/scalar."""


# --- checkpoints -----------------------------------------------------------
class CheckpointError(LedgerError):
    """A checkpoint is refused."""


class BadCheckpointSignature(CheckpointError):
    """The checkpoint signature (or a cosignature) does not verify."""


class CheckpointOutOfOrder(CheckpointError):
    """The checkpoint is older than (smaller than) one already accepted."""


class InconsistentCheckpoint(CheckpointError):
    """The checkpoint is not consistent with the log or an earlier checkpoint (kept as evidence)."""


class NoLogKey(CheckpointError):
    """An operation needs the log's signing identity, which this handle does not hold."""


# --- blobs -----------------------------------------------------------------
class BlobError(LedgerError):
    """A blob is refused or cannot be served."""


class BlobMismatch(BlobError):
    """The blob bytes do not hash to the claimed digest."""


class BlobCorrupted(BlobError):
    """Stored blob bytes no longer match their digest (integrity check on read)."""


class BlobNotFound(BlobError):
    """No blob with this digest; entries may refer only to stored blobs."""


class BlobTooLarge(BlobError):
    """The blob exceeds MAX_BLOB_BYTES."""


# --- proofs / reading ------------------------------------------------------
class ProofError(LedgerError):
    """A proof cannot be produced (index or size out of range)."""


class NotFound(LedgerError):
    """A requested entry does not exist."""


# --- storage ---------------------------------------------------------------
class StorageError(LedgerError):
    """The database cannot be used as a ledger."""


class SchemaVersionError(StorageError):
    """The database schema is newer than this code, or was never initialised."""


class LedgerConfigMismatch(StorageError):
    """Opening an existing ledger with a different origin or hash function."""


class LedgerExists(StorageError):
    """`init` found a ledger already there (a ledger is created once)."""


class WriteConflict(StorageError):
    """The store refused a write because a unique key (leaf hash, tree node, registration) already exists."""


# --- evidence --------------------------------------------------------------
class EvidenceError(LedgerError):
    """An evidence bundle cannot be produced."""
