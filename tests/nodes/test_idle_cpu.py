"""An idle daemon (no job in flight) uses under 1 % of a core: it waits for the ledger to grow instead of
re-scanning it every --poll seconds (bench/idle_daemons.py measures the three daemons over a minute). The
daemons carry 100 finished jobs whose challenge never came: re-scanning those on a timer cost ~8-19 % of a
core."""
from __future__ import annotations

import os
import time

import pytest

from mpc_core.encoding import canonical_cbor
from prover.local_files import write_secret
from sim.process_network import ProcessNetwork, _cpu_seconds

WINDOW_S = 10.0
SETTLE_S = 2.0
OLD_JOBS = 100


def _finished_jobs(net: ProcessNetwork, n: int) -> None:
    node_jobs = net.data_dir(net.nodes[0].node_id) / "jobs"
    dealer_dir = net.data_dir(net.dealer.node_id) / "dealer"
    dealer_dir.mkdir(parents=True)
    for i in range(n):
        (node_jobs / f"old-{i}").mkdir(parents=True)
        (node_jobs / f"old-{i}" / "status").write_text("done")
        write_secret(dealer_dir / f"dealer-old-{i}.cbor", canonical_cbor({
            "format": "shardproof/dealer-state/v1", "job_id": f"old-{i}", "n_parties": 3,
            "master_seed": b"m" * 32, "requests": [], "status": "done"}))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.soak])])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_server").create_database(f"idle{os.getpid()}_{time.monotonic_ns()}")


def test_idle_node_and_dealer_use_under_one_percent_of_a_core(url, tmp_path):
    with ProcessNetwork(url, tmp_path / "net", n_nodes=3, poll_s=0.1) as net:
        _finished_jobs(net, OLD_JOBS)
        net.start_node(0)
        net.start_dealer()
        names = [net.nodes[0].node_id, net.dealer.node_id]
        for name in names:
            assert net.wait_serving(name, 120), net.logs()
        time.sleep(SETTLE_S)
        pids = {name: net.procs[name].pid for name in names}
        before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        if None in before.values():
            pytest.skip("/proc/<pid>/stat is not readable here")
        t0 = time.monotonic()
        time.sleep(WINDOW_S)
        wall = time.monotonic() - t0
        share = {name: (_cpu_seconds(pid) - before[name]) / wall for name, pid in pids.items()}
        assert all(s < 0.01 for s in share.values()), share
        t0 = time.monotonic()  # and a waiting daemon stops promptly and cleanly on SIGTERM
        assert net.stop() == {name: 0 for name in names} and time.monotonic() - t0 < 10, net.logs()
