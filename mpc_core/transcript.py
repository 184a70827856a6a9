"""Per-party transcripts: a deterministic record of every protocol step.

Each step of each party gets a record (index, kind, scope, shapes, digests of
its input shares, messages sent, public values opened and output share). The
record is small; the tensors themselves can be spilled to an append-only file
on disk so a node can open any step later with bounded memory. Digests are
BLAKE3 over a domain tag, the name and shape (canonical CBOR) and the tensor's
little-endian bytes (specs/transcript.md).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import numpy as np
import torch

from mpc_core.domains import TRANSCRIPT_STEP, TRANSCRIPT_TENSOR
from mpc_core.encoding import canonical_cbor
from mpc_core.errors import TranscriptError


def tensor_digest(name: str, t: torch.Tensor) -> bytes:
    """BLAKE3(TRANSCRIPT_TENSOR || cbor([name, shape]) || int64-le bytes)."""
    if t.dtype != torch.int64:
        raise TranscriptError(f"transcript tensors are int64, {name} is {t.dtype}")
    return _digest_of(name, _le_array(t))


@functools.lru_cache(maxsize=8192)
def _digest_prefix(name: str, shape: tuple[int, ...]) -> bytes:
    """TRANSCRIPT_TENSOR || canonical_cbor([name, shape]): a job has a few hundred (name, shape) pairs."""
    return TRANSCRIPT_TENSOR + canonical_cbor([name, list(shape)])


def _le_array(t: torch.Tensor) -> np.ndarray:
    """The tensor's values as a C-contiguous little-endian int64 array (no copy when it already is one)."""
    if t.device.type == "cpu" and not t.requires_grad:
        arr = t.numpy() if t.is_contiguous() else t.contiguous().numpy()
    else:
        arr = np.ascontiguousarray(t.detach().cpu().numpy())
    return arr.astype("<i8", copy=False)


def _digest_of(name: str, arr: np.ndarray) -> bytes:
    h = blake3.blake3(_digest_prefix(name, tuple(arr.shape)))
    h.update(_raw(arr))
    return h.digest()


def _raw(arr: np.ndarray) -> memoryview | bytes:
    """The array's bytes without a copy where the buffer protocol allows (not for 0-d or empty arrays)."""
    return memoryview(arr).cast("B") if arr.ndim and arr.size else arr.tobytes()


@dataclass
class StepRecord:
    """One protocol step of one party."""

    index: int
    kind: str
    scope: str
    shapes: dict[str, list[int]]
    digests: dict[str, bytes]
    offsets: dict[str, int] = field(default_factory=dict, repr=False)
    # What the step computed from besides its tensors: the dealer requests it used, as [op index,
    # Request.describe()] in op order, and the earlier steps whose public values it used (the
    # mask_weight steps that opened a fixed-masked weight). With them a step can be re-executed alone.
    ops: list = field(default_factory=list)
    refs: list[int] = field(default_factory=list)

    def body(self) -> list:
        """The canonical content of the record (what its digest covers)."""
        names = sorted(self.digests)
        return [self.index, self.kind, self.scope, [[n, self.shapes[n], self.digests[n]] for n in names],
                [self.ops, self.refs]]

    def digest(self) -> bytes:
        return blake3.blake3(TRANSCRIPT_STEP + canonical_cbor(self.body())).digest()


