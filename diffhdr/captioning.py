"""Exposure captions for training sequences with a vision-language model (Qwen3-VL-2B-Instruct).

Every Nth HDR frame is Reinhard tone-mapped (one scale for the sampled frames) to an 8-bit image,
shown to the model with a structured prompt, and the answer is repaired into the caption format
``[Overexposed: ...]; [Underexposed: ...]`` (prompting.repair_caption). Optionally a one-sentence
scene description too (scene.txt), which only the release's prompt mix uses (its text-to-video share).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .color_mapping import linear_to_srgb, reinhard_global
from .dataset import count_frames
from .errors import InputError
from .io import read_hdr_image
from .prompting import repair_caption

PROMPT = (
    "These frames come from one video whose 8-bit version clips its brightest areas to white and "
    "crushes its darkest areas to black. Describe, in a few words each, which areas would be "
    "over-exposed (blown out) and which would be under-exposed (crushed). Answer exactly as\n"
    "[Overexposed: <bright areas, or none>]; [Underexposed: <dark areas, or none>]"
)


SCENE_PROMPT = "Describe the scene of these video frames in one sentence."


def caption_images(seq_dir: Path, pattern: str, stride: int, max_side: int = 448) -> list:
    """Every `stride`-th frame of a sequence, tone-mapped together, as PIL images."""
    from PIL import Image

    n = count_frames(seq_dir, pattern)
    if n == 0:
        raise InputError(f"{seq_dir}: no frames matching {pattern}")
    frames = np.stack([read_hdr_image(seq_dir / (pattern % i)) for i in range(0, n, stride)])
    ldr = (linear_to_srgb(reinhard_global(frames)) * 255 + 0.5).astype(np.uint8)
    images = []
    for f in ldr:
        im = Image.fromarray(f)
        im.thumbnail((max_side, max_side))
        images.append(im)
    return images


class Captioner:
    """A Qwen3-VL (or any image-text-to-text) model, from a local folder or a hub id."""

    def __init__(self, model: str, device: str = "cpu", max_new_tokens: int = 96):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(model)
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).to(device).eval()
        except OSError as e:
            raise InputError(f"{model}: cannot load the captioning model ({str(e).splitlines()[0]})") from None
        self.device, self.max_new_tokens = device, max_new_tokens

    @torch.no_grad()
    def answer(self, images: list, prompt: str) -> str:
        messages = [{"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=images, return_tensors="pt").to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]

    def __call__(self, images: list) -> str:
        """The exposure caption, in the structured format."""
        return repair_caption(self.answer(images, PROMPT))

    def scene(self, images: list) -> str:
        """A one-line scene description."""
        return " ".join(self.answer(images, SCENE_PROMPT).split()) or "a video"
