"""ACES output: Bradford-adapted matrices from linear Rec.709, EXR headers that say the space,
evaluate.py scoring such files against Rec.709 ground truth."""

import json

import numpy as np
import pytest
import torch

from conftest import run_script
from diffhdr.colorspace import CHROMATICITIES, conversion_matrix, convert, space_of
from diffhdr.errors import InputError
from diffhdr.io import write_exr
from diffhdr.outputs import write_outputs
from diffhdr.synthetic import render_frame

# Published Rec.709 (D65) -> ACES matrices with Bradford adaptation (ACES' own Rec.709 input transform)
TO_ACESCG = [[0.61309732, 0.33952285, 0.04737928], [0.07019422, 0.91635557, 0.01345020],
             [0.02061560, 0.10956983, 0.86981457]]
TO_ACES2065 = [[0.43963298, 0.38298870, 0.17737832], [0.08977644, 0.81343943, 0.09678413],
               [0.01754117, 0.11154655, 0.87091228]]


def test_matrices_match_the_published_ones():
    np.testing.assert_allclose(conversion_matrix("rec709", "acescg"), TO_ACESCG, atol=5e-6)
    np.testing.assert_allclose(conversion_matrix("rec709", "aces2065-1"), TO_ACES2065, atol=5e-6)


@pytest.mark.parametrize("space", ["acescg", "aces2065-1"])
def test_known_colours_round_trip(space):
    colours = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.18, 0.18, 0.18], [800, 700, 500]], np.float32)
    there = convert(colours, "rec709", space)
    np.testing.assert_allclose(there[0], [1, 1, 1], atol=1e-5)  # D65 white lands on the ACES white
    np.testing.assert_allclose(there[1], np.array(TO_ACESCG if space == "acescg" else TO_ACES2065)[:, 0], atol=5e-6)
    assert (there >= 0).all()  # the wider gamut holds every Rec.709 colour
    np.testing.assert_allclose(convert(there, space, "rec709"), colours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("space", ["rec709", "acescg", "aces2065-1"])
def test_written_frames_carry_their_space_read_back_by_openimageio(tmp_path, space):
    oiio = pytest.importorskip("OpenImageIO")
    hdr = torch.from_numpy(render_frame(32, 48, 0)).permute(2, 0, 1)[None]  # (1, 3, H, W) linear Rec.709
    write_outputs(tmp_path, hdr, 24.0, {"output_colorspace": space}, colorspace=space)
    f = oiio.ImageInput.open(str(tmp_path / "exr" / "frame_00000.exr"))
    try:
        chroma = f.spec().getattribute("chromaticities")
        pixels = f.read_image(oiio.FLOAT)
    finally:
        f.close()
    np.testing.assert_allclose(chroma, CHROMATICITIES[space], atol=1e-6)
    want = convert(hdr[0].permute(1, 2, 0).numpy(), "rec709", space)
    np.testing.assert_allclose(pixels, want, rtol=1e-3, atol=1e-4)  # half float
    assert json.loads((tmp_path / "settings.json").read_text())["output_colorspace"] == space


def test_evaluate_scores_aces_frames_as_their_rec709_selves(tmp_path):
    frames = np.stack([render_frame(48, 64, t) for t in range(3)]).astype(np.float32)
    for name, space in (("gt", "rec709"), ("rec", "rec709"), ("aces", "acescg"), ("mislabelled", "rec709")):
        data = frames if space == "rec709" and name != "mislabelled" else convert(frames, "rec709", "acescg")
        for i, f in enumerate(data):
            write_exr(tmp_path / name / f"frame_{i:05d}.exr", f, chromaticities=CHROMATICITIES[space])
    psnr = {}
    for name in ("rec", "aces", "mislabelled"):
        run_script("evaluate.py", "--pred_dir", tmp_path / name, "--gt_dir", tmp_path / "gt", "--metrics", "log_psnr",
                   "--output", tmp_path / f"s_{name}")
        psnr[name] = json.loads((tmp_path / f"s_{name}/scores.json").read_text())["mean"]["log_psnr"]
    assert psnr["aces"] > 80 and psnr["mislabelled"] < 50, psnr  # half-float rounding in AP1 only, against a hue shift


def test_unknown_primaries_are_named_in_one_line(tmp_path):
    with pytest.raises(InputError, match=r"x.exr: chromaticities \(0.7, 0.3, .*are none of rec709, acescg, aces2065-1"):
        space_of((0.7, 0.3, 0.2, 0.7, 0.15, 0.05, 0.3127, 0.329), tmp_path / "x.exr")
