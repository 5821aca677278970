import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, run_script, write_config
from diffhdr.dataset import HDRVideoDataset, collate
from diffhdr.model import DiffHDRModel
from diffhdr.tiny import resolve_backbone
from diffhdr.training import batch_loss


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_overfits_one_clip_and_writes_spec_checkpoints(tmp_path, dataset_root):
    out = tmp_path / "ckpt"
    cfg = write_config(tmp_path / "c.yaml", data={"dataset_root": str(dataset_root), "val_split": 0},
                       training={"num_steps": 40, "learning_rate": 1e-2, "log_every": 1, "checkpoint_every": 20,
                                 "overfit_one_batch": True}, output_dir=str(out))
    proc = run_script("train.py", "--config", cfg)
    assert "[DiffHDR] LoRA targets: 40 Linear modules" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.startswith("[DiffHDR] Transformer:"))
    pct = float(line.split("(")[1].rstrip("%)"))
    assert 0 < pct < 5
    assert any(" INFO diffhdr.train step=40/40 loss=" in x for x in proc.stderr.splitlines())
    losses = [m["loss"] for m in metrics(out)]
    assert losses[0] / losses[-1] >= 5, losses
    for name in ("checkpoint-000020", "checkpoint-000040", "checkpoint-final"):
        d = out / name
        assert {p.name for p in d.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                  "color_mapping_config.json", "step.txt"}
    color = json.loads((out / "checkpoint-final/color_mapping_config.json").read_text())
    assert color["gamma"] == 2.2 and color["M"] == 1000.0 and color["base_model"] == "tiny"  # not a cache path
    keys = load_file(out / "checkpoint-final/adapter_model.safetensors")
    assert keys and all(".lora_" in k and "vace_blocks" not in k for k in keys)


def test_resume_continues_the_same_loss_curve(tmp_path, dataset_root):
    common = dict(data={"dataset_root": str(dataset_root)},
                  training={"num_steps": 6, "log_every": 1, "checkpoint_every": 3, "validate_every": 0,
                            "gradient_accumulation": 2})
    straight = write_config(tmp_path / "a.yaml", output_dir=str(tmp_path / "a"), **common)
    run_script("train.py", "--config", straight)
    split = write_config(tmp_path / "b.yaml", output_dir=str(tmp_path / "b"), **common)
    run_script("train.py", "--config", split, "--max_steps", "3")
    assert (tmp_path / "b/checkpoint-000003/step.txt").read_text().strip() == "3"
    run_script("train.py", "--config", split, "--resume_from_checkpoint", tmp_path / "b/checkpoint-000003")
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [m["step"] for m in b] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= 1e-6
    wa = load_file(tmp_path / "a/checkpoint-final/adapter_model.safetensors")
    wb = load_file(tmp_path / "b/checkpoint-final/adapter_model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_resume_refuses_other_gamma_m_and_incomplete_checkpoints(tmp_path, dataset_root):
    cfg = write_config(tmp_path / "c.yaml", data={"dataset_root": str(dataset_root)},
                       training={"num_steps": 1, "validate_every": 0}, output_dir=str(tmp_path / "o"))
    run_script("train.py", "--config", cfg)
    ckpt = tmp_path / "o/checkpoint-final"
    other = write_config(tmp_path / "m.yaml", data={"dataset_root": str(dataset_root)},
                         color_mapping={"M": 65536.0}, output_dir=str(tmp_path / "o"))
    proc = run_script("train.py", "--config", other, "--resume_from_checkpoint", ckpt, check=False)
    assert proc.returncode == 2 and "written with gamma=2.2, M=1000.0" in proc.stderr
    assert "Traceback" not in proc.stderr
    (ckpt / "step.txt").unlink()
    proc = run_script("train.py", "--config", cfg, "--resume_from_checkpoint", ckpt, check=False)
    assert proc.returncode == 2 and "checkpoint lacks step.txt" in proc.stderr


def test_bad_base_model_and_empty_dataset(tmp_path, dataset_root, tiny_model_dir):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "vae")
    cfg = write_config(tmp_path / "c.yaml", model={"backbone": str(broken)},
                       data={"dataset_root": str(dataset_root)}, output_dir=str(tmp_path / "o"))
    proc = run_script("train.py", "--config", cfg, check=False)
    assert proc.returncode == 2 and "base model directory lacks vae/" in proc.stderr.splitlines()[-1]
    (tmp_path / "empty").mkdir()
    cfg = write_config(tmp_path / "e.yaml", data={"dataset_root": str(tmp_path / "empty")},
                       output_dir=str(tmp_path / "o"))
    proc = run_script("train.py", "--config", cfg, check=False)
    assert proc.returncode == 2 and "no sequence folders" in proc.stderr


