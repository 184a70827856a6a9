"""The dealer plan (protocol.plan) is exactly the sequence of requests a real job makes."""
from __future__ import annotations

import pytest
import torch

from models import TINY_MODEL_DIR, GPTConfig, load_checkpoint, random_model
from models.errors import ModelError
from models.gpt_mpc import client_reconstruct, share_tokens
from models.publish import load_party_share, manifest_config, publish_model, read_manifest
from mpc_core import prg
from mpc_core.communicator import InProcessCommunicator
from mpc_core.dealer import Dealer, TrustedDealer
from mpc_core.session import Session, input_owner_seed
from protocol.errors import ProtocolError
from protocol.plan import dealer_plan
from protocol.program import client_loop, party_program

CFG = GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=40, block_size=16)


class RecordingDealer(Dealer):
    """A TrustedDealer that records every (op index, request) it answers."""

    def __init__(self, inner: TrustedDealer):
        self.inner, self.n_parties, self.local_parties = inner, inner.n_parties, inner.local_parties
        self.seen: list = []

    def get(self, req, op_index):
        self.seen.append((op_index, req))
        return self.inner.get(req, op_index)

    def seed_commitments(self):
        return self.inner.seed_commitments()


def run_recorded_job(model_dir, prompt_ids: list[int], steps: int, temperature: float) -> tuple[list, list[int], Session]:
    """A real in-process job (the one party program, the one client loop) whose dealer records its requests."""
    manifest = read_manifest(model_dir)
    n, vocab = manifest["n_parties"], manifest_config(manifest).vocab_size
    master, job = prg.master_from_int(7, "test-plan"), b"plan-job"
    dealer = RecordingDealer(TrustedDealer(master, job, n))
    session = Session(InProcessCommunicator(n), dealer, job=job, frac_bits=manifest["frac_bits"], record=False,
                      input_seed=input_owner_seed(master, job))
    shares = [load_party_share(model_dir, p, manifest) for p in range(n)]
    weights = {name: torch.stack([s[name] for s in shares]) for name in manifest["tensors"]}
    fed: list[torch.Tensor] = []
    program = party_program(session, manifest, weights, iter(fed.pop, None))

    def step(feed: list[int], i: int) -> torch.Tensor:
        fed.append(share_tokens(session, feed, vocab))
        return client_reconstruct(next(program))

    tokens = list(client_loop(prompt_ids, steps, step, temperature=temperature, seed=3))
    program.close()
    return dealer.seen, tokens, session


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan-model")
    publish_model(random_model(CFG, seed=5), 3, d, prg.master_from_int(1, "owner"))
    return d


@pytest.mark.parametrize("prompt_len,steps,temperature", [(1, 1, 0.0), (5, 3, 0.0), (9, 4, 1.0)])
def test_plan_equals_the_requests_of_a_real_job(small_model, prompt_len, steps, temperature):
    gen = torch.Generator().manual_seed(prompt_len)
    prompt = torch.randint(0, CFG.vocab_size, (prompt_len,), generator=gen).tolist()
    seen, tokens, session = run_recorded_job(small_model, prompt, steps, temperature)
    assert len(tokens) == steps
    plan = dealer_plan(read_manifest(small_model), prompt_len, steps)
    assert plan == seen
    assert [r for _, r in plan] == session.request_log
    assert [k for k, _ in plan] == list(range(len(plan)))


def test_plan_differs_with_prompt_length_and_steps_and_is_a_prefix_in_steps(small_model):
    manifest = read_manifest(small_model)
    a, b, c = dealer_plan(manifest, 4, 2), dealer_plan(manifest, 4, 3), dealer_plan(manifest, 5, 2)
    assert len(a) < len(b) and b[:len(a)] == a  # one more step only appends requests
    assert a != c


@pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").is_file(), reason="no shipped model")
def test_plan_of_the_shipped_model(tmp_path):
    publish_model(load_checkpoint(TINY_MODEL_DIR), 3, tmp_path, prg.master_from_int(1, "owner"))
    seen, _, _ = run_recorded_job(tmp_path, [5, 17, 3, 200, 11, 9], 2, 0.0)
    assert dealer_plan(read_manifest(tmp_path), 6, 2) == seen


def test_plan_bad_input(small_model):
    manifest = read_manifest(small_model)
    for prompt_len, steps, n in ((0, 1, None), (3, 0, None), (3, 1, 1)):
        with pytest.raises(ProtocolError):
            dealer_plan(manifest, prompt_len, steps, n)
    with pytest.raises(ModelError):  # the program's own refusal: a context longer than the model's
        dealer_plan(manifest, CFG.block_size, 2)
