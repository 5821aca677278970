"""Seconds per guided denoising step on several GPUs against one, 14B shapes, 33x720x1280.

    torchrun --nproc_per_node 2 bench/bench_infer_multi.py            # GPUs
    torchrun --nproc_per_node 2 bench/bench_infer_multi.py --tiny     # CPU smoke run (gloo; no ring)

Modes, each with guidance 7.5 on every step, CFA, the LoRA folded, cuDNN attention, the same noise,
context and text:
  one       rank 0 alone (the others wait): the baseline, in the same run
  cfg       CFG-parallel: one half of the GPUs the conditional forward, the other the unconditional
  ulysses   context parallelism, all-to-all over heads
  ring      context parallelism, K/V passed round the ranks
  one_flash rank 0 alone with torch's flash kernel instead of cuDNN: two correct bf16 kernels differ
            by this much, the yardstick of "equal within bf16 tolerance" (GPU only)
Each mode times --steps steps after one warm-up step. Accuracy: the latents after the warm-up
step (one step from the same noise) and after the timed run, against `one`'s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_infer import inputs  # noqa: E402

from diffhdr.model import DiffHDRModel  # noqa: E402
from diffhdr.parallel import finish_distributed, init_distributed, local_device, setup_parallelism  # noqa: E402
from diffhdr.pipeline import InferenceSettings, denoise  # noqa: E402
from diffhdr.runtime import merge_lora  # noqa: E402
from diffhdr.tiny import REAL_TRANSFORMER, TINY_TRANSFORMER  # noqa: E402

MODES = ("one", "cfg", "ulysses", "ring", "one_flash")
ALONE = ("one", "one_flash")  # rank 0 alone


def build(cfg, device, backend="_native_cudnn"):
    transformer = common.build_transformer(cfg, device)
    common.add_lora(transformer, 4 if device.type == "cpu" else 32, b_std=0.01)
    merge_lora(transformer)
    if device.type == "cuda":
        transformer.set_attention_backend(backend)
    return DiffHDRModel(transformer, None, None, None, base_model="random")


def run_mode(mode, cfg, inp, steps, device):
    """Latents after one step and after `steps`, and the timing row, of one mode on this rank."""
    model = build(cfg, device, "_native_flash" if mode == "one_flash" else "_native_cudnn")
    cfg_parallel = None
    if mode not in ALONE:
        cfg_parallel = setup_parallelism(model.transformer, "ring" if mode == "ring" else "ulysses", mode == "cfg",
                                         device)
    args = (model, inp["context"], inp["cfa_cond"], inp["uncond"].repeat(1, 4, 1), inp["noise"])
    common.reset_peak(device)
    times, latents = [], []
    for n in (1, steps):  # the first call pays for cuDNN's plans
        settings = InferenceSettings(num_inference_steps=n, guidance_scale=7.5, scheduler="euler")
        with common.timed(device, times):
            latents.append(denoise(*args, settings, inp["gates"], progress=False, cfg_parallel=cfg_parallel).cpu())
    row = {"mode": mode, "gpus": 1 if mode in ALONE else dist.get_world_size(), "s_per_step": times[1] / steps,
           "warmup_s": times[0], "peak_GiB": common.peak_gib(device)}
    del model, args
    common.free(device)
    return latents[0], latents[1], row


def main():
    p = common.arguments(__doc__)
    p.add_argument("--steps", type=int, default=2, help="timed denoising steps (after a warm-up step)")
    p.add_argument("--modes", default=",".join(MODES))
    a = p.parse_args()
    rank, world = init_distributed(common.device_of(a))
    device = local_device(common.device_of(a))
    cfg, (frames, h, w) = (TINY_TRANSFORMER, (9, 32, 32)) if a.tiny else (REAL_TRANSFORMER, (33, 720, 1280))
    inp = inputs(cfg, frames, h, w, device)
    rows, firsts, finals = [], {}, {}
    modes = [m for m in a.modes.split(",") if m != "one_flash" or device.type == "cuda"]
    for mode in modes:
        if mode not in ALONE or rank == 0:  # the others wait; one GPU's time, measured in this run
            firsts[mode], finals[mode], row = run_mode(mode, cfg, inp, a.steps, device)
            rows.append(row)
        dist.barrier()
    if rank == 0:
        base = next((r for r in rows if r["mode"] == "one"), None)
        for r in rows:
            if base and r["mode"] != "one":
                r["speedup_vs_one"] = base["s_per_step"] / r["s_per_step"]
                r["rel_err_1step"] = common.rel_err(firsts[r["mode"]], firsts["one"])
                r["rel_err_final"] = common.rel_err(finals[r["mode"]], finals["one"])
        print(common.table(rows, ["mode", "gpus", "s_per_step", "speedup_vs_one", "peak_GiB",
                                  "rel_err_1step", "rel_err_final", "warmup_s"]))
        payload = {"benchmark": "inference_multi_gpu", "environment": common.environment(device),
                   "config": {"frames": frames, "height": h, "width": w, "timed_steps": a.steps,
                              "guidance_scale": 7.5, "cfa": True, "lora_rank_folded": 4 if a.tiny else 32,
                              "world": world, "tiny": a.tiny},
                   "results": rows}
        print("wrote", common.write_json(f"infer_multi{world}" + ("_tiny" if a.tiny else ""), payload, a.out))
    finish_distributed()


if __name__ == "__main__":
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    main()
