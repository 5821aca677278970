"""How far each inference speed-up moves one DiT forward, against float32: the noise floor that the
benchmarks' error figures should be read against.

    python bench/bench_accuracy.py              # GPU: random weights of the real 14B shapes, 33x720x1280
    python bench/bench_accuracy.py --tiny       # CPU smoke run of the same code

One conditional forward (no CFG) at t = 500 with the inputs of bench_infer.py, its LoRA of rank 32
included (`--lora_rank`). The reference is the same bf16 weights, LoRA unmerged, run in float32
(SDPA's memory-efficient kernel; TF32 off). Variants, in this order on the one model:
  naive_bf16       diffusers as installed, the LoRA as peft attaches it, bf16 (the naive recipe)
  default          LoRA folded into the weights, cuDNN attention, GELU in the GEMM epilogue,
                   torch.compile: `--speed default --no-fp8_attention`
  default_fp8attn  + fp8 self-attention (diffhdr.fp8_attention): `--speed default` on Hopper
  fast             + fp8 GEMMs in the block linears: the fast mode's per-forward numerics
Each row: relative L2 error of the predicted velocity against float32 and against naive_bf16.
With random weights these describe this network, not a trained one; what carries over is the
comparison with naive_bf16's own distance from float32. Random weights also make self-attention
nearly uniform, where a trained model's is peaked; `--temperature T` multiplies every
self-attention's scores by T (its q and k norm weights by sqrt T) to see how fp8 attention fares
on peaked attention.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffhdr import fp8_attention  # noqa: E402
from diffhdr.model import compile_blocks  # noqa: E402
from diffhdr.runtime import merge_lora, use_fp8_linears, use_gelu_epilogue  # noqa: E402
from diffhdr.tiny import REAL_TRANSFORMER, TINY_TRANSFORMER  # noqa: E402


def float32_forward(transformer, forward):
    """The forward in float32 with the model's bf16 weights, one block in float32 at a time: all of
    it (17B parameters with the VACE blocks) would take 68 GB. bf16 -> float32 -> bf16 is exact."""
    def up(module, args):
        module.float()

    def down(module, args, out):
        module.to(torch.bfloat16)

    blocks = [*transformer.blocks, *transformer.vace_blocks]
    hooks = [h for b in blocks for h in (b.register_forward_pre_hook(up), b.register_forward_hook(down))]
    rest = [m for name, m in transformer.named_children() if name not in ("blocks", "vace_blocks")]
    for m in rest:
        m.float()
    try:
        return forward(torch.float32)
    finally:
        for h in hooks:
            h.remove()
        for m in rest:
            m.to(torch.bfloat16)


def main():
    p = common.arguments(__doc__)
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the self-attention scores")
    p.add_argument("--lora_rank", type=int, help="LoRA rank on the main blocks (default 32, tiny 4; 0: none)")
    a = p.parse_args()
    lora_rank = a.lora_rank if a.lora_rank is not None else 4 if a.tiny else 32
    device = common.device_of(a)
    cfg, (frames, h, w) = (TINY_TRANSFORMER, (9, 32, 32)) if a.tiny else (REAL_TRANSFORMER, (33, 720, 1280))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator().manual_seed(0)
    lat = (frames - 1) // 4 + 1, h // 8, w // 8
    x = torch.randn(1, 16, *lat, generator=g).to(device)
    ctx = torch.randn(1, 96, *lat, generator=g).to(device)
    text = torch.randn(1, 512, cfg["text_dim"], generator=g).to(device)
    t = torch.tensor([500.0], device=device)

    transformer = common.build_transformer(cfg, device)
    if lora_rank:
        common.add_lora(transformer, lora_rank, b_std=0.01)
    with torch.no_grad():
        for name, m in transformer.named_modules():
            if name.endswith(".attn1"):
                m.norm_q.weight.mul_(a.temperature**0.5)
                m.norm_k.weight.mul_(a.temperature**0.5)

    @torch.no_grad()
    def forward(dtype):
        return transformer(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=text.to(dtype),
                           control_hidden_states=ctx.to(dtype), return_dict=False)[0].float()

    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION
                                        if device == "cuda" else torch.nn.attention.SDPBackend.MATH):
        ref = float32_forward(transformer, forward)
    out = {"naive_bf16": forward(torch.bfloat16)}
    merge_lora(transformer)
    use_gelu_epilogue(transformer)
    if device == "cuda":  # as the speed modes (inductor's CPU code for bf16 fails to build here, besides)
        transformer.set_attention_backend("_native_cudnn")
        compile_blocks(transformer)
    out["default"] = forward(torch.bfloat16)
    fp8_attention.use_fp8_attention(transformer)
    out["default_fp8attn"] = forward(torch.bfloat16)
    use_fp8_linears(transformer)
    out["fast"] = forward(torch.bfloat16)

    rows = [{"variant": k, "rel_err_vs_fp32": common.rel_err(v, ref),
             "rel_err_vs_naive_bf16": common.rel_err(v, out["naive_bf16"]),
             "finite": bool(torch.isfinite(v).all())} for k, v in out.items()]
    print(common.table(rows, list(rows[0])))
    payload = {"benchmark": "forward_accuracy_vs_fp32", "environment": common.environment(device),
               "config": {"frames": frames, "height": h, "width": w, "timestep": 500, "tiny": a.tiny,
                          "temperature": a.temperature, "lora_rank": lora_rank,
                          "transformer": dict(cfg)},
               "results": rows}
    name = ("accuracy_tiny" if a.tiny else "accuracy") + ("" if a.temperature == 1 else f"_T{a.temperature:g}")
    print("wrote", common.write_json(name, payload, a.out))


if __name__ == "__main__":
    main()
