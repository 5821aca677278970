"""The inference output folder: exr/frame_%05d.exr (half float, linear Rec.709), preview.mp4
(global Reinhard + sRGB, 8 bit), settings.json and, if asked, preview_hdr10.mp4 (HEVC Main10,
PQ, BT.2020; linear 1.0 at 203 cd/m2, BT.2408's reference white)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .color_mapping import linear_to_srgb, reinhard_global
from .colorspace import CHROMATICITIES, convert
from .errors import InputError
from .io import atomic_path, hevc_10bit_available, write_exr, write_hdr10_video, write_video

log = logging.getLogger(__name__)

FRAME_PATTERN = "frame_%05d.exr"


def prepare_output_dir(out: Path, overwrite: bool) -> Path:
    """Refuse to mix new frames with an earlier run's unless `overwrite` (which removes them). The
    folders themselves are made when the frames are written: a failed run leaves none behind."""
    exr = out / "exr"
    for p in (out, exr):
        if p.exists() and not p.is_dir():
            raise InputError(f"{p}: exists and is not a folder; choose another --output_dir")
    old = sorted(exr.glob("frame_*.exr")) if exr.is_dir() else []
    if old and not overwrite:
        raise InputError(f"{exr}: already holds {len(old)} frames; pass --overwrite or choose another --output_dir")
    for f in old:
        f.unlink()
    return out


def preview_frames(hdr: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) linear -> uint8 sRGB, one Reinhard scale for the whole video (no flicker)."""
    return (linear_to_srgb(reinhard_global(hdr)) * 255.0 + 0.5).astype(np.uint8)


def write_outputs(out: Path, hdr: torch.Tensor, fps: float, record: dict, hdr10: bool = False,
                  colorspace: str = "rec709") -> None:
    """hdr (T, 3, H, W) linear Rec.709. The EXRs are written in `colorspace` (diffhdr.colorspace),
    their header saying so; the previews stay Rec.709, for a screen."""
    frames = hdr.clamp_min(0).permute(0, 2, 3, 1).numpy()
    (out / "exr").mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(tqdm(frames, desc="exr", leave=False)):
        # AP0's and AP1's wider gamuts hold every Rec.709 colour: nothing turns negative
        write_exr(out / "exr" / (FRAME_PATTERN % i), convert(f, "rec709", colorspace), half=True,
                  chromaticities=CHROMATICITIES[colorspace])
    write_video(out / "preview.mp4", preview_frames(frames), fps=fps)
    with atomic_path(out / "settings.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str))
    if hdr10:
        if not hevc_10bit_available():
            log.warning("no HDR10 preview: this FFmpeg build (PyAV) has no 10-bit libx265")
            return
        cll, fall = write_hdr10_video(out / "preview_hdr10.mp4", frames, fps=fps)
        log.info("preview_hdr10.mp4: MaxCLL %d, MaxFALL %d cd/m2", cll, fall)
