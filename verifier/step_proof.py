"""One-step proofs of deviation: the failing step of an opened party, provable on its own.

A full replay names the first step k where a party's committed record differs from the protocol.
When that step is inconsistent in itself (what it sent or output is not what the protocol computes
from its own committed inputs, material and openings), the step alone proves the deviation, and the
evidence needs only (specs/audit.md section 5, "One-step evidence"):

1. the record of step k with its salt and its inclusion proof under the party's `views_root`
   (signed in its job root, tree size `n_steps`);
2. the step's input shares (they must open the record's `in.*` digests) and its public openings
   (they must open its `opened.*` digests);
3. for a fixed_matmul, each referenced mask_weight step (`refs`) the same way, with its opening F;
4. the party's seed (it must open the dealer's `dealer.commit` commitment for the party), and for the
   last party the dealer's correction of each of the step's requests with its inclusion proof under
   the corrections root the party signed;
5. the re-execution (verifier.replay.replay_step): it must differ from the record.

A proof whose step re-executes faithfully proves nothing; a proof that cannot be read is "not
proven" (never an accusation). Format: `encode_step_proof` (canonical CBOR).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ledger import merkle
from mpc_core import prg
from mpc_core.dealer import Request
from mpc_core.encoding import canonical_cbor, decode_cbor
from mpc_core.transcript import StepRecord, tensor_digest
from protocol.commitments import views_leaf
from protocol.opening import corrections_leaf, dec_tensor, decode_records, enc_tensor
from verifier.replay import Finding, capture_inputs, replay_step

STEP_PROOF_TYPE = "shardproof/step-proof"
STEP_PROOF_VERSION = 1


@dataclass
class StepProofCheck:
    proven: bool
    party: int
    step: int
    finding: Finding | None = None
    reason: str = ""


def _leaf_proof(records: list[StepRecord], salts: list[bytes], k: int, cache: dict) -> list[bytes]:
    if "views" not in cache:
        cache["views"] = [views_leaf(r, s) for r, s in zip(records, salts)]
    return merkle.inclusion_proof(cache["views"], k)


def build_step_proof(program: Callable, *, party: int, n_parties: int, job_id: str, seed: bytes,
                     records: list[StepRecord], salts: list[bytes], opened: Callable[[int], dict[str, torch.Tensor]],
                     outs: Callable[[int], torch.Tensor | None], corrections_items: list | None,
                     step: int, frac_bits: int = 16) -> bytes | None:
    """The one-step proof of `party`'s failing step `step` from its opening (records, salts, public values
    by step, matmul outputs by step), the released seed and (last party) the dealer's correction items, or None
    when the step is not inconsistent in itself (its inputs do not follow from the replay's, or it
    re-executes faithfully): then only a full replay proves the deviation. `program` is the party's
    program (as the audit replays it). Never raises."""
    try:
        rec = records[step]
        corr_fn = None
        if party == n_parties - 1:
            if corrections_items is None:
                return None
            corr_fn = _items_fn(corrections_items)
        inputs = capture_inputs(program, party=party, n_parties=n_parties, job=job_id.encode(), seed=seed,
                                records=records, opened=opened, outs=outs, step=step, corrections=corr_fn,
                                frac_bits=frac_bits)
        if inputs is None or not _opens(inputs, rec, "in."):
            return None
        cache: dict = {}
        refs = []
        for j in rec.refs:
            refs.append({"record": records[j].body(), "salt": salts[j], "proof": _leaf_proof(records, salts, j, cache),
                         "public": {n: enc_tensor(t) for n, t in opened(j).items()}})
        proof = {
            "type": STEP_PROOF_TYPE, "v": STEP_PROOF_VERSION, "party": party, "n_steps": len(records),
            "record": rec.body(), "salt": salts[step], "proof": _leaf_proof(records, salts, step, cache),
            "inputs": {n: enc_tensor(t) for n, t in inputs.items()},
            "public": {n: enc_tensor(t) for n, t in opened(step).items()},
            "refs": refs, "seed": bytes(seed),
        }
        if corrections_items is not None and party == n_parties - 1:
            leaves = [corrections_leaf(k, it) for k, it in enumerate(corrections_items)]
            proof["n_corrections"] = len(leaves)
            proof["corrections"] = [{"op": op, "item": corrections_items[op], "proof": merkle.inclusion_proof(leaves, op)}
                                    for op, _ in rec.ops]
        data = canonical_cbor(proof)
    except Exception:  # noqa: BLE001 - attacker-controlled opening: no proof
        return None
    return data


def _items_fn(items: list) -> Callable[[Request, int], dict[str, torch.Tensor]]:
    by_op = items if isinstance(items, dict) else dict(enumerate(items))

    def fetch(req: Request, op_index: int) -> dict[str, torch.Tensor]:
        desc, comps = by_op[op_index]
        if desc != req.describe():
            raise ValueError(f"correction #{op_index} is for {desc}, the step asks {req.describe()}")
        return {k: dec_tensor(v) for k, v in comps.items()}
    return fetch


def _opens(tensors: dict[str, torch.Tensor], rec: StepRecord, prefix: str) -> bool:
    """`tensors` are exactly the record's `prefix` fields, each opening its digest."""
    names = {n for n in rec.digests if n.startswith(prefix)}
    if set(tensors) != names:
        return False
    return all(isinstance(t, torch.Tensor) and t.dtype == torch.int64 and list(t.shape) == rec.shapes[n]
               and tensor_digest(n, t) == rec.digests[n] for n, t in tensors.items())


