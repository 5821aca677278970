"""The `reference` profile and preset do what the authors' release does (reference-facts section 11),
and `spec` keeps its own way."""

import importlib.util
import math

import torch

from conftest import ROOT
from diffhdr.config import AugmentationConfig, load_config
from diffhdr.data_augmentation import ar1
from diffhdr.dataset import hybrid_target
from diffhdr.prompting import parse_prompt


def inference_module():
    spec = importlib.util.spec_from_file_location("inference_cli", ROOT / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sensor_noise_ar1_starts_from_zero_under_reference():
    u = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    release, ours = ar1(u, 0.5, from_zero=True), ar1(u, 0.5)
    assert torch.equal(release[0], math.sqrt(0.75) * u[0])  # z0 = sqrt(0.75) u0 (facts 11.3)
    assert torch.equal(ours[0], u[0])
    for z in (release, ours):
        assert torch.allclose(z[1:], 0.5 * z[:-1] + math.sqrt(0.75) * u[1:])


def test_hybrid_target_clamps_after_the_ev_shift_under_reference():
    hdr = torch.tensor([30000.0, 100.0])
    release = AugmentationConfig(hybrid_clip_exposed=True)
    assert torch.equal(hybrid_target(hdr, 2, release), torch.tensor([16384.0, 100.0]))  # min(x 4, 65536) / 4
    assert torch.equal(hybrid_target(hdr, -1, release), hdr)
    assert torch.equal(hybrid_target(hdr, 2, AugmentationConfig()), hdr)  # spec: min(x, 65536)


def test_reference_config_turns_both_on_and_the_paper_config_neither():
    ref, paper = load_config(ROOT / "configs/reference.yaml"), load_config(ROOT / "configs/train.yaml")
    assert ref.augmentation.noise_from_zero and ref.augmentation.hybrid_clip_exposed
    assert not paper.augmentation.noise_from_zero and not paper.augmentation.hybrid_clip_exposed


def test_reference_preset_encodes_the_prompt_as_given():
    assert parse_prompt("", verbatim=True).text() == ""  # the release trained 37.5% of samples on ""
    assert parse_prompt("a sunny beach", verbatim=True).text() == "a sunny beach"
    cap = parse_prompt("[overexposed: sky ]; [Underexposed: room]", verbatim=True)
    assert cap.text() == "[overexposed: sky ]; [Underexposed: room]" and (cap.over, cap.under) == ("sky", "room")
    assert parse_prompt("").text() == "[Overexposed: none]; [Underexposed: none]"  # spec: the training format
    inf = inference_module()
    a = inf.parse_args(["--input_video", "v.mp4", "--output_dir", "o", "--preset", "reference"])
    assert inf.settings_from_args(a).prompt_verbatim
    assert not inf.settings_from_args(inf.parse_args(["--input_video", "v.mp4", "--output_dir", "o"])).prompt_verbatim


def test_no_under_mask_flag():
    inf = inference_module()
    base = ["--input_video", "v.mp4", "--output_dir", "o"]
    assert inf.settings_from_args(inf.parse_args(base)).use_under_mask
    assert not inf.settings_from_args(inf.parse_args([*base, "--no_under_mask"])).use_under_mask


def test_release_window_noise_is_the_same_draw_each_window_and_rolls_a_reference_frame():
    from diffhdr.pipeline import release_window_noise

    a, b = release_window_noise((1, 4, 9, 2, 2), 10, False), release_window_noise((1, 4, 9, 2, 2), 10, False)
    assert torch.equal(a, b) and torch.equal(a, torch.randn((1, 4, 9, 2, 2), generator=torch.Generator().manual_seed(10)))
    r = release_window_noise((1, 4, 9, 2, 2), 10, True)
    draw = torch.randn((1, 4, 10, 2, 2), generator=torch.Generator().manual_seed(10))
    assert torch.equal(r[:, :, 0], draw[:, :, -1]) and torch.equal(r[:, :, 1:], draw[:, :, :-1])


def test_release_windows_each_window_stands_alone():
    """Under the release's windows the first window is a 33-frame run of its own (its own masks,
    the same noise), and a short clip runs as if padded to 33 frames."""
    from diffhdr.model import DiffHDRModel
    from diffhdr.pipeline import InferenceSettings, reconstruct
    from diffhdr.tiny import resolve_backbone

    m = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)
    t = torch.linspace(0, 1, 41)[:, None, None, None]
    frames = (0.3 + 0.7 * t * torch.linspace(0, 1, 32)[None, None, None, :]).expand(41, 3, 32, 32).clone()
    release = InferenceSettings(num_inference_steps=2, window_overlap=17, blend="linear", cfa=False,
                                guidance_scale=1.0, release_windows=True)
    ours = InferenceSettings(**{**release.__dict__, "release_windows": False})
    run = lambda f, s: reconstruct(m, f, parse_prompt(""), 2.2, 1000.0, s, progress=False)  # noqa: E731
    long, alone = run(frames, release), run(frames[:33], release)
    assert torch.allclose(long[:16], alone[:16], atol=1e-6)  # blend weight 1 before the overlap
    assert not torch.allclose(long, run(frames, ours))  # ours: one noise draw sliced, one mask EMA
    short = run(frames[:9], release)
    padded = run(torch.cat([frames[:9], frames[8:9].expand(24, -1, -1, -1)]), release)
    assert torch.allclose(short, padded[:9], atol=1e-6)


