"""Draw the README's picture of the task on the procedural scene the tests and the demo use: an 8-bit
frame (sky and sun clipped to white, the interior crushed to black) against the linear HDR it came
from, shown at two exposures, which is what inference.py has to recover.

    python scripts/plot_task.py [--out docs/task.png]
"""

from __future__ import annotations

import argparse

from diffhdr.cli import HelpFormatter


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="docs/task.png", help="PNG to write")
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from diffhdr.color_mapping import linear_to_srgb
    from diffhdr.synthetic import render_frame

    hdr = render_frame(180, 320, 0, seed=7) / 8.0  # exposed so that the ground is mid-grey in 8 bits
    ldr = np.floor(linear_to_srgb(hdr.clip(0, 1)) * 255) / 255
    panels = [(ldr, "8-bit input: sky and sun clipped, interior crushed"),
              (linear_to_srgb((hdr * 2.0**-5).clip(0, 1)), "linear HDR at -5 EV: the sky and sun it lost"),
              (linear_to_srgb((hdr * 2.0**9).clip(0, 1)), "linear HDR at +9 EV: the interior it lost")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 2.7), dpi=100)
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(a.out)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
