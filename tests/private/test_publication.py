"""Model publication: shares reconstruct the weights, commitments catch tampering, the shared model runs."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mpc_core import Session, decode
from mpc_core.prg import master_from_int
from prover.errors import CheckpointError
from models import GPTConfig, random_model
from models.gpt_mpc import client_reconstruct, share_tokens
from models.publish import (ShareVerificationError, load_party_share, load_shared_model, publish_model,
                                   read_manifest)

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=50, block_size=16)


@pytest.fixture()
def published(tmp_path):
    model = random_model(CFG, seed=1)
    manifest = publish_model(model, 3, tmp_path, master_from_int(9))
    return model, manifest, tmp_path


def test_shares_add_up_to_the_encoded_weights(published):
    model, manifest, d = published
    shares = [load_party_share(d, p) for p in range(3)]
    for name, w in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        got = decode(sum(s[name] for s in shares))
        assert float((got - w.double()).abs().max()) <= 2**-17
    assert manifest["model_id"] == read_manifest(d)["model_id"]


def test_publication_is_reproducible(published, tmp_path_factory):
    model, manifest, _ = published
    again = publish_model(model, 3, tmp_path_factory.mktemp("again"), master_from_int(9))
    assert again["model_id"] == manifest["model_id"]


def test_a_tampered_share_is_refused(published):
    _, _, d = published
    path = d / "party1" / "share.safetensors"
    t = load_file(str(path))
    t["transformer.wpe.weight"][0, 0] += 1
    save_file(t, str(path))
    with pytest.raises(ShareVerificationError, match="party 1: transformer.wpe.weight does not match"):
        load_party_share(d, 1)
    load_party_share(d, 0)  # the others still load


def test_a_tampered_manifest_is_refused(published):
    _, _, d = published
    m = json.loads((d / "manifest.json").read_text())
    m["n_parties"] = 2
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShareVerificationError, match="model_id"):
        read_manifest(d)


def test_missing_files_and_wrong_sessions(published):
    _, _, d = published
    with pytest.raises(CheckpointError, match="no party 3"):
        load_party_share(d, 3)
    with pytest.raises(CheckpointError, match="for 3 parties"):
        load_shared_model(Session.in_process(2, master_from_int(0)), d)
    (d / "party2" / "salts.json").unlink()
    with pytest.raises(CheckpointError, match="missing share files"):
        load_party_share(d, 2)


def test_the_published_model_runs_privately(published):
    model, _, d = published
    s = Session.in_process(3, master_from_int(0), record=False)
    sm = load_shared_model(s, d)
    ids = [3, 1, 4, 1, 5]
    got = client_reconstruct(sm.forward(share_tokens(s, ids, CFG.vocab_size)))
    ref = model.double()(torch.tensor([ids]))[0].detach()
    assert float((got - ref).abs().max()) < 5e-3