def test_training_reference_image_leads_the_context_and_the_target(tiny_cfg):
    from diffhdr.color_mapping import to_vae_range
    from diffhdr.dataset import HDRVideoDataset, collate, condition_batch
    from diffhdr.model import DiffHDRModel
    from diffhdr.tiny import resolve_backbone
    from diffhdr.training import batch_loss

    tiny_cfg.training.batch_size, tiny_cfg.training.reference_image = 1, True
    tiny_cfg.training.prompt_mix = "reference"
    ds = HDRVideoDataset(tiny_cfg, "train", use_cache=False)
    items = [ds[i] for i in range(64)]
    share = sum(i.reference for i in items) / len(items)
    assert 0.2 < share < 0.55  # the release's 37.5% (u >= 0.625)
    assert not any(i.reference and i.hybrid for i in items)
    with_ref = next(i for i in items if i.reference)
    cond = condition_batch(collate([with_ref]), tiny_cfg, "cpu")
    from diffhdr.data_augmentation import synthesize_ldr

    g = torch.Generator().manual_seed(with_ref.seed)
    first = synthesize_ldr(with_ref.hdr, g, tiny_cfg.augmentation, ev=with_ref.ev).hdr[0]
    assert torch.allclose(cond.reference[0], to_vae_range(first))  # linear, 2x - 1, no Log-Gamma
    m = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)
    seen = {}
    orig = m._dit_forward

    def spy(xt, t, text, context):
        seen["x"], seen["context"] = xt.shape, context.shape
        return orig(xt, t, text, context)

    m._dit_forward = spy
    loss = batch_loss(m, collate([with_ref]), tiny_cfg, torch.Generator().manual_seed(0), "cpu")
    frames = (tiny_cfg.training.resolution[0] - 1) // 4 + 1
    assert torch.isfinite(loss) and seen["x"][2] == frames + 1 and seen["context"][2] == frames + 1
    tiny_cfg.training.reference_image = False
    batch_loss(m, collate([ds[0]]), tiny_cfg, torch.Generator().manual_seed(0), "cpu")
    assert seen["x"][2] == frames


def test_training_reference_image_needs_batch_1(tmp_path):
    import pytest

    from conftest import write_config
    from diffhdr.config import ConfigError

    path = write_config(tmp_path / "c.yaml", training={"reference_image": True, "batch_size": 2})
    with pytest.raises(ConfigError, match="reference_image needs training.batch_size 1"):
        load_config(path)


def test_reference_preset_seeds_long_videos_as_the_long_video_script():
    from diffhdr.model import DiffHDRModel
    from diffhdr.pipeline import InferenceSettings, reconstruct
    from diffhdr.tiny import resolve_backbone

    inf = inference_module()
    base = ["--input_video", "v.mp4", "--output_dir", "o", "--preset", "reference"]
    s = inf.settings_from_args(inf.parse_args(base))
    assert (s.seed, s.long_video_seed) == (10, 34)
    assert inf.settings_from_args(inf.parse_args([*base, "--seed", "5"])).long_video_seed is None
    m = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)
    frames = torch.rand(41, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    common = dict(num_inference_steps=1, window_overlap=17, cfa=False, guidance_scale=1.0, release_windows=True)
    run = lambda f, **kw: reconstruct(m, f, parse_prompt(""), 2.2, 1000.0,  # noqa: E731
                                      InferenceSettings(**common, **kw), progress=False)
    assert torch.equal(run(frames, seed=10, long_video_seed=34), run(frames, seed=34))  # two windows: 34
    assert torch.equal(run(frames[:33], seed=10, long_video_seed=34), run(frames[:33], seed=10))  # one: 10
