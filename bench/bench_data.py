"""CPU cost of one training clip (33 x 720 x 1280) in a DataLoader worker (one core: read the EXR
frames, resize/crop, flip), and what the LDR synthesis + masks + Log-Gamma would cost on that
core (they run on the training GPU instead: diffhdr.dataset.condition_batch).

    python bench/bench_data.py [--frames-hw 720 1280] [--clips 3]

Baseline in the same run: a naive loader that reads the whole 81-frame sequence and then crops.
Reports how many DataLoader workers keep up with a GPU micro-step of --gpu_step seconds.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffhdr.config import Config  # noqa: E402
from diffhdr.dataset import HDRVideoDataset, collate, condition_batch, read_frames  # noqa: E402
from diffhdr.synthetic import write_sequence  # noqa: E402


def stages(ds: HDRVideoDataset, draw: int) -> dict:
    """The worker's __getitem__, and the conditioning the GPU does, both on this one core."""
    t = time.perf_counter()
    item = ds[draw]
    total = time.perf_counter() - t
    t = time.perf_counter()
    condition_batch(collate([item]), ds.cfg, "cpu")
    return {"total_s": total, "condition_cpu_s": time.perf_counter() - t}


def naive_clip(ds: HDRVideoDataset) -> float:
    t = time.perf_counter()
    frames = read_frames(ds.seqs[0], ds.cfg.data.frame_pattern, 0, ds.cfg.data.sequence_frames)
    _ = frames[:33, :, : ds.h, : ds.w].contiguous()
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames-hw", type=int, nargs=2, default=[720, 1280])
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--gpu_step", type=float, default=15.0, help="seconds per GPU micro-step to keep up with")
    a = p.parse_args()
    torch.set_num_threads(1)
    h, w = a.frames_hw
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_sequence(Path(tmp) / "sequence_000", frames=81, h=h, w=w)
        print(f"wrote 81 half-float EXR frames {w}x{h} in {time.perf_counter() - t:.1f} s", flush=True)
        cfg = Config()
        cfg.data.dataset_root, cfg.data.val_split = tmp, 0
        cfg.training.resolution = [33, h, w]
        ds = HDRVideoDataset(cfg, "train")
        ours = [stages(ds, d) for d in range(a.clips)]
        naive = [naive_clip(ds) for _ in range(a.clips)]
    clip_s = sum(r["total_s"] for r in ours) / len(ours)
    cond_s = sum(r["condition_cpu_s"] for r in ours) / len(ours)
    naive_s = sum(naive) / len(naive)
    rows = [
        {"loader": "naive: read all 81 frames, crop", "s_per_clip": naive_s, "ratio_vs_naive": 1.0},
        {"loader": "ours: worker item (read 33, crop, flip)", "s_per_clip": clip_s, "ratio_vs_naive": clip_s / naive_s},
        {"loader": "(LDR+masks+Log-Gamma if done on this core)", "s_per_clip": cond_s,
         "ratio_vs_naive": cond_s / naive_s},
    ]
    workers = max(1, math.ceil(clip_s / a.gpu_step))
    print(common.table(rows, ["loader", "s_per_clip", "ratio_vs_naive"]))
    print(f"target < 1.5 s per clip per worker core: {'met' if clip_s < 1.5 else 'NOT met'} ({clip_s:.2f} s); "
          f"DataLoader workers to keep up with a {a.gpu_step:.0f} s GPU step: {workers}")
    payload = {"benchmark": "data_clip_cpu", "environment": common.environment("cpu"),
               "config": {"clip_frames": 33, "height": h, "width": w, "threads": 1, "clips": a.clips,
                          "gpu_step_s": a.gpu_step},
               "results": rows, "workers_needed": workers, "target_met": clip_s < 1.5}
    print("wrote", common.write_json("data", payload))


if __name__ == "__main__":
    main()
