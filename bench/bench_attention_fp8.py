"""Is fp8 attention worth building? cuDNN's fp8 SDPA forward (through the cuDNN frontend's Python
graph API) against torch's SDPA on cuDNN in bf16, at DiffHDR's self-attention shape
(B=1, 40 heads, 32,400 tokens, head dim 128), on Hopper.

    pip install nvidia-cudnn-frontend      # optional; used by this benchmark only
    python bench/bench_attention_fp8.py

Q, K, V are quantised per tensor (amax -> 448); the probabilities P are scaled by 448 inside the
kernel. On Hopper cuDNN writes O only in fp8 (bf16 O needs Blackwell), so O's scale must be known
before the kernel runs: here it comes from the bf16 result's amax (an oracle); in a model it would
be the amax the previous call returned (delayed scaling, as Transformer Engine does). Error: relative L2 of O against bf16 SDPA, random normal inputs (near-uniform
attention over 32,400 keys, which puts P in e4m3's subnormal range: a hard case).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

B, H, S, D = 1, 40, 32400, 128
FP8_MAX = 448.0


def timed(fn, n=10) -> float:
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def quantize(x):
    s = x.abs().amax().float() / FP8_MAX
    return (x / s).to(torch.float8_e4m3fn), float(s)


def fp8_sdpa(q, k, v, o_amax: float):
    """A built cuDNN graph and a closure running it; returns (run, output tensor, output scale)."""
    import cudnn

    (q8, sq), (k8, sk), (v8, sv) = quantize(q), quantize(k), quantize(v)
    g = cudnn.pygraph(io_data_type=cudnn.data_type.BFLOAT16, intermediate_data_type=cudnn.data_type.FLOAT,
                      compute_data_type=cudnn.data_type.FLOAT)
    fp8 = lambda name, x: g.tensor(name=name, dim=list(x.shape), stride=list(x.stride()),  # noqa: E731
                                   data_type=cudnn.data_type.FP8_E4M3)
    scalar = lambda name: g.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1],  # noqa: E731
                                   data_type=cudnn.data_type.FLOAT)
    Q, K, V = fp8("Q", q8), fp8("K", k8), fp8("V", v8)
    dq, dk, dv, ds, ss, so = (scalar(n) for n in ("dq", "dk", "dv", "ds", "ss", "so"))
    o, _, amax_s, amax_o = g.sdpa_fp8(q=Q, k=K, v=V, descale_q=dq, descale_k=dk, descale_v=dv, descale_s=ds,
                                      scale_s=ss, scale_o=so, generate_stats=False, attn_scale=D**-0.5,
                                      use_causal_mask=False, name="sdpa")
    out = torch.empty(B, S, H, D, device=q.device, dtype=torch.float8_e4m3fn).transpose(1, 2)
    o.set_output(True).set_dim(list(out.shape)).set_stride(list(out.stride())).set_data_type(cudnn.data_type.FP8_E4M3)
    for a in (amax_s, amax_o):
        a.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(cudnn.data_type.FLOAT)
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    g.build_plans()
    ws = torch.empty(g.get_workspace_size(), device=q.device, dtype=torch.uint8)
    one = lambda x: torch.full((1, 1, 1, 1), x, device=q.device, dtype=torch.float32)  # noqa: E731
    o_scale = FP8_MAX / o_amax
    pack = {Q: q8, K: k8, V: v8, dq: one(sq), dk: one(sk), dv: one(sv), ds: one(1 / FP8_MAX), ss: one(FP8_MAX),
            so: one(o_scale), o: out, amax_s: one(0.0), amax_o: one(0.0)}
    return (lambda: g.execute(pack, ws)), out, o_scale


def main():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    q, k, v = (torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
    flop = 4 * S * S * D * H
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        t_bf16 = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    run, out, o_scale = fp8_sdpa(q, k, v, float(ref.abs().amax()))
    t_fp8 = timed(run)
    err = ((out.float() / o_scale - ref.float()).norm() / ref.float().norm()).item()
    rows = [{"kernel": "cuDNN bf16 (torch SDPA)", "fwd_ms": 1e3 * t_bf16, "TFLOPs": flop / t_bf16 / 1e12,
             "speedup": 1.0, "rel_err": 0.0},
            {"kernel": "cuDNN fp8 (frontend graph, fp8 O)", "fwd_ms": 1e3 * t_fp8, "TFLOPs": flop / t_fp8 / 1e12,
             "speedup": t_bf16 / t_fp8, "rel_err": err}]
    print(common.table(rows, list(rows[0])))
    import cudnn

    env = common.environment("cuda") | {"cudnn_frontend": getattr(cudnn, "__version__", "?"),
                                        "cudnn_backend": cudnn.backend_version()}
    payload = {"benchmark": "sdpa_fp8_forward", "environment": env,
               "config": {"batch": B, "heads": H, "tokens": S, "head_dim": D}, "results": rows}
    print("wrote", common.write_json("attention_fp8", payload, sys.argv[1] if len(sys.argv) > 1 else None))


if __name__ == "__main__":
    main()
