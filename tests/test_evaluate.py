import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_script
from diffhdr import metrics as M
from diffhdr.errors import InputError
from diffhdr.options import BENCHMARKS, METRICS
from diffhdr.io import write_exr
from diffhdr.synthetic import render_frame


def test_pu21_published_reference_values():
    v = M.pu21_encode([0.005, 1.0, 100.0, 10000.0])
    np.testing.assert_allclose(v, [0.0, 36.54, 256.38, 595.39], atol=0.01)
    assert np.all(np.diff(M.pu21_encode(np.logspace(-3, 4.5, 200))) >= 0)


def video(frames=8, h=48, w=64, seed=0):
    return np.stack([render_frame(h, w, t, seed=seed) for t in range(frames)]).astype(np.float32)


def degrade(v, level, seed=0):
    rng = np.random.default_rng(seed)
    return (v * (1 + level * rng.standard_normal(v.shape))).clip(0).astype(np.float32)


def test_reference_metrics_best_when_identical_and_monotone():
    gt = video()
    assert M.fovvideovdp(gt, gt) == pytest.approx(10.0, abs=1e-3)
    assert np.all(M.pu21_psnr(gt, gt) > 150) and np.all(M.log_psnr(gt, gt) > 150)
    levels = [0.02, 0.1, 0.3]
    jod = [M.fovvideovdp(degrade(gt, s), gt) for s in levels]
    psnr = [M.pu21_psnr(degrade(gt, s), gt).mean() for s in levels]
    lpsnr = [M.log_psnr(degrade(gt, s), gt).mean() for s in levels]
    for series in (jod, psnr, lpsnr):
        assert all(a > b for a, b in zip(series, series[1:])), series
    assert all(j < 10.0 for j in jod)


def textured(seed=0):
    """A fine log-normal texture: PIQE rates natural-image statistics, and on flat procedural frames
    it is erratic, so this stands in for a natural HDR scene."""
    from scipy.ndimage import gaussian_filter

    base = np.exp(2.5 * gaussian_filter(np.random.default_rng(seed).standard_normal((2, 192, 256)), (0, 1, 1)))
    return np.repeat(base[..., None], 3, axis=-1).astype(np.float32)


