"""Per-job refresh of the weight shares: a fresh sharing of the same weights, with commitments the owner
computes and the node reproduces (protocol.weight_refresh, prover.owner_service)."""
from __future__ import annotations

import pytest
import torch

from mpc_core import prg
from mpc_core.encoding import decode_cbor
from models import GPTConfig, random_model
from models.publish import commit_tensor, load_party_share, publish_model, read_manifest
from prover.owner_service import refresh_table
from protocol.weight_refresh import refreshed_manifest
from protocol.weight_refresh import RefreshError, job_salts, read_keys, refreshed, write_keys

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)
N = 3


@pytest.fixture(scope="module")
def pub(tmp_path_factory):
    d = tmp_path_factory.mktemp("pub")
    publish_model(random_model(CFG, seed=1), N, d, prg.master_from_int(5, "owner"))
    return d


def _shares(pub, job):
    m = read_manifest(pub)
    return [refreshed(load_party_share(pub, p, m), read_keys(pub / f"party{p}", p, N), job) for p in range(N)]


def test_refreshed_shares_are_a_fresh_sharing_of_the_same_weights(pub):
    m = read_manifest(pub)
    base = [load_party_share(pub, p, m) for p in range(N)]
    a, b = _shares(pub, "job-a"), _shares(pub, "job-b")
    for name in m["tensors"]:
        w = sum(base[p][name] for p in range(N))
        assert torch.equal(sum(a[p][name] for p in range(N)), w) and torch.equal(sum(b[p][name] for p in range(N)), w)
        for p in range(N):  # every party's share changes, and differently per job
            assert not torch.equal(a[p][name], base[p][name]) and not torch.equal(a[p][name], b[p][name])
    # Two audits that open {0, 1} of job a and {1, 2} of job b: the opened shares no longer add up to W.
    name = "transformer.h.0.mlp.c_fc.weight"
    w = sum(base[p][name] for p in range(N))
    assert not torch.equal(a[0][name] + b[1][name] + b[2][name], w)
    assert torch.equal(base[0][name] + base[1][name] + base[2][name], w)  # what fixed shares would reveal


def test_owner_commitments_match_what_each_node_computes(pub):
    m = read_manifest(pub)
    table = refresh_table(pub, "job-a")
    for p, share in enumerate(_shares(pub, "job-a")):
        salts = job_salts(read_keys(pub / f"party{p}", p, N), "job-a", share)
        for name, t in share.items():
            assert table[name][p] == commit_tensor(name, t, salts[name], m["frac_bits"])
    from mpc_core.encoding import canonical_cbor

    rm = refreshed_manifest(m, canonical_cbor(table))
    assert rm["tensors"][name]["commitments"][0] == table[name][0].hex() and rm["model_id"] == m["model_id"]
    assert table != refresh_table(pub, "job-b")
    with pytest.raises(RefreshError):
        refreshed_manifest(m, canonical_cbor({"x": []}))
    assert decode_cbor(canonical_cbor(table)) == table


def test_refresh_keys_are_checked(pub, tmp_path):
    keys = read_keys(pub / "party1", 1, N)
    with pytest.raises(RefreshError):
        read_keys(pub / "party1", 2, N)
    with pytest.raises(RefreshError):
        read_keys(tmp_path, 0, N)
    write_keys(tmp_path, {**keys, "pairs": {"0": keys["pairs"]["0"]}})
    with pytest.raises(RefreshError):
        read_keys(tmp_path, 1, N)
