"""Write caption.txt for every training sequence with Qwen3-VL-2B-Instruct.

    python scripts/generate_captions.py --dataset_root /path/to/dataset --device cuda --frame_stride 8

Sequences that already have a caption.txt are skipped unless --overwrite. With --scene, each
sequence also gets scene.txt, a one-sentence scene description that only the release's prompt mix
(`training.prompt_mix: reference`) uses.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from diffhdr.cli import HelpFormatter, run

log = logging.getLogger("diffhdr.captions")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset_root", required=True, help="sequence folders; caption.txt is written into each")
    p.add_argument("--model", default="Qwen/Qwen3-VL-2B-Instruct", help="local folder or hub id")
    p.add_argument("--device", default="cuda", help="torch device of the captioner")
    p.add_argument("--frame_stride", type=int, default=8, help="sample every Nth frame per sequence")
    p.add_argument("--frame_pattern", default="frame_%05d.exr", help="frame file names")
    p.add_argument("--max_new_tokens", type=int, default=96, help="longest caption, in tokens")
    p.add_argument("--overwrite", action="store_true", help="regenerate existing caption (and scene) files")
    p.add_argument("--scene", action="store_true", help="also write scene.txt (for training.prompt_mix: reference)")
    a = p.parse_args(argv)
    # imported after parsing, so that --help answers without loading torch
    from tqdm.auto import tqdm

    from diffhdr.captioning import Captioner, caption_images
    from diffhdr.dataset import list_sequences
    from diffhdr.io import atomic_path

    seqs = list_sequences(a.dataset_root)
    files = ["caption.txt"] + (["scene.txt"] if a.scene else [])
    todo = {s: [f for f in files if a.overwrite or not (s / f).is_file()] for s in seqs}
    todo = {s: fs for s, fs in todo.items() if fs}
    log.info("%d sequences, %d to caption", len(seqs), len(todo))
    if not todo:
        return
    captioner = Captioner(a.model, a.device, a.max_new_tokens)
    write = {"caption.txt": captioner, "scene.txt": captioner.scene}
    for seq, names in tqdm(todo.items(), desc="captions"):
        images = caption_images(Path(seq), a.frame_pattern, a.frame_stride)
        for name in names:
            text = write[name](images)
            with atomic_path(seq / name) as tmp:
                tmp.write_text(text + "\n")
            log.info("%s/%s: %s", seq.name, name, text)


if __name__ == "__main__":
    run(main)
