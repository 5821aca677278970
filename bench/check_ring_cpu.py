"""Ring attention's logic, without rounding: one DiT forward in float64 on the CPU, one process against
context parallelism over 2 processes (gloo), with an exact attention kernel that returns the log-sum-exp.

    torchrun --nproc_per_node 2 bench/check_ring_cpu.py              # ring, merged in float64
    torchrun --nproc_per_node 2 bench/check_ring_cpu.py --fp32_merge  # diffusers' default float32 merge

On 2 H200s ring's latents were 2.8% off one GPU's after one step (bf16, random 14B weights, CFG 7.5),
and bench/check_ring_merge.py found the kernels' merge exact. This checks the rest, the token sharding
and the K/V passing: equal to one process to float64's precision means the difference on the GPU is rounding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def exact_attention(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
    """diffusers' native forward op, in the input's dtype, with the log-sum-exp ring attention merges by."""
    q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))
    s = (q @ k.transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
    out = (torch.softmax(s, -1) @ v).permute(0, 2, 1, 3)
    return (out, torch.logsumexp(s, -1).permute(0, 2, 1)) if return_lse else out


def exact_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The same kernel for the one-process forward (torch's SDPA would round differently)."""
    return torch.softmax((query @ key.transpose(-1, -2)) * (scale or query.shape[-1] ** -0.5), -1) @ value


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fp32_merge", action="store_true", help="merge in float32, diffusers' default")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for the JSON")
    a = p.parse_args()
    import diffusers
    import diffusers.models.attention_dispatch as ad

    ad._native_attention_forward_op = exact_attention
    torch.nn.functional.scaled_dot_product_attention = exact_sdpa
    if not a.fp32_merge:
        config = diffusers.ContextParallelConfig
        diffusers.ContextParallelConfig = lambda **kw: config(convert_to_fp32=False, **kw)
    from diffhdr.parallel import finish_distributed, init_distributed, setup_parallelism
    from diffhdr.tiny import TINY_TRANSFORMER

    rank, world = init_distributed("cpu")
    g = torch.Generator().manual_seed(0)
    x, context = (torch.randn(1, c, 3, 8, 8, generator=g, dtype=torch.float64) for c in (16, 96))
    text = torch.randn(1, 12, TINY_TRANSFORMER["text_dim"], generator=g, dtype=torch.float64)
    rows = []
    for kind in ("ulysses", "ring"):
        model = common.build_transformer(TINY_TRANSFORMER, "cpu", torch.float64)
        kw = dict(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text,
                  control_hidden_states=context, return_dict=False)
        with torch.no_grad():
            one = model(**kw)[0]
            setup_parallelism(model, kind, False, torch.device("cpu"))
            shared = model(**kw)[0]
        err = float((shared - one).norm() / one.norm())
        rows.append({"mode": kind, "processes": world, "merge": "float32" if a.fp32_merge else "float64",
                     "rel_err_vs_one": err, "shown": f"{err:.1e}"})
    if rank == 0:
        print(common.table(rows, ["mode", "processes", "merge", "shown"]))
        payload = {"benchmark": "ring_cpu_float64", "environment": common.environment("cpu"),
                   "config": {"model": "tiny", "dtype": "float64", "fp32_merge": a.fp32_merge}, "results": rows}
        print("wrote", common.write_json("ring_cpu" + ("_fp32merge" if a.fp32_merge else ""), payload, a.out))
    finish_distributed()


if __name__ == "__main__":
    main()