def test_a_second_run_into_the_same_output_dir_is_refused_unless_overwrite(tmp_path, dataset_root):
    out = tmp_path / "o"
    cfg = write_config(tmp_path / "c.yaml", data={"dataset_root": str(dataset_root)},
                       training={"num_steps": 2, "log_every": 1, "validate_every": 0}, output_dir=str(out))
    run_script("train.py", "--config", cfg)
    first = (out / "checkpoint-final" / "adapter_model.safetensors").read_bytes()
    proc = run_script("train.py", "--config", cfg, check=False)
    assert proc.returncode == 2 and "holds an earlier run (checkpoint-final, metrics.jsonl)" in proc.stderr.splitlines()[-1]
    assert "--resume_from_checkpoint latest" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "checkpoint-final" / "adapter_model.safetensors").read_bytes() == first  # untouched
    run_script("train.py", "--config", cfg, "--overwrite")
    assert [m["step"] for m in metrics(out)] == [1, 2]  # one curve, not two


def test_every_bad_frame_is_reported_before_training(tmp_path):
    from diffhdr.io import write_exr
    from diffhdr.synthetic import write_dataset

    root = write_dataset(tmp_path / "data", sequences=3, frames=21, h=64, w=96)
    frame = root / "sequence_000" / "frame_00003.exr"
    nan = np.ones((64, 96, 3), np.float32)
    nan[0, 0] = np.nan
    write_exr(frame, nan)
    (root / "sequence_001" / "frame_00007.exr").write_bytes(b"v/1\x01 truncated")
    write_exr(root / "sequence_002" / "frame_00020.exr", np.ones((32, 48, 3), np.float32))
    cfg = write_config(tmp_path / "c.yaml", data={"dataset_root": str(root)}, output_dir=str(tmp_path / "o"))
    proc = run_script("train.py", "--config", cfg, check=False)
    assert proc.returncode == 2 and "3 problem(s) in the dataset" in proc.stderr.splitlines()[-1]
    for bad in ("frame_00003.exr: 3 NaN", "frame_00007.exr: unreadable", "sequence_002: frames of different sizes"):
        assert bad in proc.stderr
    assert "LoRA targets" not in proc.stdout  # before the model is loaded
    assert not (tmp_path / "o" / "metrics.jsonl").exists()
    # headers only: the NaN goes unseen, the unreadable and odd-sized frames do not
    cfg = write_config(tmp_path / "h.yaml", data={"dataset_root": str(root), "validate": "headers"},
                       output_dir=str(tmp_path / "o"))
    proc = run_script("train.py", "--config", cfg, check=False)
    assert proc.returncode == 2 and "2 problem(s) in the dataset" in proc.stderr.splitlines()[-1]


def test_vae_stays_float32_under_bf16_autocast():
    model = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.bfloat16)
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    ref = model.encode_video(video)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model.encode_video(video)
        out = model.decode_latents(z)
    assert z.dtype == torch.float32 and out.dtype == torch.float32
    assert torch.equal(z, ref)
    assert all(p.dtype == torch.float32 for p in model.vae.parameters())
    assert model.transformer.dtype == torch.bfloat16


