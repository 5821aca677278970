"""Procedural HDR video sequences written as real EXR files, for tests, the demo and benchmarks.

A scene: a sky gradient (radiance ~2-20), a sun disk (~5000), a lit ground plane (~0.1-0.5), and a
dark interior box (1e-5 to 1e-3), seen by a camera that pans a few pixels per frame. In 8-bit
sRGB the sun and sky clip to white and the interior crushes to black, which is exactly
what DiffHDR has to recover. Masks of where that happens are known by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import write_exr
from .prompting import format_caption


def render_frame(h: int, w: int, t: int, seed: int = 0, pan: float = 1.5, regions: bool = False):
    """One linear Rec.709 frame (H, W, 3) of the scene at time t. With `regions`, also the
    boolean (H, W) masks of where the scene is brighter than sRGB white (sky, sun) and of the
    dark interior, the ground truth for mask detection."""
    rng = np.random.default_rng(seed)
    sun_y, sun_x = rng.uniform(0.12, 0.25) * h, rng.uniform(0.25, 0.75) * w
    box = rng.uniform(0.55, 0.7) * h, rng.uniform(0.1, 0.3) * w  # top, left of the dark interior
    dx = pan * t  # camera pans right: the scene moves left
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32) + dx, indexing="ij")
    horizon = 0.45 * h
    sky = (1 - yy / horizon).clip(0, 1)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 2.0 + 10.0 * sky
    img[..., 1] = 3.0 + 12.0 * sky
    img[..., 2] = 5.0 + 15.0 * sky
    ground = yy >= horizon
    texture = 0.5 + 0.5 * np.sin(xx * 0.35) * np.sin(yy * 0.27)
    for c, base in enumerate((0.35, 0.3, 0.2)):
        img[..., c] = np.where(ground, base * (0.4 + texture), img[..., c])
    sun = (yy - sun_y) ** 2 + (xx - sun_x) ** 2 <= (0.06 * min(h, w) + 2) ** 2
    img[sun] = (5000.0, 4800.0, 4200.0)
    inside = (yy >= box[0]) & (yy < box[0] + 0.25 * h) & (xx >= box[1]) & (xx < box[1] + 0.35 * w)
    dark = 1e-5 * np.exp(np.log(100.0) * ((xx - box[1]) / (0.35 * w)).clip(0, 1))  # 1e-5 .. 1e-3
    img[inside] = (dark[inside, None] * np.array([1.0, 0.9, 0.8], np.float32)).astype(np.float32)
    if regions:
        return img, (yy < horizon) | sun, inside
    return img


def write_sequence(
    seq_dir: str | Path,
    frames: int = 81,
    h: int = 64,
    w: int = 96,
    seed: int = 0,
    pattern: str = "frame_%05d.exr",
    caption: bool = True,
) -> Path:
    seq_dir = Path(seq_dir)
    seq_dir.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        write_exr(seq_dir / (pattern % t), render_frame(h, w, t, seed))
    if caption:
        text = format_caption("a blinding sun disk and bright sky", "a dark interior doorway")
        (seq_dir / "caption.txt").write_text(text + "\n")
    return seq_dir


def write_dataset(root: str | Path, sequences: int = 3, frames: int = 81, h: int = 64, w: int = 96) -> Path:
    root = Path(root)
    for i in range(sequences):
        write_sequence(root / f"sequence_{i:03d}", frames=frames, h=h, w=w, seed=i)
    return root
