"""Assemble a small model trained whole into one base-model folder (diffusers layout) that
`inference.py --base_model DIR` runs with no other argument; DiffHDR-mini ships this way in diffhdr/mini.

    python scripts/package_mini.py --base runs/mini/base --checkpoint runs/mini/dit/checkpoint-final --out diffhdr/mini

Weights are stored in half precision (the VAE still runs in float32: it is upcast on loading).
diffhdr_defaults.json holds the model's Log-Gamma gamma/M and its inference defaults.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffhdr.checkpoint import MODEL_DEFAULTS, read_color_config
from diffhdr.cli import HelpFormatter, run
from diffhdr.lora_io import FULL_DIR, FULL_WEIGHTS

DEFAULTS = {"num_inference_steps": 20, "guidance_scale": 1.0, "scheduler": "euler", "shift": 5.0}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--base", required=True, help="the base folder training started from (its VAE trained)")
    p.add_argument("--checkpoint", required=True, help="train.py checkpoint of the whole transformer")
    p.add_argument("--out", required=True, help="folder to write (replaced)")
    return p.parse_args(argv)


def half(src: Path, dst: Path) -> None:
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    save_file(state, str(dst), metadata={"format": "pt"})


def main(argv=None):
    a = parse_args(argv)
    base, ckpt, out = Path(a.base), Path(a.checkpoint), Path(a.out)
    color = read_color_config(ckpt)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copy(ckpt / FULL_DIR / "config.json", tmp / "transformer" / "config.json")
    half(ckpt / FULL_DIR / FULL_WEIGHTS, tmp / "transformer" / FULL_WEIGHTS)
    for part in ("vae", "text_encoder"):
        for f in (base / part).glob("*.safetensors"):
            half(f, tmp / part / f.name)
    defaults = {"gamma": color["gamma"], "M": color["M"], "inference": DEFAULTS}
    (tmp / MODEL_DEFAULTS).write_text(json.dumps(defaults, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"wrote {out} ({size:.1f} MB)")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run(main)
