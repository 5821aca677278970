"""Structured exposure captions and their text embeddings.

Caption format (spec):  ``[Overexposed: <bright areas>]; [Underexposed: <dark areas>]``,
case-insensitive; a missing part reads as ``none``. Training encodes the whole caption as one
embedding; CFA at inference uses three (null, over, under):

    null  = ""                                              (the unconditional text)
    over  = "[Overexposed: <over>]; [Underexposed: none]"   (still in the training format)
    under = "[Overexposed: none]; [Underexposed: <under>]"
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import torch

log = logging.getLogger(__name__)

NULL_CAPTION = "[Overexposed: none]; [Underexposed: none]"
_PART = re.compile(r"\[\s*(over|under)[\s-]*exposed\s*:\s*(.*?)\s*\]", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Caption:
    over: str = "none"
    under: str = "none"
    verbatim: str | None = None  # the text to encode as given (the release passes its prompt so, "" too)

    def text(self) -> str:
        return format_caption(self.over, self.under) if self.verbatim is None else self.verbatim


def format_caption(over: str = "none", under: str = "none") -> str:
    return f"[Overexposed: {over.strip() or 'none'}]; [Underexposed: {under.strip() or 'none'}]"


def parse_caption(text: str) -> Caption | None:
    """Parse a structured caption; None if neither part is present."""
    parts = {m.group(1).lower(): " ".join(m.group(2).split()) for m in _PART.finditer(text)}
    if not parts:
        return None
    return Caption(over=parts.get("over") or "none", under=parts.get("under") or "none")


def parse_prompt(text: str, verbatim: bool = False) -> Caption:
    """Parse a user prompt. Free text (no [Overexposed: ...] parts) is used for both regions,
    with a warning: it then guides the over- and the under-exposed areas alike. `verbatim` (the
    `reference` preset): the text encoder gets the prompt exactly as given, "" included, as the
    release trained 37.5% of its samples on ""; the parts still feed CFA."""
    cap = parse_caption(text)
    if verbatim:
        cap = replace(cap or Caption(over=text.strip() or "none", under=text.strip() or "none"), verbatim=text)
        log.info("prompt used as given (the release's way): %r", text)
        return cap
    if cap is None:
        if text.strip():
            log.warning(
                "prompt is not in the '[Overexposed: ...]; [Underexposed: ...]' format; "
                "using it as the description of both regions"
            )
        else:
            log.info("no --prompt: both regions described as 'none'; the exposure masks alone route the work")
        cap = Caption(over=text.strip() or "none", under=text.strip() or "none")
    log.info("prompt used: %s", cap.text())
    return cap


def repair_caption(text: str) -> str:
    """Turn a captioner's answer into the structured format. Keeps parts that parse; otherwise
    looks for 'over...:'/'under...:' phrases; else puts the whole text under Overexposed."""
    cap = parse_caption(text)
    if cap is None:
        loose = re.findall(r"(over|under)[\s-]*exposed[^:]*:\s*([^\n;\]]*)", text, re.IGNORECASE)
        parts = {k.lower(): v.strip().strip(".") for k, v in loose if v.strip()}
        if parts:
            cap = Caption(parts.get("over", "none"), parts.get("under", "none"))
        else:
            cap = Caption(" ".join(text.split()).strip(".") or "none", "none")
    return cap.text()


def cfa_prompts(cap: Caption) -> tuple[str, str, str]:
    """The (null, over, under) texts for Context-Focused Cross-Attention."""
    return "", format_caption(cap.over, "none"), format_caption("none", cap.under)


HYBRID_SHARE = 0.125  # the release's text-to-video share of the "reference" prompt mix


def is_hybrid(u: float, mix: str) -> bool:
    """Whether a sample with draw u in [0, 1) is a "hybrid" text-to-video sample: under the release's
    mix, u < 0.125 (grey control, all-ones mask, the scene caption, the target's exposure undone)."""
    return mix == "reference" and u < HYBRID_SHARE


def training_prompt(caption: str, u: float, mix: str, scene: str = "") -> str:
    """The text a training sample is conditioned on. "caption": always the caption (the spec).
    "reference": the release's mix (reference-facts section 4): 12.5% the scene caption (hybrid
    samples; "" for a sequence without scene.txt), 12.5% "", 50% the caption, 25% ""."""
    if mix == "caption":
        return caption
    if is_hybrid(u, mix):
        return scene
    return caption if 0.25 <= u < 0.75 else ""


class TextCache:
    """UMT5 embeddings of a fixed set of prompts, computed once and kept on the CPU trimmed to their
    token length, so training needs no text encoder (11 GB for UMT5-XXL) on the GPU."""

    def __init__(self, tokenizer, text_encoder, prompts, max_sequence_length: int = 512, batch: int = 8):
        self.length = max_sequence_length
        self.cache: dict[str, torch.Tensor] = {}
        prompts = sorted(set(prompts))
        for i in range(0, len(prompts), batch):
            chunk = prompts[i : i + batch]
            emb = encode_prompts(tokenizer, text_encoder, chunk, max_sequence_length).cpu()
            for p, e in zip(chunk, emb):
                n = int((e.abs().sum(-1) > 0).nonzero().max()) + 1 if e.abs().sum() > 0 else 1
                self.cache[p] = e[:n].clone()

    def __call__(self, prompts: list[str], device) -> torch.Tensor:
        """(B, L, D) zero-padded, exactly as encode_prompts returns it."""
        missing = [p for p in prompts if p not in self.cache]
        if missing:
            raise KeyError(f"prompt not in the text cache: {missing[0]!r}")
        out = torch.zeros(len(prompts), self.length, next(iter(self.cache.values())).shape[-1],
                          dtype=next(iter(self.cache.values())).dtype)
        for i, p in enumerate(prompts):
            out[i, : len(self.cache[p])] = self.cache[p]
        return out.to(device)


def encode_prompts(
    tokenizer, text_encoder, prompts: list[str], max_sequence_length: int = 512, device=None
) -> torch.Tensor:
    """UMT5 embeddings (B, L, D), zeroed past each prompt's length, as WanVACEPipeline makes them."""
    from diffusers.pipelines.wan.pipeline_wan_vace import prompt_clean

    device = device or text_encoder.device
    inputs = tokenizer(
        [prompt_clean(p) for p in prompts],
        padding="max_length",
        max_length=max_sequence_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    with torch.no_grad():
        emb = text_encoder(ids, mask).last_hidden_state  # (B, L, D)
    return emb * mask[..., None].to(emb.dtype)
