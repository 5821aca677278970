"""HDR images -> training sequences in the spec's layout, as the paper builds its set from Poly Haven.

Equirectangular panoramas (2:1): a virtual pinhole camera sweeps across the sphere (yaw, pitch,
field of view and speed drawn per sequence). Ordinary photographs: a crop window that pans and
zooms. Radiance is resampled, never tone mapped, then scaled so that each sequence's median
luminance sits at `key` (the exposure augmentation of training then moves it by -1..+2 EV).

Conventions: a panorama's column u in [0, 1) is longitude phi = 2 pi (u - 0.5) (the centre column
looks along +z), its row v in [0, 1] latitude theta = pi (0.5 - v) (top row up). Camera: yaw turns
about +y, pitch tilts up; image x to the right, y down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .color_mapping import luminance
from .prompting import format_caption


@dataclass
class Sweep:
    """One sequence's camera path: start and end yaw/pitch (degrees) and horizontal field of view,
    or for a photograph the crop's start/end centre (fractions) and size (fraction of the short side)."""

    start: tuple[float, float]
    end: tuple[float, float]
    fov_or_size: tuple[float, float]


def is_panorama(h: int, w: int) -> bool:
    return abs(w / h - 2.0) < 0.02


def draw_sweep(g: np.random.Generator, panorama: bool) -> Sweep:
    if panorama:
        yaw = g.uniform(-180, 180)
        pitch = g.uniform(-10, 20)  # mostly level, a little up: skies and lamps in view
        speed = g.uniform(15, 60) * g.choice([-1, 1])  # degrees of yaw over the sequence
        fov = g.uniform(60, 90)
        return Sweep((yaw, pitch), (yaw + speed, pitch + g.uniform(-5, 5)), (fov, fov * g.uniform(0.9, 1.1)))
    size = g.uniform(0.5, 0.9)
    c0, c1 = g.uniform(0.3, 0.7, size=2), g.uniform(0.3, 0.7, size=2)
    return Sweep(tuple(c0), tuple(c1), (size, size * g.uniform(0.8, 1.0)))


def camera_rays(h: int, w: int, yaw: float, pitch: float, fov: float) -> np.ndarray:
    """Unit ray directions (h, w, 3) of a pinhole camera; degrees; fov is horizontal."""
    f = 0.5 * w / math.tan(math.radians(fov) / 2)
    x = np.arange(w) + 0.5 - w / 2
    y = np.arange(h) + 0.5 - h / 2
    xx, yy = np.meshgrid(x, y)
    d = np.stack([xx, -yy, np.full_like(xx, f)], axis=-1)  # camera looks along +z, y up
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    p, t = math.radians(pitch), math.radians(yaw)
    tilt = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])  # +z up by p
    turn = np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])  # phi += t
    return d @ tilt.T @ turn.T  # rows are rays: R d for each


def directions_to_uv(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray directions -> panorama coordinates u (longitude) and v (latitude) in [0, 1]."""
    phi = np.arctan2(d[..., 0], d[..., 2])
    theta = np.arcsin(np.clip(d[..., 1], -1, 1))
    return phi / (2 * math.pi) + 0.5, 0.5 - theta / math.pi


def _sample(image: torch.Tensor, u: np.ndarray, v: np.ndarray, wrap: bool) -> np.ndarray:
    """Bilinear samples of image (3, H, W) at u, v in [0, 1] (image edges) -> (h, w, 3)."""
    if wrap:  # longitude wraps: pad one column each side so u near 0 and 1 interpolate across the seam
        W = image.shape[-1]
        image = torch.cat([image[..., -1:], image, image[..., :1]], dim=-1)
        u = (u * W + 1) / (W + 2)
    grid = torch.from_numpy(np.stack([u * 2 - 1, v * 2 - 1], axis=-1)).float()[None]
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def render_panorama(pano: np.ndarray, h: int, w: int, yaw: float, pitch: float, fov: float) -> np.ndarray:
    """A perspective view (h, w, 3) of an equirectangular panorama (H, W, 3)."""
    u, v = directions_to_uv(camera_rays(h, w, yaw, pitch, fov))
    return _sample(torch.from_numpy(np.ascontiguousarray(pano.transpose(2, 0, 1))), u, v, wrap=True)


def render_crop(photo: np.ndarray, h: int, w: int, centre: tuple[float, float], size: float) -> np.ndarray:
    """A (h, w) window of a photograph: centre (x, y) and height `size` as fractions of its short side."""
    H, W = photo.shape[:2]
    side = size * min(H, W)
    ch, cw = side, side * w / h
    cx, cy = centre[0] * W, centre[1] * H
    cx, cy = np.clip(cx, cw / 2, W - cw / 2), np.clip(cy, ch / 2, H - ch / 2)
    x = (cx - cw / 2 + (np.arange(w) + 0.5) * cw / w) / W
    y = (cy - ch / 2 + (np.arange(h) + 0.5) * ch / h) / H
    u, v = np.meshgrid(x, y)
    return _sample(torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))), u, v, wrap=False)


def render_sequence(image: np.ndarray, sweep: Sweep, frames: int, h: int, w: int) -> np.ndarray:
    """(frames, h, w, 3) linear radiance along the sweep, interpolated linearly in time."""
    panorama = is_panorama(*image.shape[:2])
    out = []
    for k in range(frames):
        a = k / max(frames - 1, 1)
        lerp = lambda p, q: p + a * (q - p)  # noqa: E731
        x, y = lerp(sweep.start[0], sweep.end[0]), lerp(sweep.start[1], sweep.end[1])
        s = lerp(*sweep.fov_or_size)
        out.append(render_panorama(image, h, w, x, y, s) if panorama else render_crop(image, h, w, (x, y), s))
    return np.stack(out).astype(np.float32)


def normalise_exposure(frames: np.ndarray, key: float = 0.18) -> tuple[np.ndarray, float]:
    """Scale a sequence so its median luminance is `key`; returns the frames and the gain."""
    med = float(np.median(luminance(frames)))
    gain = key / max(med, 1e-8)
    return frames * gain, gain


def _where(mask: np.ndarray) -> str:
    """'top', 'centre', 'bottom left'... where a mask (T, H, W) mostly lies."""
    t, ys, xs = np.nonzero(mask)
    y, x = ys.mean() / mask.shape[1], xs.mean() / mask.shape[2]
    row = "upper" if y < 0.4 else "lower" if y > 0.6 else "middle"
    col = "left" if x < 0.4 else "right" if x > 0.6 else "centre"
    return f"{row} {col}" if (row, col) != ("middle", "centre") else "centre"


def template_caption(frames: np.ndarray, white: float = 1.0, black: float = 0.002, min_fraction: float = 0.002) -> str:
    """The spec's caption format from the exposure of the sequence at EV 0: which regions clip
    (luminance above `white`) or crush (below `black`), and where; 'none' where nothing does."""
    y = luminance(frames)
    parts = []
    for mask, word, extreme in ((y >= white, "bright", "very bright"), (y <= black, "dark", "very dark")):
        frac = float(mask.mean())
        if frac < min_fraction:
            parts.append("none")
            continue
        size = "small" if frac < 0.02 else "large" if frac > 0.2 else "some"
        parts.append(f"{size} {extreme if frac > 0.2 else word} regions in the {_where(mask)} of the frame")
    return format_caption(*parts)
