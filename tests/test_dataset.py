import json

import numpy as np
import pytest
import torch

from diffhdr.color_mapping import from_vae_range, log_gamma_decode
from diffhdr.dataset import HDRVideoDataset, collate, condition_batch, latent_path
from diffhdr.errors import InputError
from diffhdr.io import write_exr
from diffhdr.synthetic import write_dataset


def test_items_shapes_and_ranges(tiny_cfg):
    ds = HDRVideoDataset(tiny_cfg, "train")
    assert len(ds) == 2  # 3 sequences, last one held out
    item = ds[0]
    T, H, W = tiny_cfg.training.resolution
    assert item.hdr.shape == (T, 3, H, W) and item.latent is None
    cond = condition_batch(collate([item]), tiny_cfg, "cpu")
    assert cond.target.shape == (1, 3, T, H, W) and cond.control.shape == (1, 3, T, H, W)
    assert cond.mask.shape == (1, T, H, W) and set(cond.mask.unique().tolist()) <= {0.0, 1.0}
    assert -1 <= cond.target.min() and cond.target.max() <= 1
    assert cond.control.max() < cond.target.max()  # the LDR clips what the HDR keeps
    assert item.prompt.startswith("[Overexposed:")
    # the target decodes back to radiance: the sun stays far above what 8 bits can hold
    lin = log_gamma_decode(from_vae_range(cond.target), tiny_cfg.color_mapping.gamma, tiny_cfg.color_mapping.M)
    assert lin.max() > 100
    again = condition_batch(collate([item]), tiny_cfg, "cpu")
    assert torch.equal(cond.control, again.control)  # the item's seed reproduces its augmentation


def test_split_and_determinism(tiny_cfg):
    train, val = HDRVideoDataset(tiny_cfg, "train"), HDRVideoDataset(tiny_cfg, "val")
    assert {s.name for s in train.seqs}.isdisjoint({s.name for s in val.seqs})
    assert val.seqs[-1].name == "sequence_002"
    a, b = train[5], train[5]
    assert torch.equal(a.hdr, b.hdr) and a.start == b.start and a.seed == b.seed and a.ev == b.ev


def test_too_large_val_split(tiny_cfg):
    tiny_cfg.data.val_split = 3
    with pytest.raises(InputError, match="val_split=3"):
        HDRVideoDataset(tiny_cfg, "train")


def test_bad_frames(tmp_path, tiny_cfg):
    root = write_dataset(tmp_path / "d", sequences=2, frames=21, h=40, w=40)
    tiny_cfg.data.dataset_root = str(root)
    tiny_cfg.data.val_split = 0
    ds = HDRVideoDataset(tiny_cfg, "train")
    bad = np.ones((40, 40, 3), np.float32)
    bad[0, :3] = np.nan
    bad[1, 0] = -1
    for s in ds.seqs:
        for i in range(21):
            write_exr(s / f"frame_{i:05d}.exr", bad, half=False)
    with pytest.raises(InputError, match=r"frame_000\d\d.exr: 9 NaN, 0 Inf and 3 negative"):
        ds[0]
    tiny_cfg.data.invalid_pixels = "clamp"
    assert torch.isfinite(HDRVideoDataset(tiny_cfg, "train")[0].hdr).all()
    (ds.seqs[0] / "frame_00020.exr").unlink()
    (ds.seqs[1] / "frame_00020.exr").unlink()
    with pytest.raises(InputError, match="20 frames matching"):
        ds[0]


def test_sequence_smaller_than_crop(tmp_path, tiny_cfg):
    tiny_cfg.data.dataset_root = str(write_dataset(tmp_path / "s", sequences=1, frames=21, h=24, w=24))
    tiny_cfg.data.val_split = 0
    with pytest.raises(InputError, match="smaller than the 32x32 training crop"):
        HDRVideoDataset(tiny_cfg, "train")[0]


def test_mixed_frame_sizes(tmp_path, tiny_cfg):
    root = write_dataset(tmp_path / "m", sequences=1, frames=21, h=40, w=40)
    write_exr(root / "sequence_000" / "frame_00003.exr", np.ones((48, 40, 3), np.float32))
    tiny_cfg.data.dataset_root, tiny_cfg.data.val_split = str(root), 0
    tiny_cfg.training.resolution = [21, 32, 32]
    with pytest.raises(InputError, match="frame_00003.exr: frame is 40x48, earlier frames 40x40"):
        HDRVideoDataset(tiny_cfg, "train")[0]


