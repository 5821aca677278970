"""Ring attention's merge, on one GPU: is each backend's log-sum-exp what the merge needs?

    python bench/check_ring_merge.py

Ring attention computes attention over each rank's keys and merges the partial results with their
log-sum-exps, as diffusers' TemplatedRingAttention does. Here the keys are split in two on one GPU,
the halves merged the same way, and both that and one full attention are compared with float64. If
the merged error is of the full attention's size, the merge is right and ring's difference from one
GPU is bf16 rounding; if it is far larger, the backend's LSE is not what the merge assumes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SHAPES = [(4096, 40, 128), (1536, 2, 32), (8192, 4, 64)]  # (tokens, heads, head dim): 14B-like, tiny, mini-like


def merge(parts):
    """diffusers' ring update of (out, lse) pairs, in float32."""
    out = lse = None
    for o, l in parts:
        o, l = o.float(), l.float()
        l = l.unsqueeze(-1) if l.ndim == 3 else l
        if out is None:
            out, lse = o, l
        else:
            out = out - torch.sigmoid(l - lse) * (out - o)
            lse = lse - torch.nn.functional.logsigmoid(lse - l)
    return out


def main():
    import diffusers.models.attention_dispatch as ad

    p = common.arguments(__doc__)
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a GPU: the backends under test are cuDNN and flash attention kernels")
    torch.manual_seed(0)
    rows = []
    for s, h, d in SHAPES:
        q, k, v = (torch.randn(1, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        q = q * 3  # peaked attention, as trained models have
        scores = q.double().transpose(1, 2) @ k.double().transpose(1, 2).transpose(-1, -2) / d**0.5
        ref = (torch.softmax(scores, -1) @ v.double().transpose(1, 2)).transpose(1, 2)
        for name, op in [("cudnn", ad._cudnn_attention_forward_op), ("flash", ad._native_flash_attention_forward_op)]:
            ctx = type("Ctx", (), {})()
            full, _ = op(ctx, q, k, v, return_lse=True, _save_ctx=False)
            halves = [op(ctx, q, k[:, sl], v[:, sl], return_lse=True, _save_ctx=False)
                      for sl in (slice(0, s // 2), slice(s // 2, s))]
            rows.append({"backend": name, "tokens": s, "heads": h, "head_dim": d,
                         "full_vs_f64": common.rel_err(full.double(), ref),
                         "ring_merge_vs_f64": common.rel_err(merge(halves).bfloat16().double(), ref)})
    print(common.table(rows, ["backend", "tokens", "heads", "head_dim", "full_vs_f64", "ring_merge_vs_f64"]))
    payload = {"benchmark": "ring_merge", "environment": common.environment("cuda"), "config": {"shapes": SHAPES},
               "results": rows}
    print("wrote", common.write_json("ring_merge", payload, a.out))


if __name__ == "__main__":
    main()
