"""The communication a job's party program needs: rounds and bytes sent per party, from its shapes alone.

How many rounds the parties run and how many bytes each sends to the others never depend on secret
values: they follow from the published manifest (config, tensor shapes), the number of parties, the
prompt length and the number of steps, exactly as the dealer's plan does (protocol.plan). A client
of a ledger job, which does not take part in the parties' rounds, obtains them here by running the
one party program (protocol.program.party_program) on the same dry session the dealer's plan uses:
one party, openings that return zeros, material of zeros. The figures equal the counters of a real
run of the same job (tests/models/test_cli_infer.py compares them with an in-process run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import torch

from models.publish import manifest_config
from mpc_core.session import Session
# The dealer plan's dry session (zeros for openings and material): the same one, so that what is counted
# here is what the dealer plans for.
from protocol.plan import PLAN_JOB, _DryCommunicator, _PlanDealer
from protocol.program import party_program
from prover.errors import ProverError


class ProgramCountsError(ProverError):
    """The job's shapes do not describe a job (no prompt, no step, fewer than 2 parties)."""


@dataclass(frozen=True)
class ProgramCounts:
    """Rounds and bytes sent per party (to all other parties together) of one job's party program."""

    setup_rounds: int  # before the prompt: masking the weight shares
    setup_bytes_per_party: int
    step_rounds: tuple[int, ...]  # step 0 is the prompt's forward pass, then one per generated token
    step_bytes_per_party: tuple[int, ...]

    @property
    def rounds(self) -> int:
        """Every round of the job (setup and all steps)."""
        return self.setup_rounds + sum(self.step_rounds)

    @property
    def bytes_per_party(self) -> int:
        """Every byte one party sends to the others during the job (setup and all steps)."""
        return self.setup_bytes_per_party + sum(self.step_bytes_per_party)


def program_counts(manifest: Mapping, prompt_len: int, steps: int, n_parties: int | None = None) -> ProgramCounts:
    """The rounds and bytes per party of a job of `manifest`'s model with a prompt of `prompt_len` tokens and
    `steps` steps, for `n_parties` parties (default: the manifest's). Raises ProgramCountsError on shapes no
    job could have."""
    n = int(manifest["n_parties"] if n_parties is None else n_parties)
    if n < 2 or int(prompt_len) < 1 or int(steps) < 1:
        raise ProgramCountsError(f"a job needs 2 or more parties, a prompt and a step, got {n} parties, "
                                 f"{prompt_len} prompt tokens and {steps} steps")
    cfg = manifest_config(manifest)
    party = n - 1
    session = Session(_DryCommunicator(n, party), _PlanDealer(n, party), job=PLAN_JOB,
                      frac_bits=int(manifest["frac_bits"]), record=False)
    weights = {name: torch.zeros((1, *(int(d) for d in meta["shape"])), dtype=torch.int64)
               for name, meta in manifest["tensors"].items()}
    marks: list[tuple[int, int]] = []  # (rounds, bytes) when each step's input was asked for

    def inputs() -> Iterator[torch.Tensor]:
        for i in range(int(steps)):
            marks.append((session.counters.rounds, session.counters.bytes_per_party))
            yield torch.zeros((1, int(prompt_len) if i == 0 else 1, cfg.vocab_size), dtype=torch.int64)

    with torch.no_grad():
        for _ in party_program(session, manifest, weights, inputs()):
            pass
    marks.append((session.counters.rounds, session.counters.bytes_per_party))
    return ProgramCounts(marks[0][0], marks[0][1],
                         tuple(b[0] - a[0] for a, b in zip(marks, marks[1:])),
                         tuple(b[1] - a[1] for a, b in zip(marks, marks[1:])))
