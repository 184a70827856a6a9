"""Four writer processes append 2,000 entries each: nothing lost, duplicated or reordered; the tree is whole."""
from __future__ import annotations

import multiprocessing as mp
import random

import pytest

from ledger import entries as E
from ledger import merkle
from ledger.log import Ledger

from .conftest import LOG, ORIGIN, ident, step

WRITERS = 4
PER_WRITER = 2000


def _writer(url: str, name: str, seed: int) -> None:
    led = Ledger.open(url)
    rng = random.Random(seed)
    items = [step(name, i, job=f"job-{name}") for i in range(PER_WRITER)]
    k = 0
    while k < len(items):
        n = rng.randint(1, 40)  # interleave batches of random sizes, down to single appends
        led.append_many(items[k : k + n])
        k += n
    led.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_four_writers_2000_each(ledger_url):
    led = Ledger.open(ledger_url, origin=ORIGIN, log_identity=LOG)
    names = [f"writer{i}" for i in range(WRITERS)]
    led.append_many([E.registration(ident(n)) for n in names])
    base = led.size()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(led.url, n, i)) for i, n in enumerate(names)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    rows = led.read()
    assert [r.index for r in rows] == list(range(base + WRITERS * PER_WRITER))  # no gaps, no duplicates
    for n in names:
        seq = [r.body["first_step"] for r in rows if r.author == n and r.kind == E.STEP_COMMIT]
        assert seq == list(range(PER_WRITER)), n  # each writer's order kept, nothing lost or doubled
    data = [r.data for r in rows]
    assert led.root() == merkle.root_hash(data)  # no torn Merkle state
    assert merkle.verify_inclusion(data[base + 777], base + 777, len(data), led.inclusion_proof(base + 777), led.root())
    rep = led.check()
    assert rep.ok, rep.findings[:3]
    led.close()