def test_cached_latents_give_the_same_loss(tmp_path, tiny_cfg):
    from diffhdr.synthetic import write_dataset

    root = write_dataset(tmp_path / "d", sequences=1, frames=21, h=32, w=32)
    tiny_cfg.data.dataset_root, tiny_cfg.data.val_split, tiny_cfg.data.hflip = str(root), 0, False
    tiny_cfg.training.resolution = [21, 32, 32]
    tiny_cfg.augmentation.ev_min = tiny_cfg.augmentation.ev_max = 0
    # no random choice whose outcome could differ (the cached path draws no EV, shifting the stream)
    tiny_cfg.augmentation.noise_prob = tiny_cfg.augmentation.over_fill_prob = 0.0
    model = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)
    fly = batch_loss(model, collate([HDRVideoDataset(tiny_cfg, "train")[0]]), tiny_cfg,
                     torch.Generator().manual_seed(3), "cpu")
    run_script("scripts/precompute_hdr_latents.py", "--dataset_root", root, "--model_path", "tiny",
               "--sequence_frames", 21, "--clip_frames", 21, "--resolution", 32, 32, "--device", "cpu")
    assert (root / "sequence_000/latents/clip_0000_latent.pt").is_file()
    assert json.loads((root / "latent_config.json").read_text())["M"] == 1000.0
    ds = HDRVideoDataset(tiny_cfg, "train")
    item = ds[0]
    assert item.latent is not None
    cached = batch_loss(model, collate([item]), tiny_cfg, torch.Generator().manual_seed(3), "cpu")
    assert abs(fly.item() - cached.item()) <= 1e-5 * abs(fly.item())
    proc = run_script("scripts/precompute_hdr_latents.py", "--dataset_root", root, "--model_path", "tiny",
                      "--M", 65536, "--sequence_frames", 21, "--clip_frames", 21, "--resolution", 32, 32,
                      check=False)
    assert proc.returncode == 2 and "existing latents were made with M=1000.0" in proc.stderr


def test_sigterm_leaves_a_complete_checkpoint_that_resumes(tmp_path, dataset_root):
    # SLURM and `timeout` signal the whole process group, data-loader workers included
    out = tmp_path / "o"
    cfg = write_config(tmp_path / "c.yaml", data={"dataset_root": str(dataset_root), "num_workers": 2},
                       training={"num_steps": 100000, "log_every": 1, "checkpoint_every": 100000,
                                 "validate_every": 0}, output_dir=str(out))
    proc = subprocess.Popen([sys.executable, "train.py", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    ckpts = sorted(out.glob("checkpoint-0*"))
    assert len(ckpts) == 1 and not list(out.glob(".checkpoint*"))
    step = int((ckpts[0] / "step.txt").read_text())
    assert step >= 1 and (ckpts[0] / "adapter_model.safetensors").is_file()
    run_script("train.py", "--config", cfg, "--resume_from_checkpoint", "latest", "--max_steps", step + 1)
    assert metrics(out)[-1]["step"] == step + 1


def test_two_process_cpu_run_trains_checkpoints_and_resumes(tmp_path, dataset_root):
    pytest.importorskip("accelerate")
    out = tmp_path / "o"
    cfg = write_config(tmp_path / "c.yaml", data={"dataset_root": str(dataset_root)},
                       training={"num_steps": 4, "log_every": 1, "checkpoint_every": 2, "validate_every": 0},
                       output_dir=str(out))
    # `accelerate launch --cpu` starts one process whatever --num_processes says; torchrun starts two
    # and accelerate joins them (gloo) when told the run is on CPUs
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py", "--config", cfg]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "ACCELERATE_MIXED_PRECISION": "no"}
    proc = run_script(*launch, "--max_steps", 2, timeout=600, env=env)
    assert proc.stderr.count("2 process(es) (multi cpu), mixed precision: no") == 1  # from the main process only
    assert (out / "checkpoint-000002/step.txt").read_text().strip() == "2"
    run_script(*launch, "--resume_from_checkpoint", "latest", timeout=600, env=env)
    assert [m["step"] for m in metrics(out)] == [1, 2, 3, 4]
    assert (out / "checkpoint-final/adapter_model.safetensors").is_file()


def test_text_cache_matches_direct_encoding(tiny_cfg):
    from diffhdr.prompting import TextCache

    model = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)
    ds = HDRVideoDataset(tiny_cfg, "train")
    prompts = sorted(ds.prompts() | {"", "[Overexposed: x]; [Underexposed: a much longer description here]"})
    cache = TextCache(model.tokenizer, model.text_encoder, prompts)
    assert torch.equal(cache(prompts, "cpu"), model.encode_text(prompts))
    assert all(len(v) < 512 for v in cache.cache.values())  # kept trimmed on the CPU
    batch = collate([ds[0]])
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert batch_loss(model, batch, tiny_cfg, g(), "cpu", cache) == batch_loss(model, batch, tiny_cfg, g(), "cpu")
