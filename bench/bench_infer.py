"""Seconds per denoising step (with CFG), peak memory and accuracy of inference, 14B shapes.

    python bench/bench_infer.py                 # GPU: random weights of the real shapes, 33x720x1280
    python bench/bench_infer.py --tiny          # CPU smoke run of the same code

The model carries a LoRA of rank 32 on the main blocks' linears (`--lora_rank`; 0 for the base model
alone), as every DiffHDR inference does. Modes (guidance 7.5, flow-match Euler, the same noise, VACE
context and text for all). All but `naive` fold the LoRA into the weights and run
diffhdr.pipeline.denoise, as inference.py does:
  naive          WanVACEPipeline's loop as diffusers ships it, the LoRA as peft attaches it (what
                 `pipe.load_lora_weights` gives): cond and uncond forwards, no CFA
  batched        both CFG branches in one forward of batch 2 (kept to show why it is off)
  default_nocfa  `--speed default --no-fp8_attention --no_cfa`: cuDNN attention, GELU epilogue,
                 torch.compile, CFA off
  default        default_nocfa + CFA: `--speed default --no-fp8_attention`, or `--speed default`
                 where fp8 attention cannot run
  default_fp8attn  default + fp8 self-attention (diffhdr.fp8_attention): `--speed default` on Hopper
                 with nvidia-cudnn-frontend (what users run there, with `--memory full`)
  fp8            default + fp8 GEMMs: `--speed fast --no-fp8_attention`'s forward
  fp8attn        fp8 + fp8 self-attention: `--speed fast`'s forward
  fast           fp8attn + guidance on the first 30% of the steps, its unconditional forward on every
                 3rd of them (`--speed fast`: diffhdr.pipeline.FAST_GUIDANCE); its time per step is
                 the average over a whole run of --steps steps
  low            fp8 weight storage cast per layer, no compile: `--memory low` on GPUs without fp8
                 GEMMs (on Ada/Hopper `--memory low` is `fast`'s fp8 weights: see its peak)
Accuracy: relative L2 error and PSNR (peak-to-peak 2, the [-1, 1] Log-Gamma range) of the final
latents, each against the mode with the same maths: naive for batched/default_nocfa, default for
fp8/fast/low (modes compared only when they ran the same number of steps). With random weights
small bf16 differences grow through 40 blocks, so these are upper bounds of what trained weights
would show.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffhdr.model import DiffHDRModel  # noqa: E402
from diffhdr.pipeline import (FAST_GUIDANCE, InferenceSettings, denoise, guidance_plan, make_scheduler,  # noqa: E402
                             set_timesteps)
from diffhdr.runtime import apply_speed_mode, merge_lora  # noqa: E402
from diffhdr.tiny import REAL_TRANSFORMER, TINY_TRANSFORMER  # noqa: E402

MODES = ("naive", "batched", "default_nocfa", "default", "default_fp8attn", "fp8", "fp8attn", "fast", "low")
REFERENCE = {"batched": "naive", "default_nocfa": "naive", "default": "default_nocfa", "fp8": "default",
             "fp8attn": "default", "default_fp8attn": "default", "fast": "default", "low": "default"}


def inputs(cfg, frames, h, w, device):
    g = torch.Generator().manual_seed(0)
    lat = (frames - 1) // 4 + 1, h // 8, w // 8
    text = lambda n: torch.randn(1, n, cfg["text_dim"], generator=g).to(device, torch.bfloat16)  # noqa: E731
    gate = (torch.rand(1, math.prod(lat) // 4, 1, generator=g) > 0.7).float()
    return dict(noise=torch.randn(1, 16, *lat, generator=g).to(device),
                context=torch.randn(1, 96, *lat, generator=g).to(device, torch.bfloat16),
                cond=text(512), uncond=text(512), cfa_cond=text(4 * 512),
                gates=(gate.to(device), ((1 - gate) * (torch.rand(gate.shape, generator=g) > 0.8)).to(device)))


def naive_loop(model, inp, settings, device, times):
    """diffusers' WanVACEPipeline denoising loop, copied: two forwards per step."""
    scheduler = make_scheduler(model, settings)
    latents = inp["noise"].float()
    for t in set_timesteps(scheduler, settings, device):
        with common.timed(device, times):
            kw = dict(timestep=t.expand(1), control_hidden_states=inp["context"], return_dict=False)
            x = latents.to(torch.bfloat16)
            pc = model.transformer(hidden_states=x, encoder_hidden_states=inp["cond"], **kw)[0].float()
            pu = model.transformer(hidden_states=x, encoder_hidden_states=inp["uncond"], **kw)[0].float()
            latents = scheduler.step(pu + settings.guidance_scale * (pc - pu), t, latents, return_dict=False)[0]
    return latents


