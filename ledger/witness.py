"""Witnesses: independent parties that cosign the log's checkpoints once they have checked them
(RFC 9162 section 8.2, the split-view defence; the C2SP tlog-witness role, over the ledger itself).

Recipe of one witness step (`witness_step`):
  1. Read the latest checkpoint the log signed. Skip it if it is the one already cosigned.
  2. Check it with `checkpoints.Witness.cosign`: signed by the pinned log key, the pinned origin,
     not smaller than the last cosigned size, and consistent with the last cosigned (size, root)
     through the consistency proof the log serves (RFC 9162 section 2.1.4.2). A failure is a
     `CheckpointError`: the witness refuses, keeps its state, and the operator sees why.
  3. Append a `checkpoint.cosign` entry {size, root, sig} signed by the witness's registered key
     (role "witness"), then persist (size, root) in the witness's state file, so that a restarted
     witness never cosigns a view inconsistent with what it cosigned before.

Recipe of collection by the log operator (`collect_cosignatures`, run by `shardproof ledger serve`):
  1. Read the cosign entries appended since the last collection.
  2. Count one only if its author is registered with the role "witness", its (size, root) is a
     checkpoint the log stored, and its BLS signature verifies under the author's registered key
     (`checkpoints.add_cosignature` checks it).
  3. Store the checkpoint with the cosignature aggregated (`Ledger.add_cosignature`): readers then
     get it from `checkpoint_at(size)` and can demand a quorum of witnesses
     (`SignedCheckpoint.verify(log_key, witnesses, quorum)`).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ledger import entries as E
from ledger.checkpoints import SignedCheckpoint, Witness, add_cosignature
from ledger.errors import CheckpointError, LedgerError
from ledger.keys import Identity

log = logging.getLogger("shardproof.witness")

WITNESS_ROLE = "witness"


@dataclass
class WitnessState:
    """What a witness remembers: the log it watches (origin, pinned BLS key) and the last (size, root) it cosigned."""

    origin: str
    log_key: bytes
    size: int = 0
    root: bytes | None = None

    def to_json(self) -> str:
        return json.dumps({"origin": self.origin, "log_key": self.log_key.hex(), "size": self.size,
                           "root": self.root.hex() if self.root is not None else None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "WitnessState":
        """Parse a state file; raises CheckpointError on anything malformed."""
        try:
            obj = json.loads(text)
            root = obj["root"]
            st = cls(str(obj["origin"]), bytes.fromhex(obj["log_key"]), int(obj["size"]),
                     bytes.fromhex(root) if root is not None else None)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"malformed witness state: {exc}") from exc
        if st.size < 0 or (st.size > 0) != (st.root is not None):
            raise CheckpointError("malformed witness state: size and root disagree")
        return st

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WitnessState":
        return cls.from_json(Path(path).read_text())

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (a crash leaves the old state or the new one, never half of one)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, p)


def witness_step(led, identity: Identity, state: WitnessState) -> SignedCheckpoint | None:
    """Cosign the log's latest checkpoint if it is new and checks out (module recipe); returns it, or
    None when there was nothing new. Raises CheckpointError when the log's checkpoint fails a check
    (the state is left as it was)."""
    scp = led.latest_checkpoint()
    if scp is None or (scp.size == state.size and scp.root == state.root):
        return None
    w = Witness(identity, state.log_key, state.origin)
    w.size, w.root = state.size, state.root
    proof = led.consistency_proof(state.size, scp.size) if state.root is not None and scp.size >= state.size else []
    sig = w.cosign(scp, proof)
    led.append(E.make_entry(identity, E.COSIGN, {"size": scp.size, "root": scp.root, "sig": sig}))
    state.size, state.root = scp.size, scp.root
    return scp


def collect_cosignatures(led, start: int) -> tuple[int, int]:
    """Aggregate the valid cosign entries at indexes >= `start` into the stored checkpoints (module
    recipe); returns (cosignatures added, the index to start from next time). Never raises on what a
    witness wrote: an invalid cosignature is logged and skipped."""
    added = 0
    entries = led.by_kind(E.COSIGN, start)
    for le in entries:
        body = le.entry.body
        reg = led.registration(le.author)
        if reg is None or WITNESS_ROLE not in _roles(led, reg):
            log.warning("cosign entry #%d: %r is not a registered witness; ignored", le.index, le.author)
            continue
        scp = led.checkpoint_at(body["size"])
        if scp is None or scp.root != body["root"]:
            log.warning("cosign entry #%d: no stored checkpoint (%d, %s); ignored", le.index, body["size"],
                        body["root"].hex()[:16])
            continue
        if reg.bls in scp.signers:
            continue
        try:
            led.add_cosignature(add_cosignature(scp, reg.bls, body["sig"]))
        except (CheckpointError, LedgerError) as exc:
            log.warning("cosign entry #%d by %s: %s; ignored", le.index, le.author, exc)
            continue
        added += 1
    nxt = (entries[-1].index + 1) if entries else start
    return added, nxt


def _roles(led, reg) -> list[str]:
    return list(led.get(reg.index).entry.body.get("roles", []))
