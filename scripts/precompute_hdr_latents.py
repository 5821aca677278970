"""Encode every training clip's HDR target with the Wan VAE once, so training skips that VAE call.

    python scripts/precompute_hdr_latents.py --dataset_root DATA --model_path models/Wan2.1-VACE-14B-diffusers \
        --gamma 2.2 --M 1000.0 --sequence_frames 81 --clip_frames 33 --resolution 720 1280 --device cuda:0 --all_starts

Writes <sequence>/latents/clip_<start:04d>_latent.pt (16, T', H/8, W/8) float32 and
<dataset_root>/latent_config.json. Existing latents are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from diffhdr.cli import HelpFormatter, run
from diffhdr.errors import InputError

log = logging.getLogger("diffhdr.precompute")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset_root", required=True, help="sequence folders of EXR frames")
    p.add_argument("--model_path", required=True, help="local diffusers directory, or 'tiny'")
    p.add_argument("--gamma", type=float, default=2.2, help="Log-Gamma gamma (must equal the training config's)")
    p.add_argument("--M", type=float, default=1000.0, help="Log-Gamma M (must equal the training config's)")
    p.add_argument("--sequence_frames", type=int, default=81, help="frames per sequence")
    p.add_argument("--clip_frames", type=int, default=33, help="frames per cached clip (training.resolution T)")
    p.add_argument("--resolution", type=int, nargs=2, default=[720, 1280], metavar=("H", "W"), help="clip size (training.resolution H W)")
    p.add_argument("--frame_pattern", default="frame_%05d.exr", help="frame file names")
    p.add_argument("--device", help="torch device (default: cuda:0 where there is one, else cpu)")
    p.add_argument("--all_starts", action="store_true", help="cache every temporal offset, not only start 0")
    p.add_argument("--num_shards", type=int, default=1, help="split sequences over N jobs (e.g. a SLURM array)")
    p.add_argument("--shard_index", type=int, default=0, help="this job's share of the sequences (with --num_shards)")
    return p.parse_args(argv)


def write_latent_config(root: Path, settings: dict) -> None:
    from diffhdr.dataset import LATENT_CONFIG, read_latent_config
    from diffhdr.io import atomic_path

    existing = read_latent_config(root)
    if existing is not None:
        diff = {k: (existing.get(k), v) for k, v in settings.items() if k != "model_path" and existing.get(k) != v}
        if diff:
            k, (old, new) = next(iter(diff.items()))
            raise InputError(
                f"{root / LATENT_CONFIG}: existing latents were made with {k}={old}, this run asks {new}; "
                "delete the latents/ folders and latent_config.json first"
            )
        return
    with atomic_path(root / LATENT_CONFIG) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))


def main(argv=None):
    a = parse_args(argv)
    # imported after parsing, so that --help answers without loading torch
    import torch
    from tqdm.auto import tqdm

    from diffhdr.color_mapping import to_vae_video
    from diffhdr.dataset import crop_offsets, latent_path, list_sequences, read_frames, resize_to_cover
    from diffhdr.io import atomic_path
    from diffhdr.model import DiffHDRModel
    from diffhdr.tiny import resolve_backbone

    a.device = a.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    root = Path(a.dataset_root)
    h, w = a.resolution
    if (a.clip_frames - 1) % 4:
        raise InputError(f"--clip_frames {a.clip_frames} must be 4k+1")
    settings = {"gamma": a.gamma, "M": a.M, "clip_frames": a.clip_frames, "resolution": [h, w],
                "sequence_frames": a.sequence_frames, "model_path": a.model_path}
    write_latent_config(root, settings)
    model = DiffHDRModel.from_pretrained(resolve_backbone(a.model_path), device=None)
    model.vae.to(a.device)
    seqs = list_sequences(root)[a.shard_index :: a.num_shards]
    starts = range(a.sequence_frames - a.clip_frames + 1) if a.all_starts else [0]
    written = 0
    for seq in tqdm(seqs, desc="sequences"):
        todo = [s for s in starts if not latent_path(seq, s).is_file()]
        if not todo:
            continue
        frames = read_frames(seq, a.frame_pattern, 0, a.sequence_frames)  # (T, 3, H, W), read once
        if frames.shape[-2] < h or frames.shape[-1] < w:
            raise InputError(f"{seq}: frames are {frames.shape[-1]}x{frames.shape[-2]}, smaller than {w}x{h}")
        frames = resize_to_cover(frames, h, w)
        top, left = crop_offsets(frames.shape[-2], frames.shape[-1], h, w, None)  # centre, as training with a cache
        frames = frames[..., top : top + h, left : left + w]
        for s in tqdm(todo, desc=seq.name, leave=False):
            clip = to_vae_video(frames[s : s + a.clip_frames], a.gamma, a.M)
            latent = model.encode_video(clip[None].to(a.device))[0].cpu()
            latent_path(seq, s).parent.mkdir(exist_ok=True)
            with atomic_path(latent_path(seq, s)) as tmp:
                torch.save(latent.contiguous(), tmp)
            written += 1
    log.info("wrote %d latents for %d sequences", written, len(seqs))


if __name__ == "__main__":
    run(main)
