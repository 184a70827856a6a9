"""The audit challenge: one derivation, from the sealing checkpoint and the participants' beacons.

specs/audit.md section 2. Every job participant (the node of every share index and the job's
dealer) commits to a random beacon value before the job is sealed and reveals it after:

1. Commit. Participant k draws r_k (32 bytes; a node derives it from its per-job secret, the
   dealer from its per-job master seed) and publishes
       beacon_k = BLAKE3(CHALLENGE_BEACON || canonical_cbor([job_id, slot_k, r_k]))
   inside the entry that fixes its part of the job (`node.job_root` of party i: slot i;
   `dealer.commit`: slot "dealer").
2. Seal. The sealing checkpoint is the first signed checkpoint (under the pinned log key) whose
   size covers every job root and the dealer's commitment.
3. Reveal. After the seal each participant posts `challenge.reveal` with r_k. A reveal counts
   only from the participant entitled to it (protocol.job_view) and only if it opens beacon_k.
4. Derive. With every reveal present,
       seed   = BLAKE3(CHALLENGE || canonical_cbor([job_id, size, root, [job_root_0..job_root_{N-1}],
                                                    [r_0..r_{N-1}, r_dealer]]))
       closed = C[uint64_le(seed[0:8]) mod |C|]   the one share index never opened, where C is the
                                                  indices whose replicas' sealed roots agree (all N
                                                  without replicas or when every index diverges)
       opened = every other index, ascending      (at most N-1: the audit privacy budget)
   A divergent index (specs/node-daemon.md section 7) is therefore always opened, and each of its
   replicas answers with its own opening: the audit names the one that deviated, while one index
   stays closed. Diverging never helps a cheater: it forces its own index open.

Why it cannot be ground: r_k is fixed (by beacon_k) before the seal, and the seal fixes every
commitment; the seed is then a function of values each participant chose before seeing any
other participant's r. A coalition that lacks one honest participant does not know that
participant's r before its own commitments are fixed, so it cannot predict or choose the closed
index (BLAKE3 modelled as a random oracle). What remains (residual bias): the last participant
to reveal learns the challenge before revealing and may withhold; withholding is attributable
("defaulted", specs/audit.md section 6) and counts as a proven deviation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import blake3

from mpc_core import prg
from mpc_core.domains import CHALLENGE, CHALLENGE_BEACON
from mpc_core.encoding import canonical_cbor

DEALER_SLOT = "dealer"
BEACON_BYTES = 32


def beacon_value(secret: bytes, job_id: str, slot: int | str) -> bytes:
    """A participant's beacon value r_k, derived from a per-job secret it keeps (so a restart can reveal it)."""
    return prg.stream_bytes(secret, job_id.encode(), f"beacon:{slot}", 0, CHALLENGE_BEACON.decode(), BEACON_BYTES)


def beacon_commitment(job_id: str, slot: int | str, value: bytes) -> bytes:
    """beacon_k = BLAKE3(CHALLENGE_BEACON || canonical_cbor([job_id, slot, r_k])) (step 1)."""
    return blake3.blake3(CHALLENGE_BEACON + canonical_cbor([job_id, slot, bytes(value)])).digest()


def opens(job_id: str, slot: int | str, value: bytes, commitment: bytes) -> bool:
    """Does `value` open the participant's beacon commitment? Never raises."""
    try:
        return len(value) == BEACON_BYTES and beacon_commitment(job_id, slot, value) == bytes(commitment)
    except Exception:  # noqa: BLE001 - attacker-controlled input
        return False


def challenge_seed(job_id: str, checkpoint_size: int, checkpoint_root: bytes, job_roots: Sequence[bytes],
                   reveals: Sequence[bytes]) -> bytes:
    """Step 4: the seed, from the sealing checkpoint, the job roots by party and the reveals
    (party 0..N-1, then the dealer's)."""
    return blake3.blake3(CHALLENGE + canonical_cbor(
        [job_id, int(checkpoint_size), bytes(checkpoint_root), [bytes(r) for r in job_roots],
         [bytes(r) for r in reveals]])).digest()


def closed_index(seed: bytes, n_parties: int, divergent: Sequence[int] = ()) -> int:
    """The one share index the audit leaves unopened (never a divergent one, unless all are)."""
    candidates = [p for p in range(n_parties) if p not in set(divergent)] or list(range(n_parties))
    return candidates[int.from_bytes(seed[:8], "little") % len(candidates)]


@dataclass(frozen=True)
class Challenge:
    """A derived challenge: the seed, the closed index, and the sealing checkpoint it came from."""

    job_id: str
    n_parties: int
    checkpoint_size: int
    checkpoint_root: bytes
    seed: bytes
    divergent: tuple[int, ...] = ()  # indices whose replicas' sealed roots differ (never closed)

    @property
    def closed(self) -> int:
        return closed_index(self.seed, self.n_parties, self.divergent)

    @property
    def opened(self) -> list[int]:
        return [p for p in range(self.n_parties) if p != self.closed]


def derive(job_id: str, n_parties: int, checkpoint_size: int, checkpoint_root: bytes, job_roots: Sequence[bytes],
           reveals: Sequence[bytes], divergent: Sequence[int] = ()) -> Challenge:
    """The job's challenge (steps 2-4), given the sealing checkpoint, the job roots, the reveals and the
    indices whose replicas diverged before the seal."""
    seed = challenge_seed(job_id, checkpoint_size, checkpoint_root, job_roots, reveals)
    return Challenge(job_id, n_parties, int(checkpoint_size), bytes(checkpoint_root), seed,
                     tuple(sorted(set(int(p) for p in divergent))))
