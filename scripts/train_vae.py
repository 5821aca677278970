"""Train a small Wan VAE as an autoencoder of Log-Gamma frames (for a model trained from scratch).

    python scripts/train_vae.py --model_dir mini_base --config configs/mini.yaml --steps 1000

The 14B recipe never trains the VAE (the spec: it stays frozen). A small base such as DiffHDR-mini
starts from random weights, so its VAE first learns what the DiT will encode through it, drawn by
the DiT's own data path (diffhdr.dataset, the config's augmentation and masks): the HDR targets
(half the clips) and the two halves of the VACE context, the LDR condition outside and inside its
mask. Loss: L1 + MSE of the reconstruction in [-1, 1], plus a small KL. At the end the latents'
per-channel mean and std go into the VAE config (latents_mean / latents_std), so the DiT sees
normalised latents, as with Wan's own VAE.

--decoder_only goes on training the decoder of a VAE a DiT already learned through (a packaged
model's vae/, say): the encoder, the latents and their statistics stay as they are, so the DiT
still fits, and the decoder trains on the HDR targets alone, the only thing it decodes at inference.
The VAE is saved in the precision it was stored in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from diffhdr.cli import HelpFormatter, run

log = logging.getLogger("diffhdr.train_vae")
# --minutes times the steps from PROBE_FROM on (past cuDNN's first-shape tuning) and refits the plan every
# REFIT steps: the first steps run off the loader's prefetched batches (0.43 s a step on an H200, then 0.52)
PROBE_FROM, REFIT = 5, 25


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model_dir", required=True, help="base model folder whose vae/ is trained in place")
    p.add_argument("--config", required=True,
                   help="the DiT's training config: its data, Log-Gamma, augmentation and masks make the VAE's inputs")
    p.add_argument("--dataset_root", help="sequence folders (default: the config's data.dataset_root)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps (with --minutes: the most)")
    p.add_argument("--minutes", type=float,
                   help="train this long: the step rate measured early fixes the step count and the LR schedule")
    p.add_argument("--batch_size", type=int, default=4, help="clips per step")
    p.add_argument("--clip", type=int, nargs=3, default=[33, 128, 128], metavar=("T", "H", "W"),
                   help="clip size; T = inference's 33-frame window: Wan's VAE is causal, chunk by chunk, and one "
                        "trained on 9 frames decoded frames 13+ of a 33-frame clip 1-3 stops off")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate (cosine to a tenth)")
    p.add_argument("--decoder_only", action="store_true",
                   help="train the decoder alone, on HDR targets; the encoder and latent statistics stay")
    p.add_argument("--kl", type=float, default=1e-6, help="weight of the KL term")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw")
    p.add_argument("--workers", type=int, default=8, help="data loader processes")
    p.add_argument("--val_root", help="held-out sequences: the loss on 8 of their clips is logged")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return p.parse_args(argv)


def vae_views(cond, g: torch.Generator, decoder_only: bool = False) -> torch.Tensor:
    """One clip (3, T, H, W) per sample of a conditioned batch, as the DiT's VAE will see it: the
    HDR target (half the clips), else the inactive or the reactive half of the VACE context.
    For the decoder alone, the target: the context is encoded, never decoded."""
    from diffhdr.model import context_halves

    if decoder_only:
        return cond.target
    views = torch.stack([cond.target, cond.target, *context_halves(cond.control, cond.mask)])
    pick = torch.randint(len(views), (len(cond.control),), generator=g)
    return views[pick, torch.arange(len(pick))]


def clip_loader(cfg, root: str, clip, batch_size: int, workers: int, seed: int):
    """Endless batches of the DiT's training items (HDR crops, exposure, seeds), clip-sized."""
    from diffhdr.dataset import DrawSampler, HDRVideoDataset, collate, ignore_sigterm

    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset_root=root),
                              training=dataclasses.replace(cfg.training, resolution=list(clip), seed=seed))
    ds = HDRVideoDataset(cfg, "train", use_cache=False)
    return iter(torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=DrawSampler(), collate_fn=collate,
                                            num_workers=workers, worker_init_fn=ignore_sigterm))


def reconstruction_loss(vae, x, sample: bool, kl: float) -> torch.Tensor:
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample() if sample else post.mode()).sample
    return (rec - x).abs().mean() + ((rec - x) ** 2).mean() + kl * post.kl().mean()


