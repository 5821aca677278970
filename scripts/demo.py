"""The whole DiffHDR pipeline on the built-in tiny model, on CPU, in about a minute:
procedural HDR sequences -> train.py (LoRA) -> an 8-bit LDR video -> inference.py -> EXR + preview.

    python scripts/demo.py [--out demo]

Every step runs the real command-line scripts on real files; nothing is downloaded. The tiny
model has random weights, so the HDR it writes is noise-like: the demo shows the plumbing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from diffhdr.cli import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]


def step(title: str, *args):
    print(f"\n== {title}\n$ python {' '.join(map(str, args))}", flush=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, check=True)
    print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="demo", help="folder for the data, checkpoints, video, HDR and scores")
    a = p.parse_args()
    # imported after parsing, so that --help answers without loading torch
    import numpy as np
    import yaml

    from diffhdr.color_mapping import linear_to_srgb
    from diffhdr.io import write_exr, write_video
    from diffhdr.synthetic import DEMO_EXPOSURE, render_sky, write_dataset

    out = (ROOT / a.out).resolve()
    start = time.perf_counter()
    data = write_dataset(out / "data", sequences=3, frames=21, h=48, w=64)
    print(f"wrote 3 procedural HDR sequences (21 EXR frames each) to {data}")
    cfg = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    cfg["data"]["dataset_root"] = str(data)
    cfg["output_dir"] = str(out / "checkpoints")
    (out / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    step("train the LoRA (tiny model, 20 steps)", "train.py", "--config", out / "tiny.yaml")

    frames = np.stack([render_sky(48, 64, t, seed=3) * DEMO_EXPOSURE for t in range(33)])  # a landscape, unseen
    write_video(out / "ldr.mp4", (linear_to_srgb(frames) * 255).astype(np.uint8))
    for i, f in enumerate(frames):
        write_exr(out / "groundtruth" / "exr" / f"frame_{i:05d}.exr", f)
    step("reconstruct HDR from the 8-bit video", "inference.py", "--input_video", out / "ldr.mp4",
         "--output_dir", out / "hdr", "--lora_checkpoint", out / "checkpoints" / "checkpoint-final",
         "--prompt", "[Overexposed: the sun, its glow and sunlit clouds]; [Underexposed: deep shade under the trees]",
         "--num_inference_steps", 10, "--device", "cpu", "--overwrite")
    evaluate = ROOT / "evaluate.py"
    if evaluate.is_file():
        step("score it against the ground truth", "evaluate.py", "--pred_dir", out / "hdr" / "exr",
             "--gt_dir", out / "groundtruth" / "exr", "--metrics", "pu21_psnr,log_psnr", "--output", out / "scores")
    print(f"\ndone in {time.perf_counter() - start:.0f} s: {out / 'hdr'} holds exr/, preview.mp4, settings.json")


if __name__ == "__main__":
    main()
