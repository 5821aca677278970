"""Which SDPA kernel is fastest at DiffHDR's attention shapes? (B=1, 40 heads, 32,400 queries, head dim 128)

    python bench/bench_attention.py                 # self-attention: 32,400 keys
    python bench/bench_attention.py --keys 512      # cross-attention to the text (512 tokens)

Times forward and forward+backward of torch's scaled_dot_product_attention for the default
choice and each backend forced, in TFLOP/s (4 Sq Sk D H per forward, 2.5x that for backward).
`cudnn_bshd` gives cuDNN the (B, S, H, D) tensors permuted to (B, H, S, D) views, as diffusers'
attention processors do; the others get contiguous (B, H, S, D). Best of 3 and mean of 10 runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

BACKENDS = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "cudnn_bshd": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=32400, help="key/value tokens (512: cross-attention to the text)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", help="also copy the JSON here")
    a = p.parse_args()
    device = "cuda"
    b, h, s, sk, d = a.batch, 40, 32400, a.keys, 128
    flop = 4 * s * sk * d * h * b
    rows = []
    for name, backend in BACKENDS.items():
        bshd = name.endswith("bshd")
        leaves = [torch.randn((b, n, h, d) if bshd else (b, h, n, d), device=device, dtype=torch.bfloat16,
                              requires_grad=True) for n in (s, sk, sk)]
        q, k, v = (x.transpose(1, 2) for x in leaves) if bshd else leaves
        ctx = sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()
        fwd, both = [], []
        try:
            with ctx:
                for _ in range(11):
                    with common.timed(device, fwd):
                        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                    with common.timed(device, both):
                        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                        out.backward(torch.ones_like(out))
        except RuntimeError as e:
            rows.append({"backend": name, "error": str(e).splitlines()[0][:200]})
            continue
        f, fb, fm, fbm = min(fwd[1:]), min(both[1:]), sum(fwd[1:]) / 10, sum(both[1:]) / 10
        rows.append({"backend": name, "fwd_ms": 1e3 * f, "fwd_TFLOPs": flop / f / 1e12,
                     "fwd_bwd_ms": 1e3 * fb, "fwd_bwd_TFLOPs": 3.5 * flop / fb / 1e12,
                     "fwd_TFLOPs_mean": flop / fm / 1e12, "fwd_bwd_TFLOPs_mean": 3.5 * flop / fbm / 1e12})
    q, k, v = (torch.randn(b, h, n, d, device=device, dtype=torch.bfloat16) for n in (s, sk, sk))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
        torch.cuda.synchronize()
    kernels = sorted({e.key for e in prof.key_averages() if "attn" in e.key.lower() or "fmha" in e.key.lower()
                      or "flash" in e.key.lower() or "cudnn" in e.key.lower()})
    print(common.table(rows, ["backend", "fwd_ms", "fwd_TFLOPs", "fwd_bwd_ms", "fwd_bwd_TFLOPs", "fwd_TFLOPs_mean",
                              "fwd_bwd_TFLOPs_mean"]))
    print("default kernel(s):", kernels)
    payload = {"benchmark": "sdpa_backends", "environment": common.environment(device),
               "config": {"batch": b, "heads": h, "tokens": s, "keys": sk, "head_dim": d, "dtype": "bfloat16"},
               "default_kernels": kernels, "results": rows}
    name = "attention" if sk == s else f"attention_keys{sk}_b{b}"
    print("wrote", common.write_json(name, payload, a.out))


if __name__ == "__main__":
    main()
