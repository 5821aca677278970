import numpy as np
import pytest
import torch

from diffhdr import color_mapping as cm


@pytest.mark.parametrize("gamma,M", [(2.2, 1000.0), (2.2, 65536.0), (1.0, 10.0)])
def test_log_gamma_round_trip_fp32(gamma, M):
    x = torch.cat([torch.zeros(1), torch.logspace(-6, np.log10(M), 20001)]).float()
    y = cm.log_gamma_encode(x, gamma, M)
    back = cm.log_gamma_decode(y, gamma, M)
    assert torch.all((back - x).abs() <= 1e-4 + 2e-5 * x)  # fp32 relative error per value
    assert y.min() >= 0 and y.max() <= 1.0 + 1e-7


def test_log_gamma_monotone_and_saturating():
    x = torch.linspace(0, 2000, 100001, dtype=torch.float64)
    y = cm.log_gamma_encode(x, 2.2, 1000.0)
    assert torch.all(torch.diff(y[x <= 1000]) > 0)
    assert torch.all(y[x >= 1000] == 1.0)
    huge = cm.log_gamma_encode(torch.tensor([1e30, float("inf")]), 2.2, 1000.0)
    assert torch.all(huge == 1.0)


def test_reference_points_of_the_release():
    # reference-facts section 1 (gamma 2.2, M 65536)
    y = cm.log_gamma_encode(np.array([1.0, 32.0, 65536.0]), 2.2, 65536.0)
    np.testing.assert_allclose(y, [0.348, 0.628, 1.0], atol=1e-3)
    assert abs(cm.log_gamma_norm(2.2, 65536.0) - 11.879) < 1e-3


def test_numpy_and_torch_agree():
    x = np.random.default_rng(0).uniform(0, 50, 1000).astype(np.float64)
    for f in (cm.log_gamma_encode, cm.srgb_to_linear, cm.linear_to_srgb):
        np.testing.assert_allclose(f(x), f(torch.from_numpy(x)).numpy(), rtol=1e-12)


def test_srgb_round_trip_and_iec_constants():
    s = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(cm.linear_to_srgb(cm.srgb_to_linear(s)), s, atol=1e-12)
    assert cm.srgb_to_linear(np.array(0.04045)) == pytest.approx(0.04045 / 12.92)
    assert cm.srgb_to_linear(np.array(0.5)) == pytest.approx(0.21404, abs=1e-5)


def test_vae_range_and_luminance():
    assert cm.to_vae_range(0.0) == -1 and cm.to_vae_range(1.0) == 1
    assert cm.from_vae_range(cm.to_vae_range(0.3)) == pytest.approx(0.3)
    assert cm.luminance(np.ones((2, 3))) == pytest.approx(np.ones(2))
    t = torch.ones(2, 3, 4, 4)
    assert cm.luminance(t, channel_axis=1).shape == (2, 4, 4)


def test_vae_video_is_log_gamma_channels_first():
    frames = np.random.default_rng(0).random((5, 3, 4, 6)).astype(np.float32) * 50  # (T, 3, H, W)
    v = cm.to_vae_video(frames, 2.2, 1000.0)
    assert v.shape == (3, 5, 4, 6)
    assert v[2, 4, 1, 3] == pytest.approx(2 * cm.log_gamma_encode(frames[4, 2, 1, 3], 2.2, 1000.0) - 1)
    assert np.allclose(cm.to_vae_video(torch.from_numpy(frames), 2.2, 1000.0).numpy(), v, atol=1e-6)


def test_reinhard_is_global_and_bounded():
    rng = np.random.default_rng(0)
    video = rng.uniform(0, 100, (4, 8, 8, 3)).astype(np.float32)
    out = cm.reinhard_global(video)
    assert out.min() >= 0 and out.max() <= 1
    # global: one scale for all frames, so a brighter frame stays brighter
    video[1] *= 4
    out = cm.reinhard_global(video)
    assert out[1].mean() > out[0].mean()
