"""Procedural HDR video sequences written as real EXR files, for tests, the demo and benchmarks.

A scene: a sky gradient (radiance ~2-20), a sun disk (~5000), a lit ground plane (~0.1-0.5), and a
dark interior box (1e-5 to 1e-3), seen by a camera that pans a few pixels per frame. In 8-bit
sRGB the sun and sky clip to white and the interior crushes to black, which is exactly
what DiffHDR has to recover. Masks of where that happens are known by construction.

`render_sky` is a second scene, made to look like a photograph (hills, trees, clouds, the sun and its
glow): the demo's 8-bit clip and the README's picture.
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


DEMO_EXPOSURE = 0.5  # render_sky at which the demo's 8-bit clip is made: blue sky near the zenith survives


def _value_noise(grid: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Smooth noise: `grid` (a random lattice, wrapped) sampled bilinearly with a smoothstep at (y, x)."""
    gh, gw = grid.shape
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    at = lambda dy, dx: grid[(y0 + dy) % gh, (x0 + dx) % gw]  # noqa: E731
    return (at(0, 0) * (1 - fx) + at(0, 1) * fx) * (1 - fy) + (at(1, 0) * (1 - fx) + at(1, 1) * fx) * fy


def render_sky(h: int, w: int, t: int, seed: int = 0, pan: float = 0.6) -> np.ndarray:
    """One linear Rec.709 frame (H, W, 3) of a landscape under a sky with the sun and clouds, the
    camera panning right: a scene that looks like a photograph, for the demo and the README. In 8-bit
    sRGB the sun, its glow and the lit clouds clip (sky ~1-6, sun 2e4) and the shade under the trees
    crushes (~0.002); the hills are lit (~0.05-0.3)."""
    rng = np.random.default_rng(seed)
    lattice = [rng.random((8 * 2**o, 16 * 2**o)) for o in range(4)]
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64) + pan * t, indexing="ij")
    u, v = xx / w, yy / h  # the scene in frame widths and heights
    fbm = lambda y, x: sum(_value_noise(g, y * g.shape[0], x * g.shape[1] / 2) * 0.5**o  # noqa: E731
                           for o, g in enumerate(lattice)) / 1.875
    phase = rng.uniform(0, 2 * np.pi, 3)
    ridge = 0.58 + 0.06 * np.sin(2 * np.pi * u + phase[0]) + 0.03 * np.sin(5.3 * np.pi * u + phase[1]) \
        + 0.03 * (fbm(0.0 * v, u) - 0.5)
    sun_u, sun_v, sun_r = rng.uniform(0.55, 0.8), rng.uniform(0.15, 0.28), 0.035
    d = np.hypot((u - pan * t / w - sun_u) * w / h, v - sun_v)  # the sun stays put: it is far away
    elevation = np.clip((ridge - v) / ridge, 0, 1)[..., None]
    horizon, zenith = np.array([3.2, 2.9, 2.5]), np.array([0.55, 0.85, 1.6])
    sky = horizon * (1 - elevation) ** 2 + zenith * (1 - (1 - elevation) ** 2)
    sky = sky + (40.0 * np.exp(-d / 0.05) + 3.0 * np.exp(-d / 0.25))[..., None] * np.array([1.0, 0.92, 0.8])
    cover = np.clip((fbm(v * 2.0, u * 1.5) - 0.52) * 5.0, 0, 1)[..., None] * (elevation > 0.15)
    clouds = (2.4 + 8.0 * np.exp(-d / 0.2))[..., None] * np.array([1.0, 0.97, 0.93])
    img = sky * (1 - cover) + clouds * cover
    img[d < sun_r] = (21000.0, 20000.0, 18000.0)
    depth = np.clip((v - ridge) / (1 - ridge), 0, 1)[..., None]  # 0 at the ridge, 1 at the bottom
    grass = np.array([0.09, 0.12, 0.04]) * (0.6 + 0.8 * fbm(v * 6.0, u * 4.0))[..., None]
    haze = np.array([0.5, 0.55, 0.6]) * (1 - depth) ** 6
    ground = grass * (0.8 + 1.5 * (1 - depth)) + haze
    edge = fbm(v * 12.0, u * 12.0)  # ragged crowns and trunks
    trees = (u % 1.0 < 0.22 + 0.06 * edge) & (v > ridge + 0.1 + 0.06 * np.sin(9 * np.pi * u + phase[2]) - 0.1 * edge)
    ground[trees] = np.array([0.002, 0.0025, 0.0015]) * (0.5 + fbm(v * 9.0, u * 9.0))[trees][..., None]
    img = np.where((v >= ridge)[..., None], ground, img)
    return img.astype(np.float32)


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
