"""The dealer plan of a job: every material request its party program will make, in op order.

Which material a party asks the dealer for (kind and shapes, mpc_core.dealer.Request) and in what
order never depends on secret values: it follows from the model's manifest (config, tensor shapes,
frac_bits), the number of parties, the prompt length and the number of steps. `dealer_plan` obtains
that sequence by running the ONE party program (protocol.program.party_program) on a dry session:
one party, a communicator that "opens" zeros and a dealer that hands out zeros of the right shapes
while recording every request. The dealer precomputes the last party's corrections for the plan in
its offline phase (specs/dealer.md, "Offline and online"); a program that ever asks for something
else is not wrong, only slower: the last party fetches that request online.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import torch

from models.publish import manifest_config
from mpc_core.communicator import Communicator
from mpc_core.dealer import Dealer, Request, kind_spec
from mpc_core.session import Session
from protocol.errors import ProtocolError
from protocol.program import run_party_program

PLAN_JOB = b"shardproof/dealer-plan"  # the dry session's job id (no PRG is ever expanded under it)

Plan = list[tuple[int, Request]]


class _DryCommunicator(Communicator):
    """One local party; every opening returns zeros from all N parties (no message leaves)."""

    def __init__(self, n_parties: int, party: int):
        self.n_parties, self.local_parties = n_parties, (party,)

    def all_gather(self, local: torch.Tensor) -> torch.Tensor:
        return local.new_zeros((self.n_parties,) + tuple(local.shape[1:]))


class _PlanDealer(Dealer):
    """Hands out zeros of every component's shape and records each request with its op index."""

    def __init__(self, n_parties: int, party: int):
        self.n_parties, self.local_parties = n_parties, (party,)
        self.requests: Plan = []
        self._fixed: dict = {}  # fixed-stream components are read-only views in the real dealer too

    def get(self, req: Request, op_index: int) -> dict[str, torch.Tensor]:
        spec = kind_spec(req)  # raises DealerError on a malformed request, as the real dealer would
        self.requests.append((op_index, req))
        out = {}
        for c in spec.randoms + spec.derived:
            if c.fixed_key is not None:
                key = (c.fixed_key, c.name, c.shape)
                if key not in self._fixed:
                    self._fixed[key] = torch.zeros((1,) + c.shape, dtype=torch.int64)
                out[c.name] = c.apply_narrow(self._fixed[key], offset=1)
            else:
                out[c.name] = torch.zeros((1,) + c.out_shape, dtype=torch.int64)
        return out

    def seed_commitments(self) -> list[bytes]:
        return []


def dealer_plan(manifest: Mapping, prompt_len: int, max_new_tokens: int, n_parties: int | None = None) -> Plan:
    """Every dealer request [(op_index, Request), ...] of a job of `manifest`'s model with a prompt of
    `prompt_len` tokens and `max_new_tokens` steps (the prompt's forward pass, then one token per step,
    as protocol.program.client_loop feeds them), for `n_parties` parties (default: the manifest's).

    A pure function of its arguments: no secret, seed or weight value enters it. Raises ProtocolError
    on arguments no job could have (and whatever the program raises on a malformed manifest)."""
    n = int(manifest["n_parties"] if n_parties is None else n_parties)
    if n < 2:
        raise ProtocolError(f"a job needs at least 2 parties, got {n}")
    cfg = manifest_config(manifest)
    if int(prompt_len) < 1 or int(max_new_tokens) < 1:
        raise ProtocolError(f"a job needs a prompt and at least one step, got {prompt_len} and {max_new_tokens}")
    party = n - 1  # the party whose corrections the plan is for; every party makes the same requests
    dealer = _PlanDealer(n, party)
    session = Session(_DryCommunicator(n, party), dealer, job=PLAN_JOB, frac_bits=int(manifest["frac_bits"]),
                      record=False)
    weights = {name: torch.zeros((1, *(int(d) for d in meta["shape"])), dtype=torch.int64)
               for name, meta in manifest["tensors"].items()}

    def inputs() -> Iterator[torch.Tensor]:
        for i in range(int(max_new_tokens)):
            yield torch.zeros((1, int(prompt_len) if i == 0 else 1, cfg.vocab_size), dtype=torch.int64)

    with torch.no_grad():
        run_party_program(session, manifest, weights, inputs())
    return dealer.requests
