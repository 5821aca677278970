"""Train a small Wan VAE as an autoencoder of Log-Gamma frames (for a model trained from scratch).

    python scripts/train_vae.py --model_dir mini_base --dataset_root data/hdri/train --steps 1000

The 14B recipe never trains the VAE (the spec: it stays frozen). A small base such as DiffHDR-mini
starts from random weights, so its VAE first learns what the DiT will see through it: HDR targets
(Log-Gamma at EV -1..+2) and the LDR conditions (8-bit sRGB -> linear -> Log-Gamma, with the
inactive/reactive split of the VACE context). Loss: L1 + MSE of the reconstruction in [-1, 1],
plus a small KL. At the end the latents' per-channel mean and std go into the VAE config
(latents_mean / latents_std), so the DiT sees normalised latents, as with Wan's own VAE.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from diffhdr.cli import HelpFormatter, run

log = logging.getLogger("diffhdr.train_vae")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model_dir", required=True, help="base model folder whose vae/ is trained in place")
    p.add_argument("--dataset_root", required=True, help="sequence folders (frame_%%05d.exr)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--batch_size", type=int, default=4, help="clips per step")
    p.add_argument("--clip", type=int, nargs=3, default=[33, 128, 128], metavar=("T", "H", "W"),
                   help="clip size; T = inference's 33-frame window: Wan's VAE is causal, chunk by chunk, and one "
                        "trained on 9 frames decoded frames 13+ of a 33-frame clip 1-3 stops off")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate (cosine to a tenth)")
    p.add_argument("--kl", type=float, default=1e-6, help="weight of the KL term")
    p.add_argument("--gamma", type=float, default=2.2, help="Log-Gamma gamma (as the DiT's config)")
    p.add_argument("--M", type=float, default=1000.0, help="Log-Gamma M (as the DiT's config)")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw")
    p.add_argument("--workers", type=int, default=8, help="data loader processes")
    p.add_argument("--val_root", help="held-out sequences: the loss on 8 of their clips (T x 128 x 128) is logged")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return p.parse_args(argv)


def vae_inputs(hdr: torch.Tensor, g: torch.Generator, a) -> torch.Tensor:
    """(B, T, 3, H, W) linear HDR -> (B, 3, T, H, W) in [-1, 1]: half HDR targets, half LDR
    conditions, some of those split by their over-exposure mask as the VACE context is."""
    from diffhdr.color_mapping import log_gamma_encode, srgb_to_linear, to_vae_range
    from diffhdr.config import AugmentationConfig, MaskConfig
    from diffhdr.data_augmentation import synthesize_ldr
    from diffhdr.mask_detection import detect_masks

    out = []
    for clip in hdr:
        s = synthesize_ldr(clip, g, AugmentationConfig())
        if torch.rand((), generator=g) < 0.5:
            x = s.hdr
        else:
            x = srgb_to_linear(s.ldr)
            if torch.rand((), generator=g) < 0.5:
                over, _ = detect_masks(s.ldr, MaskConfig(), training=True)
                keep = over[:, None] > 0.5 if torch.rand((), generator=g) < 0.5 else over[:, None] <= 0.5
                x = torch.where(keep, x, srgb_to_linear(torch.tensor(0.5)))  # the zero of [-1, 1]
        out.append(to_vae_range(log_gamma_encode(x, a.gamma, a.M)).permute(1, 0, 2, 3))
    return torch.stack(out)


class Clips(torch.utils.data.Dataset):
    """Clip number i: a random crop of a random sequence, drawn from (seed, i), as VAE input."""

    def __init__(self, a, root, clip=None):
        from diffhdr.dataset import count_frames, list_sequences

        self.a, self.seqs, self.clip = a, list_sequences(root), clip or a.clip
        self.counts = [count_frames(s, "frame_%05d.exr") for s in self.seqs]

    def __len__(self):
        return 10**9

    def __getitem__(self, i):
        from diffhdr.dataset import read_frames, resize_to_cover

        T, H, W = self.clip
        g = torch.Generator().manual_seed(self.a.seed * 1_000_003 + i)
        k = int(torch.randint(len(self.seqs), (), generator=g))
        start = int(torch.randint(self.counts[k] - T + 1, (), generator=g))
        x = resize_to_cover(read_frames(self.seqs[k], "frame_%05d.exr", start, T), H, W)
        H, W = min(H, x.shape[-2]), min(W, x.shape[-1])  # frames smaller than the crop: whole frames
        top = int(torch.randint(x.shape[-2] - H + 1, (), generator=g))
        left = int(torch.randint(x.shape[-1] - W + 1, (), generator=g))
        return vae_inputs(x[None, ..., top : top + H, left : left + W], g, self.a)[0]


def reconstruction_loss(vae, x, sample: bool, kl: float) -> torch.Tensor:
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample() if sample else post.mode()).sample
    return (rec - x).abs().mean() + ((rec - x) ** 2).mean() + kl * post.kl().mean()


@torch.no_grad()
def validation_loss(vae, clips: Clips, device) -> float:
    vae.eval()
    loss = sum(reconstruction_loss(vae, clips[i][None].to(device), False, 0.0).item() for i in range(8)) / 8
    vae.train()
    return loss


def main(argv=None):
    a = parse_args(argv)
    from diffusers import AutoencoderKLWan

    from diffhdr.dataset import ignore_sigterm
    from diffhdr.training import StopFlag

    torch.manual_seed(a.seed)
    vae_dir = Path(a.model_dir) / "vae"
    vae = AutoencoderKLWan.from_pretrained(vae_dir, torch_dtype=torch.float32).to(a.device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=a.lr, weight_decay=0.0)
    # cosine to a tenth: a short run ends on small steps, which the reconstruction's last digits need
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / a.steps)))
    loader = iter(torch.utils.data.DataLoader(Clips(a, a.dataset_root), batch_size=a.batch_size, num_workers=a.workers,
                                              worker_init_fn=ignore_sigterm))
    val = Clips(a, a.val_root, (a.clip[0], 128, 128)) if a.val_root else None  # one size whatever --clip is
    stop = StopFlag()  # SIGTERM (a time limit): finish the step, save the VAE as it is

    def batch():
        return next(loader).to(a.device)

    t0, held_out_loss = time.perf_counter(), None
    for step in tqdm(range(a.steps), desc="vae"):
        loss = reconstruction_loss(vae, batch(), True, a.kl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        last = step == a.steps - 1 or stop.set
        if step % 100 == 0 or last:
            held_out = ""
            if val and (step % 500 == 0 or last):
                held_out_loss = validation_loss(vae, val, a.device)
                held_out = f" val_loss={held_out_loss:.5f}"
            log.info("step=%d/%d loss=%.5f%s (%.3f s/step)", step + 1, a.steps, loss.item(), held_out,
                     (time.perf_counter() - t0) / (step + 1))
        if stop.set:
            log.info("SIGTERM: stopped at step %d; saving the VAE as it is", step + 1)
            break
    vae.eval()
    with torch.no_grad():  # latent statistics, for the normalisation the DiT sees
        z = torch.cat([vae.encode(batch()).latent_dist.mode() for _ in range(8)])
        dims = (0, 2, 3, 4)
        vae.register_to_config(latents_mean=z.mean(dims).tolist(), latents_std=z.std(dims).clamp_min(1e-3).tolist())
    vae.save_pretrained(vae_dir)
    # what a script resuming a recipe checks (scripts/train_mini.sh): a run stopped early is saved but not done
    (vae_dir / "train_vae.json").write_text(json.dumps({"steps_done": step + 1, "steps": a.steps,
                                                        "val_loss": held_out_loss}) + "\n")
    log.info("saved %s (latent std %s)", vae_dir, [round(v, 3) for v in vae.config.latents_std])


if __name__ == "__main__":
    run(main)
