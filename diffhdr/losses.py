"""Rectified flow matching: x_t = (1 - s) x0 + s eps, the model predicts v = eps - x0.

Noise levels s in [0, 1] (the DiT sees timestep 1000 s) come from one of:
  uniform       s ~ U(0, 1)
  logit_normal  s = sigmoid(n), n ~ N(0, 1)            (SD3's choice)
  shifted       s = shift(u) on the release's grid of 1000 steps, u = linspace(1, 0, 1001)[:-1][k],
                k ~ U{0..999}, shift(u) = a u / (1 + (a - 1) u), a = 5
The release additionally weights each sample by w(t) = exp(-2 ((t - 500) / 1000)^2), minus its
minimum and divided by its mean over that grid, so that w averages 1 (`weighting="reference"`).
"""

from __future__ import annotations

import torch


def shift_sigma(s, shift: float):
    return shift * s / (1 + (shift - 1) * s)


def _grid(shift: float, n: int = 1000) -> torch.Tensor:
    return shift_sigma(torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)[:-1], shift)


def sample_sigmas(batch: int, g: torch.Generator, mode: str = "shifted", shift: float = 5.0) -> torch.Tensor:
    if mode == "uniform":
        return torch.rand(batch, generator=g, dtype=torch.float64)
    if mode == "logit_normal":
        return torch.sigmoid(torch.randn(batch, generator=g, dtype=torch.float64))
    if mode == "shifted":
        return _grid(shift)[torch.randint(0, 1000, (batch,), generator=g)]
    raise ValueError(f"unknown timestep sampling {mode!r}")


def reference_weight(sigmas: torch.Tensor, shift: float = 5.0) -> torch.Tensor:
    def bump(t):
        return torch.exp(-2 * ((t - 500) / 1000) ** 2)

    grid = bump(1000 * _grid(shift))
    return (bump(1000 * sigmas.double()) - grid.min()) / (grid - grid.min()).mean()


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    s = sigmas.view(-1, *([1] * (x0.dim() - 1))).to(x0)
    return (1 - s) * x0 + s * noise


def flow_matching_loss(
    pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error to the velocity target eps - x0, in float32, optionally weighted per sample."""
    per_sample = ((pred.float() - (noise.float() - x0.float())) ** 2).flatten(1).mean(1)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    return per_sample.mean()
