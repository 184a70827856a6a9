"""A module-scoped loopback deployment for the multi-process tests (sim.process_network): a ledger on
SQLite or PostgreSQL, the owner's model published to every node, the processes started, and the plaintext
greedy tokens the jobs must reproduce."""
from __future__ import annotations

import itertools
import os
from typing import Callable, Iterator

import torch

from models import GPTConfig, random_model
from sim.process_network import ProcessNetwork

_dbs = itertools.count()


def deployment(request, tmp_path_factory, label: str, cfg: GPTConfig, model_seed: int, prompt: list[int],
               steps: int, start: Callable[[ProcessNetwork], None] | None = None, **net_kw
               ) -> Iterator[tuple[ProcessNetwork, str, list[int]]]:
    """Yield (network, model id, reference tokens) for a fixture parametrized "sqlite" / "postgres";
    `start(net)` starts the processes (default: all of them). Every process must exit cleanly at the end."""
    tmp = tmp_path_factory.mktemp(f"{label}-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'ledger.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(f"{label}{os.getpid()}_{next(_dbs)}")
    net = ProcessNetwork(url, tmp, **net_kw)
    model = random_model(cfg, seed=model_seed)
    model_id = net.publish(model)
    (start or (lambda n: n.start()))(net)
    assert net.wait_ready(180), net.logs()
    ref = model.generate(torch.tensor([prompt]), steps, temperature=0)[0, len(prompt):].tolist()
    yield net, model_id, ref
    codes = net.stop()
    net.ledger.close()
    assert all(c == 0 for c in codes.values()), (codes, net.logs())
