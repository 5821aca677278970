"""Plot the Log-Gamma curve (code value against stops) and print its resolution per stop.

    python scripts/plot_log_gamma.py [--out docs/log_gamma_curve.png]
"""

from __future__ import annotations

import argparse

from diffhdr.cli import HelpFormatter


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="docs/log_gamma_curve.png", help="PNG to write")
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from diffhdr.color_mapping import linear_to_srgb, log_gamma_encode

    stops = np.linspace(-14, 17, 2000)
    x = 2.0**stops
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for gamma, M, style in ((2.2, 1000.0, "-"), (2.2, 65536.0, "--")):
        ax.plot(stops, log_gamma_encode(x, gamma, M), style, label=f"Log-Gamma, gamma={gamma}, M={M:g}")
    ax.plot(stops, linear_to_srgb(x), ":", label="sRGB (clips at 1.0)")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("stops relative to linear 1.0 (sRGB white)")
    ax.set_ylabel("code value y (the VAE sees 2y - 1)")
    ax.set_title("Log-Gamma: y = (ln(gamma min(x, M) + 1) / ln(gamma M + 1))^(1/gamma)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(a.out)
    print(f"wrote {a.out}")
    print("code values per stop (gamma 2.2, M 1000), x 1/255 to count 8-bit steps:")
    for ev in (-10, -6, -2.5, 0, 5, 9.9):
        lo, hi = log_gamma_encode(np.array([2.0**ev, 2.0 ** (ev + 1)]), 2.2, 1000.0)
        print(f"  {ev:+5.1f} EV (x={2.0**ev:.3g}): y={lo:.3f}, {255 * (hi - lo):.1f}/255 per stop")


if __name__ == "__main__":
    main()
