"""Draw the README's picture of the task on the demo's procedural landscape (synthetic.render_sky): an
8-bit frame (sun, glow and lit clouds clipped to white, the shade under the trees crushed) against the
linear HDR it came from, shown at two exposures, which is what inference.py has to recover.

    python scripts/plot_task.py [--out docs/task.png]
"""

from __future__ import annotations

import argparse

from diffhdr.cli import HelpFormatter


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="docs/task.png", help="PNG to write")
    a = p.parse_args()
    import numpy as np

    from diffhdr.color_mapping import linear_to_srgb
    from diffhdr.plotting import save_panels
    from diffhdr.synthetic import DEMO_EXPOSURE, render_sky

    hdr = render_sky(192, 320, 0, seed=3) * DEMO_EXPOSURE
    ldr = np.floor(linear_to_srgb(hdr.clip(0, 1)) * 255) / 255
    panels = [(ldr, "8-bit input: the sun, its glow and the clouds clipped"),
              (linear_to_srgb((hdr * 2.0**-3).clip(0, 1)), "linear HDR at -3 EV: what the clip lost"),
              (linear_to_srgb((hdr * 2.0**6).clip(0, 1)), "linear HDR at +6 EV: the shade under the trees")]
    save_panels([panels], a.out, (12, 2.7))


if __name__ == "__main__":
    main()
