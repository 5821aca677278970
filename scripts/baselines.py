"""Run a classical inverse tone-mapping baseline on an LDR video; writes the same layout as
inference.py (exr/, preview.mp4, settings.json), so evaluate.py scores it the same way.

    python scripts/baselines.py --method akyuz --input_video clip.mp4 --output_dir out_akyuz/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffhdr.cli import HelpFormatter, run
from diffhdr.options import BASELINE_METHODS


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--method", choices=BASELINE_METHODS, required=True, help="the inverse tone mapping operator")
    p.add_argument("--input_video", required=True, help="8-bit video or folder of PNG/JPEG frames")
    p.add_argument("--output_dir", required=True, help="folder for exr/, preview.mp4 and settings.json")
    p.add_argument("--peak", type=float, default=10.0, help="akyuz: peak relative to diffuse white")
    p.add_argument("--gamma", type=float, default=1.0, help="akyuz: expansion exponent")
    p.add_argument("--gain", type=float, default=1.0, help="linear: global gain")
    p.add_argument("--overwrite", action="store_true", help="replace frames already in --output_dir")
    a = p.parse_args(argv)
    # imported after parsing, so that --help answers without loading torch
    import torch

    from diffhdr.baselines import BASELINES
    from diffhdr.io import read_video
    from diffhdr.outputs import prepare_output_dir, write_outputs

    out = prepare_output_dir(Path(a.output_dir), a.overwrite)
    frames, fps = read_video(a.input_video)
    srgb = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    params = {"gain": a.gain} if a.method == "linear" else {"peak": a.peak, "gamma": a.gamma}
    hdr = BASELINES[a.method](srgb, **params)
    write_outputs(out, hdr, fps, {"method": a.method, "input_video": a.input_video, "fps": fps, **params})


if __name__ == "__main__":
    run(main)
