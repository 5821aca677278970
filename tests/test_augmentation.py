import torch

from diffhdr.config import AugmentationConfig
from diffhdr.data_augmentation import grey_fill, sensor_noise, synthesize_ldr


def test_ldr_is_8bit_srgb_and_reproducible():
    hdr = torch.rand(5, 3, 16, 16) * 4
    cfg = AugmentationConfig()
    a = synthesize_ldr(hdr, torch.Generator().manual_seed(1), cfg)
    b = synthesize_ldr(hdr, torch.Generator().manual_seed(1), cfg)
    assert torch.equal(a.ldr, b.ldr) and a.ev == b.ev
    assert a.ldr.min() >= 0 and a.ldr.max() <= 1
    assert torch.equal(torch.floor(a.ldr * 255), a.ldr * 255)  # exactly 8-bit levels
    assert torch.allclose(a.hdr, (hdr * 2.0**a.ev).clamp(0, 65536))


def test_ev_distribution_matches_config():
    cfg = AugmentationConfig(noise_prob=0.0)
    g = torch.Generator().manual_seed(0)
    evs = [synthesize_ldr(torch.ones(1, 3, 2, 2), g, cfg).ev for _ in range(4000)]
    counts = {e: evs.count(e) / len(evs) for e in set(evs)}
    assert set(counts) == {-1, 0, 1, 2}
    assert all(abs(p - 0.25) < 0.03 for p in counts.values())


def test_noise_statistics_and_temporal_correlation():
    cfg = AugmentationConfig(noise_signal_sigma_max=0.00085, noise_const_sigma_max=1.5e-5)
    x = torch.full((64, 3, 32, 32), 1000.0)
    n = sensor_noise(x, torch.Generator().manual_seed(0), cfg) - x
    # AR(1) with rho 0.5: lag-1 correlation 0.5
    a, b = n[:-1].flatten(), n[1:].flatten()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(corr - 0.5) < 0.05
    # std bounded by the configured maxima
    max_std = ((1000 / 65536) * 0.00085**2 + 1.5e-5**2) ** 0.5 * 65536 * 0.01
    assert n.std() <= max_std


def test_grey_fill_under_always_over_sometimes():
    ldr = torch.zeros(2, 3, 4, 4)
    over = torch.zeros(2, 4, 4)
    under = torch.zeros(2, 4, 4)
    over[:, 0] = 1
    under[:, 3] = 1
    cfg = AugmentationConfig(over_fill_prob=0.0)
    out = grey_fill(ldr, over, under, torch.Generator().manual_seed(0), cfg)
    assert torch.all(out[:, :, 3] == 0.5) and torch.all(out[:, :, 0] == 0)
    cfg = AugmentationConfig(over_fill_prob=1.0)
    out = grey_fill(ldr, over, under, torch.Generator().manual_seed(0), cfg)
    assert torch.all(out[:, :, 0] == 0.5)


def test_clipped_radiance_quantises_to_255():
    """A real 8-bit video is 255 where it clipped: so must the training LDR be (radiance >= 1)."""
    import numpy as np

    from diffhdr.color_mapping import linear_to_srgb

    hdr = torch.tensor([1.0, 1.0000001, 1.5, 64.0, 0.5]).view(1, 1, 1, 5).expand(2, 3, 1, 5).contiguous()
    cfg = AugmentationConfig(noise_prob=0.0)
    ldr = synthesize_ldr(hdr, torch.Generator().manual_seed(0), cfg, ev=0).ldr
    codes = (ldr * 255).round().to(torch.uint8)
    assert codes[..., :4].eq(255).all() and codes[..., 4].lt(255).all()
    assert float(linear_to_srgb(np.float32(1.0))) == 1.0
