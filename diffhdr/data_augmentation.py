"""HDR -> plausible LDR: exposure shift, sensor noise, camera response, clipping, 8-bit quantisation.

Default recipe = the authors' release (reference-facts section 3):

1. e ~ U{ev_min..ev_max} EV per clip; x <- clamp(x * 2^e, 0, 65536). The target is this exposed HDR.
2. With probability p: signal-dependent noise on L = x / 65536, var = L s_s^2 + s_c^2 with
   s_s ~ U(0, 0.00085), s_c ~ U(0, 1.5e-5) per channel, AR(1) in time (z_t = 0.5 z_{t-1} + sqrt(0.75) u;
   the release starts from z = 0, `noise_from_zero`),
   noise = z * std * 65536 * 0.01.
3. Camera response: none (a hard clip) in the release; "gamma" / "filmic" / "random" add a tone curve.
4. sRGB OETF, clip to [0, 1], quantise with floor(s * 255) / 255 (uint8 truncation).

All randomness comes from the torch.Generator passed in, so a seed reproduces a clip exactly
(on the generator's device: training runs this on the GPU, where it takes milliseconds).
Shapes: (T, 3, H, W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .color_mapping import linear_to_srgb
from .config import AugmentationConfig


def _uniform(g: torch.Generator, lo: float, hi: float, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, device=g.device)


def draw_ev(g: torch.Generator, cfg: AugmentationConfig) -> int:
    return int(torch.randint(cfg.ev_min, cfg.ev_max + 1, (), generator=g))


def sensor_noise(x: torch.Tensor, g: torch.Generator, cfg: AugmentationConfig) -> torch.Tensor:
    """Signal-dependent Gaussian noise, correlated over time by AR(1), on linear radiance (T, 3, H, W)."""
    full = cfg.radiance_clip
    sig_s = _uniform(g, 0.0, cfg.noise_signal_sigma_max, (1, 3, 1, 1))
    sig_c = _uniform(g, 0.0, cfg.noise_const_sigma_max, (1, 3, 1, 1))
    std = torch.sqrt((x / full).clamp_min(0) * sig_s**2 + sig_c**2)
    u = torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)
    z = ar1(u, cfg.noise_temporal_rho, cfg.noise_from_zero)
    return (x + z * std * full * cfg.noise_scale).clamp(0.0, full)


def ar1(u: torch.Tensor, rho: float, from_zero: bool = False) -> torch.Tensor:
    """Unit-variance noise u (T, ...) correlated over time: z_t = rho z_{t-1} + sqrt(1 - rho^2) u_t.
    z_0 = u_0 (stationary from the start), or with `from_zero` the release's z_0 = sqrt(1 - rho^2) u_0."""
    z = torch.empty_like(u)
    z[0] = u[0] * (math.sqrt(1 - rho**2) if from_zero else 1.0)
    for t in range(1, u.shape[0]):
        z[t] = rho * z[t - 1] + math.sqrt(1 - rho**2) * u[t]
    return z


def camera_response(x: torch.Tensor, kind: str, g: torch.Generator) -> torch.Tensor:
    """A tone curve applied to linear radiance before the sRGB encoding ("none" = hard clip)."""
    if kind == "random":
        kind = ["none", "gamma", "filmic"][int(torch.randint(0, 3, (), generator=g, device=g.device))]
    if kind == "none":
        return x
    if kind == "gamma":  # a mild contrast/gamma change, as consumer cameras apply
        return x.clamp_min(0) ** float(_uniform(g, 0.8, 1.2))
    if kind == "filmic":  # a soft shoulder: highlights roll off instead of clipping hard
        white = float(_uniform(g, 2.0, 8.0))
        return x * (1 + x / white**2) / (1 + x)
    raise ValueError(f"unknown camera response {kind!r}")


def quantize_8bit(s: torch.Tensor) -> torch.Tensor:
    return torch.floor(s * 255.0) / 255.0


@dataclass
class LDRSample:
    hdr: torch.Tensor  # (T, 3, H, W) exposed linear HDR: the training target
    ldr: torch.Tensor  # (T, 3, H, W) quantised sRGB in [0, 1]: the condition
    ev: int


def synthesize_ldr(hdr: torch.Tensor, g: torch.Generator, cfg: AugmentationConfig, ev: int | None = None) -> LDRSample:
    """Linear HDR clip (T, 3, H, W) -> (exposed HDR target, 8-bit sRGB LDR)."""
    ev = draw_ev(g, cfg) if ev is None else ev
    exposed = (hdr * 2.0**ev).clamp(0.0, cfg.radiance_clip)
    x = exposed
    if float(torch.rand((), generator=g, device=g.device)) < cfg.noise_prob:
        x = sensor_noise(x, g, cfg)
    x = camera_response(x, cfg.camera_response, g)
    ldr = quantize_8bit(linear_to_srgb(x))
    return LDRSample(hdr=exposed, ldr=ldr, ev=ev)


def grey_fill(
    ldr: torch.Tensor,
    over: torch.Tensor,
    under: torch.Tensor,
    g: torch.Generator | None,
    cfg: AugmentationConfig,
    use_under: bool = True,
) -> torch.Tensor:
    """Paint masked pixels sRGB grey: under-exposed always (when used), over-exposed with
    probability `over_fill_prob` per clip (the release's training recipe). Masks (T, H, W)."""
    fill = under if use_under else torch.zeros_like(under)
    if g is not None and float(torch.rand((), generator=g, device=g.device)) < cfg.over_fill_prob:
        fill = torch.maximum(fill, over)
    m = fill[:, None] > 0.5
    return torch.where(m, torch.full_like(ldr, cfg.grey_value), ldr)
