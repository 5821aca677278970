"""Evaluation metrics on linear HDR frames, scaled and tone-mapped as the authors' release does
(reference-facts section 9). Each metric uses the maintained package the field uses; what needs
weights or MATLAB fails with one line that says what to install or where to put the file.

Frames: float32 numpy (T, H, W, 3), linear Rec.709, 1.0 = diffuse white.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .color_mapping import linear_to_srgb, log_gamma_encode, luminance, srgb_to_linear
from .errors import InputError

# PU21 "banding_glare" (Mantiuk & Azimi 2021, pu21_encoder.m): V = p7 ((p1 + p2 Y^p4)/(1 + p3 Y^p4))^p5 - p6)
PU21_BANDING_GLARE = (0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627, 0.09150303166, 0.9099517204,
                      596.3148142)
PU21_Y_MIN, PU21_Y_MAX = 0.005, 10000.0


def pu21_encode(y):
    """Absolute luminance (cd/m^2) -> PU21 units, about 0 at 0.005 and 595 at 10,000 cd/m^2."""
    p1, p2, p3, p4, p5, p6, p7 = PU21_BANDING_GLARE
    y = np.clip(np.asarray(y, dtype=np.float64), PU21_Y_MIN, PU21_Y_MAX)
    return p7 * (((p1 + p2 * y**p4) / (1 + p3 * y**p4)) ** p5 - p6)


def p999_luminance(frames: np.ndarray) -> np.ndarray:
    """Per-frame 99.9th percentile of luminance, (T,)."""
    y = luminance(frames)
    return np.percentile(y.reshape(len(frames), -1), 99.9, axis=1)


def scale_to_nits(frames_for_scale: np.ndarray, peak_nits: float) -> float:
    """k with k * mean_t P99.9(Y_t) = peak_nits: the release's absolute-luminance anchoring."""
    return peak_nits / max(float(p999_luminance(frames_for_scale).mean()), 1e-12)


def luminance_reinhard(frames: np.ndarray) -> np.ndarray:
    """The release's tone map for no-reference IQA: if P99.9(Y) < 1 scale by 1/P99.9, else RGB * (Y/(1+Y))/Y;
    clip, sRGB OETF. Returns float [0, 1] (T, H, W, 3)."""
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        y = luminance(f)
        p = float(np.percentile(y, 99.9))
        if p < 1.0:
            g = f / max(p, 1e-12)
        else:
            g = f * ((y / (1 + y)) / np.maximum(y, 1e-12))[..., None]
        out[i] = linear_to_srgb(np.clip(g, 0, 1))
    return out


# --------------------------------------------------------------------------- reference-based, offline


def log_psnr(pred: np.ndarray, gt: np.ndarray, gamma: float = 2.2, M: float = 1000.0) -> np.ndarray:
    """Per-frame PSNR in Log-Gamma code values (peak 1): the space DiffHDR itself works in."""
    a, b = log_gamma_encode(pred, gamma, M), log_gamma_encode(gt, gamma, M)
    mse = ((a - b) ** 2).reshape(len(pred), -1).mean(1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-20))


def pu21_psnr(pred: np.ndarray, gt: np.ndarray, peak_nits: float = 1000.0) -> np.ndarray:
    """Per-frame PSNR of PU21-encoded luminance, both scaled by the ground truth's anchoring."""
    k = scale_to_nits(gt, peak_nits)
    a, b = pu21_encode(luminance(pred) * k), pu21_encode(luminance(gt) * k)
    mse = ((a - b) ** 2).reshape(len(pred), -1).mean(1)
    return 10 * np.log10(pu21_encode(PU21_Y_MAX) ** 2 / np.maximum(mse, 1e-20))


def fovvideovdp(pred: np.ndarray, gt: np.ndarray, fps: float = 24.0, peak_nits: float = 1000.0,
                device: str = "cpu") -> float:
    """FovVideoVDP (pyfvvdp) in JOD, 10 = identical. Test and reference scaled by the same k from the
    ground truth's mean P99.9 luminance; HDR display with absolute linear input."""
    try:
        import pyfvvdp
        import torch
    except ImportError:
        raise InputError("fovvideovdp needs pyfvvdp: pip install pyfvvdp (or pip install -e .[eval])") from None
    k = scale_to_nits(gt, peak_nits)
    to_t = lambda x: torch.from_numpy(np.ascontiguousarray(x * k)).permute(3, 0, 1, 2)[None].float()  # noqa: E731
    metric = pyfvvdp.fvvdp(display_name="standard_hdr_linear", heatmap=None, device=torch.device(device))
    q, _ = metric.predict(to_t(pred), to_t(gt), dim_order="BCFHW", frames_per_second=fps)
    return float(q)


