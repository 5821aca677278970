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
