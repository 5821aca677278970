"""DiffHDR-mini's recipe on the CPU: HDR images -> sequences -> VAE -> whole-DiT training -> a packaged
model that inference.py runs with --base_model alone. Small sizes; the real run is scripts/train_mini.sh."""

import json

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_script
from diffhdr.color_mapping import luminance
from diffhdr.hdri import camera_rays, directions_to_uv, normalise_exposure, render_panorama
from diffhdr.io import read_exr, write_exr


def panorama(h=64, w=128):
    """Radiance = longitude code in red, latitude code in green; a sun at longitude 90 deg, latitude 0."""
    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    img = np.stack([u, v, np.full_like(u, 0.5)], -1).astype(np.float32)
    img[h // 2 - 2 : h // 2 + 2, 3 * w // 4 - 2 : 3 * w // 4 + 2] = 500.0  # phi = 2 pi (0.75 - 0.5) = +90 deg
    return img


def test_panorama_camera_geometry():
    # the centre ray of a camera at yaw 0 looks along +z: the centre column, the horizon row
    d = camera_rays(9, 9, yaw=0.0, pitch=0.0, fov=60.0)
    u, v = directions_to_uv(d[4:5, 4:5])
    assert abs(float(u[0, 0]) - 0.5) < 1e-6 and abs(float(v[0, 0]) - 0.5) < 1e-6
    # pitch up looks above the horizon (smaller v); the horizontal field of view spans 60 deg of longitude
    _, v_up = directions_to_uv(camera_rays(9, 9, 0.0, 30.0, 60.0)[4:5, 4:5])
    assert abs(float(v_up[0, 0]) - (0.5 - 30 / 180)) < 1e-6
    u_row, _ = directions_to_uv(camera_rays(1, 1000, 0.0, 0.0, 60.0))
    assert np.allclose((u_row[0, [0, -1]] - 0.5) * 360, [-30.0, 30.0], atol=0.05)
    # turning to yaw 90 brings the sun to the middle of the view; radiance is resampled, not tone mapped
    pano = panorama()
    view = render_panorama(pano, 32, 32, yaw=90.0, pitch=0.0, fov=40.0)
    y, x = np.unravel_index(np.argmax(luminance(view)), view.shape[:2])
    assert abs(y - 15.5) <= 2 and abs(x - 15.5) <= 2
    assert view.max() > 100 and view.min() >= 0
    frames, gain = normalise_exposure(view[None] * 3.0)
    assert abs(np.median(luminance(frames)) - 0.18) < 1e-3 and gain > 0


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    """The whole recipe at toy sizes: 3 images (2 panoramas, 1 photograph), one held out."""
    from diffhdr.tiny import MINI_TRANSFORMER, MINI_VAE, write_tiny_model

    tmp = tmp_path_factory.mktemp("mini")
    imgs = tmp / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    write_exr(imgs / "pano_a.exr", panorama())
    write_exr(imgs / "pano_b.exr", panorama()[:, ::-1] * 2)
    write_exr(imgs / "photo.exr", (rng.random((48, 64, 3)) ** 4 * 20).astype(np.float32))
    run_script("scripts/make_hdri_dataset.py", "--images", imgs, "--out", tmp / "data", "--sequences_per_image", 2,
               "--frames", 9, "--height", 32, "--width", 32, "--workers", 1, "--val_images", "photo.exr")
    base = write_tiny_model(tmp / "base", transformer=MINI_TRANSFORMER, vae=MINI_VAE)
    cfg = yaml.safe_load((ROOT / "configs/mini.yaml").read_text().replace("runs/mini", str(tmp)))
    cfg["data"].update(sequence_frames=9, num_workers=0)
    cfg["training"].update(resolution=[5, 32, 32], batch_size=1)
    (tmp / "mini.yaml").write_text(yaml.safe_dump(cfg))
    run_script("scripts/train_vae.py", "--model_dir", base, "--config", tmp / "mini.yaml", "--steps", 2,
               "--clip", 5, 32, 32, "--batch_size", 2, "--workers", 0, "--val_root", tmp / "data/val")
    run_script("train.py", "--config", tmp / "mini.yaml", "--max_steps", 2)
    run_script("scripts/package_mini.py", "--base", base, "--checkpoint", tmp / "dit/checkpoint-final",
               "--out", tmp / "model")
    return tmp


def test_dataset_layout_and_split(mini_run):
    data = mini_run / "data"
    train, val = sorted((data / "train").glob("sequence_*")), sorted((data / "val").glob("sequence_*"))
    assert len(train) == 4 and len(val) == 2
    assert len(list(train[0].glob("frame_*.exr"))) == 9 and (train[0] / "caption.txt").read_text().strip()
    assert read_exr(train[0] / "frame_00000.exr").shape == (32, 32, 3)
    manifest = json.loads((data / "manifest.json").read_text())
    assert "photo.exr" in json.dumps(manifest)


def test_packaged_model_runs_with_base_model_alone(mini_run, tmp_path):
    from diffhdr.color_mapping import linear_to_srgb
    from diffhdr.io import write_video
    from diffhdr.synthetic import render_frame

    model = mini_run / "model"
    defaults = json.loads((model / "diffhdr_defaults.json").read_text())
    assert defaults["M"] == 1000.0 and defaults["inference"]["guidance_scale"] == 1.0
    size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
    assert size < 40 * 2**20  # ships in the repository
    video = tmp_path / "in.mp4"
    write_video(video, (linear_to_srgb(np.stack([render_frame(40, 72, t) for t in range(9)])) * 255).astype(np.uint8))
    run_script("inference.py", "--input_video", video, "--output_dir", tmp_path / "out", "--base_model", model)
    settings = json.loads((tmp_path / "out/settings.json").read_text())
    assert settings["settings"]["num_inference_steps"] == defaults["inference"]["num_inference_steps"]
    exr = read_exr(tmp_path / "out/exr/frame_00008.exr")
    assert exr.shape == (40, 72, 3) and np.isfinite(exr).all() and (exr >= 0).all()


def test_decoder_only_keeps_what_the_dit_learned(mini_run, tmp_path):
    """train_vae.py --decoder_only on a packaged (half-precision) model: the decoder moves, the encoder
    and the latent statistics the DiT was trained on stay, and the VAE is saved as half again."""
    import shutil

    from safetensors.torch import load_file

    model = shutil.copytree(mini_run / "model", tmp_path / "model")
    weights = model / "vae/diffusion_pytorch_model.safetensors"
    before, config = load_file(weights), json.loads((model / "vae/config.json").read_text())
    run_script("scripts/train_vae.py", "--model_dir", model, "--config", mini_run / "mini.yaml", "--decoder_only",
               "--steps", 2, "--clip", 5, 32, 32, "--batch_size", 2, "--workers", 0, "--lr", 1e-3)
    after = load_file(weights)
    assert {v.dtype for v in after.values()} == {before["decoder.conv_in.weight"].dtype}
    moved = {k for k in before if not np.array_equal(before[k].float().numpy(), after[k].float().numpy())}
    assert moved and all(k.startswith(("decoder.", "post_quant_conv.")) for k in moved), sorted(moved)[:5]
    config_after = json.loads((model / "vae/config.json").read_text())
    for key in ("latents_mean", "latents_std"):
        assert config_after[key] == config[key], key
    assert json.loads((model / "vae/train_vae.json").read_text())["decoder_only"] is True


def test_shipped_mini_recovers_clipped_highlights(tmp_path):
    """DiffHDR-mini as shipped (diffhdr/mini), through inference.py, on a landscape it never saw: inside
    the pixels the 8-bit clip lost, its HDR is closer to the truth than inverse sRGB. Every convention
    train.py and inference.py share (flow direction, timestep scale, VACE context, masks, Log-Gamma)
    is on this path, so a regression in any of them fails here. Measured: 0.58 stops against 0.79."""
    from diffhdr.color_mapping import linear_to_srgb, srgb_to_linear
    from diffhdr.evaluation import load_frames
    from diffhdr.io import read_video, write_video
    from diffhdr.metrics import clipped_pixels, stop_error
    from diffhdr.synthetic import DEMO_EXPOSURE, render_sky

    gt = np.stack([render_sky(96, 160, t, seed=3) * DEMO_EXPOSURE for t in range(33)])
    write_video(tmp_path / "ldr.mp4", (linear_to_srgb(gt.clip(0, 1)) * 255).astype(np.uint8))
    run_script("inference.py", "--input_video", tmp_path / "ldr.mp4", "--output_dir", tmp_path / "out",
               "--base_model", "mini")
    ldr = read_video(tmp_path / "ldr.mp4")[0]
    clipped = clipped_pixels(ldr)
    assert 0.1 < clipped.mean() < 0.6  # the sun, its glow and the clouds
    mini = stop_error(load_frames(tmp_path / "out/exr"), gt, clipped)["stops_clipped"]
    none = stop_error(srgb_to_linear(ldr / 255.0), gt, clipped)["stops_clipped"]
    assert mini < 0.85 * none, (mini, none)
