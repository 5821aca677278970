"""Seconds per optimizer step on several GPUs through accelerate, and scaling efficiency, 14B shapes.

    bash bench/train_multi.sh 4        # 1 GPU, then 4 with DDP, then 4 with FSDP2; efficiency vs 1 GPU
    accelerate launch --num_processes 4 bench/bench_train_multi.py --tag ddp4
    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 4 \\
        bench/bench_train_multi.py --tag fsdp4 --baseline bench/results/train_multi_1gpu_<device>.json
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 bench/bench_train_multi.py --tiny   # CPU, gloo

Every rank trains what train.py trains (LoRA r=32 on the main blocks, selective recompute, cuDNN
attention, fp8 base GEMMs, torch.compile) on its own random 33x720x1280 clip, `--accumulation`
micro-steps per optimizer step (AdamW). Weak scaling: each GPU does the same work per step, so
the efficiency against one GPU is t(1 GPU) / t(N GPUs). Peak memory is reported for every GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_train import build, make_inputs, micro_step  # noqa: E402

from diffhdr.tiny import REAL_TRANSFORMER, TINY_TRANSFORMER  # noqa: E402
from diffhdr.training import fsdp_plugin  # noqa: E402

RECIPE = "ours_fp8_compiled_nocast"


def main():
    p = common.arguments(__doc__)
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps after one warm-up step")
    p.add_argument("--accumulation", type=int, default=4, help="micro-steps per optimizer step (paper: 4)")
    p.add_argument("--baseline", help="JSON of a 1-GPU run of this script: adds the scaling efficiency")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as train.py
    acc = Accelerator(mixed_precision="bf16" if not a.tiny else "no", fsdp_plugin=fsdp_plugin("bf16"))
    device = acc.device
    cfg, (frames, h, w), rank = (TINY_TRANSFORMER, (5, 32, 32), 4) if a.tiny else (REAL_TRANSFORMER, (33, 720, 1280), 32)
    recipe = RECIPE if device.type == "cuda" else "ours"
    transformer = build(recipe, cfg, rank, device)
    params = [q for q in transformer.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model, optimizer = acc.prepare(transformer, optimizer)
    inp = make_inputs(cfg, frames, h, w, device)
    inp = {k: v + 0.01 * acc.process_index for k, v in inp.items()}  # each rank its own clip
    common.reset_peak(device)
    times = []
    for _ in range(a.steps + 1):
        with common.timed(device, times):
            for micro in range(a.accumulation):
                last = micro == a.accumulation - 1
                with contextlib.nullcontext() if last else acc.no_sync(model):
                    micro_step(model, inp)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    peak = torch.tensor([common.peak_gib(device) or 0.0], device=device)
    peaks = acc.gather(peak).tolist()
    if not acc.is_main_process:
        return
    s_per_step = sum(times[1:]) / a.steps
    row = {"gpus": acc.num_processes, "distributed": str(acc.distributed_type).split(".")[-1], "recipe": recipe,
           "s_per_optimizer_step": s_per_step, "warmup_s": times[0], "peak_GiB_per_gpu": peaks,
           "clips_per_s": acc.num_processes * a.accumulation / s_per_step,
           "effective_batch": acc.num_processes * a.accumulation}
    if a.baseline:
        base = json.loads(Path(a.baseline).read_text())["results"][0]
        row["scaling_efficiency_vs_1gpu"] = base["s_per_optimizer_step"] / s_per_step
    print(common.table([row], list(row)))
    payload = {"benchmark": "train_optimizer_step_multi_gpu", "environment": common.environment(device),
               "config": {"frames": frames, "height": h, "width": w, "lora_rank": rank, "tiny": a.tiny,
                          "accumulation": a.accumulation, "timed_steps": a.steps},
               "results": [row]}
    name = "train_multi_tiny" if a.tiny else f"train_multi_{a.tag or str(acc.num_processes) + 'gpu'}"
    print("wrote", common.write_json(name, payload, a.out))


if __name__ == "__main__":
    main()
