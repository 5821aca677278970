"""Export a DiffHDR checkpoint's LoRA for other tools.

    python scripts/export_lora.py --checkpoint checkpoints/checkpoint-final --layout diffusers \
        --output exported/pytorch_lora_weights.safetensors
    # diffusers:  pipe = WanVACEPipeline.from_pretrained(...); pipe.load_lora_weights("exported/")
    # comfyui:    Wan names with the diffusion_model. prefix, for ComfyUI's LoRA loader
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffhdr.cli import HelpFormatter, run
from diffhdr.errors import InputError


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder of train.py")
    p.add_argument("--layout", choices=["diffusers", "comfyui"], required=True, help="key names of the tool that loads it")
    p.add_argument("--output", required=True, help="a .safetensors file")
    p.add_argument("--base_model", help="override the base model path stored in the checkpoint")
    a = p.parse_args(argv)
    # imported after parsing, so that --help answers without loading torch
    import torch
    from diffusers import WanVACETransformer3DModel

    from diffhdr.checkpoint import check_checkpoint, read_color_config
    from diffhdr.lora_io import export_lora, load_adapter
    from diffhdr.tiny import resolve_backbone

    ckpt = Path(a.checkpoint)
    check_checkpoint(ckpt)
    color = read_color_config(ckpt)
    base = a.base_model or color.get("base_model")
    # The transformer alone, on the CPU: the LoRA's shapes are checked against it.
    path = resolve_backbone(base) / "transformer"
    if not path.is_dir():
        raise InputError(f"{path}: base model transformer not found (pass --base_model)")
    transformer = WanVACETransformer3DModel.from_pretrained(path, torch_dtype=torch.bfloat16)
    load_adapter(transformer, ckpt, dtype=torch.float32)  # trained in float32: exported so, B*alpha/r too
    n = export_lora(transformer, Path(a.output), a.layout, color)  # gamma/M travel with the file
    print(f"wrote {n} tensors ({a.layout} layout) to {a.output}")


if __name__ == "__main__":
    run(main)
