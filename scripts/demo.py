"""DiffHDR on a clip the project renders itself, with nothing downloaded:

    python scripts/demo.py [--out demo]          # DiffHDR-mini (shipped) on a procedural landscape, ~1.5 min on CPU
    python scripts/demo.py --tiny [--out demo]   # the whole pipeline, LoRA training included, on the tiny model

Default: a 33-frame landscape (synthetic.render_sky: sun, glow and lit clouds clipped to white, shade
crushed) as an 8-bit video, HDR from it by DiffHDR-mini (inference.py --base_model mini), the same
clip by inverse sRGB (no expansion) for comparison, both scored against the ground truth
(stops_clipped / stops_elsewhere, evaluate.py), and compare.png (scripts/plot_mini.py).
--tiny: procedural HDR sequences -> train.py (LoRA, 20 steps) -> inference.py -> evaluate.py on the
built-in tiny model, whose weights are random: it shows every stage run, and its HDR is noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from diffhdr.cli import HelpFormatter

ROOT = Path(__file__).resolve().parents[1]
MINI_PROMPT = "[Overexposed: the sun, its glow and sunlit clouds]; [Underexposed: deep shade under the trees]"


def step(title: str, *args):
    print(f"\n== {title}\n$ python {' '.join(map(str, args))}", flush=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, check=True)
    print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)


def write_clip(out: Path, frames) -> Path:
    """HDR frames (T, H, W, 3) -> out/ldr.mp4 (as a camera clips them) and out/groundtruth/exr."""
    from diffhdr.color_mapping import linear_to_srgb
    from diffhdr.io import write_exr, write_video

    write_video(out / "ldr.mp4", (linear_to_srgb(frames.clip(0, 1)) * 255).astype("uint8"))
    for i, f in enumerate(frames):
        write_exr(out / "groundtruth" / "exr" / f"frame_{i:05d}.exr", f)
    return out / "ldr.mp4"


def score(out: Path, name: str, ldr: Path, metrics: str) -> dict:
    step(f"score {name} against the ground truth", "evaluate.py", "--pred_dir", out / name / "exr", "--gt_dir",
         out / "groundtruth" / "exr", "--ldr", ldr, "--metrics", metrics, "--output", out / f"scores_{name}")
    return json.loads((out / f"scores_{name}" / "scores.json").read_text())["mean"]


def mini_demo(out: Path) -> None:
    import numpy as np

    from diffhdr.synthetic import DEMO_EXPOSURE, render_sky

    ldr = write_clip(out, np.stack([render_sky(192, 320, t, seed=3) * DEMO_EXPOSURE for t in range(33)]))
    step("reconstruct HDR with DiffHDR-mini", "inference.py", "--input_video", ldr, "--output_dir", out / "hdr",
         "--base_model", "mini", "--prompt", MINI_PROMPT, "--overwrite")
    step("the baseline: inverse sRGB, no expansion", "scripts/baselines.py", "--method", "linear", "--input_video", ldr,
         "--output_dir", out / "no_expansion", "--overwrite")
    metrics = "stops_clipped,stops_elsewhere,pu21_psnr"
    rows = {name: score(out, name, ldr, metrics) for name in ("hdr", "no_expansion")}
    step("draw the comparison", "scripts/plot_mini.py", "--ldr", ldr, "--pred", out / "hdr" / "exr",
         "--gt", out / "groundtruth" / "exr", "--out", out / "compare.png")
    print(f"\n{'':14s}" + "".join(f"{m:>18s}" for m in metrics.split(",")))
    for name, mean in rows.items():
        print(f"{name:14s}" + "".join(f"{mean[m]:18.3f}" for m in metrics.split(",")))


def tiny_demo(out: Path) -> None:
    import numpy as np
    import yaml

    from diffhdr.synthetic import DEMO_EXPOSURE, render_sky, write_dataset

    data = write_dataset(out / "data", sequences=3, frames=21, h=48, w=64)
    print(f"wrote 3 procedural HDR sequences (21 EXR frames each) to {data}")
    cfg = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    cfg["data"]["dataset_root"] = str(data)
    cfg["output_dir"] = str(out / "checkpoints")
    (out / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    step("train the LoRA (tiny model, 20 steps)", "train.py", "--config", out / "tiny.yaml")
    ldr = write_clip(out, np.stack([render_sky(48, 64, t, seed=3) * DEMO_EXPOSURE for t in range(33)]))
    step("reconstruct HDR from the 8-bit video", "inference.py", "--input_video", ldr, "--output_dir", out / "hdr",
         "--lora_checkpoint", out / "checkpoints" / "checkpoint-final", "--prompt", MINI_PROMPT,
         "--num_inference_steps", 10, "--device", "cpu", "--overwrite")
    score(out, "hdr", ldr, "pu21_psnr,log_psnr")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="demo", help="folder for the clip, the HDR, the scores and the picture")
    p.add_argument("--tiny", action="store_true", help="the tiny random model instead, LoRA training included")
    a = p.parse_args()
    out = (ROOT / a.out).resolve()
    start = time.perf_counter()
    (tiny_demo if a.tiny else mini_demo)(out)
    print(f"\ndone in {time.perf_counter() - start:.0f} s: {out / 'hdr'} holds exr/, preview.mp4, settings.json")


if __name__ == "__main__":
    main()
