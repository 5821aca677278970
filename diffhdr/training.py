"""The pieces of a training step that train.py strings together: batch -> loss, LR schedule,
pre-flight checks, validation. Every random draw comes from a generator seeded by the step,
so a resumed run continues the exact same stream."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch

from .color_mapping import linear_to_srgb, reinhard_global
from .config import Config
from .dataset import condition_batch
from .io import write_exr
from .losses import add_noise, flow_matching_loss, reference_weight, sample_sigmas


class StopFlag:
    """SIGTERM (SLURM pre-emption or time limit) -> finish the step, checkpoint, exit."""

    def __init__(self):
        self.set = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_):
        self.set = True


def fsdp_plugin(mixed_precision: str):
    """FSDP2 as the accelerate launch config says (None when it asks for no FSDP), with one change:
    block inputs are not cast to the compute dtype at each block's door. FSDP2 skips that cast
    when checkpointing recomputes a block, so the recompute saw float32 rotary tables where the
    forward had bf16 ones, and stopped; autocast does the casting instead. Gradients reduce in float32."""
    import os

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() not in ("true", "1"):
        return None
    from accelerate import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    return FullyShardedDataParallelPlugin(mixed_precision_policy=policy)


def step_generator(seed: int, micro_step: int, rank: int, world: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + 17 + micro_step * world + rank)


def batch_loss(model, batch: dict, cfg: Config, g: torch.Generator, device, texts=None) -> torch.Tensor:
    """Flow-matching loss of one batch (see losses.py). The VAE, the text encoder and the VACE
    context carry no gradient; only the DiT forward (with LoRA) does. `texts`: a TextCache."""
    with torch.no_grad():
        cond = condition_batch(batch, cfg, device)
        x0 = batch["latent"].to(device) if cond.target is None else model.encode_video(cond.target)
        context = model.vace_context(cond.control, cond.mask, cond.reference)
        if cond.reference is not None:  # the release denoises the reference's latent too: it leads the target
            x0 = torch.cat([model.encode_video(cond.reference[:, :, None]), x0], dim=2)
        text = texts(batch["prompt"], device) if texts is not None else model.encode_text(batch["prompt"]).to(device)
    t = cfg.training
    sigmas = sample_sigmas(x0.shape[0], g, t.timestep_sampling, t.timestep_shift)
    noise = torch.randn(x0.shape, generator=g).to(device)
    xt = add_noise(x0, noise, sigmas.to(device))
    pred = model._dit_forward(xt, (1000 * sigmas).float().to(device), text, context)
    weights = reference_weight(sigmas, t.timestep_shift) if t.loss_weighting == "reference" else None
    return flow_matching_loss(pred, x0, noise, weights)


class StepClock:
    """Seconds per optimizer step since the last reading, and the peak GPU memory so far (the most
    any rank used): what metrics.jsonl records next to the loss, for scaling and memory checks.
    The first reading includes the start-up (compilation, cuDNN plans)."""

    def __init__(self, device: torch.device, step: int):
        self.device, self.step, self.time = device, step, time.perf_counter()

    def read(self, step: int, reduce_max) -> dict:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        out = {"s_per_step": (now - self.time) / max(step - self.step, 1)}
        if cuda:
            peak = torch.tensor(torch.cuda.max_memory_allocated(self.device) / 2**30, device=self.device)
            out["peak_gib"] = reduce_max(peak).item()
        self.step, self.time = step, now
        return out


def lr_lambda(cfg: Config):
    t = cfg.training

    def f(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.lr_schedule == "cosine":
            done = (step - t.warmup_steps) / max(1, t.num_steps - t.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        return 1.0

    return f


def preflight(model, targets: list[str], cfg: Config) -> list[str]:
    """The spec's start-up summary lines; asserts the LoRA freeze is right."""
    trainable, total = model.parameter_counts()
    pct = 100.0 * trainable / total
    assert pct > 0.0, "no trainable parameters: was requires_grad_(False) called after adding LoRA?"
    if cfg.model.lora_rank == 0:  # the whole transformer trains (a small model from scratch)
        return [f"[DiffHDR] Transformer trained whole: {trainable:,} parameters (model.lora_rank 0)"]
    assert pct < 5.0, f"trainable fraction {pct:.2f}% > 5%: LoRA targets too many layers"
    if cfg.model.lora_branch == "main":
        bad = [n for n, p in model.transformer.named_parameters() if p.requires_grad and n.startswith("vace_blocks.")]
        assert not bad, f"VACE context branch must stay frozen, but {bad[0]} trains"
    assert not any(p.requires_grad for p in model.vae.parameters()), "the VAE must stay frozen"
    return [
        f"[DiffHDR] LoRA targets: {len(targets)} Linear modules",
        f"[DiffHDR] Transformer: {trainable:,} trainable / {total:,} total ({pct:.3f}%)",
    ]


@torch.no_grad()
def validation_loss(model, dataset, cfg: Config, device, texts=None, max_items: int = 8) -> float:
    from .dataset import collate

    losses = []
    for d in range(min(len(dataset), max_items)):
        batch = collate([dataset[d]])
        losses.append(batch_loss(model, batch, cfg, torch.Generator().manual_seed(d), device, texts).item())
    return sum(losses) / max(len(losses), 1)


def write_validation_sample(model, item, cfg: Config, out_dir: Path | None, steps: int, device, texts=None):
    """Reconstruct one held-out clip from its synthetic LDR; write EXR frames and a PNG strip
    (`out_dir` None: only take part in the forwards, as the other ranks of a sharded model do).
    With a TextCache the caption and "" come from it (CFA, whose texts it lacks, is then off)."""
    from PIL import Image

    from .dataset import collate
    from .pipeline import InferenceSettings, reconstruct
    from .prompting import parse_prompt

    gm = (cfg.color_mapping.gamma, cfg.color_mapping.M)
    ldr = condition_batch(collate([item]), cfg, device).ldr[0].cpu()  # (T, 3, H, W) sRGB
    settings = InferenceSettings(num_inference_steps=steps, masks=cfg.masks, cfa=texts is None)
    cached = (texts([item.prompt], device), texts([settings.negative_prompt], device)) if texts else None
    hdr = reconstruct(model, ldr, parse_prompt(item.prompt), *gm, settings, device=device, progress=False,
                      texts=cached)
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = hdr.permute(0, 2, 3, 1).numpy()
    for i, f in enumerate(frames):
        write_exr(out_dir / f"frame_{i:05d}.exr", f)
    preview = (linear_to_srgb(reinhard_global(frames)) * 255).round().astype("uint8")
    Image.fromarray(preview.transpose(1, 0, 2, 3).reshape(preview.shape[1], -1, 3)).save(out_dir / "preview.png")
    return out_dir
