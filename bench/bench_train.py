"""Seconds per training micro-step and peak memory of the DiT forward + backward, 14B shapes.

    python bench/bench_train.py                 # GPU: random weights of the real shapes, 33x720x1280
    python bench/bench_train.py --tiny          # CPU smoke run of the same code

Recipes, all with LoRA r=32 on the main blocks (peft), bf16 weights, the same random inputs:
  naive      diffusers + peft as documented: enable_gradient_checkpointing() on every block
             (VACE blocks included), the default SDPA kernel
  ours       + the cuDNN SDPA kernel, VACE blocks under no_grad, selective recompute: self-attention
             outputs are kept, the rest recomputed (diffhdr.model.enable_gradient_checkpointing)
  ours_compiled      ours + torch.compile of the repeated blocks
  ours_fp8_compiled  ours_compiled + fp8 (e4m3, row-wise scaled) GEMMs for the frozen base
                     linears, forward and dx
  ours_fp8_compiled_nocast  + LoRA inputs left in bf16 (peft casts each to the float32 of the
                     LoRA weights, autocast casts it back): what train.py runs with fp8_base
  ours_fp8attn_compiled_nocast  + fp8 self-attention, forward and backward (cuDNN through
                     diffhdr.fp8_attention; `model.fp8_attention`)
The VAE and text encoder are not timed (precomputed latents; the same cost for every recipe).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffhdr import fp8_attention  # noqa: E402
from diffhdr.model import (compile_blocks, enable_gradient_checkpointing,  # noqa: E402
                           lora_inputs_stay_in_compute_dtype)
from diffhdr.runtime import use_fp8_training_linears  # noqa: E402
from diffhdr.tiny import REAL_TRANSFORMER, TINY_TRANSFORMER  # noqa: E402

RECIPES = ("naive", "ours", "ours_compiled", "ours_fp8_compiled", "ours_fp8_compiled_nocast",
           "ours_fp8attn_compiled_nocast")


def make_inputs(cfg, frames, h, w, device):
    g = torch.Generator().manual_seed(0)
    lat = (frames - 1) // 4 + 1, h // 8, w // 8
    return dict(
        x0=torch.randn(1, 16, *lat, generator=g).to(device),
        noise=torch.randn(1, 16, *lat, generator=g).to(device),
        context=torch.randn(1, 96, *lat, generator=g).to(device, torch.bfloat16),
        text=torch.randn(1, 512, cfg["text_dim"], generator=g).to(device, torch.bfloat16),
    )


def build(recipe, cfg, rank, device):
    transformer = common.build_transformer(cfg, device)
    transformer.requires_grad_(False)
    common.add_lora(transformer, rank)
    if recipe == "naive":
        transformer.enable_gradient_checkpointing()
    else:
        enable_gradient_checkpointing(transformer, save_attention=-1)  # what train.py runs
    if recipe != "naive" and torch.device(device).type == "cuda":
        transformer.set_attention_backend("_native_cudnn")
    if "fp8" in recipe:
        use_fp8_training_linears(transformer)
    if "fp8attn" in recipe:
        fp8_attention.use_fp8_attention(transformer)
    if "nocast" in recipe:
        lora_inputs_stay_in_compute_dtype(transformer)
    if "compiled" in recipe:
        compile_blocks(transformer)
    transformer.train()
    return transformer


def micro_step(transformer, inp, sigma=0.6):
    xt = (1 - sigma) * inp["x0"] + sigma * inp["noise"]
    with torch.autocast(inp["x0"].device.type, dtype=torch.bfloat16):
        pred = transformer(hidden_states=xt.to(torch.bfloat16), timestep=torch.tensor([1000 * sigma], device=xt.device),
                           encoder_hidden_states=inp["text"], control_hidden_states=inp["context"],
                           return_dict=False)[0]
    loss = ((pred.float() - (inp["noise"] - inp["x0"])) ** 2).mean()
    loss.backward()
    return loss.detach()


def main():
    p = common.arguments(__doc__)
    p.add_argument("--steps", type=int, default=3, help="timed micro-steps after one warm-up")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--profile", help="write a kernel-time table of one micro-step of the last recipe here")
    a = p.parse_args()
    device = common.device_of(a)
    cfg, (frames, h, w), rank = (TINY_TRANSFORMER, (5, 32, 32), 4) if a.tiny else (REAL_TRANSFORMER, (33, 720, 1280), 32)
    inp = make_inputs(cfg, frames, h, w, device)
    rows, grads = [], {}
    for recipe in a.recipes.split(","):
        transformer = params = None
        try:
            transformer = build(recipe, cfg, rank, device)
            params = [p for p in transformer.parameters() if p.requires_grad]
            common.reset_peak(device)
            times, losses = [], []
            for i in range(a.steps + 1):
                with common.timed(device, times):
                    losses.append(micro_step(transformer, inp).item())
                if i == 0:
                    grads[recipe] = torch.cat([p.grad.flatten().double().cpu() for p in params])
                for prm in params:
                    prm.grad = None
        except Exception as e:  # e.g. out of memory: report it, measure the other recipes
            traceback.print_exc()
            rows.append({"recipe": recipe, "error": f"{type(e).__name__}: {e}"[:500], "peak_GiB": common.peak_gib(device)})
            del transformer, params
            common.free(device)
            continue
        if a.profile and recipe == a.recipes.split(",")[-1]:
            common.profile_cuda(lambda: micro_step(transformer, inp), a.profile)
            for prm in params:
                prm.grad = None
        row = {"recipe": recipe, "s_per_micro_step": sum(times[1:]) / a.steps, "peak_GiB": common.peak_gib(device),
               "loss": losses[0], "warmup_s": times[0]}
        rows.append(row)
        print(common.table([row], list(row)), flush=True)
        del transformer, params
        common.free(device)
    base = next(r for r in rows if "loss" in r)
    for r in rows:
        if "loss" not in r:
            continue
        r["time_vs_naive"] = r["s_per_micro_step"] / base["s_per_micro_step"]
        r["loss_rel_diff_vs_naive"] = abs(r["loss"] - base["loss"]) / abs(base["loss"])
        g0, g = grads[base["recipe"]], grads[r["recipe"]]
        r["lora_grad_cosine_vs_naive"] = float(g @ g0 / (g.norm() * g0.norm() + 1e-30))
    print()
    print(common.table(rows, ["recipe", "s_per_micro_step", "time_vs_naive", "peak_GiB", "loss_rel_diff_vs_naive",
                              "lora_grad_cosine_vs_naive"]))
    payload = {"benchmark": "train_micro_step", "environment": common.environment(device),
               "config": {"frames": frames, "height": h, "width": w, "lora_rank": rank, "tiny": a.tiny,
                          "timed_steps": a.steps, "transformer": {k: v for k, v in cfg.items()}},
               "results": rows}
    print("wrote", common.write_json("train_tiny" if a.tiny else "train", payload, a.out))


if __name__ == "__main__":
    main()
