"""Draw one frame of an HDR reconstruction against its ground truth, each shown at darker exposures
(where recovered highlights show), beside the 8-bit input: the README's picture of DiffHDR-mini.

    python scripts/plot_mini.py --ldr demo/ldr.mp4 --pred demo/hdr/exr --gt demo/groundtruth/exr --out docs/mini.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffhdr.cli import HelpFormatter, run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--ldr", required=True, help="the 8-bit input video")
    p.add_argument("--pred", required=True, help="the reconstruction's EXR frames")
    p.add_argument("--gt", required=True, help="the ground truth's EXR frames (at the input's exposure)")
    p.add_argument("--frame", type=int, default=16, help="frame to show")
    p.add_argument("--evs", type=float, nargs=2, default=[-2.0, -4.0], help="the two exposures of the HDR rows")
    p.add_argument("--out", default="docs/mini.png", help="PNG to write")
    a = p.parse_args(argv)
    from diffhdr.color_mapping import linear_to_srgb, srgb_to_linear
    from diffhdr.evaluation import load_frames
    from diffhdr.io import read_video
    from diffhdr.plotting import save_panels

    ldr = read_video(a.ldr)[0][a.frame] / 255.0
    rows = {"no expansion (inverse sRGB)": srgb_to_linear(ldr), "DiffHDR-mini": load_frames(Path(a.pred))[a.frame],
            "ground truth": load_frames(Path(a.gt))[a.frame]}
    panels = []
    for r, (name, hdr) in enumerate(rows.items()):
        shown = [(ldr if r == 0 else linear_to_srgb(hdr.clip(0, 1)), f"{name} at 0 EV" if r else "8-bit input")]
        panels.append(shown + [(linear_to_srgb((hdr * 2.0**ev).clip(0, 1)), f"{name} at {ev:+g} EV") for ev in a.evs])
    save_panels(panels, a.out, (10, 6.2), fontsize=8)


if __name__ == "__main__":
    run(main)
