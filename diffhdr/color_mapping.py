"""Log-Gamma colour mapping, sRGB <-> linear, Rec.709 luminance and preview tone mapping.

Every function here is pure and accepts numpy arrays or torch tensors alike.

Log-Gamma ("lg", the authors' ``Lin_to_Log``), for linear radiance x >= 0::

    N       = ln(gamma * M + 1)
    encode  y = ( ln(gamma * min(x, M) + 1) / N ) ** (1 / gamma)       y in [0, 1]
    decode  x = ( exp(y ** gamma * N) - 1 ) / gamma

and the VAE sees v = 2y - 1 in [-1, 1]. The log spends code values evenly per stop
of bright light; the outer 1/gamma power gives the darkest stops more room than a
pure log would, so 8-bit-clipped shadows and 1000x highlights both fit the VAE's
range. Values above M saturate at y = 1 (never NaN).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Rec.709 / sRGB primaries, D65 (x, y) for R, G, B, white: the EXR chromaticities we write.
REC709_CHROMATICITIES = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
REC709_LUMA = (0.2126, 0.7152, 0.0722)


def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _clip(x, lo=None, hi=None):
    if _is_torch(x):
        return torch.clamp(x, min=lo, max=hi)
    return np.clip(x, lo, hi)


def _log1p(x):
    return torch.log1p(x) if _is_torch(x) else np.log1p(x)


def _expm1(x):
    return torch.expm1(x) if _is_torch(x) else np.expm1(x)


def _where(c, a, b):
    return torch.where(c, a, b) if _is_torch(c) else np.where(c, a, b)


def log_gamma_norm(gamma: float, M: float) -> float:
    """N = ln(gamma * M + 1), the constant that puts x = M at y = 1."""
    return math.log(gamma * M + 1.0)


def log_gamma_encode(x, gamma: float = 2.2, M: float = 1000.0):
    """Linear radiance (>= 0) -> Log-Gamma code value y in [0, 1]."""
    n = log_gamma_norm(gamma, M)
    x = _clip(x, 0.0, M)
    return (_log1p(gamma * x) / n) ** (1.0 / gamma)


def log_gamma_decode(y, gamma: float = 2.2, M: float = 1000.0):
    """Log-Gamma code value y -> linear radiance; y < 0 is treated as 0 (black)."""
    n = log_gamma_norm(gamma, M)
    y = _clip(y, 0.0, None)
    return _expm1(y**gamma * n) / gamma


def to_vae_range(y):
    """[0, 1] code value -> [-1, 1], the range the Wan VAE was trained on."""
    return 2.0 * y - 1.0


def to_vae_video(frames, gamma: float = 2.2, M: float = 1000.0):
    """Linear frames (T, 3, H, W) -> what the VAE encodes, (3, T, H, W): Log-Gamma in [-1, 1]."""
    v = to_vae_range(log_gamma_encode(frames, gamma, M))
    return v.permute(1, 0, 2, 3) if _is_torch(v) else v.transpose(1, 0, 2, 3)


def from_vae_range(v):
    """[-1, 1] VAE output -> [0, 1] code value. No upper clamp, as in the release."""
    return 0.5 * v + 0.5


def srgb_to_linear(s):
    """IEC 61966-2-1 sRGB EOTF: encoded [0, 1] -> linear [0, 1]."""
    s = _clip(s, 0.0, 1.0)
    return _where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """IEC 61966-2-1 inverse EOTF: linear -> encoded, clipped to [0, 1]. Radiance >= 1 encodes to
    exactly 1, as a camera's clipped pixel is 255: in float32 the formula gives 0.99999994 at 1,
    which 8-bit truncation would make 254 (the release clamps after the curve, so it gets 255)."""
    x = _clip(x, 0.0, None)
    s = _where(x <= 0.0031308, 12.92 * x, 1.055 * _clip(x, 0.0031308, 1.0) ** (1 / 2.4) - 0.055)
    return _where(x >= 1.0, 1.0, s)


def luminance(rgb, channel_axis: int = -1):
    """Rec.709 relative luminance Y of linear RGB along `channel_axis`."""
    r, g, b = (rgb.select(channel_axis, i) if _is_torch(rgb) else np.take(rgb, i, axis=channel_axis) for i in range(3))
    return REC709_LUMA[0] * r + REC709_LUMA[1] * g + REC709_LUMA[2] * b


def reinhard_global(rgb, key: float = 0.18, white: float | None = None, channel_axis: int = -1, eps: float = 1e-6):
    """Global Reinhard tone mapping (Reinhard et al. 2002) of linear RGB, with one scale for
    the whole input. Pass a whole video so the exposure does not flicker between frames.

    L = key / exp(mean(log(eps + Y))) * Y;  Ld = L (1 + L / white^2) / (1 + L);  RGB * Ld / Y.
    `white` defaults to the largest scaled luminance (so it maps to 1). Returns linear [0, 1].
    """
    y = luminance(rgb, channel_axis)
    if _is_torch(y):
        log_avg = torch.exp(torch.log(eps + y).mean())
    else:
        log_avg = float(np.exp(np.log(eps + y).mean()))
    lum = key / log_avg * y
    if white is None:
        white = float(lum.max())
    white = max(float(white), eps)
    ld = lum * (1 + lum / white**2) / (1 + lum)
    ratio = ld / (y + eps)
    ratio = ratio.unsqueeze(channel_axis) if _is_torch(ratio) else np.expand_dims(ratio, channel_axis)
    return _clip(rgb * ratio, 0.0, 1.0)


# ---------------------------------------------------------------- HDR10 (preview only)
# BT.2087: linear Rec.709 RGB -> linear BT.2020 RGB (same D65 white).
REC709_TO_REC2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
REC2020_KR, REC2020_KB = 0.2627, 0.0593
PQ_MAX_NITS = 10000.0
HDR_REFERENCE_WHITE_NITS = 203.0  # BT.2408: diffuse white; our linear 1.0 (the LDR white at EV 0)
_PQ_M1, _PQ_M2 = 2610 / 16384, 2523 / 4096 * 128
_PQ_C1, _PQ_C2, _PQ_C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32


def pq_encode(nits):
    """SMPTE ST 2084 inverse EOTF: absolute luminance (cd/m2) -> PQ signal in [0, 1]."""
    y = _clip(nits / PQ_MAX_NITS, 0.0, 1.0) ** _PQ_M1
    return ((_PQ_C1 + _PQ_C2 * y) / (1 + _PQ_C3 * y)) ** _PQ_M2


def pq_decode(e):
    """SMPTE ST 2084 EOTF: PQ signal in [0, 1] -> cd/m2."""
    p = _clip(e, 0.0, 1.0) ** (1 / _PQ_M2)
    return PQ_MAX_NITS * (_clip(p - _PQ_C1, 0.0, None) / (_PQ_C2 - _PQ_C3 * p)) ** (1 / _PQ_M1)


def rec2020_nits(rgb709, white_nits: float = HDR_REFERENCE_WHITE_NITS):
    """Linear Rec.709 RGB (..., 3) -> BT.2020 RGB in cd/m2 (>= 0), linear 1.0 at `white_nits`."""
    return np.clip(rgb709 @ REC709_TO_REC2020.T, 0.0, None) * white_nits


def hdr10_yuv(nits: np.ndarray) -> tuple[np.ndarray, ...]:
    """BT.2020 RGB in cd/m2 (H, W, 3), H and W even -> 10-bit limited-range BT.2020 non-constant-
    luminance Y'CbCr 4:2:0 planes (uint16): Y (H, W), Cb and Cr (H/2, W/2). Chroma is the 2x2 mean."""
    e = pq_encode(nits)  # R'G'B'
    y = REC2020_KR * e[..., 0] + (1 - REC2020_KR - REC2020_KB) * e[..., 1] + REC2020_KB * e[..., 2]
    cb = (e[..., 2] - y) / (2 * (1 - REC2020_KB))
    cr = (e[..., 0] - y) / (2 * (1 - REC2020_KR))
    h, w = y.shape
    sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
    q = lambda v: np.clip(np.round(v), 0, 1023).astype(np.uint16)  # noqa: E731
    return q(64 + 876 * y), q(512 + 896 * sub(cb)), q(512 + 896 * sub(cr))


def hdr10_light_levels(nits: np.ndarray) -> tuple[int, int]:
    """CTA-861.3 MaxCLL and MaxFALL (cd/m2) of BT.2020 frames in cd/m2 (T, H, W, 3)."""
    peak = np.clip(nits.max(axis=-1), 0, PQ_MAX_NITS)
    return int(np.ceil(peak.max())), int(np.ceil(peak.reshape(len(peak), -1).mean(axis=1).max()))
