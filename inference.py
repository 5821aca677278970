"""LDR video -> linear HDR video (half-float OpenEXR, Rec.709) + tone-mapped preview.

    python inference.py --input_video clip.mp4 --output_dir out/ --lora_checkpoint checkpoints/checkpoint-final \
        --prompt "[Overexposed: bright sky and sun]; [Underexposed: dark shadows under trees]"

Writes out/exr/frame_%05d.exr, out/preview.mp4, out/settings.json (and with --hdr10_preview
out/preview_hdr10.mp4).
On several GPUs, `torchrun --nproc_per_node N inference.py ...` splits the DiT's tokens over them
(context parallelism, --context_parallel) or, with --cfg_parallel, the two guidance branches over
two halves of them; rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from typing import TYPE_CHECKING

from diffhdr.cli import HelpFormatter, run
from diffhdr.errors import InputError
from diffhdr.options import CP_KINDS, MEMORY_MODES, OUTPUT_COLORSPACES, PRESETS, SPEED_MODES

if TYPE_CHECKING:
    import torch

    from diffhdr.pipeline import InferenceSettings

# torch, diffusers and the model code are imported after parsing (in the functions below): --help answers at once.

log = logging.getLogger("diffhdr.inference")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--input_video", required=True, help="a video file or a folder of PNG/JPEG frames")
    p.add_argument("--output_dir", required=True, help="folder for exr/, preview.mp4 and settings.json")
    p.add_argument("--lora_checkpoint", help="our checkpoint folder, or the release's DiffHDR.safetensors")
    p.add_argument("--prompt", default="", help="[Overexposed: ...]; [Underexposed: ...]")
    p.add_argument("--base_model", help="override the base model path stored in the checkpoint ('tiny' for the demo)")
    p.add_argument("--reference_image", help="an LDR image guiding the over-exposed regions")
    p.add_argument("--preset", choices=sorted(PRESETS), default="spec", help="'reference' = the authors' settings")
    # Defaults of the options below come from the preset (diffhdr.pipeline.InferenceSettings).
    p.add_argument("--num_inference_steps", type=int, help="denoising steps (default: the preset's, 50)")
    p.add_argument("--guidance_scale", type=float, help="classifier-free guidance; 1 = none (default: the preset's, 7.5)")
    p.add_argument("--negative_prompt", help="text of the unconditional branch (default: the preset's)")
    p.add_argument("--cfg_interval", type=float,
                   help="guide only the first fraction of the steps (default 1; 0.3 with --speed fast)")
    p.add_argument("--cfg_refresh", type=int,
                   help="unconditional forward every Nth guided step, direction reused between (default 1; 3 with --speed fast)")
    p.add_argument("--alpha_over", type=float, help="CFA strength in over-exposed regions (default: 1; 0 = off)")
    p.add_argument("--alpha_under", type=float, help="CFA strength in under-exposed regions (default: 1; 0 = off)")
    p.add_argument("--no_cfa", dest="cfa", action="store_false", default=None, help="standard attention")
    p.add_argument("--no_under_mask", dest="use_under_mask", action="store_false", default=None,
                   help="over-exposure mask only (the release's long-video, image and text commands run so)")
    p.add_argument("--cfa_vace", action="store_true", default=None, help="CFA in the VACE blocks too")
    p.add_argument("--window_overlap", type=int, help="frames shared by consecutive 33-frame windows (default: 8)")
    p.add_argument("--use_prev_window_reference", dest="prev_window_reference", action="store_true", default=None,
                   help="each window takes the previous window's output frame as its reference (the release)")
    p.add_argument("--scheduler", choices=["default", "euler"], help="the base model's scheduler, or the release's flow-match Euler (default: the preset's)")
    p.add_argument("--seed", type=int, help="seed of the initial noise (default: the preset's, 42)")
    p.add_argument("--height", type=int, help="resize frames to this height (width keeps the aspect)")
    p.add_argument("--start_frame", type=int, default=0, help="first frame of the input to use")
    p.add_argument("--num_frames", type=int, help="process only this many frames")
    p.add_argument("--speed", choices=SPEED_MODES, default="default",
                   help="fast = + fp8 GEMMs and guidance on fewer steps (--cfg_interval/--cfg_refresh); lossy")
    p.add_argument("--fp8_attention", action=argparse.BooleanOptionalAction,
                   help="fp8 self-attention (default: on with --speed default/fast where it runs: Hopper, "
                        "nvidia-cudnn-frontend, heads of 128); --no-fp8_attention keeps it bf16")
    p.add_argument("--memory", choices=MEMORY_MODES, default="auto", help="where the weights live; auto picks by GPU memory")
    p.add_argument("--device", help="torch device (default: cuda where there is one, else cpu)")
    p.add_argument("--context_parallel", choices=CP_KINDS, default="ulysses",
                   help="attention across GPUs when launched with torchrun on several processes (ring is "
                        "refused until it is shown to match one GPU: docs/multi_gpu.md)")
    p.add_argument("--cfg_parallel", action="store_true",
                   help="several GPUs: the conditional and unconditional forwards of guided steps on two halves "
                        "of them (each half splits its tokens by --context_parallel)")
    p.add_argument("--gamma", type=float, help="Log-Gamma gamma of a LoRA file that does not carry it (else read "
                                               "from the checkpoint or the file)")
    p.add_argument("--M", type=float, help="Log-Gamma M of a LoRA file that does not carry it (as --gamma)")
    p.add_argument("--output_colorspace", choices=OUTPUT_COLORSPACES, default="rec709",
                   help="primaries of the EXR frames: linear Rec.709 (the spec's), or ACEScg / ACES2065-1 (Bradford "
                        "from D65; the header's chromaticities say which); the previews stay Rec.709")
    p.add_argument("--overwrite", action="store_true", help="replace frames already in --output_dir")
    p.add_argument("--hdr10_preview", action="store_true",
                   help="also write preview_hdr10.mp4 (HEVC Main10, PQ, BT.2020; linear 1.0 = 203 cd/m2)")
    return p.parse_args(argv)


def settings_from_args(a, model_defaults: dict | None = None) -> InferenceSettings:
    """Preset, then the base model's own defaults (diffhdr_defaults.json), then --speed fast, then flags."""
    from diffhdr.pipeline import FAST_GUIDANCE, InferenceSettings

    s = dataclasses.replace(InferenceSettings(), **PRESETS[a.preset], **(model_defaults or {}))
    if a.speed == "fast":
        s = dataclasses.replace(s, **FAST_GUIDANCE)
    overrides = {f.name: getattr(a, f.name) for f in dataclasses.fields(s) if getattr(a, f.name, None) is not None}
    if a.seed is not None:  # a seed given is the seed, however long the video
        overrides["long_video_seed"] = None
    s = dataclasses.replace(s, **overrides)
    if s.num_inference_steps < 1:
        raise InputError(f"--num_inference_steps must be at least 1 (got {s.num_inference_steps})")
    return s