def stored_dtype(model_dir: Path) -> torch.dtype:
    """The dtype of a saved model's first floating-point weight."""
    from safetensors import safe_open

    with safe_open(str(next(model_dir.glob("*.safetensors"))), "pt") as f:
        return next(t.dtype for t in map(f.get_tensor, f.keys()) if t.is_floating_point())


@torch.no_grad()
def validation_loss(vae, clips: torch.Tensor) -> float:
    vae.eval()
    loss = sum(reconstruction_loss(vae, c[None], False, 0.0).item() for c in clips) / len(clips)
    vae.train()
    return loss


def main(argv=None):
    a = parse_args(argv)
    from diffusers import AutoencoderKLWan

    from diffhdr.config import load_config
    from diffhdr.dataset import condition_batch
    from diffhdr.training import StopFlag

    cfg = load_config(a.config)
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    torch.backends.cudnn.benchmark = True  # a handful of conv shapes (the causal chunks), each tuned once
    vae_dir = Path(a.model_dir) / "vae"
    save_dtype = stored_dtype(vae_dir)
    vae = AutoencoderKLWan.from_pretrained(vae_dir, torch_dtype=torch.float32).to(device).train()
    if a.decoder_only:  # the encoder's latents are what the DiT learned: they must not move
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
    plan = [a.steps]  # --minutes shortens it once the step rate is known
    # cosine to a tenth: a short run ends on small steps, which the reconstruction's last digits need
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s / plan[0], 1))))
    loader = clip_loader(cfg, a.dataset_root or cfg.data.dataset_root, a.clip, a.batch_size, a.workers, a.seed)
    g = torch.Generator().manual_seed(a.seed)

    def batch(source=loader, gen=g):
        return vae_views(condition_batch(next(source), cfg, device), gen, a.decoder_only)

    val = None
    if a.val_root:  # 8 fixed held-out clips
        val = batch(clip_loader(cfg, a.val_root, a.clip, 8, 0, a.seed), torch.Generator().manual_seed(0))
    stop = StopFlag()  # SIGTERM (a time limit): finish the step, save the VAE as it is

    t0, held_out_loss, step = time.perf_counter(), None, 0
    bar = tqdm(total=plan[0], desc="vae")
    while step < plan[0]:
        loss = reconstruction_loss(vae, batch(), True, a.kl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        bar.update()
        if a.minutes and step == PROBE_FROM:
            t_probe = time.perf_counter()
        if a.minutes and step > PROBE_FROM and (step - PROBE_FROM) % REFIT == 0:
            now = time.perf_counter()
            rate = (now - t_probe) / (step - PROBE_FROM)
            plan[0] = max(step, min(a.steps, step + int((t0 + 60 * a.minutes - now) / rate)))
            bar.total = plan[0]
            if step - PROBE_FROM == REFIT:
                log.info("%.3f s/step: %d steps fit in %.1f minutes", rate, plan[0], a.minutes)
        last = step == plan[0] or stop.set
        if step % 100 == 1 or last:
            held_out = ""
            if val is not None and (step % 500 == 1 or last):
                held_out_loss = validation_loss(vae, val)
                held_out = f" val_loss={held_out_loss:.5f}"
            log.info("step=%d/%d loss=%.5f%s (%.3f s/step)", step, plan[0], loss.item(), held_out,
                     (time.perf_counter() - t0) / step)
        if stop.set:
            log.info("SIGTERM: stopped at step %d; saving the VAE as it is", step)
            break
    bar.close()
    vae.eval()
    if not a.decoder_only:
        with torch.no_grad():  # latent statistics, for the normalisation the DiT sees
            z = torch.cat([vae.encode(batch()).latent_dist.mode() for _ in range(8)])
            dims = (0, 2, 3, 4)
            vae.register_to_config(latents_mean=z.mean(dims).tolist(),
                                   latents_std=z.std(dims).clamp_min(1e-3).tolist())
    # nn.Module's own to(): diffusers' warns of modules to keep in float32 even where the VAE lists none
    torch.nn.Module.to(vae, save_dtype).save_pretrained(vae_dir)
    # what a script resuming a recipe checks (scripts/train_mini.sh): a run stopped early is saved but not done
    (vae_dir / "train_vae.json").write_text(json.dumps({"steps_done": step, "steps": plan[0], "val_loss": held_out_loss,
                                                        "decoder_only": a.decoder_only}) + "\n")
    log.info("saved %s (latent std %s)", vae_dir, [round(v, 3) for v in vae.config.latents_std])


if __name__ == "__main__":
    run(main)
