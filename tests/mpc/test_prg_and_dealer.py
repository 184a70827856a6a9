"""PRG stream layout, dealer material correctness for every kind, seeded clients."""
import blake3
import pytest
import torch

from mpc_core import prg
from mpc_core.dealer import (Request, SeededDealerClient, TrustedDealer, and_many_subsets, corrections, expand_party,
                             kind_spec)
from mpc_core.encoding import canonical_cbor
from mpc_core.errors import DealerError
from mpc_core.ring import lshr, shift_word

MASTER = prg.master_from_int(42)


def test_prg_matches_the_spec_byte_layout():
    seed = bytes(range(32))
    ctx = canonical_cbor([b"shardproof/prg/stream/v1", b"job-1", 7, 2, "a"])
    want = blake3.blake3(ctx, key=seed).digest(length=24)
    got = prg.ring_tensor(seed, b"job-1", 7, 2, "a", (3,))
    assert got.tolist() == [int.from_bytes(want[i:i + 8], "little", signed=True) for i in (0, 8, 16)]


def test_prg_streams_are_domain_separated():
    seed = prg.master_from_int(0)
    base = prg.ring_tensor(seed, b"j", 0, 0, "a", (8,))
    for args in [(b"k", 0, 0, "a"), (b"j", 1, 0, "a"), (b"j", 0, 1, "a"), (b"j", 0, 0, "b"), (b"j", "0", 0, "a")]:
        assert not torch.equal(base, prg.ring_tensor(seed, *args, (8,)))
    assert torch.equal(base, prg.ring_tensor(seed, b"j", 0, 0, "a", (8,)))


def test_bad_seed_length_is_refused():
    with pytest.raises(DealerError, match="32 bytes"):
        prg.ring_tensor(b"short", b"j", 0, 0, "a", (2,))


def _reconstruct(dealer, req, op):
    m = dealer.get(req, op)
    sharing = {c.name: c.sharing for c in kind_spec(req).randoms + kind_spec(req).derived}
    out = {}
    for k, v in m.items():
        if sharing[k] == "arith":
            out[k] = v.sum(0)
        else:
            acc = v[0].clone()
            for i in range(1, v.shape[0]):
                acc ^= v[i]
            out[k] = acc
    return out


@pytest.mark.parametrize("n", [2, 3, 5])
def test_every_kind_reconstructs_to_its_relation(n):
    d = TrustedDealer(MASTER, b"job", n)
    m = _reconstruct(d, Request("beaver", ((2, 3), (3,))), 0)
    assert torch.equal(m["c"], m["a"] * m["b"])
    m = _reconstruct(d, Request("matmul", ((2, 3), (3, 4))), 1)
    assert torch.equal(m["c"], m["a"] @ m["b"])
    m = _reconstruct(d, Request("trunc", ((5,), 16)), 2)
    assert torch.equal(m["r_msb"], lshr(m["r"], 63))
    assert torch.equal(m["r_shift"], lshr(m["r"] & (2**63 - 1), 16))
    m = _reconstruct(d, Request("and", ((6,),)), 3)
    assert torch.equal(m["c"], m["a"] & m["b"])
    mons = (((0, 0, 0), (1, 4, 0)), ((0, 0, 0), (0, 4, 0), (1, 8, 1), (1, -3, 0)))
    m = _reconstruct(d, Request("and_many", ((6,), 2, mons)), 6)
    sets = and_many_subsets(mons)
    assert len(sets) == 12 and m["c"].shape == (len(sets), 6)
    for t, c in zip(sets, m["c"]):
        want = None
        for j, k in t:
            v = shift_word(m["a"][j], k)
            want = v if want is None else want & v
        assert torch.equal(c, want), t
    m = _reconstruct(d, Request("edabit", ((6,),)), 4)
    assert torch.equal(m["rb"], m["r"])
    m = _reconstruct(d, Request("dabit", ((64,),)), 5)
    assert set(m["rb"].tolist()) <= {0, 1} and torch.equal(m["ra"], m["rb"])
    assert 10 < int(m["rb"].sum()) < 54


def test_fixed_b_is_the_same_across_calls_and_a_is_fresh():
    d = TrustedDealer(MASTER, b"job", 3)
    m1 = _reconstruct(d, Request("matmul_fixed", ("w0", (1, 4), (4, 2))), 10)
    m2 = _reconstruct(d, Request("matmul_fixed", ("w0", (1, 4), (4, 2))), 11)
    mask = _reconstruct(d, Request("weight_mask", ("w0", (4, 2))), 12)
    assert torch.equal(m1["b"], m2["b"]) and torch.equal(m1["b"], mask["b"])
    assert not torch.equal(m1["a"], m2["a"])
    assert torch.equal(m2["c"], m2["a"] @ m2["b"])


def test_seeded_clients_regenerate_the_dealers_rows():
    n = 3
    d = TrustedDealer(MASTER, b"job", n)
    req = Request("beaver", ((4,), (4,)))
    full = d.get(req, 9)
    for p in range(n):
        fetch = (lambda r, i: d.correction(r, i)) if p == n - 1 else None
        c = SeededDealerClient(p, n, b"job", d.party_seed(p), fetch, d.seed_commitments())
        mine = c.get(req, 9)
        for k in full:
            assert torch.equal(mine[k][0], full[k][p])


def test_seed_commitment_mismatch_is_refused():
    d = TrustedDealer(MASTER, b"job", 3)
    with pytest.raises(DealerError, match="does not match"):
        SeededDealerClient(0, 3, b"job", d.party_seed(1), None, d.seed_commitments())


def test_last_party_needs_a_channel_and_unknown_kinds_fail():
    d = TrustedDealer(MASTER, b"job", 3)
    with pytest.raises(DealerError, match="correction channel"):
        SeededDealerClient(2, 3, b"job", d.party_seed(2))
    with pytest.raises(DealerError, match="unknown dealer kind"):
        d.get(Request("nope", ()), 0)
    with pytest.raises(DealerError, match="do not fit"):
        d.get(Request("matmul", ((2, 3), (4, 5))), 0)
    with pytest.raises(DealerError, match="bad parameters"):
        d.get(Request("trunc", ()), 0)
    for bad in [(((0, 0, 0),),), (((0, 0, 0), (0, 0, 1)),), (((0, 0, 0), (2, 1, 0)),), (((0, 0, 0), (0, 64, 0)),),
                (tuple((0, i, 0) for i in range(5)),), (((0, 0, 0), (0, 1, 2)),), ("x",)]:
        with pytest.raises(DealerError):
            d.get(Request("and_many", ((3,), 2) + bad), 0)


def test_corrections_are_deterministic():
    seeds = [prg.derive_party_seed(MASTER, b"j", i) for i in range(3)]
    req = Request("matmul", ((2, 2), (2, 2)))
    assert torch.equal(corrections(req, 3, b"j", seeds)["c"], corrections(req, 3, b"j", seeds)["c"])
    e0 = expand_party(req, 3, b"j", 0, 3, seeds[0])
    assert set(e0) == {"a", "b", "c"}
    e2 = expand_party(req, 3, b"j", 2, 3, seeds[2])
    assert set(e2) == {"a", "b"}
