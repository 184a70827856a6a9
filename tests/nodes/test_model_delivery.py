"""Owner -> node share delivery through the ledger: only the named node can open its share, and a node keeps
nothing that does not authenticate or does not open the manifest's commitments."""
from __future__ import annotations

import pytest

from ledger import Identity, Ledger
from ledger import entries as E
from mpc_core import prg
from mpc_core.encoding import canonical_cbor, decode_cbor
from prover.channels import PURPOSE_WEIGHTS, seal
from prover.errors import ChannelAuthError, ProverError
from prover.keys import NodeKeys, registration_entry
from prover.model_delivery import DeliveryError, fetch_share, publish_and_deliver
from models import GPTConfig, random_model
from models.publish import MANIFEST_FILE, load_party_share, publish_model

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=16)


def _keys(name: str) -> NodeKeys:
    return NodeKeys.generate(name, prg.master_from_int(9, f"test-delivery:{name}"))


@pytest.fixture
def world(tmp_path):
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", origin="test", log_identity=Identity("log", b"L" * 32))
    owner, mallory = _keys("owner"), _keys("mallory")
    nodes = [_keys(f"node-{i}") for i in range(3)]
    led.append_many([registration_entry(k, ("node",)) for k in [owner, mallory] + nodes])
    publish_model(random_model(CFG, seed=2), 3, tmp_path / "pub", prg.master_from_int(1, "owner"))
    yield led, owner, mallory, nodes, tmp_path
    led.close()


def test_each_node_gets_exactly_its_share(world):
    led, owner, _mallory, nodes, tmp = world
    model_id = publish_and_deliver(led, owner, tmp / "pub", [k.node_id for k in nodes])
    for i, k in enumerate(nodes):
        dest = tmp / f"node{i}" / model_id
        assert fetch_share(led, k, model_id, dest) == i
        assert (dest / MANIFEST_FILE).read_bytes() == (tmp / "pub" / MANIFEST_FILE).read_bytes()
        assert sorted(p.name for p in dest.iterdir()) == sorted([MANIFEST_FILE, f"party{i}"])
        for f in (tmp / "pub" / f"party{i}").iterdir():
            assert (dest / f"party{i}" / f.name).read_bytes() == f.read_bytes()
        load_party_share(dest, i)
    with pytest.raises(DeliveryError):
        fetch_share(led, _keys("stranger"), model_id, tmp / "stranger" / model_id)
    assert not (tmp / "stranger" / model_id).exists()


def test_a_forged_or_tampered_delivery_leaves_nothing_behind(world):
    led, owner, mallory, nodes, tmp = world
    # Mallory publishes the (public) manifest first, with node-0's "share" taken from node-1's files.
    pub = tmp / "pub"
    import shutil
    shutil.copytree(pub, tmp / "forged")
    shutil.rmtree(tmp / "forged" / "party0")
    shutil.copytree(pub / "party1", tmp / "forged" / "party0")
    model_id = publish_and_deliver(led, mallory, tmp / "forged", [k.node_id for k in nodes])
    with pytest.raises(ProverError):  # authentic from Mallory, but it does not open party 0's commitments
        fetch_share(led, nodes[0], model_id, tmp / "n0" / model_id)
    assert not (tmp / "n0" / model_id).exists()
    # A delivery whose chunk was altered does not authenticate.
    first = led.query(kind=E.MODEL)[0].entry.body
    other = "e" * 64
    msg = decode_cbor(seal(mallory, nodes[1].x25519_pub, nodes[1].node_id, other, PURPOSE_WEIGHTS, b"share bytes", 0))
    msg["ct"] = msg["ct"][:-1] + bytes([msg["ct"][-1] ^ 1])
    led.append(E.make_entry(mallory.identity, E.MODEL, {
        "model_id": other, "manifest": first["manifest"], "n_shares": 3, "commitments": bytes(32),
        "meta": {"deliveries": [{"party": 1, "node": nodes[1].node_id, "bytes": 11,
                                 "chunks": [led.put_blob(canonical_cbor(msg))]}]}}))
    with pytest.raises(ChannelAuthError):
        fetch_share(led, nodes[1], other, tmp / "n1" / other)
    assert not (tmp / "n1" / other).exists()
    # A chunk sealed for the model with a different context (purpose) is refused too.
    sealed = seal(owner, nodes[2].x25519_pub, nodes[2].node_id, other, "client.input", b"x", 0)
    led.append(E.make_entry(owner.identity, E.MODEL, {
        "model_id": "f" * 64, "manifest": first["manifest"], "n_shares": 3, "commitments": bytes(32),
        "meta": {"deliveries": [{"party": 2, "node": nodes[2].node_id, "bytes": 1, "chunks": [led.put_blob(sealed)]}]}}))
    with pytest.raises(ProverError):
        fetch_share(led, nodes[2], "f" * 64, tmp / "n2" / "f")
    assert PURPOSE_WEIGHTS == "owner.weights"
