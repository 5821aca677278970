"""Over- and under-exposure masks from LDR luminance, smoothed over time.

The recipe is the authors' release (reference-facts section 2). Per frame of sRGB s in [0, 1]:

    Y     = Rec.709 luminance of linearised s
    over  = clamp(0.7 * smoothstep(Y; lin(t_o - w), lin(t_o + w)) + 0.3 * [>= 2 channels >= 1 - eps])
    under = clamp(0.7 * (1 - smoothstep(Y; lin(max(0, t_u - w)), lin(t_u + w))) + 0.3 * [all channels <= t_u])
    each  -> 3x3 closing

then over time: e_t = a * soft_t + (1 - a) * e_{t-1} (the un-blurred EMA is carried), a k x k box
blur, a k x k opening then closing, and finally binarisation at 0.2.

Shapes: frames (T, 3, H, W) in [0, 1]; masks (T, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .color_mapping import luminance, srgb_to_linear
from .config import MaskConfig


def smoothstep(x: torch.Tensor, e0: float, e1: float) -> torch.Tensor:
    t = torch.clamp((x - e0) / max(e1 - e0, 1e-12), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lin(v: float) -> float:
    return float(srgb_to_linear(torch.tensor(v, dtype=torch.float64)))


def _dilate(m: torch.Tensor, k: int) -> torch.Tensor:  # m: (T, 1, H, W)
    return F.max_pool2d(m, k, stride=1, padding=k // 2)


def _erode(m: torch.Tensor, k: int) -> torch.Tensor:
    return -F.max_pool2d(-m, k, stride=1, padding=k // 2)


def closing(m: torch.Tensor, k: int) -> torch.Tensor:
    return _erode(_dilate(m, k), k)


def opening(m: torch.Tensor, k: int) -> torch.Tensor:
    return _dilate(_erode(m, k), k)


def soft_exposure_masks(
    srgb: torch.Tensor, cfg: MaskConfig, under_threshold: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame soft over/under masks (T, H, W) in [0, 1], before temporal smoothing."""
    t_o, w, eps = cfg.over_threshold, cfg.soft_width, cfg.clip_eps
    t_u = cfg.under_threshold if under_threshold is None else under_threshold
    srgb = srgb.float()
    y = luminance(srgb_to_linear(srgb), channel_axis=1)  # (T, H, W)

    over = smoothstep(y, _lin(t_o - w), _lin(t_o + w))
    clipped = ((srgb >= 1.0 - eps).sum(dim=1) >= 2).float()
    over = torch.clamp(0.7 * over + 0.3 * clipped, 0.0, 1.0)

    under = 1.0 - smoothstep(y, _lin(max(0.0, t_u - w)), _lin(t_u + w))
    all_low = (srgb <= t_u).all(dim=1).float()
    under = torch.clamp(0.7 * under + 0.3 * all_low, 0.0, 1.0)

    k = cfg.closing_kernel
    over = closing(over[:, None], k)[:, 0]
    under = closing(under[:, None], k)[:, 0]
    return over, under


def stabilize(soft: torch.Tensor, cfg: MaskConfig) -> torch.Tensor:
    """Temporal EMA + box blur + opening + closing of soft masks (T, H, W)."""
    a = cfg.ema_alpha
    ema = torch.empty_like(soft)
    state = soft[0]
    for t in range(soft.shape[0]):
        state = soft[t] if t == 0 else a * soft[t] + (1.0 - a) * state
        ema[t] = state
    x = ema[:, None]
    k = cfg.smooth_kernel
    x = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=True)
    x = closing(opening(x, cfg.morph_kernel), cfg.morph_kernel)
    return torch.clamp(x[:, 0], 0.0, 1.0)


def detect_masks(
    srgb: torch.Tensor, cfg: MaskConfig, training: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary over and under masks (T, H, W) of an sRGB clip (T, 3, H, W).

    Training uses the release's higher under-exposure threshold (0.05 vs 0.01).
    """
    t_u = cfg.train_under_threshold if training else cfg.under_threshold
    over, under = soft_exposure_masks(srgb, cfg, t_u)
    over = (stabilize(over, cfg) > cfg.binarize_threshold).float()
    under = (stabilize(under, cfg) > cfg.binarize_threshold).float()
    return over, under


def combine(over: torch.Tensor, under: torch.Tensor, use_under: bool = True) -> torch.Tensor:
    return torch.maximum(over, under) if use_under else over


def mask_to_latent(mask: torch.Tensor, spatial: int = 8, temporal: int = 4) -> torch.Tensor:
    """Pixel mask (T, H, W) -> VACE's mask channels (s^2, T', H/s, W/s), s = `spatial` (the VAE's
    factor, 8 for Wan 2.1), T' = (T + 3) // 4.

    The same space-to-depth and `nearest-exact` time resampling as diffusers' WanVACEPipeline.
    """
    t, h, w = mask.shape
    m = mask.float().reshape(t, h // spatial, spatial, w // spatial, spatial)
    m = m.permute(2, 4, 0, 1, 3).flatten(0, 1)  # (s^2, T, H/s, W/s)
    t_new = (t + temporal - 1) // temporal
    return F.interpolate(m[None], size=(t_new, h // spatial, w // spatial), mode="nearest-exact")[0]


def token_gates(mask_latent: torch.Tensor, patch: tuple[int, int, int] = (1, 2, 2), threshold: float = 0.5):
    """VACE mask channels (s^2, T', h, w) -> per-token CFA gate (S, 1) on the DiT's patch grid."""
    m = mask_latent.float().mean(dim=0, keepdim=True)[None]  # (1, 1, T', h, w)
    m = F.avg_pool3d(m, kernel_size=patch, stride=patch)
    return (m.flatten(2).transpose(1, 2)[0] > threshold).float()  # (S, 1)