def run_mode(mode, cfg, inp, steps, device, lora_rank, profile=None):
    transformer = common.build_transformer(cfg, device)
    if lora_rank:
        common.add_lora(transformer, lora_rank, b_std=0.01)
    if mode != "naive":
        merge_lora(transformer)
    model = DiffHDRModel(transformer, None, None, None, base_model="random")
    if mode == "low":
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    elif mode in ("default_nocfa", "default", "default_fp8attn", "fp8", "fp8attn", "fast"):
        apply_speed_mode(model, "fast" if mode in ("fp8", "fp8attn", "fast") else "default", device,
                         fp8_attn=mode in ("default_fp8attn", "fp8attn", "fast"))
    settings = InferenceSettings(num_inference_steps=steps, guidance_scale=7.5, scheduler="euler",
                                 batch_cfg=mode == "batched", cfa=mode not in ("naive", "batched", "default_nocfa"),
                                 **(FAST_GUIDANCE if mode == "fast" else {}))
    cfa = settings.cfa
    cond = inp["cfa_cond"] if cfa else inp["cond"]
    uncond = inp["uncond"].repeat(1, 4, 1) if cfa else inp["uncond"]
    gates = inp["gates"] if cfa else None
    common.reset_peak(device)
    times = []
    if mode == "naive":
        naive_loop(model, inp, dataclasses.replace(settings, num_inference_steps=1), device, [])  # warm-up
        latents = naive_loop(model, inp, settings, device, times)
        s_per_step = sum(times) / len(times)
    else:
        warm = dataclasses.replace(settings, num_inference_steps=1)
        with common.timed(device, times):  # first call: cuDNN plans, torch.compile
            denoise(model, inp["context"], cond, uncond, inp["noise"], warm, gates, progress=False)
        with common.timed(device, times):
            latents = denoise(model, inp["context"], cond, uncond, inp["noise"], settings, gates, progress=False)
        s_per_step = times[1] / steps
        if profile:
            common.profile_cuda(lambda: denoise(model, inp["context"], cond, uncond, inp["noise"], warm, gates,
                                                progress=False), profile)
    plan = guidance_plan(steps, settings.cfg_interval, settings.cfg_refresh)
    return latents, {"mode": mode, "steps": steps, "forwards_per_step": (steps + plan.count("full")) / steps,
                     "s_per_step": s_per_step, "warmup_s": times[0] if mode != "naive" else None,
                     "peak_GiB": common.peak_gib(device)}


def psnr(a, b):
    return 10 * math.log10(4.0 / max(((a - b) ** 2).mean().item(), 1e-20))


def main():
    p = common.arguments(__doc__)
    p.add_argument("--steps", type=int, default=2, help="timed denoising steps (after a warm-up step)")
    p.add_argument("--naive_steps", type=int, help="steps for naive (its cost per step does not depend on the "
                                                       "schedule; default --steps)")
    p.add_argument("--tag", default="", help="suffix of the JSON name")
    p.add_argument("--lora_rank", type=int, help="LoRA rank on the main blocks (default 32, tiny 4; 0: none)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--profile", help="write a kernel-time table of one denoising step of the last mode here")
    a = p.parse_args()
    device = common.device_of(a)
    cfg, (frames, h, w) = (TINY_TRANSFORMER, (9, 32, 32)) if a.tiny else (REAL_TRANSFORMER, (33, 720, 1280))
    inp = inputs(cfg, frames, h, w, device)
    lora_rank = a.lora_rank if a.lora_rank is not None else 4 if a.tiny else 32
    rows, finals = [], {}
    for mode in a.modes.split(","):
        try:
            steps = a.naive_steps if mode == "naive" and a.naive_steps else a.steps
            last = mode == a.modes.split(",")[-1]
            latents, row = run_mode(mode, cfg, inp, steps, device, lora_rank, a.profile if last else None)
            finals[mode] = latents.cpu()
        except Exception as e:  # report the failure, measure the other modes
            traceback.print_exc()
            row = {"mode": mode, "error": f"{type(e).__name__}: {e}"[:500]}
        rows.append(row)
        print(common.table([row], list(row)), flush=True)
        common.free(device)
    naive_s = next((r["s_per_step"] for r in rows if r["mode"] == "naive" and "s_per_step" in r), None)
    for r in rows:
        ref = REFERENCE.get(r["mode"])
        same = ref in finals and next(x["steps"] for x in rows if x["mode"] == ref) == r.get("steps")
        if r["mode"] in finals and same:
            r["error_vs"], r["rel_err"] = ref, common.rel_err(finals[r["mode"]], finals[ref])
            r["psnr_dB"] = psnr(finals[r["mode"]], finals[ref])
        if naive_s and "s_per_step" in r:
            r["speedup_vs_naive"] = naive_s / r["s_per_step"]
    print()
    print(common.table(rows, ["mode", "steps", "forwards_per_step", "s_per_step", "speedup_vs_naive", "peak_GiB",
                              "error_vs", "rel_err", "psnr_dB"]))
    payload = {"benchmark": "inference_denoising_step_cfg", "environment": common.environment(device),
               "config": {"frames": frames, "height": h, "width": w, "timed_steps": a.steps, "guidance_scale": 7.5,
                          "lora_rank": lora_rank,
                          "fast_guidance": FAST_GUIDANCE,
                          "tiny": a.tiny, "transformer": dict(cfg)},
               "results": rows}
    print("wrote", common.write_json(("infer_tiny" if a.tiny else "infer") + a.tag, payload, a.out))


if __name__ == "__main__":
    main()
