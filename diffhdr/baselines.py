"""Classical LDR -> HDR baselines that need no weights, for comparison with DiffHDR.

  linear   inverse sRGB EOTF, then a global gain (HDR = gain * linear(LDR)): what "treat the LDR as
           linear radiance" gives; nothing above the clipping point is recovered.
  akyuz    Akyuz et al. 2007, "Do HDR displays support LDR content?": L = k ((Ld - Ld_min) /
           (Ld_max - Ld_min))^gamma on the linearised luminance, colour kept by scaling RGB with L / Ld.
           k is the peak (relative to diffuse white = 1); the paper found gamma = 1 (linear) preferred.

Input and output: (T, 3, H, W) sRGB [0, 1] -> linear Rec.709 HDR.
"""

from __future__ import annotations

import torch

from .color_mapping import luminance, srgb_to_linear
from .options import BASELINE_METHODS


def linear_expansion(srgb: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    return gain * srgb_to_linear(srgb)


def akyuz2007(srgb: torch.Tensor, peak: float = 10.0, gamma: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    lin = srgb_to_linear(srgb)
    ld = luminance(lin, channel_axis=1)  # (T, H, W)
    lo, hi = ld.min(), ld.max()  # over the whole video: no flicker
    lh = peak * ((ld - lo) / torch.clamp(hi - lo, min=eps)) ** gamma
    return lin * (lh / torch.clamp(ld, min=eps))[:, None]


BASELINES = dict(zip(BASELINE_METHODS, (linear_expansion, akyuz2007)))
