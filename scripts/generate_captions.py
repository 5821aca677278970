"""Write caption.txt for every training sequence with Qwen3-VL-2B-Instruct.

    python scripts/generate_captions.py --dataset_root /path/to/dataset --device cuda --frame_stride 8

Sequences that already have a caption.txt are skipped unless --overwrite.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm.auto import tqdm

from diffhdr.captioning import Captioner, caption_images
from diffhdr.cli import run
from diffhdr.dataset import list_sequences
from diffhdr.io import atomic_path

log = logging.getLogger("diffhdr.captions")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_root", required=True)
    p.add_argument("--model", default="Qwen/Qwen3-VL-2B-Instruct", help="local folder or hub id")
    p.add_argument("--device", default="cuda")
    p.add_argument("--frame_stride", type=int, default=8, help="sample every Nth frame per sequence")
    p.add_argument("--frame_pattern", default="frame_%05d.exr")
    p.add_argument("--max_new_tokens", type=int, default=96)
    p.add_argument("--overwrite", action="store_true", help="regenerate existing caption.txt files")
    a = p.parse_args(argv)
    seqs = list_sequences(a.dataset_root)
    todo = [s for s in seqs if a.overwrite or not (s / "caption.txt").is_file()]
    log.info("%d sequences, %d to caption", len(seqs), len(todo))
    if not todo:
        return
    captioner = Captioner(a.model, a.device, a.max_new_tokens)
    for seq in tqdm(todo, desc="captions"):
        caption = captioner(caption_images(Path(seq), a.frame_pattern, a.frame_stride))
        with atomic_path(seq / "caption.txt") as tmp:
            tmp.write_text(caption + "\n")
        log.info("%s: %s", seq.name, caption)


if __name__ == "__main__":
    run(main)
