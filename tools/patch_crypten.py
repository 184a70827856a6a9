"""Make CrypTen 0.4.1 importable on torch 2.13 without ONNX (used by `make bench-peer` only).

    python tools/patch_crypten.py DIR      (DIR: where `pip install --target DIR crypten==0.4.1` put it)

`crypten/nn/__init__.py` imports its ONNX converter at import time, and the converter imports `onnx`,
which the benchmark does not need (it builds its block from CrypTen tensors). The import becomes
optional: without onnx the converter's names are None. Idempotent; refuses an unexpected file.
"""
from __future__ import annotations

import sys
from pathlib import Path

OLD = "from .onnx_converter import from_onnx, from_pytorch, from_tensorflow, TF_AND_TF2ONNX\n"
NEW = ("try:  # patched by shardproof's tools/patch_crypten.py: the ONNX converter is optional\n"
       "    from .onnx_converter import from_onnx, from_pytorch, from_tensorflow, TF_AND_TF2ONNX\n"
       "except ImportError:\n"
       "    from_onnx = from_pytorch = from_tensorflow = None\n"
       "    TF_AND_TF2ONNX = False\n")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    f = Path(sys.argv[1]) / "crypten" / "nn" / "__init__.py"
    if not f.is_file():
        print(f"no CrypTen under {sys.argv[1]}", file=sys.stderr)
        return 2
    text = f.read_text()
    if NEW in text:
        return 0
    if text.count(OLD) != 1:
        print(f"{f}: not the CrypTen 0.4.1 file this patch expects", file=sys.stderr)
        return 1
    f.write_text(text.replace(OLD, NEW))
    return 0


if __name__ == "__main__":
    sys.exit(main())
