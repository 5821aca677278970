"""Score a model on held-out HDR sequences made over-exposed, against the baselines, in stops.

    python scripts/eval_mini.py --dataset_root runs/mini/data/val --out docs/mini/quality.json

Each validation sequence (scripts/make_hdri_dataset.py, scenes never trained on) gives a 33-frame
clip exposed +1 or +2 EV (alternating), turned into 8-bit sRGB as a camera would (clipped, 255 at
radiance >= 1). Error: diffhdr.metrics.stop_error, inside the pixels the LDR clipped and elsewhere,
at the LDR's scale. Baselines on the same pixels: inverse sRGB (no expansion), Akyuz 2007's
expansion (diffhdr.baselines), and an oracle that fills every clipped pixel with its
true median (it knows the ground truth).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diffhdr.baselines import BASELINES
from diffhdr.cli import HelpFormatter, run
from diffhdr.color_mapping import linear_to_srgb, srgb_to_linear
from diffhdr.dataset import list_sequences, read_frames
from diffhdr.metrics import clipped_pixels, stop_error


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset_root", required=True, help="validation sequences")
    p.add_argument("--base_model", default="mini", help="model to score")
    p.add_argument("--sequences", type=int, default=12, help="how many sequences (spread over the images)")
    p.add_argument("--frames", type=int, default=33, help="clip length")
    p.add_argument("--out", help="JSON of the table")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    from diffhdr.checkpoint import model_defaults
    from diffhdr.model import DiffHDRModel
    from diffhdr.pipeline import InferenceSettings, reconstruct
    from diffhdr.prompting import parse_prompt
    from diffhdr.tiny import resolve_backbone

    base = resolve_backbone(a.base_model)
    defaults = model_defaults(base)
    model = DiffHDRModel.from_pretrained(base, dtype=torch.float32)
    settings = InferenceSettings(**defaults["inference"])
    seqs = list_sequences(a.dataset_root)
    seqs = seqs[:: max(1, len(seqs) // a.sequences)][: a.sequences]
    rows, t0 = {}, time.time()
    for k, seq in enumerate(seqs):
        ev = 1 + k % 2
        gt = read_frames(seq, "frame_%05d.exr", 0, a.frames) * 2.0**ev  # (T, 3, H, W)
        ldr = torch.floor(linear_to_srgb(gt) * 255) / 255
        clipped = clipped_pixels((ldr * 255).round().byte().permute(0, 2, 3, 1).numpy())  # as evaluate.py --ldr
        caption = parse_prompt((seq / "caption.txt").read_text())
        pred = reconstruct(model, ldr, caption, defaults["gamma"], defaults["M"], settings, progress=False)
        g = gt.permute(0, 2, 3, 1).numpy()
        lin = srgb_to_linear(ldr).permute(0, 2, 3, 1).numpy()
        oracle = lin.copy()
        if clipped.any():
            oracle[clipped] = np.median(g[clipped], axis=0)
        methods = {"diffhdr-mini": pred.permute(0, 2, 3, 1).numpy(), "no expansion": lin, "oracle constant": oracle,
                   "akyuz2007 (peak 10)": BASELINES["akyuz"](ldr).permute(0, 2, 3, 1).numpy()}
        for name, x in methods.items():
            rows.setdefault(name, []).append(stop_error(x, g, clipped))
    table = {name: {key: float(np.nanmean([r[key] for r in rs])) for key in rs[0]} for name, rs in rows.items()}
    print(f"{'method':24s} {'stops, clipped':>15s} {'stops, elsewhere':>17s}")
    for name, r in table.items():
        print(f"{name:24s} {r['stops_clipped']:15.3f} {r['stops_elsewhere']:17.3f}")
    print(f"{len(seqs)} clips, {time.time() - t0:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps({"clips": len(seqs), "frames": a.frames, "evs": [1, 2],
                                           "dataset_root": str(a.dataset_root), "results": table}, indent=2))


if __name__ == "__main__":
    run(main)
