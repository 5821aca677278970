"""Grids of images with titles, as the docs' pictures show them (scripts/plot_task.py, plot_mini.py)."""

from __future__ import annotations

from pathlib import Path


def save_panels(rows: list[list[tuple]], path: str | Path, size: tuple[float, float], fontsize: int = 9) -> None:
    """rows of (image (H, W, 3) in [0, 1], title) -> one PNG, axes off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=size, dpi=100, squeeze=False)
    for ax_row, row in zip(axes, rows):
        for ax, (img, title) in zip(ax_row, row):
            ax.imshow(img)
            ax.set_title(title, fontsize=fontsize)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print("wrote", path)
