"""A folder of HDR images (.hdr/.exr: equirectangular panoramas and photographs) -> training sequences.

    python scripts/make_hdri_dataset.py --images /path/to/hdris --out data/hdri --sequences_per_image 8

Writes <out>/train/sequence_NNN/ and <out>/val/sequence_NNN/ (frame_%05d.exr, linear Rec.709 half
float, and caption.txt), split by image, so no validation sequence shares a scene with training.
Panoramas get a virtual camera sweeping across them, photographs a crop that pans and zooms
(diffhdr/hdri.py); each sequence's exposure is normalised (median luminance 0.18). Captions come
from a template of which regions clip or crush; scripts/generate_captions.py can replace them.
Everything is drawn from --seed: the same command writes the same files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from diffhdr.cli import HelpFormatter, run
from diffhdr.errors import InputError

log = logging.getLogger("diffhdr.make_hdri_dataset")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--images", required=True, help="folder of .hdr / .exr images")
    p.add_argument("--out", required=True, help="dataset folder to create (train/ and val/ inside)")
    p.add_argument("--sequences_per_image", type=int, default=8, help="sequences drawn from each image")
    p.add_argument("--frames", type=int, default=81, help="frames per sequence (the spec's 81)")
    p.add_argument("--height", type=int, default=720, help="frame height")
    p.add_argument("--width", type=int, default=1280, help="frame width")
    p.add_argument("--val_images", nargs="*", default=None,
                   help="file names held out for validation (default: every 4th image, sorted by name)")
    p.add_argument("--key", type=float, default=0.18, help="median luminance each sequence is scaled to")
    p.add_argument("--seed", type=int, default=0, help="seed of every camera path")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="images rendered in parallel")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p.parse_args(argv)


def write_image_sequences(job) -> list[dict]:
    """All sequences of one image (a worker's job); returns their manifest rows."""
    import numpy as np

    from diffhdr.io import read_hdr_image, write_exr

    from diffhdr.hdri import draw_sweep, is_panorama, normalise_exposure, render_sequence, template_caption

    i, path, split, n0, a = job
    image = np.nan_to_num(read_hdr_image(path), nan=0.0, posinf=0.0).clip(0, None)  # negatives: compression
    g = np.random.default_rng([a.seed, i])
    rows = []
    for k in range(a.sequences_per_image):
        sweep = draw_sweep(g, is_panorama(*image.shape[:2]))
        frames, gain = normalise_exposure(render_sequence(image, sweep, a.frames, a.height, a.width), a.key)
        seq = Path(a.out) / split / f"sequence_{n0 + k:03d}"
        for t, f in enumerate(frames):
            write_exr(seq / f"frame_{t:05d}.exr", f)
        (seq / "caption.txt").write_text(template_caption(frames) + "\n")
        rows.append({"sequence": f"{split}/{seq.name}", "image": path.name, "gain": gain, "sweep": vars(sweep)})
    return rows


def main(argv=None):
    a = parse_args(argv)
    # imported after parsing, so that --help answers without loading torch
    from concurrent.futures import ProcessPoolExecutor

    import torch
    from tqdm.auto import tqdm

    from diffhdr.io import HDR_EXTS

    images = sorted(p for p in Path(a.images).iterdir() if p.suffix.lower() in HDR_EXTS) if Path(a.images).is_dir() else []
    if not images:
        raise InputError(f"{a.images}: no {'/'.join(HDR_EXTS)} images")
    out = Path(a.out)
    if out.exists() and any(out.iterdir()) and not a.overwrite:
        raise InputError(f"{out}: not empty; pass --overwrite or choose another --out")
    val = set(a.val_images) if a.val_images is not None else {p.name for p in images[::4]}
    unknown = val - {p.name for p in images}
    if unknown:
        raise InputError(f"--val_images: {', '.join(sorted(unknown))} not in {a.images}")
    # sequence numbers follow the sorted images within each split, whatever order the workers finish in
    first, counters = {}, {"train": 0, "val": 0}
    for i, path in enumerate(images):
        split = "val" if path.name in val else "train"
        first[i], counters[split] = (split, counters[split]), counters[split] + a.sequences_per_image
    jobs = [(i, path, *first[i], a) for i, path in enumerate(images)]
    manifest = []
    # one torch thread a process: a pool of processes each running a thread per core oversubscribes the CPU
    # (16 sequences of 33x144x176: 4.6 s on 2 cores against 9.4 s; 288 of them took 160 s on 32 cores)
    with ProcessPoolExecutor(max(1, min(a.workers, len(jobs))), initializer=torch.set_num_threads,
                             initargs=(1,)) as pool:
        for rows in tqdm(pool.map(write_image_sequences, jobs), total=len(jobs), desc="images"):
            manifest += rows
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=float))
    log.info("wrote %d training and %d validation sequences of %d frames (%dx%d) to %s", counters["train"],
             counters["val"], a.frames, a.width, a.height, out)


if __name__ == "__main__":
    run(main)