@pytest.mark.parametrize("backend", ["pypiqe", "pyiqa"])
def test_pu21_piqe_gets_worse_with_blur(backend):
    pytest.importorskip(backend)
    from scipy.ndimage import gaussian_filter

    base = textured()
    scores = [M.pu21_piqe(gaussian_filter(base, (0, s, s, 0)) if s else base, backend=backend).mean()
              for s in (0, 1, 2, 4)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores  # PIQE: lower is better


def test_pu21_piqe_backends_agree_up_to_8_bits():
    pytest.importorskip("pyiqa")
    pytest.importorskip("pypiqe")
    assert M.pu21_piqe_backend() == "pyiqa"  # the release's, where installed
    release, ours = M.pu21_piqe(textured(1), backend="pyiqa"), M.pu21_piqe(textured(1), backend="pypiqe")
    np.testing.assert_allclose(release, ours, rtol=0.1)


def write_seq(folder, frames):
    for i, f in enumerate(frames):
        write_exr(folder / f"frame_{i:05d}.exr", f)
    return folder


def test_baselines_scored_end_to_end(tmp_path):
    from diffhdr.color_mapping import linear_to_srgb
    from diffhdr.io import write_video

    gt = video(frames=9)
    write_seq(tmp_path / "gt", gt)
    write_video(tmp_path / "ldr.mp4", (linear_to_srgb(gt) * 255).astype(np.uint8))
    means = {}
    for method in ("linear", "akyuz"):
        run_script("scripts/baselines.py", "--method", method, "--input_video", tmp_path / "ldr.mp4",
                   "--output_dir", tmp_path / method)
        proc = run_script("evaluate.py", "--pred_dir", tmp_path / method / "exr", "--gt_dir", tmp_path / "gt",
                          "--metrics", "log_psnr,pu21_psnr,fovvideovdp,pu21_piqe", "--output", tmp_path / f"s_{method}")
        assert "fovvideovdp" in proc.stdout
        scores = json.loads((tmp_path / f"s_{method}/scores.json").read_text())
        means[method] = scores["mean"]
        assert scores["pu21_piqe_backend"] == M.pu21_piqe_backend()  # which PIQE ran is said
        assert len(scores["per_frame"][method]["log_psnr"]) == 9  # named after <method>/exr
        assert (tmp_path / f"s_{method}/per_frame.csv").read_text().count("\n") == 10
        assert (tmp_path / f"s_{method}/per_frame.png").stat().st_size > 1000
    # the clipped sun is far from the truth either way: neither baseline gets near a perfect score
    assert all(m["fovvideovdp"] < 10 for m in means.values())
    # stop errors, masked by the input: no expansion is right where the input is (up to the codec and
    # 8 bits) and far off in the clipped sun; the ground truth itself scores 0 everywhere
    for pred, name in ((tmp_path / "linear" / "exr", "linear"), (tmp_path / "gt", "gt")):
        run_script("evaluate.py", "--pred_dir", pred, "--gt_dir", tmp_path / "gt", "--ldr", tmp_path / "ldr.mp4",
                   "--metrics", "stops_clipped,stops_elsewhere", "--output", tmp_path / f"stops_{name}")
        means[name] = json.loads((tmp_path / f"stops_{name}/scores.json").read_text())["mean"]
    assert means["linear"]["stops_clipped"] > 1.0 and means["linear"]["stops_elsewhere"] < 0.2
    assert means["gt"]["stops_clipped"] < 0.01 and means["gt"]["stops_elsewhere"] < 0.01


def test_tonemap_tool(tmp_path):
    write_seq(tmp_path / "exr", video(frames=3))
    run_script("evaluate.py", "--tonemap", "--pred_dir", tmp_path / "exr", "--output", tmp_path / "png")
    assert len(list((tmp_path / "png").rglob("*.png"))) == 3


def test_offline_metrics_fail_with_one_clear_line(tmp_path):
    write_seq(tmp_path / "p", video(frames=2))
    for metric, message in [("dover", "DOVER has no PyPI package"), ("hdrvdp3", "HDR-VDP-3 is MATLAB code"),
                            ("musiq", "musiq"), ("clipiqa", "clipiqa"), ("fid", "fid")]:
        args = ["--gt_dir", tmp_path / "p"] if METRICS[metric].needs_gt else []
        proc = run_script("evaluate.py", "--pred_dir", tmp_path / "p", *args, "--metrics", metric,
                          "--output", tmp_path / "o", check=False)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert message in last and "Traceback" not in proc.stderr


def test_bad_inputs(tmp_path):
    v = video(frames=4)
    write_seq(tmp_path / "a", v)
    write_seq(tmp_path / "short", v[:3])
    nan = v.copy()
    nan[2, 0, :5] = np.nan
    write_seq(tmp_path / "nan", nan)
    (tmp_path / "empty").mkdir()
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "x.png").write_bytes(b"")
    write_seq(tmp_path / "mixed", v[:2])
    (tmp_path / "mixed" / "notes.txt").write_text("hi")
    (tmp_path / "ldr1").mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "ldr1" / "f.png")
    cases = [
        (["--pred_dir", tmp_path / "short", "--gt_dir", tmp_path / "a", "--metrics", "log_psnr"],
         "prediction is 3 frames"),
        (["--pred_dir", tmp_path / "empty", "--metrics", "pu21_piqe"], "empty: no EXR frames"),
        (["--pred_dir", tmp_path / "png", "--metrics", "pu21_piqe"], "(found x.png: not EXR)"),
        (["--pred_dir", tmp_path / "mixed", "--metrics", "pu21_piqe"], "holds non-EXR files (notes.txt)"),
        (["--pred_dir", tmp_path / "nan", "--metrics", "pu21_piqe"], "15 NaN/Inf values in 1 frames (frame_00002.exr)"),
        (["--pred_dir", tmp_path / "a", "--metrics", "psnr"], "unknown metric(s) psnr; valid: log_psnr"),
        (["--pred_dir", tmp_path / "a", "--metrics", "fovvideovdp"], "need --gt_dir"),
        (["--pred_dir", tmp_path / "a", "--gt_dir", tmp_path / "a", "--metrics", "stops_clipped"], "need --ldr"),
        (["--pred_dir", tmp_path / "a", "--gt_dir", tmp_path / "a", "--metrics", "stops_clipped", "--ldr",
          tmp_path / "ldr1"], "the input is 1 frames of 64x48, the prediction 4"),
    ]
    for args, message in cases:
        proc = run_script("evaluate.py", *args, "--output", tmp_path / "o", check=False)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert message in proc.stderr.strip().splitlines()[-1], proc.stderr[-500:]


def test_metric_table_lists_offline_needs():
    assert set(BENCHMARKS["sihdr"]) <= set(METRICS) and set(BENCHMARKS["cinematic"]) <= set(METRICS)
    with pytest.raises(InputError, match="DOVER"):
        M.dover(video(frames=1))


def test_ldr_scale_finds_the_exposure_of_the_input():
    from diffhdr.color_mapping import linear_to_srgb

    gt = video(frames=2)
    ldr = np.floor(linear_to_srgb(gt * 4.0) * 255).astype(np.uint8)
    assert abs(M.ldr_scale(gt, ldr) / 4.0 - 1) < 0.01
    assert M.clipped_pixels(ldr).mean() > M.clipped_pixels(np.floor(linear_to_srgb(gt) * 255).astype(np.uint8)).mean()