MIN_SIDE = 16  # pixels per DiT token side (Wan: VAE 8 x patch 2; DiffHDR-mini: 4 x 4): less is all padding


def load_frames(a) -> tuple[torch.Tensor, float]:
    import torch

    from diffhdr.io import read_video

    frames, fps = read_video(a.input_video)  # (T, H, W, 3) uint8
    end = None if a.num_frames is None else a.start_frame + a.num_frames
    frames = frames[a.start_frame : end]
    if len(frames) == 0:
        raise InputError(f"{a.input_video}: no frames in the requested range")
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W) sRGB
    if a.height:
        w = round(x.shape[-1] * a.height / x.shape[-2])
        x = torch.nn.functional.interpolate(x, size=(a.height, w), mode="bilinear", antialias=True).clamp(0, 1)
    if min(x.shape[-2:]) < MIN_SIDE:
        raise InputError(f"{a.input_video}: frames of {x.shape[-1]}x{x.shape[-2]} are below the {MIN_SIDE} pixels a "
                         "side that one DiT token covers; use a larger --height")
    return x, fps


def main(argv=None):
    a = parse_args(argv)
    import torch

    from diffhdr.checkpoint import check_checkpoint, model_defaults, read_color_config
    from diffhdr.io import read_image
    from diffhdr.lora_io import file_color_mapping, load_any_lora
    from diffhdr.model import DiffHDRModel
    from diffhdr.outputs import prepare_output_dir, write_outputs
    from diffhdr.parallel import finish_distributed, init_distributed, local_device, setup_parallelism
    from diffhdr.pipeline import encode_texts, reconstruct
    from diffhdr.prompting import parse_prompt
    from diffhdr.runtime import apply_memory_mode, apply_speed_mode, merge_lora
    from diffhdr.tiny import resolve_backbone

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    color, base = {"gamma": 2.2, "M": 1000.0}, a.base_model
    if a.lora_checkpoint:
        ckpt = Path(a.lora_checkpoint)
        if ckpt.is_dir():
            check_checkpoint(ckpt)
            color = read_color_config(ckpt)
        elif ckpt.suffix == ".safetensors" and ckpt.is_file():
            color = file_color_mapping(ckpt)
            if color is None and (a.gamma is None or a.M is None):
                raise InputError(f"{ckpt}: says nothing of the Log-Gamma gamma/M it was trained with (no DiffHDR "
                                 "metadata, not the authors' DiffHDR.safetensors); pass --gamma and --M")
            color = color or {}
        else:
            raise InputError(f"{ckpt}: not a checkpoint folder or a .safetensors LoRA file")
        base = base or color.get("base_model")
        color = color | {k: v for k, v in (("gamma", a.gamma), ("M", a.M)) if v is not None}
    if not base:
        raise InputError("no base model: pass --base_model" + (" (the checkpoint does not name one)"
                                                               if a.lora_checkpoint else " or --lora_checkpoint"))
    defaults = model_defaults(resolve_backbone(base))
    if defaults and not a.lora_checkpoint:  # a model trained whole (DiffHDR-mini) carries its own
        color = {"gamma": defaults["gamma"], "M": defaults["M"]}
    settings = settings_from_args(a, defaults.get("inference") if defaults else None)
    if a.context_parallel == "ring" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("--context_parallel ring is refused for now: on 2 H200s its latents differed from one "
                         "GPU's by 2.8% after one step; its logic is exact (float64, bench/check_ring_cpu.py) but "
                         "that bf16 rounding is not yet measured against two bf16 kernels'; use ulysses (attention "
                         "heads divisible by the GPUs) or --cfg_parallel")
    rank, world = init_distributed(a.device)
    if a.cfg_parallel and (world < 2 or settings.guidance_scale == 1.0):
        raise InputError("--cfg_parallel needs torchrun with 2 or more processes and guidance (--guidance_scale > 1)")
    device = local_device(a.device)
    out = prepare_output_dir(Path(a.output_dir), a.overwrite) if rank == 0 else None
    frames, fps = load_frames(a)
    reference = None
    if a.reference_image:
        reference = torch.from_numpy(read_image(a.reference_image)).permute(2, 0, 1).float() / 255.0

    model = DiffHDRModel.from_pretrained(resolve_backbone(base), dtype=torch.bfloat16 if device.type != "cpu"
                                         else torch.float32)
    if a.lora_checkpoint:
        kind = load_any_lora(model.transformer, Path(a.lora_checkpoint))
        log.info("loaded LoRA (%s) from %s", kind, a.lora_checkpoint)
        if a.speed != "naive":  # before the memory mode places (or quantises) the weights
            log.info("LoRA folded into %d linears", merge_lora(model.transformer))
    caption = parse_prompt(a.prompt, verbatim=settings.prompt_verbatim)
    model.text_encoder.to(device)
    texts = encode_texts(model, caption, settings, device)
    model.text_encoder.to("cpu")  # not needed again: leave the GPU to the DiT
    memory = apply_memory_mode(model, a.memory, device)
    cfg_parallel = setup_parallelism(model.transformer, a.context_parallel, a.cfg_parallel, device) if world > 1 else None
    fp8_attn = apply_speed_mode(model, a.speed, device, memory, fp8_attn=a.fp8_attention)
    log.info("%d frames %dx%d, gamma=%g M=%g, preset=%s memory=%s speed=%s", len(frames), frames.shape[-1],
             frames.shape[-2], color["gamma"], color["M"], a.preset, memory, a.speed)
    hdr = reconstruct(model, frames, caption, color["gamma"], color["M"], settings, reference, device=device,
                      texts=texts, progress=rank == 0, cfg_parallel=cfg_parallel)
    if rank == 0:
        record = {"input_video": a.input_video, "lora_checkpoint": a.lora_checkpoint, "base_model": str(base),
                  "prompt": a.prompt, "preset": a.preset, "gamma": color["gamma"], "M": color["M"],
                  "speed": a.speed, "fp8_attention": fp8_attn, "memory": memory, "gpus": world,
                  "parallel": {"cfg": a.cfg_parallel, "context": a.context_parallel} if world > 1 else None,
                  "output_colorspace": a.output_colorspace, "fps": fps, "settings": dataclasses.asdict(settings)}
        write_outputs(out, hdr, fps, record, hdr10=a.hdr10_preview, colorspace=a.output_colorspace)
        log.info("wrote %d EXR frames and preview.mp4 to %s", len(hdr), out)
    finish_distributed()


if __name__ == "__main__":
    run(main)
