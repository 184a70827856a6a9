"""The TCP mesh with one process per party: bit-identical to in-process; dead or stalled peers fail fast."""
import time

import torch

from mpc_core import Session
from mpc_core.distributed import run_parties
from mpc_core.prg import master_from_int

from . import dist_programs


def test_three_process_mesh_run_is_bit_identical_to_in_process():
    master = master_from_int(99)
    outcomes = run_parties(dist_programs.block, 3, master, timeout_s=60)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    local = Session.in_process(3, master)
    ref = dist_programs.block(local)
    for rank in range(3):
        got = outcomes[rank].value
        assert torch.equal(got["shares"][0], ref["shares"][rank])
        assert got["digests"][rank] == ref["digests"][rank]
        assert got["rounds"] == ref["rounds"] and got["bytes"] == ref["bytes"]
        assert torch.equal(got["plain"], ref["plain"])
    assert outcomes[3].value > 0  # the dealer answered the last party's correction requests


def test_a_peer_that_dies_mid_protocol_gives_a_typed_error_not_a_hang():
    t0 = time.monotonic()
    outcomes = run_parties(dist_programs.dies_midway, 3, master_from_int(1), timeout_s=8, join_timeout_s=90)
    elapsed = time.monotonic() - t0
    assert not outcomes[1].ok
    for rank in (0, 2):
        assert not outcomes[rank].ok
        assert outcomes[rank].error_type in ("PeerDisconnected", "PeerTimeout"), outcomes[rank].error
    assert elapsed < 80


def test_a_stalled_peer_times_out_with_the_configured_timeout():
    t0 = time.monotonic()
    outcomes = run_parties(dist_programs.stalls, 3, master_from_int(2), timeout_s=4, join_timeout_s=90)
    elapsed = time.monotonic() - t0
    failed = {o.rank: o.error_type for o in outcomes[:3] if not o.ok}
    assert failed.get(1) in ("PeerTimeout", "PeerDisconnected") or failed.get(2) in ("PeerTimeout", "PeerDisconnected"), failed
    assert elapsed < 80