# --------------------------------------------------------------------------- no-reference


def pu21_piqe_backend() -> str:
    """Which PIQE scores pu21_piqe: pyiqa's where it is installed (the release's: float V/600), else
    pypiqe's (an 8-bit grey image)."""
    import importlib.util

    if importlib.util.find_spec("pyiqa") is not None:
        return "pyiqa"
    if importlib.util.find_spec("pypiqe") is not None:
        return "pypiqe"
    raise InputError("pu21_piqe needs pyiqa (the release's) or pypiqe: pip install pypiqe (or pip install -e .[eval])")


def pu21_piqe(pred: np.ndarray, peak_nits: float = 1000.0, backend: str | None = None) -> np.ndarray:
    """Per-frame PIQE (lower is better) of PU21-encoded luminance, each video scaled by its own mean
    P99.9 to `peak_nits`, V/600 in [0, 1] as a grey image: float through pyiqa as the release scores
    it, or quantised to 8 bits through pypiqe (`backend`: pu21_piqe_backend() when None)."""
    backend = backend or pu21_piqe_backend()
    k = scale_to_nits(pred, peak_nits)
    grey = [np.clip(pu21_encode(luminance(f) * k) / 600.0, 0, 1).astype(np.float32) for f in pred]
    if backend == "pyiqa":
        import pyiqa
        import torch

        metric = pyiqa.create_metric("piqe", device="cpu")
        return np.array([float(metric(torch.from_numpy(v)[None, None].expand(1, 3, -1, -1))) for v in grey])
    from pypiqe import piqe

    return np.array([float(piqe(np.repeat((v * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=-1))[0])
                     for v in grey])


def _pyiqa_metric(name: str, weights: str | None, device: str):
    try:
        import pyiqa
    except ImportError:
        raise InputError(
            f"{name} needs pyiqa (and torchvision): pip install torch==2.14.1 torchvision==0.29.1 pyiqa 'setuptools<81'"
        ) from None
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "pyiqa"
    if weights is None and not any(hub.glob(f"*{name.split('_')[0]}*")):
        raise InputError(
            f"{name}: no weights in {hub} and no --weights given; download them where a network is available "
            f"(python -c \"import pyiqa; pyiqa.create_metric('{name}')\") and copy {hub} here"
        )
    kwargs = {"pretrained_model_path": weights} if weights else {}
    try:
        return pyiqa.create_metric(name, device=device, **kwargs)
    except Exception as e:  # pyiqa raises whatever its download or loader raises
        raise InputError(f"{name}: cannot load pyiqa metric ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def pyiqa_scores(name: str, pred: np.ndarray, weights: str | None = None, device: str = "cpu") -> np.ndarray:
    """MUSIQ / CLIP-IQA per frame on the release's luminance-Reinhard tone map (higher is better)."""
    import torch

    metric = _pyiqa_metric(name, weights, device)
    ldr = luminance_reinhard(pred)
    with torch.no_grad():
        return np.array([float(metric(torch.from_numpy(f).permute(2, 0, 1)[None].float())) for f in ldr])


def dover(pred: np.ndarray, weights: str | None = None, **_) -> float:
    raise InputError(
        "dover: DOVER has no PyPI package; clone the authors' code (VQAssessment/DOVER), put DOVER.pth at "
        f"{weights or 'a path you pass with --weights'} and run its evaluate script on preview.mp4"
    )


def fid(pred_png: Path, gt_png: Path, weights: str | None = None, device: str = "cpu") -> float:
    try:
        from pytorch_fid.fid_score import calculate_fid_given_paths
    except ImportError:
        raise InputError("fid needs pytorch-fid (and torchvision): pip install pytorch-fid") from None
    if weights is None:
        raise InputError("fid: pass --weights pt_inception-2015-12-05-6726825d.pth (offline Inception weights)")
    import pytorch_fid.inception as inc

    inc.FID_WEIGHTS_URL = Path(weights).resolve().as_uri()
    return float(calculate_fid_given_paths([str(pred_png), str(gt_png)], 16, device, 2048))


def hdrvdp3(pred_dir: Path, gt_dir: Path, hdrvdp_path: str | None, peak_nits: float = 1000.0, ppd: float = 60.0):
    """HDR-VDP-3 is MATLAB code: run it through MATLAB or GNU Octave when both are present."""
    runner = shutil.which("matlab") or shutil.which("octave")
    if hdrvdp_path is None or runner is None:
        raise InputError(
            "hdrvdp3: HDR-VDP-3 is MATLAB code; install MATLAB or GNU Octave and the hdrvdp-3 sources, "
            "then pass --hdrvdp3_path /path/to/hdrvdp-3 (no number is printed without it)"
        )
    script = (f"addpath(genpath('{hdrvdp_path}')); d=dir(fullfile('{pred_dir}','*.exr')); q=zeros(numel(d),1);"
              f"for i=1:numel(d), t=exrread(fullfile('{pred_dir}',d(i).name)); r=exrread(fullfile('{gt_dir}',d(i).name));"
              f"k={peak_nits}/prctile(r(:),99.9); res=hdrvdp3('quality',t*k,r*k,'rgb-bt.709',{ppd},{{}}); q(i)=res.Q;"
              "end; disp(mean(q));")
    flag = ["-batch", script] if runner.endswith("matlab") else ["--eval", script]
    out = subprocess.run([runner, *flag], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise InputError(f"hdrvdp3: {Path(runner).name} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


def stop_map(pred: np.ndarray, gt: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """|log2 L_pred - log2 L_gt| per pixel (T, H, W), in stops, luminance with eps added."""
    return np.abs(np.log2(luminance(pred) + eps) - np.log2(luminance(gt) + eps))


def stop_error(pred: np.ndarray, gt: np.ndarray, clipped: np.ndarray, eps: float = 1e-3) -> dict[str, float]:
    """Mean error in stops (stop_map) inside the pixels the input LDR clipped (`clipped`, (T, H, W)
    bool) and elsewhere. Both at the LDR's scale (white = 1)."""
    err = stop_map(pred, gt, eps)
    inside = float(err[clipped].mean()) if clipped.any() else float("nan")
    outside = float(err[~clipped].mean()) if (~clipped).any() else float("nan")
    return {"stops_clipped": inside, "stops_elsewhere": outside, "clipped_fraction": float(clipped.mean())}


CLIPPED_CODE = 250  # not 255: a decoded H.264/H.265 video returns a clipped area as 250..255


def clipped_pixels(ldr: np.ndarray) -> np.ndarray:
    """8-bit frames (T, H, W, 3) -> (T, H, W) bool: the pixels a camera clipped (every channel at
    CLIPPED_CODE or above)."""
    return (ldr >= CLIPPED_CODE).all(-1)


def ldr_scale(gt: np.ndarray, ldr: np.ndarray) -> float:
    """The factor that brings `gt` to the exposure of the LDR made from it (white = 1): the median
    ratio of the LDR's linear luminance to gt's over well-exposed pixels (every channel in 26..229)."""
    ok = ((ldr > 25) & (ldr < 230)).all(-1)
    y_gt = luminance(gt)[ok]
    y_ldr = luminance(srgb_to_linear(ldr[ok].astype(np.float32) / 255))
    keep = y_gt > 0
    if keep.sum() < 16:
        return 1.0  # nothing to compare: ground truth taken as given
    return float(np.median(y_ldr[keep] / y_gt[keep]))


def stops_per_frame(pred: np.ndarray, gt: np.ndarray, ldr: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame stop errors inside and outside the pixels `ldr` (uint8, the input) clipped; NaN for
    a frame with no such pixel. `gt` at the LDR's scale (ldr_scale brings it there)."""
    err = stop_map(pred, gt)
    clipped = clipped_pixels(ldr)
    out = {"stops_clipped": np.full(len(err), np.nan), "stops_elsewhere": np.full(len(err), np.nan)}
    for i, (e, c) in enumerate(zip(err, clipped)):
        if c.any():
            out["stops_clipped"][i] = e[c].mean()
        if (~c).any():
            out["stops_elsewhere"][i] = e[~c].mean()
    return out