def test_cached_latents_center_crop_flip_and_config_check(tmp_path, tiny_cfg):
    root = write_dataset(tmp_path / "c", sequences=1, frames=21, h=40, w=48)
    tiny_cfg.data.dataset_root, tiny_cfg.data.val_split = str(root), 0
    seq = root / "sequence_000"
    lat = torch.arange(16 * 2 * 4 * 4, dtype=torch.float32).view(16, 2, 4, 4)
    latent_path(seq, 7).parent.mkdir()
    torch.save(lat, latent_path(seq, 7))
    (root / "latent_config.json").write_text(json.dumps({"gamma": 2.2, "M": 1000.0, "clip_frames": 5,
                                                         "resolution": [32, 32]}))
    ds = HDRVideoDataset(tiny_cfg, "train")
    items = [ds[d] for d in range(8)]
    assert all(i.start == 7 and i.ev == 0 and i.latent is not None for i in items)
    flipped = [torch.equal(i.latent, lat.flip(-1)) for i in items]
    assert any(flipped) and not all(flipped)
    assert all(torch.equal(i.latent, lat) for i, f in zip(items, flipped) if not f)
    # the LDR condition is the centre crop, the flip applied to it alike
    f0 = [i for i, f in zip(items, flipped) if not f][0]
    f1 = [i for i, f in zip(items, flipped) if f][0]
    assert torch.equal(f0.hdr, f1.hdr.flip(-1))
    (root / "latent_config.json").write_text(json.dumps({"gamma": 2.2, "M": 65536.0}))
    with pytest.raises(InputError, match="latent_config.json: cached latents were made with M=65536.0"):
        HDRVideoDataset(tiny_cfg, "train")


def test_missing_caption_falls_back(tmp_path, tiny_cfg, caplog):
    root = write_dataset(tmp_path / "n", sequences=1, frames=21, h=40, w=40)
    (root / "sequence_000" / "caption.txt").unlink()
    tiny_cfg.data.dataset_root, tiny_cfg.data.val_split = str(root), 0
    item = HDRVideoDataset(tiny_cfg, "train")[0]
    assert item.prompt == "[Overexposed: none]; [Underexposed: none]"
    assert "no caption.txt" in caplog.text


def test_reference_prompt_mix_shares():
    from diffhdr.prompting import training_prompt

    mix = [training_prompt("cap", u, "reference", "a street at night") for u in (0.1, 0.2, 0.5, 0.8)]
    assert mix == ["a street at night", "", "cap", ""]
    assert training_prompt("cap", 0.1, "caption", "a street at night") == "cap"


def test_hybrid_sample_has_grey_control_full_mask_and_unexposed_target(tiny_cfg, dataset_root):
    """The release's text-to-video share: grey control, all-ones mask, exposure undone; scene.txt
    joins the texts the training cache encodes."""
    from diffhdr.color_mapping import log_gamma_encode, srgb_to_linear, to_vae_range

    tiny_cfg.training.prompt_mix = "reference"
    item = HDRVideoDataset(tiny_cfg, "train")[0]
    item.ev, item.hybrid = 2, True
    cond = condition_batch(collate([item]), tiny_cfg, "cpu")
    gm = (tiny_cfg.color_mapping.gamma, tiny_cfg.color_mapping.M)
    grey = to_vae_range(log_gamma_encode(srgb_to_linear(torch.tensor(0.5)), *gm))
    assert torch.allclose(cond.control, grey.expand_as(cond.control))
    assert bool((cond.mask == 1).all())
    expected = to_vae_range(log_gamma_encode(item.hdr.clamp_min(0), *gm)).permute(1, 0, 2, 3)
    assert torch.allclose(cond.target[0], expected, atol=1e-6)
    seq = sorted(p for p in dataset_root.iterdir() if p.is_dir())[0]
    (seq / "scene.txt").write_text("a sunny street\n")
    try:
        assert "a sunny street" in HDRVideoDataset(tiny_cfg, "train").prompts()
    finally:
        (seq / "scene.txt").unlink()


def test_demo_landscape_clips_and_crushes_like_an_overexposed_photograph():
    import numpy as np

    from diffhdr.color_mapping import linear_to_srgb
    from diffhdr.synthetic import DEMO_EXPOSURE, render_sky

    a, b = render_sky(96, 160, 0, seed=3) * DEMO_EXPOSURE, render_sky(96, 160, 8, seed=3) * DEMO_EXPOSURE
    codes = np.floor(linear_to_srgb(np.clip(a, 0, 1)) * 255)
    clipped, crushed = (codes >= 250).all(-1).mean(), (codes <= 8).all(-1).mean()
    assert 0.15 < clipped < 0.6 and 0.01 < crushed < 0.2  # a real scene's share, not all or nothing
    assert a.max() > 1000 and np.isfinite(a).all() and (a > 0).all()  # the sun, far above the clip
    assert np.argmax(a.sum(-1).max(0)) == np.argmax(b.sum(-1).max(0))  # the sun stays while the land pans
    assert not np.allclose(a[-10:], b[-10:])
