"""Score a model on held-out HDR sequences made over-exposed, against the baselines, in stops.

    python scripts/eval_mini.py --dataset_root runs/mini/data/val --out docs/mini/quality.json

Each validation sequence (scripts/make_hdri_dataset.py, scenes never trained on) gives a 33-frame
clip exposed +1 or +2 EV (alternating), turned into 8-bit sRGB as a camera would (clipped, 255 at
radiance >= 1). Error: diffhdr.metrics.stop_error, inside the pixels the LDR clipped and elsewhere,
at the LDR's scale. Baselines on the same pixels: inverse sRGB (no expansion), Akyuz 2007's
expansion (diffhdr.baselines), and an oracle that fills every clipped pixel with its
true median (it knows the ground truth). One more row, the model's own floor: the ground truth
through its VAE alone (encode, decode), which no output of its DiT can beat by much.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from diffhdr.cli import HelpFormatter, run
from diffhdr.options import SPEED_MODES


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset_root", required=True, help="validation sequences")
    p.add_argument("--base_model", default="mini", help="model to score")
    p.add_argument("--sequences", type=int, default=12, help="how many sequences (spread over the images)")
    p.add_argument("--frames", type=int, default=33, help="clip length")
    p.add_argument("--speed", choices=SPEED_MODES, default="naive",
                   help="inference.py's --speed (fast: fp8 GEMMs on a GPU, guidance on fewer steps)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="inference settings over the model's defaults, e.g. guidance_scale=1 alpha_over=3")
    p.add_argument("--device", help="torch device (default: cuda where there is one, else cpu)")
    p.add_argument("--out", help="JSON of the table")
    return p.parse_args(argv)


def overrides(pairs: list[str], settings) -> dict:
    """KEY=VALUE strings -> settings fields, each typed as the field's current value."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not hasattr(settings, key):
            raise SystemExit(f"--set {pair}: InferenceSettings has no field {key!r}")
        kind = type(getattr(settings, key))
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def main(argv=None):
    a = parse_args(argv)
    # imported after parsing, so that --help answers without loading torch
    import numpy as np
    import torch

    from diffhdr.baselines import BASELINES
    from diffhdr.checkpoint import model_defaults
    from diffhdr.color_mapping import linear_to_srgb, srgb_to_linear, to_vae_video
    from diffhdr.dataset import list_sequences, read_frames
    from diffhdr.metrics import clipped_pixels, stop_error
    from diffhdr.model import DiffHDRModel
    from diffhdr.pipeline import FAST_GUIDANCE, InferenceSettings, latents_to_hdr, reconstruct
    from diffhdr.prompting import parse_prompt
    from diffhdr.runtime import apply_speed_mode
    from diffhdr.tiny import resolve_backbone

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")

    base = resolve_backbone(a.base_model)
    defaults = model_defaults(base)
    device = torch.device(a.device)
    model = DiffHDRModel.from_pretrained(base, torch.float32 if device.type == "cpu" else torch.bfloat16, device)
    settings = InferenceSettings(**defaults["inference"], **(FAST_GUIDANCE if a.speed == "fast" else {}))
    settings = dataclasses.replace(settings, **overrides(a.set, settings))
    apply_speed_mode(model, a.speed, device)
    seqs = list_sequences(a.dataset_root)
    seqs = seqs[:: max(1, len(seqs) // a.sequences)][: a.sequences]
    rows, t0 = {}, time.time()
    for k, seq in enumerate(seqs):
        ev = 1 + k % 2
        gt = read_frames(seq, "frame_%05d.exr", 0, a.frames) * 2.0**ev  # (T, 3, H, W)
        ldr = torch.floor(linear_to_srgb(gt) * 255) / 255
        clipped = clipped_pixels((ldr * 255).round().byte().permute(0, 2, 3, 1).numpy())  # as evaluate.py --ldr
        caption = parse_prompt((seq / "caption.txt").read_text())
        pred = reconstruct(model, ldr, caption, defaults["gamma"], defaults["M"], settings, device=device,
                           progress=False).cpu()
        g = gt.permute(0, 2, 3, 1).numpy()
        lin = srgb_to_linear(ldr).permute(0, 2, 3, 1).numpy()
        oracle = lin.copy()
        if clipped.any():
            oracle[clipped] = np.median(g[clipped], axis=0)
        x = to_vae_video(gt, defaults["gamma"], defaults["M"])[None]
        round_trip = latents_to_hdr(model, model.encode_video(x.to(device)), defaults["gamma"], defaults["M"])
        methods = {"diffhdr-mini": pred.permute(0, 2, 3, 1).numpy(), "no expansion": lin, "oracle constant": oracle,
                   "akyuz2007 (peak 10)": BASELINES["akyuz"](ldr).permute(0, 2, 3, 1).numpy(),
                   "ground truth through the VAE": round_trip.permute(0, 2, 3, 1).numpy()}
        for name, x in methods.items():
            rows.setdefault(name, []).append(stop_error(x, g, clipped))
    table = {name: {key: float(np.nanmean([r[key] for r in rs])) for key in rs[0]} for name, rs in rows.items()}
    print(f"{'method':30s} {'stops, clipped':>15s} {'stops, elsewhere':>17s}")
    for name, r in table.items():
        print(f"{name:30s} {r['stops_clipped']:15.3f} {r['stops_elsewhere']:17.3f}")
    print(f"{len(seqs)} clips, {time.time() - t0:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps({"clips": len(seqs), "frames": a.frames, "evs": [1, 2],
                                           "dataset_root": str(a.dataset_root), "device": str(device),
                                           "speed": a.speed, "settings": dataclasses.asdict(settings),
                                           "results": table}, indent=2))


if __name__ == "__main__":
    run(main)
