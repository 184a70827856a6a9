"""`shardproof publish --ledger URL --key owner.key --nodes ID,ID,...`: publish a model's shares to nodes.

Splits the model (an HF-layout directory; default: the shipped tiny model) into one
additive share per node (with --replicas R: N = len(nodes) / R shares, node i getting share
i mod N, so that replica i div N of index i mod N holds it; `infer --replicas R` takes the
same list), writes the publication (manifest with salted commitments,
one directory per party) to --out, posts the manifest and a `model.publish` entry on
the ledger, and delivers node i its share sealed for its registered X25519 key
(prover/model_delivery.py). The nodes fetch their share when a job first needs it.
The publication is written into a hidden sibling of --out and renamed into place at the
end, so a failed run leaves nothing behind; an existing non-empty --out is refused.
`--json` prints {"model_id", "n_parties", "nodes", "delivered_bytes"}. On a terminal (not with
--json) a spinner and a progress bar over the deliveries show the steps.
Exit 0: published. Exit 2: bad input (unregistered node, unreadable model or key, ledger).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from cli.common import EXIT_INCOMPLETE, EXIT_OK, add_key_argument, add_ledger_argument


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="publish a model as shares delivered sealed to registered nodes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ledger_argument(p)
    add_key_argument(p, "the model owner's key file (prover keygen; registered)", type=Path)
    p.add_argument("--nodes", required=True, metavar="ID,ID,...", help="registered node ids; node i gets share i "
                   "(with --replicas R: share i mod N, N = len(nodes) / R)")
    p.add_argument("--replicas", type=int, default=1, metavar="R",
                   help="nodes per share index, 1-8 (default 1): the list holds N R ids")
    p.add_argument("--model", type=Path, default=None, help="HF-layout model directory (default: the shipped model)")
    p.add_argument("--out", type=Path, default=None, help="where to write the publication (default ./published-<id>)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the panel")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cli.progress import on_terminal, progress_bar
    from ledger import Ledger, LedgerError
    from prover.errors import ProverError
    from models.errors import ModelsError
    from prover.keys import NodeKeys
    from prover.model_delivery import publish_and_deliver
    from models import TINY_MODEL_DIR, load_checkpoint
    from models.publish import publish_model

    nodes = [n for n in args.nodes.split(",") if n]
    model_dir = args.model or TINY_MODEL_DIR
    if not 1 <= args.replicas <= 8 or len(nodes) % args.replicas:
        print(f"shardproof publish: --replicas must be 1..8 and divide the {len(nodes)} nodes", file=sys.stderr)
        return EXIT_INCOMPLETE
    n_parties = len(nodes) // args.replicas
    if n_parties < 2:
        print("shardproof publish: at least 2 share indices (nodes / replicas)", file=sys.stderr)
        return EXIT_INCOMPLETE
    out = args.out or Path(f"published-{os.urandom(4).hex()}")
    if out.is_symlink() or (out.exists() and not (out.is_dir() and not any(out.iterdir()))):
        print(f"shardproof publish: {out} exists; a publication is never overwritten", file=sys.stderr)
        return EXIT_INCOMPLETE
    # Written into a hidden sibling and renamed into place at the end: a failed run leaves nothing behind.
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    posted = False
    try:
        keys = NodeKeys.load(args.key)
        led = Ledger.open(args.ledger, create=False)
        model = load_checkpoint(model_dir)
        show = on_terminal(args.json)
        with progress_bar("splitting the model into shares", None, show):
            publish_model(model, n_parties, tmp, os.urandom(32), tokenizer_dir=model_dir)
        with progress_bar("sealing and storing each node's delivery", len(nodes), show) as advance:
            model_id = publish_and_deliver(led, keys, tmp, nodes, progress=lambda done, _total: advance(done))
        posted = True
        os.rename(tmp, out)  # atomic; replaces only an empty directory
        pub = [e for e in led.query(kind="model.publish") if e.entry.body["model_id"] == model_id][-1]
        delivered = {d["node"]: d["bytes"] for d in pub.entry.body["meta"]["deliveries"]}
    except (ProverError, ModelsError, LedgerError, OSError, ValueError) as exc:
        if posted and tmp.exists():  # on the ledger already: the owner needs these files (`owner serve`)
            print(f"shardproof publish: published, but the files stay in {tmp}: {exc}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"shardproof publish: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except BaseException:
        if not posted:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if args.json:
        print(json.dumps({"model_id": model_id, "n_parties": n_parties, "nodes": nodes, "delivered_bytes": delivered}))
    else:
        print(f"model {model_id}: {n_parties} shares"
              + (f" x {args.replicas} replicas" if args.replicas > 1 else "") + f", written to {out}")
        for n, b in delivered.items():
            print(f"  {n}: {b:,} bytes sealed on the ledger")
    return EXIT_OK
