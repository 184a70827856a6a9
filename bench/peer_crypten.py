"""shardproof against CrypTen 0.4.1 on one GPT-2-small-shaped transformer block, back to back (issue 12).

    make bench-peer          (installs CrypTen beside the project, patches its ONNX import, runs this)
    PYTHONPATH=.peer .venv/bin/python bench/peer_crypten.py [--tokens 32] [--json PATH]

The block: 768 wide, 12 heads, MLP 3072 with GPT-2's tanh GeLU, LayerNorm without affine, no causal mask,
T tokens; the input and every weight secret-shared among 3 parties. Same weights and input (seeded) on
both sides; errors are the largest absolute difference from the float64 plaintext block.
- shardproof: mpc_core.simulate (the 3 parties in this process, the dealer's material expanded on the
  way and counted in the time), the block written with SharedTensor operations;
- CrypTen: 3 processes and its trusted-third-party provider (a 4th process: `cfg.mpc.provider = "TTP"`,
  CrypTen's dealer), gloo on loopback (crypten.mpc.run_multiprocess); the time is rank 0's, from
  after the sharing to the block's end, the TTP's requests included;
- plaintext: the float32 block, in the same run.
Both share the machine's cores (CrypTen: 4 processes; shardproof: one).
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from common import machine, print_table, write_json

C, H, MLP, N_PARTIES, EPS = 768, 12, 3072, 3, 1e-5


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w_qkv": torch.randn(C, 3 * C, generator=g) * 0.02, "w_proj": torch.randn(C, C, generator=g) * 0.02,
            "w_fc": torch.randn(C, MLP, generator=g) * 0.02, "w_fc2": torch.randn(MLP, C, generator=g) * 0.02}


def block_input(tokens: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(tokens, C, generator=torch.Generator().manual_seed(seed))


def plain_block(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference: (T, C) -> (T, C)."""
    T = x.shape[0]
    h = F.layer_norm(x, (C,), eps=EPS)
    q, k, v = (h @ w["w_qkv"]).split(C, dim=-1)  # (T, C) each
    q, k, v = (t.reshape(T, H, C // H).transpose(0, 1) for t in (q, k, v))  # (H, T, D)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(C // H), dim=-1)  # (H, T, T)
    y = (att @ v).transpose(0, 1).reshape(T, C)
    x = x + y @ w["w_proj"]
    h = F.gelu(F.layer_norm(x, (C,), eps=EPS) @ w["w_fc"], approximate="tanh")
    return x + h @ w["w_fc2"]


def shardproof_block(x, w_qkv, w_proj, w_fc, w_fc2):
    """The same block on SharedTensors."""
    T = x.shape[0]
    h = x.layer_norm(eps=EPS)
    qkv = h @ w_qkv  # (T, 3C)
    q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(T, H, C // H).transpose(0, 1) for i in range(3))  # (H, T, D)
    att = ((q @ k.transpose(1, 2)) * (1 / math.sqrt(C // H))).softmax(-1)  # (H, T, T)
    y = (att @ v).transpose(0, 1).reshape(T, C)
    x = x + y @ w_proj
    h = (x.layer_norm(eps=EPS) @ w_fc).gelu()
    return x + h @ w_fc2


def _crypten_layer_norm(x):
    mean = x.mean(-1, keepdim=True)
    d = x - mean
    var = (d * d).mean(-1, keepdim=True)
    return d * (var + EPS).inv_sqrt()


def _crypten_party(tokens: int):
    """One CrypTen party (run by crypten.mpc.run_multiprocess): share, run the block, reveal."""
    import crypten
    import crypten.communicator as comm

    w, x = weights(), block_input(tokens)
    xe = crypten.cryptensor(x, src=0)
    we = {k: crypten.cryptensor(v, src=0) for k, v in w.items()}
    comm.get().barrier()
    t0 = time.perf_counter()
    T = tokens
    h = _crypten_layer_norm(xe)
    qkv = h.matmul(we["w_qkv"])
    q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(T, H, C // H).transpose(0, 1) for i in range(3))
    att = (q.matmul(k.transpose(1, 2)) * (1 / math.sqrt(C // H))).softmax(-1)
    y = att.matmul(v).transpose(0, 1).reshape(T, C)
    xe = xe + y.matmul(we["w_proj"])
    z = _crypten_layer_norm(xe).matmul(we["w_fc"])
    g = z * (2 * math.sqrt(2 / math.pi) * (z + 0.044715 * z * z * z)).sigmoid()  # GPT-2's tanh GeLU
    out = xe + g.matmul(we["w_fc2"])
    seconds = time.perf_counter() - t0
    plain = out.get_plain_text()
    if comm.get().get_rank() != 0:
        return seconds, None
    # The error, not the output: run_multiprocess joins its processes before it reads their results, and a
    # result bigger than a pipe's buffer would never leave the process.
    ref = plain_block(x.double(), {k: v.double() for k, v in w.items()})
    return seconds, (plain.double() - ref).abs().max().item()


def run_crypten(tokens: int) -> tuple[float, float]:
    import crypten
    from crypten import mpc

    crypten.cfg.mpc.provider = "TTP"  # its dealer: a trusted third party process
    results = mpc.run_multiprocess(world_size=N_PARTIES)(_crypten_party)(tokens)
    if results is None:
        raise SystemExit("a CrypTen party failed (see its log above)")
    results = [r for r in results if r is not None]  # one (seconds, error) per party, rank order; the TTP: None
    err = next(r[1] for r in results if r[1] is not None)
    return max(r[0] for r in results), err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from mpc_core.simulate import simulate

    torch.set_num_threads(1)  # one core per party process on CrypTen's side; the same for ours
    w, x = weights(), block_input(args.tokens)
    ref = plain_block(x.double(), {k: v.double() for k, v in w.items()})
    t0 = time.perf_counter()
    reps = 10
    for _ in range(reps):
        plain_block(x, w)
    plain_s = (time.perf_counter() - t0) / reps
    plain_err = (plain_block(x, w).double() - ref).abs().max().item()

    sp_out, st = simulate(shardproof_block, x, w["w_qkv"], w["w_proj"], w["w_fc"], w["w_fc2"], parties=N_PARTIES,
                          record=False)
    sp_err = (sp_out.double() - ref).abs().max().item()
    print(f"shardproof: {st.seconds:.2f} s, {st.rounds} rounds, {st.bytes_per_party / 1e6:.1f} MB/party, "
          f"max abs error {sp_err:.2e}; plaintext {plain_s * 1e3:.2f} ms; now CrypTen ...", flush=True)
    cr_s, cr_err = run_crypten(args.tokens)
    rows = [["plaintext float32", plain_s, 1.0, "-", "-", f"{plain_err:.2e}"],
            ["shardproof (dealer included)", st.seconds, st.seconds / plain_s, st.rounds,
             f"{st.bytes_per_party / 1e6:.1f}", f"{sp_err:.2e}"],
            ["CrypTen 0.4.1, TTP provider", cr_s, cr_s / plain_s, "-", "-", f"{cr_err:.2e}"]]
    print_table(f"one GPT-2-small-shaped block, {args.tokens} tokens, N = {N_PARTIES} "
                f"(CrypTen / shardproof = {cr_s / st.seconds:.1f}x)",
                ["run", "seconds", "x plaintext", "rounds", "MB/party", "max abs error"], rows)
    write_json(args.json, {"machine": machine(), "tokens": args.tokens, "parties": N_PARTIES,
                           "plaintext_s": plain_s, "plaintext_err": plain_err,
                           "shardproof_s": st.seconds, "shardproof_rounds": st.rounds,
                           "shardproof_bytes_per_party": st.bytes_per_party, "shardproof_err": sp_err,
                           "crypten_s": cr_s, "crypten_err": cr_err, "speedup_vs_crypten": cr_s / st.seconds})


if __name__ == "__main__":
    main()
