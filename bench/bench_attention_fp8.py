"""diffhdr.fp8_attention (cuDNN fp8 SDPA, forward and backward) against torch's SDPA on cuDNN in bf16,
at DiffHDR's self-attention shape (B=1, 40 heads, 32,400 tokens, head dim 128), on Hopper.

    pip install nvidia-cudnn-frontend
    python bench/bench_attention_fp8.py

Times include the per-tensor quantisation around the kernels (the op as the model calls it).
Error: relative L2 of O, dQ, dK, dV against SDPA in float32 (bf16 SDPA's own error beside it), for
q scaled by `temperature`: 1 gives near-uniform attention over 32,400 keys (P deep in e4m3's
subnormal range: the hard case), 4 a peaked one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffhdr import fp8_attention  # noqa: E402

B, H, S, D = 1, 40, 32400, 128


def timed(fn, n=5) -> float:
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def sdpa_bf16(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def fwd_bwd(attend, q, k, v, grad):
    out = attend(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="also copy the JSON here")
    out = p.parse_args().out
    torch.manual_seed(0)
    flop = 4 * S * S * D * H
    rows = []
    for temperature in (1.0, 4.0):
        q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        q = (q * temperature).requires_grad_()
        k.requires_grad_()
        v.requires_grad_()
        grad = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16)
        q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION):
            ref = fwd_bwd(lambda a, b, c: F.scaled_dot_product_attention(
                a.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2)).transpose(1, 2), q32, k32, v32, grad.float())
        for name, attend in (("cuDNN bf16 (torch SDPA)", sdpa_bf16), ("cuDNN fp8 (diffhdr.fp8_attention)",
                                                                       fp8_attention.fp8_attention)):
            got = fwd_bwd(attend, q, k, v, grad)
            with torch.no_grad():
                t_fwd = timed(lambda: attend(q, k, v))
            t_all = timed(lambda: fwd_bwd(attend, q, k, v, grad))
            rows.append({"kernel": name, "temperature": temperature, "fwd_ms": 1e3 * t_fwd,
                         "fwd_TFLOPs": flop / t_fwd / 1e12, "fwd_bwd_ms": 1e3 * t_all,
                         "fwd_bwd_TFLOPs": 3.5 * flop / t_all / 1e12,
                         **{f"err_{n}": common.rel_err(a, b) for n, a, b in zip(("O", "dQ", "dK", "dV"), got, ref)},
                         "finite": all(bool(torch.isfinite(x).all()) for x in got)})
            print(common.table(rows[-1:], list(rows[-1])), flush=True)
        for r in rows[-1:]:
            r["fwd_speedup"] = rows[-2]["fwd_ms"] / r["fwd_ms"]
            r["fwd_bwd_speedup"] = rows[-2]["fwd_bwd_ms"] / r["fwd_bwd_ms"]
    print()
    print(common.table(rows, ["kernel", "temperature", "fwd_ms", "fwd_TFLOPs", "fwd_bwd_ms", "fwd_bwd_TFLOPs",
                              "err_O", "err_dQ", "err_dK", "err_dV"]))
    import cudnn

    env = common.environment("cuda") | {"cudnn_frontend": getattr(cudnn, "__version__", "?"),
                                        "cudnn_backend": cudnn.backend_version()}
    payload = {"benchmark": "sdpa_fp8_forward_backward", "environment": env,
               "config": {"batch": B, "heads": H, "tokens": S, "head_dim": D, "margin": fp8_attention.MARGIN,
                          "flop_count": "4 S^2 D H forward, 3.5x that forward + backward"},
               "results": rows}
    print("wrote", common.write_json("attention_fp8", payload, out))


if __name__ == "__main__":
    main()
