"""A generated ledger of many small entries, to measure the ledger index on 10^4 and 10^5 entries.

Jobs of 6 entries (open, assign, dealer commit, 2 job roots, a verdict alternating pass and fail)
plus a heartbeat each, a checkpoint every `checkpoint_every` entries. Every entry is signed, and
written as the log writes it (one transaction per batch: rows, tree nodes, registrations) without
the append path re-verifying the signatures it was just given: generating 10^4 entries through
`append_many` spends most of its time in those checks, which is not what this ledger measures. The
BLS proofs of possession of the fixed identities are precomputed (py_ecc needs ~1 s for each).
"""
from __future__ import annotations

from ledger import Identity, Ledger, merkle
from ledger import entries as E
from ledger.log import Registration, _Prepared
from mpc_core import prg
from protocol import bodies as B

ORIGIN = "big.shardproof/ledger"
POPS = {  # bls_pop_prove of each identity below
    "log": "923fe1a1b79128465836c284f04caa27c221720e5a8fe549e532d571bc944799cf2c83812d960b669339c11af937e571075f8a8d8"
           "27cf713a417c371cac42599e151e3b8bd6029ab053862aea3ebeb7923b29213b1d87d038f4caf57219db6b4",
    "dealer": "87cf54f1775bfb2a635081f6921be70b5e5c3d59f59cee53e72327def67cdf65f4375cab593bb0fe890044b840265d77014486636c"
              "8dc75b46d257d81979f095760bb1a2734870f2d5bc262d279e104383ae658be03654bd1ca57e94a57fc380",
    "node-0": "90c4d5ef2e2d99c81b673ed5e3faeaaac9f152497d7ae47a0c79123c0d203a4786a9efd195cb30b7ede7712ff622184e005b65d954"
              "a4e298df0d46995fd7ba2f86d3246b7b25dfbcc5806b02d0f1ee0c29c64080adc3f53ff0afa41bea04b41e",
    "node-1": "b0ca3b4269c9db7834f3bc1c1a6f526ac1ab835ccb5a00dbc7a752627cdb89f711b215c1df7f6aab7a9f248fa901e6b6128d6167a8"
              "59b1cb545279e966b9ac2679df3e7b70fec5087738bf34154df9127f22287538121554fb8d8a5a5486c231",
}


def ident(name: str) -> Identity:
    i = Identity(name, prg.master_from_int(0, f"big-ledger:{name}"))
    i._pop = bytes.fromhex(POPS[name])
    return i


def _write(led: Ledger, entries: list[E.Entry]) -> None:
    prepared = []
    for e in entries:
        data = e.encode()
        p = _Prepared(e, data, merkle.leaf_hash(data, led.hash_name))
        if e.kind == E.REGISTER:
            p.reg = Registration(e.author, -1, e.body["ed25519"], e.body["bls"])
        prepared.append(p)
    with led.store.transaction() as tx:
        led._append_locked(tx, prepared)


def build(url: str, n_entries: int, batch: int = 2000, checkpoint_every: int = 50000) -> Ledger:
    """A ledger of at least `n_entries` entries (see the module doc). Job j's verdict is "fail"
    (node-1 accused) for odd j, "pass" for even j; node-0 opens the jobs and audits them."""
    log = ident("log")
    led = Ledger.open(url, origin=ORIGIN, log_identity=log)
    dealer, n0, n1 = ident("dealer"), ident("node-0"), ident("node-1")
    _write(led, [E.registration(dealer, roles=("dealer",), endpoint="127.0.0.1:29510"),
                 E.registration(n0, roles=("node", "client", "verifier"), endpoint="127.0.0.1:29500"),
                 E.registration(n1, roles=("node",), endpoint="127.0.0.1:29501")])
    size, last_cp, j, pending = led.size(), 0, 0, []
    t0 = 1_700_000_000_000

    def mk(who: Identity, kind: str, body: dict, t: int) -> E.Entry:
        return E.Entry(kind, who.node_id, t, body).signed(who)

    while size + len(pending) < n_entries:
        job, t = f"job-{j:06d}", t0 + j * 1000
        pending += [
            mk(n0, E.JOB_OPEN, B.JobOpen(job, "m" * 8, 2, dealer.node_id, n0.node_id,
                                         params={"steps": 4, "prompt_len": 3}).to_body(), t),
            mk(n0, E.JOB_ASSIGN, B.JobAssign(job, (B.Assignment("node-0", 0), B.Assignment("node-1", 1))).to_body(), t),
            mk(dealer, E.DEALER_COMMIT, B.DealerCommit(job, {0: b"\x00" * 32, 1: b"\x01" * 32}, b"\x07" * 32).to_body(),
               t + 1),
        ]
        for p, n in enumerate((n0, n1)):
            pending.append(mk(n, E.JOB_ROOT, B.JobRoot(job, n.node_id, p, 0, j.to_bytes(32, "big"), 10, b"\x01" * 96,
                                                       b"\x02" * 32, b"\x03" * 32, b"\x04" * 32).to_body(), t + 2))
        fail = j % 2 == 1
        pending.append(mk(n0, E.VERDICT, B.Verdict(
            job, "fail" if fail else "pass", ("node-1",) if fail else (),
            "party 1 (node-1): step 7 (matmul in h.0): out differs" if fail else "", 40).to_body(), t + 3))
        pending.append(mk((n0, n1)[j % 2], E.HEARTBEAT, B.Heartbeat(f"node-{j % 2}", ("m" * 8,)).to_body(), t + 4))
        j += 1
        if len(pending) >= batch:
            _write(led, pending)
            size += len(pending)
            pending = []
            if size - last_cp >= checkpoint_every:
                led.checkpoint()
                size += 1
                last_cp = size
    if pending:
        _write(led, pending)
    led.checkpoint()
    return led
