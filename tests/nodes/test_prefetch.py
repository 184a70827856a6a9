"""The offline/online split, in process: the last party's corrections prefetched in bulk for the job's plan
are bit for bit the online ones (material, transcripts, corrections chain head); requests past the plan
fall back to the online link; a request that contradicts the plan is refused."""
from __future__ import annotations

import logging

import pytest
import torch

from models import GPTConfig, random_model
from models.gpt_mpc import client_reconstruct, share_tokens
from models.publish import load_party_share, manifest_config, publish_model, read_manifest
from mpc_core import prg
from mpc_core.communicator import InProcessCommunicator
from mpc_core.dealer import Dealer, Request, SeededDealerClient, TrustedDealer
from mpc_core.session import Session, input_owner_seed
from protocol.opening import correction_items, corrections_head
from protocol.plan import dealer_plan
from protocol.program import client_loop, party_program
from prover.dealer_service import (PREFETCH_CHUNK, DealerServiceError, Offline, _LoggingDealer, offline_corrections,
                                   prefetch_from_stream)

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
MASTER, JOB = prg.master_from_int(11, "test-prefetch"), b"prefetch-job"
PROMPT, STEPS = [3, 1, 4, 1, 5], 3


class PartyDealers(Dealer):
    """Every party in this process with its own seeded view, as the nodes have it: the last party's
    corrections come from `fetch` (the prefetched store)."""

    def __init__(self, trusted: TrustedDealer, fetch):
        n = trusted.n_parties
        self.n_parties, self.local_parties = n, tuple(range(n))
        self.views = [SeededDealerClient(p, n, JOB, trusted.party_seed(p), fetch if p == n - 1 else None)
                      for p in range(n)]

    def get(self, req, op_index):
        parts = [v.get(req, op_index) for v in self.views]
        return {k: torch.cat([m[k] for m in parts]) for k in parts[0]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("prefetch-model")
    publish_model(random_model(CFG, seed=9), 3, d, prg.master_from_int(1, "owner"))
    return d


def run(model_dir, dealer: Dealer) -> tuple[list[int], Session]:
    """A recorded in-process job of the one party program and client loop on `dealer`."""
    manifest = read_manifest(model_dir)
    n, vocab = manifest["n_parties"], manifest_config(manifest).vocab_size
    session = Session(InProcessCommunicator(n), dealer, job=JOB, frac_bits=manifest["frac_bits"],
                      input_seed=input_owner_seed(MASTER, JOB))
    shares = [load_party_share(model_dir, p, manifest) for p in range(n)]
    weights = {name: torch.stack([s[name] for s in shares]) for name in manifest["tensors"]}
    fed: list[torch.Tensor] = []
    program = party_program(session, manifest, weights, iter(fed.pop, None))

    def step(feed, i):
        fed.append(share_tokens(session, feed, vocab))
        return client_reconstruct(next(program))

    tokens = list(client_loop(PROMPT, STEPS, step))
    program.close()
    return tokens, session


def digests(session: Session) -> list:
    return [[(r.index, r.kind, sorted(r.digests.items())) for r in t.records] for _, t in sorted(session.transcripts.items())]


def test_prefetched_corrections_are_the_online_ones(model_dir, caplog):
    trusted = TrustedDealer(MASTER, JOB, 3)
    ref_tokens, ref = run(model_dir, trusted)  # today's in-process dealer: the reference
    plan = dealer_plan(read_manifest(model_dir), len(PROMPT), STEPS)
    assert [r for _, r in plan] == ref.request_log
    offline = offline_corrections(TrustedDealer(MASTER, JOB, 3), plan)
    online_calls = []

    def online(req, k):
        online_calls.append(k)
        return trusted.correction(req, k)

    store = prefetch_from_stream(offline.stream, offline.requests_bytes, online, "prefetch-job")
    with caplog.at_level(logging.WARNING, logger="shardproof.dealer"):
        tokens, s = run(model_dir, PartyDealers(trusted, store))
    assert tokens == ref_tokens
    assert digests(s) == digests(ref)  # transcripts, hence job roots, unchanged
    assert store.used == len(plan) and online_calls == [] and not caplog.records
    # The chain head the last party commits to is the one the dealer's release reproduces.
    assert store.head == corrections_head(correction_items(trusted, ref.request_log))


def test_requests_past_the_plan_fall_back_online(model_dir, caplog):
    trusted = TrustedDealer(MASTER, JOB, 3)
    ref_tokens, ref = run(model_dir, trusted)
    plan = dealer_plan(read_manifest(model_dir), len(PROMPT), STEPS)
    half = len(plan) // 2
    offline = offline_corrections(TrustedDealer(MASTER, JOB, 3), plan[:half])
    served = _LoggingDealer(TrustedDealer(MASTER, JOB, 3), offline.requests)  # the dealer's side of the link
    store = prefetch_from_stream(offline.stream, offline.requests_bytes, served.correction, "prefetch-job")
    with caplog.at_level(logging.WARNING, logger="shardproof.dealer"):
        tokens, s = run(model_dir, PartyDealers(trusted, store))
    assert tokens == ref_tokens and digests(s) == digests(ref)
    assert store.online_requests == len(plan) - half == served.online
    assert any("past the dealer's plan" in r.getMessage() for r in caplog.records)
    served.close(store.used)
    assert served.log == [r.describe() for r in ref.request_log]
    assert store.head == corrections_head(correction_items(trusted, ref.request_log))


def test_a_request_that_contradicts_the_plan_is_refused(model_dir):
    trusted = TrustedDealer(MASTER, JOB, 3)
    plan = dealer_plan(read_manifest(model_dir), len(PROMPT), STEPS)
    k = next(i for i, (_, r) in enumerate(plan) if r.kind == "trunc")
    shape, m = plan[k][1].params
    changed = plan[:k] + [(k, Request("trunc", (shape, 3 if m != 3 else 4)))] + plan[k + 1:]
    offline = offline_corrections(trusted, changed)
    store = prefetch_from_stream(offline.stream, offline.requests_bytes, trusted.correction, "j")
    with pytest.raises(DealerServiceError, match="differs from the dealer's plan"):
        run(model_dir, PartyDealers(trusted, store))
    # ... and the dealer never answers online an op whose correction it already delivered.
    served = _LoggingDealer(trusted, offline.requests)
    with pytest.raises(DealerServiceError, match="out of order"):
        served.correction(plan[k][1], k)


def test_prefetch_stream_bad_input():
    trusted = TrustedDealer(MASTER, JOB, 3)
    plan = [(0, Request("beaver", ((2, 3), (2, 3)))), (1, Request("and", ((4,),)))]
    off = offline_corrections(trusted, plan)
    assert off.corrections_bytes == 8 * (6 + 4) and off.header()["messages"] == 1
    good = prefetch_from_stream(off.stream, off.requests_bytes)
    with pytest.raises(DealerServiceError, match="out of order"):
        good(plan[1][1], 1)
    with pytest.raises(DealerServiceError):  # a payload shorter than the plan needs
        prefetch_from_stream(off.stream[:-8], off.requests_bytes)
    with pytest.raises(DealerServiceError):  # garbage where the plan should be
        prefetch_from_stream(b"\xff" * 40, 10)
    with pytest.raises(DealerServiceError):  # a plan with an unknown kind
        from mpc_core.encoding import canonical_cbor
        head = canonical_cbor([["nope", [[1]]]])
        prefetch_from_stream(head, len(head))
    with pytest.raises(DealerServiceError, match="no online link"):
        s = prefetch_from_stream(off.stream, off.requests_bytes)
        s(plan[0][1], 0), s(plan[1][1], 1)
        s(plan[0][1], 2)
    with pytest.raises(DealerServiceError):
        offline_corrections(trusted, [(1, plan[0][1])])  # a plan must start at op 0 and be contiguous
    big = Offline([], bytes(PREFETCH_CHUNK + 1), 0)
    assert big.header()["messages"] == 2 and [len(c) for c in big.chunks()] == [PREFETCH_CHUNK, 1]
    served = _LoggingDealer(trusted, off.requests)
    for bad in (-1, 3, True, "2"):
        with pytest.raises(DealerServiceError):
            served.close(bad)
    served.close(1)
    assert served.log == off.requests[:1]