class Transcript:
    """The ordered step records of one party, optionally with tensors spilled to disk."""

    def __init__(self, party: int, store_dir: str | os.PathLike | None = None):
        self.party = party
        self.records: list[StepRecord] = []
        self._index: dict[int, int] = {}  # step index -> position in self.records (see _find)
        self._indexed: tuple[int, int] = (id(self.records), 0)  # (id, length) of the list _index describes
        self._chain = blake3.blake3(TRANSCRIPT_STEP + canonical_cbor(["chain", party])).digest()
        self._file = None
        self.path: Path | None = None
        if store_dir is not None:
            d = Path(store_dir)
            d.mkdir(parents=True, exist_ok=True)
            self.path = d / f"party{party}.steps.bin"
            self._file = open(self.path, "ab+")

    @classmethod
    def reopen(cls, party: int, store_dir: str | os.PathLike, records: list[StepRecord]) -> "Transcript":
        """The transcript of a finished job, reopened from its spill directory and its kept records
        (with their spill offsets): `load` reads its step tensors back; new steps append."""
        t = cls(party, store_dir)
        for rec in records:
            if t.records and rec.index <= t.records[-1].index:
                t.close()
                raise TranscriptError(f"party {party}: step index {rec.index} after {t.records[-1].index}")
            t._index.setdefault(rec.index, len(t.records))
            t.records.append(rec)
            t._chain = blake3.blake3(t._chain + rec.digest()).digest()
        t._indexed = (id(t.records), len(t.records))
        return t

    def record(self, index: int, kind: str, scope: str, tensors: dict[str, torch.Tensor], ops: list | None = None,
               refs: list[int] | None = None) -> StepRecord:
        """Append one step; `tensors` maps names (in.*, sent, opened, out) to this party's tensors; `ops`
        and `refs` as in StepRecord."""
        if self.records and index <= self.records[-1].index:
            raise TranscriptError(f"party {self.party}: step index {index} after {self.records[-1].index}")
        for n, t in tensors.items():
            if t.dtype != torch.int64:
                raise TranscriptError(f"transcript tensors are int64, {n} is {t.dtype}")
        arrays = {n: _le_array(t) for n, t in tensors.items()}
        shapes = {n: list(a.shape) for n, a in arrays.items()}
        digests = {n: _digest_of(n, a) for n, a in arrays.items()}
        rec = StepRecord(index, kind, scope, shapes, digests, ops=list(ops or []), refs=list(refs or []))
        if self._file is not None:
            for n in sorted(arrays):
                rec.offsets[n] = self._file.seek(0, os.SEEK_END)
                self._file.write(_raw(arrays[n]))
        if self._indexed == (id(self.records), len(self.records)):
            self._index.setdefault(index, len(self.records))
            self._indexed = (id(self.records), len(self.records) + 1)
        self.records.append(rec)
        self._chain = blake3.blake3(self._chain + rec.digest()).digest()
        return rec

    def chain_digest(self) -> bytes:
        """Hash chain over all record digests so far (cheap equality check of whole transcripts)."""
        return self._chain

    def digests(self) -> list[bytes]:
        return [r.digest() for r in self.records]

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """The tensors of step `index`, read back from disk and checked against the record."""
        if self._file is None:
            raise TranscriptError("this transcript keeps digests only (no store_dir)")
        rec = self._find(index)
        if rec is None:
            raise TranscriptError(f"party {self.party} has no step {index}")
        self._file.flush()
        out = {}
        for n, off in rec.offsets.items():
            shape = rec.shapes[n]
            count = int(np.prod(shape)) if shape else 1
            self._file.seek(off)
            raw = self._file.read(8 * count)
            t = torch.from_numpy(np.frombuffer(raw, dtype="<i8").reshape(shape).copy())
            if tensor_digest(n, t) != rec.digests[n]:
                raise TranscriptError(f"party {self.party} step {index}: stored {n} does not match its digest")
            out[n] = t
        return out

    def _find(self, index: int) -> StepRecord | None:
        """The first record with step index `index` (None if there is none), through a position map
        that follows appends and a reassigned `records` list."""
        recs = self.records
        pos = self._index.get(index) if self._indexed == (id(recs), len(recs)) else None
        if pos is not None and pos < len(recs) and recs[pos].index == index:
            return recs[pos]
        by_index: dict[int, int] = {}
        for pos, r in enumerate(recs):
            by_index.setdefault(r.index, pos)
        self._index, self._indexed = by_index, (id(recs), len(recs))
        pos = by_index.get(index)
        return None if pos is None else recs[pos]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