def step_proof_party(data: bytes) -> int | None:
    """The party a step proof is about (None if unreadable). Never raises."""
    try:
        obj = decode_cbor(bytes(data))
        p = obj.get("party") if isinstance(obj, dict) else None
        return p if isinstance(p, int) and not isinstance(p, bool) else None
    except Exception:  # noqa: BLE001
        return None


def check_step_proof(data: bytes, *, job_id: str, n_parties: int, party: int, views_root: bytes, n_steps: int,
                     seed_commitment: bytes, corrections_root: bytes | None) -> StepProofCheck:
    """Does `data` prove that `party` deviated at one step, against the party's signed `views_root` (of
    `n_steps` leaves), the dealer's `seed_commitment` for it and, for the last party, the `corrections_root`
    it signed? Never raises: anything unreadable or not opening its commitments is "not proven"."""
    out = StepProofCheck(False, party, -1)
    try:
        _check(decode_cbor(bytes(data)), out, job_id, n_parties, party, views_root, n_steps, seed_commitment,
               corrections_root)
    except Exception as exc:  # noqa: BLE001 - attacker-controlled proof
        out.proven, out.reason = False, f"malformed step proof: {type(exc).__name__}: {exc}"
    return out


def _record(body, salt, proof, views_root: bytes, n_steps: int, what: str) -> StepRecord:
    (rec,) = decode_records([body])
    if not isinstance(salt, bytes) or not merkle.verify_inclusion(views_leaf(rec, salt), rec.index, n_steps, proof,
                                                                  views_root):
        raise ValueError(f"{what} (step {rec.index}) is not under the party's signed views root")
    return rec


def _tensors(obj) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise TypeError("tensors must be a map")
    return {str(n): dec_tensor(v) for n, v in obj.items()}


def _check(obj, out: StepProofCheck, job_id: str, n: int, party: int, views_root: bytes, n_steps: int,
           seed_commitment: bytes, corrections_root: bytes | None) -> None:
    if not isinstance(obj, dict) or obj.get("type") != STEP_PROOF_TYPE or obj.get("v") != STEP_PROOF_VERSION:
        raise ValueError(f"not a v{STEP_PROOF_VERSION} {STEP_PROOF_TYPE}")
    if obj.get("party") != party or obj.get("n_steps") != n_steps:
        raise ValueError("the proof is about another party or another job root")
    # 1. the step, committed by the party
    rec = _record(obj["record"], obj["salt"], obj["proof"], views_root, n_steps, "the step")
    out.step = rec.index
    # 2. its inputs and openings open the record's digests
    inputs, public = _tensors(obj["inputs"]), _tensors(obj["public"])
    if not _opens(inputs, rec, "in.") or not _opens(public, rec, "opened."):
        raise ValueError("the inputs or openings do not open the step's committed digests")
    # 3. the referenced mask_weight steps, in the record's order
    refs = obj["refs"]
    if not isinstance(refs, list) or len(refs) != len(rec.refs):
        raise ValueError("the proof's referenced steps are not the record's")
    refs_public = []
    for j, r in zip(rec.refs, refs):
        rr = _record(r["record"], r["salt"], r["proof"], views_root, n_steps, "a referenced step")
        pub = _tensors(r["public"])
        if rr.index != j or rr.kind != "mask_weight" or j >= rec.index or not _opens(pub, rr, "opened."):
            raise ValueError(f"referenced step {j} is not an earlier mask_weight step opening its digests")
        refs_public.append(pub["opened.f"])
    # 4. material: the seed opens the dealer's commitment; the last party's corrections its signed root
    seed = obj["seed"]
    if not isinstance(seed, bytes) or prg.seed_commitment(seed, job_id.encode(), party) != seed_commitment:
        raise ValueError("the seed does not open the dealer's commitment for this party")
    corr = None
    if party == n - 1:
        size, items = obj["n_corrections"], {}
        if corrections_root is None or not isinstance(size, int):
            raise ValueError("the last party's step needs the corrections root it signed")
        for c in obj["corrections"]:
            op = c["op"]
            if not merkle.verify_inclusion(corrections_leaf(op, c["item"]), op, size, c["proof"], corrections_root):
                raise ValueError(f"correction #{op} is not under the corrections root the party signed")
            items[op] = c["item"]
        if sorted(items) != sorted(op for op, _ in rec.ops):
            raise ValueError("the proof's corrections are not the step's requests")
        corr = _items_fn(items)
    # 5. re-execute the step
    res = replay_step(party=party, n_parties=n, job=job_id.encode(), seed=seed, record=rec, n_steps=n_steps,
                      inputs=inputs, public=public, refs_public=refs_public, corrections=corr)
    if res.error is not None:
        out.reason = f"the step could not be re-executed: {res.error}"
    elif res.finding is None:
        out.reason = f"step {rec.index} re-executes faithfully"
    elif not (res.finding.what == "out" or res.finding.what.startswith("sent.")):
        # Only what the party computed counts: the re-execution used the record's own request
        # (binding), inputs and openings, so any other difference is the proof's, not the party's.
        out.reason = f"step {rec.index}: the re-execution differs in {res.finding.what}, which proves nothing"
    else:
        out.proven, out.finding = True, res.finding
        out.reason = (f"step {rec.index} ({rec.kind}, {rec.scope}): committed {res.finding.what} differs from the "
                      f"protocol's result on the committed inputs")
