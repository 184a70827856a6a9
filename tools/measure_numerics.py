"""Measure every nonlinear function's error on the grids of tests/mpc/numerics_cases.py.

Prints a markdown table (max abs error, max rel error where |y| >= 1, the abs
bound needed at the stated relative bound, and rounds); `--write` replaces the
measured columns' table in specs/numerics.md while keeping the bound columns.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "mpc"))

import torch  # noqa: E402

from mpc_core import decode, encode, simulate  # noqa: E402
from numerics_cases import CASES  # noqa: E402


def measure(rel_tol: float = 1e-4) -> list[dict]:
    rows = []
    for case in CASES:
        x = case.make()
        out, stats = simulate(case.mpc, x, parties=3, seed=0, record=False)
        ref = case.ref(decode(encode(x)))
        err = (out - ref).abs()
        big = ref.abs() >= 1
        rows.append({
            "name": case.name,
            "max_abs": float(err.max()),
            "max_rel_ge1": float((err[big] / ref.abs()[big]).max()) if bool(big.any()) else 0.0,
            "abs_needed": float((err - rel_tol * ref.abs()).clamp_min(0).max()),
            "rounds": stats.rounds,
            "bytes_per_party_per_elem": stats.bytes_per_party / x.numel(),
        })
    return rows


def write_measured(rows: list[dict], path: Path) -> None:
    """Rewrite the measured columns (max abs, max rel, rounds, bytes) of the rows between the
    bounds-table markers of `path`, keeping each row's name and bounds; every case must have a row."""
    text = path.read_text()
    head, rest = text.split("<!-- bounds-table-start -->\n", 1)
    table, tail = rest.split("<!-- bounds-table-end -->", 1)
    by_name = {r["name"]: r for r in rows}
    out = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        r = by_name.pop(cells[0], None)
        if r is not None:
            line = (f"| {cells[0]} | {cells[1]} | {cells[2]} | {_num(r['max_abs'])} | {_num(r['max_rel_ge1'])} | "
                    f"{r['rounds']} | {r['bytes_per_party_per_elem']:.0f} |")
        out.append(line)
    if by_name:
        raise SystemExit(f"no row in {path} for: {', '.join(by_name)}")
    path.write_text(head + "<!-- bounds-table-start -->\n" + "\n".join(out) + "\n<!-- bounds-table-end -->" + tail)


def _num(v: float) -> str:
    return "0" if v == 0 else f"{v:.3e}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rel", type=float, default=1e-4)
    ap.add_argument("--write", action="store_true",
                    help="replace the measured columns of specs/numerics.md's bounds table (bounds kept)")
    args = ap.parse_args()
    rows = measure(args.rel)
    if args.write:
        write_measured(rows, ROOT / "specs" / "numerics.md")
    print(f"| function | max abs error | max rel error (abs(y) >= 1) | abs error beyond {args.rel:g} rel | rounds | bytes/party/elem |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['max_abs']:.3e} | {r['max_rel_ge1']:.3e} | {r['abs_needed']:.3e} | {r['rounds']} | {r['bytes_per_party_per_elem']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
