"""LDR video -> linear HDR video: masks, VACE context, windowed denoising with CFG and CFA, decode.

    frames (T, H, W, 3) uint8
      -> sRGB [0, 1] -> exposure masks (EMA over the whole video)
      -> control = LogGamma(linearise(LDR with under-exposed pixels grey)) in [-1, 1]
      -> windows of `window` frames, stride a multiple of 4 (the VAE's time step):
           VACE context -> denoise (CFG: cond and uncond forwards; CFA in cross-attention)
      -> latents blended where windows overlap (linear ramps, accumulate and normalise)
      -> float32 VAE decode of the whole latent sequence -> inverse Log-Gamma -> clamp >= 0
    (`blend="linear"`, the release's way: decode each window, blend in linear HDR instead)

Window latents line up with the global latent grid only if every window starts at a multiple
of 4 frames; a window's first latent frame encodes one frame alone, so it is used only at the
clip start. Overlaps that break the alignment are rounded up (8 -> 9) and logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .attention import CFAState, cfa_enabled, packed_text
from .color_mapping import (
    from_vae_range, log_gamma_decode, log_gamma_encode, srgb_to_linear, to_vae_range, to_vae_video,
)
from .config import MaskConfig
from .mask_detection import combine, detect_masks, mask_to_latent, token_gates
from .parallel import check_token_split
from .prompting import Caption, cfa_prompts

log = logging.getLogger(__name__)

TEMPORAL = 4  # VAE time compression


@dataclass
class InferenceSettings:
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    # Both CFG branches in one batch of 2: on an H100 at 720p this ran slower (9.0 vs 8.6 s/step) and
    # used 6 GiB more than two forwards (bench/results/infer_*.json), so it is off by default.
    batch_cfg: bool = False
    # Guidance on the first `cfg_interval` of the steps only (the rest: the conditional prediction),
    # and inside it the unconditional forward on every `cfg_refresh`-th step, its guidance
    # direction (cond - uncond) reused in between. 1.0 / 1: plain CFG. Lossy; `--speed fast`
    # turns them on (FAST_GUIDANCE), measured in bench/bench_infer.py.
    cfg_interval: float = 1.0
    cfg_refresh: int = 1
    negative_prompt: str = ""
    cfa: bool = True
    cfa_vace: bool = False
    alpha_over: float = 1.0
    alpha_under: float = 1.0
    window: int = 33
    window_overlap: int = 8
    blend: str = "latent"  # "latent": blend window latents, decode once; "linear": the release's way
    scheduler: str = "default"  # "default": the base model's scheduler; "euler": the release's
    shift: float = 5.0  # for "euler"
    seed: int = 42
    use_under_mask: bool = True
    reference_ev: float = 5.0
    # The release's --use_prev_window_reference: each window after the first takes the previous
    # window's Log-Gamma output frame at index `stride` as its reference (no EV boost, no mask).
    prev_window_reference: bool = False
    prompt_verbatim: bool = False  # encode --prompt as given ("" stays ""), as the release does
    # The release's long-video script: each window on its own (its own mask EMA, the same seeded noise, a
    # reference's extra noise frame the last of one draw rolled to the front), and clips under one window
    # padded to a whole window. False: one mask EMA over the video (steadier), one noise draw sliced.
    release_windows: bool = False
    long_video_seed: int | None = None  # the seed of a video longer than one window (the release: 34, else 10)
    masks: MaskConfig = field(default_factory=MaskConfig)


# Guidance where the noise is high and the content still forming; the authors' release uses none.
FAST_GUIDANCE = dict(cfg_interval=0.3, cfg_refresh=3)


def guidance_plan(num_steps: int, interval: float, refresh: int) -> list[str]:
    """Per step: "full" (cond + uncond forwards), "reuse" (cond + the last guidance direction) or
    "cond" (no guidance)."""
    if not 0.0 <= interval <= 1.0 or refresh < 1:
        raise ValueError(f"cfg_interval must be in [0, 1] and cfg_refresh >= 1 (got {interval}, {refresh})")
    guided = math.ceil(interval * num_steps - 1e-9)
    return ["cond" if i >= guided else "full" if i % refresh == 0 else "reuse" for i in range(num_steps)]


def window_starts(num_frames: int, window: int, overlap: int) -> tuple[list[int], int, int]:
    """Window starts, the padded frame count they tile exactly, and the overlap actually used."""
    if (window - 1) % TEMPORAL:
        raise ValueError(f"window {window} must be 4k+1")
    if num_frames <= window:
        padded = num_frames + (-(num_frames - 1)) % TEMPORAL
        return [0], padded, 0
    stride = window - overlap
    if stride <= 0:
        raise ValueError(f"window_overlap {overlap} must be smaller than the window {window}")
    stride -= stride % TEMPORAL
    if stride == 0:
        raise ValueError(f"window_overlap {overlap} leaves no 4-frame step in a {window}-frame window")
    n = -(-(num_frames - window) // stride)  # ceil
    return [i * stride for i in range(n + 1)], window + n * stride, window - stride


def latent_blend_weights(n_latent: int, overlap_latent: int, first: bool, last: bool) -> torch.Tensor:
    """Per-latent-frame weights of one window: linear ramps over the overlaps with its neighbours,
    zero for its unaligned first latent frame unless it starts the clip."""
    w = torch.ones(n_latent, dtype=torch.float64)
    if not first:
        w[0] = 0.0
        ramp = (torch.arange(overlap_latent, dtype=torch.float64) + 0.5) / overlap_latent
        w[1 : 1 + overlap_latent] = ramp
    if not last:
        ramp = (torch.arange(overlap_latent, dtype=torch.float64) + 0.5) / overlap_latent
        w[n_latent - overlap_latent :] = torch.minimum(w[n_latent - overlap_latent :], ramp.flip(0))
    return w


def linear_blend_weights(n: int, border: int, first: bool, last: bool) -> torch.Tensor:
    """The release's per-frame weights: ramps (k + 0.5) / border on each window end that is not a
    clip boundary, for an accumulate-and-normalise in linear HDR."""
    w = torch.ones(n, dtype=torch.float64)
    ramp = (torch.arange(border, dtype=torch.float64) + 0.5) / border
    if not first:
        w[:border] = ramp
    if not last:
        w[n - border :] = torch.minimum(w[n - border :], ramp.flip(0))
    return w


def latents_to_hdr(model, latents: torch.Tensor, gamma: float, M: float) -> torch.Tensor:
    """Normalised latents (1, C, T', h, w) -> linear HDR (T, 3, H, W) >= 0, on the CPU."""
    video = model.decode_latents(latents)[0].cpu()  # (3, T, H, W) in ~[-1, 1]
    return log_gamma_decode(from_vae_range(video).clamp_min(0), gamma, M).clamp_min(0).permute(1, 0, 2, 3)


def make_scheduler(model, settings: InferenceSettings):
    if settings.scheduler == "euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=settings.shift)
    if model.scheduler is None:
        raise ValueError(f"{model.base_model}: no scheduler/ folder; use --scheduler euler")
    return model.scheduler.__class__.from_config(model.scheduler.config)


def set_timesteps(scheduler, settings: InferenceSettings, device):
    if settings.scheduler == "euler":  # sigma_i = linspace(1, 0, N + 1)[:-1], then shifted
        sigmas = np.linspace(1.0, 0.0, settings.num_inference_steps + 1)[:-1]
        scheduler.set_timesteps(sigmas=sigmas.tolist(), device=device)
    else:
        scheduler.set_timesteps(settings.num_inference_steps, device=device)
    return scheduler.timesteps


@dataclass
class Conditioning:
    """Everything the denoiser needs for one video, already on the device."""

    control: torch.Tensor  # (1, 3, T, H, W) in [-1, 1]
    mask: torch.Tensor  # (1, T, H, W) combined binary mask
    over: torch.Tensor  # (T, H, W)
    under: torch.Tensor  # (T, H, W)
    reference: torch.Tensor | None  # (1, 3, H, W) in [-1, 1]


def prepare_conditioning(
    frames: torch.Tensor, gamma: float, M: float, settings: InferenceSettings, reference: torch.Tensor | None = None
) -> Conditioning:
    """frames (T, 3, H, W) sRGB in [0, 1]; reference (3, H, W) sRGB in [0, 1] or None."""
    over, under = detect_masks(frames, settings.masks, training=False)
    if not settings.use_under_mask:
        under = torch.zeros_like(under)
    mask = combine(over, under)
    ldr = torch.where(under[:, None] > 0.5, torch.full_like(frames, 0.5), frames)
    control = to_vae_video(srgb_to_linear(ldr), gamma, M)[None]
    ref = None
    if reference is not None:
        # the release: white outside frame 0's mask, then +5 EV in linear before the log
        m0 = mask[0][None]
        ref_lin = srgb_to_linear(reference * m0 + (1 - m0)) * 2.0**settings.reference_ev
        ref = to_vae_range(log_gamma_encode(ref_lin, gamma, M))[None]
    return Conditioning(control, mask[None], over, under, ref)


def encode_texts(model, caption: Caption, settings: InferenceSettings, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(cond, uncond) text for the DiT: packed [full|null|over|under] with CFA, else the caption."""
    full = caption.text()
    if settings.cfa:
        texts = [full, *cfa_prompts(caption)]
        emb = model.encode_text(texts).to(device)
        cond = packed_text(*[e[None] for e in emb])
    else:
        cond = model.encode_text([full]).to(device)
    uncond = None
    if settings.guidance_scale > 1.0:
        neg = model.encode_text([settings.negative_prompt]).to(device)
        uncond = neg.repeat(1, cond.shape[1] // neg.shape[1], 1)
    return cond, uncond


def _gates(over: torch.Tensor, under: torch.Tensor, patch, spatial: int, with_reference: bool):
    def g(m):
        lat = mask_to_latent(m, spatial)
        if with_reference:
            lat = torch.cat([torch.zeros_like(lat[:, :1]), lat], dim=1)
        return token_gates(lat, patch)[None]  # (1, S, 1)

    return g(over), g(under)


@torch.no_grad()
def denoise(
    model, context, cond, uncond, noise, settings: InferenceSettings, gates=None, progress: bool = True,
    cfg_parallel=None,
) -> torch.Tensor:
    """Denoise one window. context (1, 2C + s^2, T', h, w), noise (1, C, T', h, w) -> latents.
    `cfg_parallel` (diffhdr.parallel.CFGParallel): this rank computes one branch of each guided
    step and receives the other's."""
    scheduler = make_scheduler(model, settings)
    timesteps = set_timesteps(scheduler, settings, noise.device)
    latents = noise.float()
    cfg = uncond is not None and settings.guidance_scale != 1.0  # g = 1: the conditional prediction
    state = CFAState(alpha_over=settings.alpha_over, alpha_under=settings.alpha_under)
    gate_on = gate_off = (None, None)  # gate_off, the unconditional branch's: standard attention on its text
    if gates is not None:
        gate_on = tuple(g.to(latents.device) for g in gates)
        if settings.batch_cfg:  # one batch: the uncond half routes nothing through zero gates
            gate_off = tuple(torch.zeros_like(g) for g in gate_on)

    def velocity(x, t, text, gate):
        state.gate_over, state.gate_under = gate
        return model._dit_forward(x, t.expand(x.shape[0]), text, context.expand(x.shape[0], -1, -1, -1, -1)).float()

    use_cfa = settings.cfa and gates is not None
    plan = guidance_plan(len(timesteps), settings.cfg_interval, settings.cfg_refresh) if cfg else ["cond"] * len(timesteps)
    direction = None  # cond - uncond, the guidance direction of the last "full" step
    with cfa_enabled(model.transformer, state, settings.cfa_vace) if use_cfa else contextlib.nullcontext():
        for t, kind in tqdm(zip(timesteps, plan), total=len(plan), desc="steps", leave=False, disable=not progress):
            if kind == "full" and cfg_parallel is not None:
                mine = ((cond, gate_on), (uncond, gate_off))[cfg_parallel.branch]
                p_cond, p_uncond = cfg_parallel.exchange(velocity(latents, t, *mine))
            elif kind == "full" and settings.batch_cfg:
                both = tuple(None if a is None else torch.cat([a, b]) for a, b in zip(gate_on, gate_off))
                p_cond, p_uncond = velocity(torch.cat([latents, latents]), t, torch.cat([cond, uncond]), both).chunk(2)
            else:
                p_cond = velocity(latents, t, cond, gate_on)
                p_uncond = velocity(latents, t, uncond, gate_off) if kind == "full" else None
            if kind == "full":
                direction = p_cond - p_uncond
            # = p_uncond + g (p_cond - p_uncond) on "full" steps
            pred = p_cond if kind == "cond" else p_cond + (settings.guidance_scale - 1.0) * direction
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
    return latents


def pad_to_multiple(x: torch.Tensor, m: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the last two dims of (..., H, W) up to multiples of m; returns the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        shape = x.shape
        x = F.pad(x.reshape(-1, *shape[-3:]), (0, pw, 0, ph), mode="replicate").reshape(*shape[:-2], h + ph, w + pw)
    return x, (h, w)


def release_window_noise(shape: tuple[int, ...], seed: int, with_reference: bool) -> torch.Tensor:
    """A window's starting latents as the release's long-video script draws them: the same seeded
    draw for every window; with a reference, one frame more, the last rolled to the front."""
    b, c, n, h, w = shape
    z = torch.randn((b, c, n + with_reference, h, w), generator=torch.Generator().manual_seed(seed))
    return torch.cat([z[:, :, -1:], z[:, :, :-1]], dim=2) if with_reference else z


def reconstruct(
    model,
    frames: torch.Tensor,
    caption: Caption,
    gamma: float,
    M: float,
    settings: InferenceSettings,
    reference: torch.Tensor | None = None,
    device=None,
    progress: bool = True,
    texts: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    cfg_parallel=None,
) -> torch.Tensor:
    """sRGB frames (T, 3, H, W) in [0, 1] -> linear HDR (T, 3, H, W), >= 0, float32 on the CPU.

    `texts`: (cond, uncond) from `encode_texts`, when the caller encoded them already (and moved
    the text encoder off the GPU). `cfg_parallel`: see `denoise`."""
    device = device or model.transformer.device
    T = frames.shape[0]
    patch, spatial = model.transformer.config.patch_size, model.spatial
    frames, (H, W) = pad_to_multiple(frames, spatial * patch[1])  # whole DiT tokens
    if reference is not None:
        reference, _ = pad_to_multiple(F.interpolate(reference[None], size=(H, W), mode="bilinear")[0],
                                       spatial * patch[1])
    starts, padded, overlap = window_starts(T, settings.window, settings.window_overlap)
    if settings.release_windows:
        padded = max(padded, settings.window)
    if overlap != settings.window_overlap and len(starts) > 1:
        log.info("window overlap %d -> %d so windows start on the VAE's 4-frame grid", settings.window_overlap, overlap)
    if padded > T:  # repeat the last frame; the extra frames are dropped at the end
        frames = torch.cat([frames, frames[-1:].expand(padded - T, -1, -1, -1)])
    # the release's windows each detect their own masks: no pass over the whole video for them
    cond = None if settings.release_windows else prepare_conditioning(frames, gamma, M, settings, reference)
    text_c, text_u = texts if texts is not None else encode_texts(model, caption, settings, device)
    n_lat = (padded - 1) // TEMPORAL + 1
    h, w = frames.shape[-2] // spatial, frames.shape[-1] // spatial
    seed = settings.long_video_seed if settings.long_video_seed is not None and len(starts) > 1 else settings.seed
    g = torch.Generator(device="cpu").manual_seed(seed)
    c = model.transformer.config.in_channels  # the VAE's z_dim: 16 for Wan 2.1
    noise = torch.randn((1, c, n_lat, h, w), generator=g)
    ref_noise = torch.randn((1, c, 1, h, w), generator=g)  # the extra leading frame a reference adds
    win = min(settings.window, padded)
    win_lat = (win - 1) // TEMPORAL + 1
    linear = settings.blend == "linear" and len(starts) > 1
    acc = torch.zeros((padded, 3, *frames.shape[-2:]) if linear else (1, c, n_lat, h, w), dtype=torch.float64)
    wsum = torch.zeros(padded if linear else n_lat, dtype=torch.float64)
    prev_ref = None
    for k, s in enumerate(tqdm(starts, desc="windows", disable=not progress or len(starts) == 1)):
        sl = slice(s, s + win)
        wc = prepare_conditioning(frames[sl], gamma, M, settings, reference) if cond is None else \
            Conditioning(cond.control[:, :, sl], cond.mask[:, sl], cond.over[sl], cond.under[sl], cond.reference)
        ref = prev_ref if prev_ref is not None else wc.reference
        ref = ref.to(device) if ref is not None else None
        context = model.vace_context(wc.control.to(device), wc.mask.to(device), ref)
        l0 = s // TEMPORAL
        if settings.release_windows:
            z = release_window_noise((1, c, win_lat, h, w), seed, ref is not None)
        else:
            z = noise[:, :, l0 : l0 + win_lat]
            if ref is not None:
                z = torch.cat([ref_noise, z], dim=2)
        check_token_split(model.transformer, z.shape[2] // patch[0] * (h // patch[1]) * (w // patch[2]))
        gates = _gates(wc.over, wc.under, patch, spatial, ref is not None) if settings.cfa else None
        lat = denoise(model, context, text_c, text_u, z.to(device), settings, gates, progress, cfg_parallel).cpu()
        if ref is not None:
            lat = lat[:, :, 1:]
        if settings.prev_window_reference and k + 1 < len(starts):
            stride = starts[1] - starts[0]  # the VAE is causal: decode only up to frame `stride`
            # no darker than the context's floor, -1 (the release clamps it so too)
            prev_ref = model.decode_latents(lat[:, :, : stride // TEMPORAL + 1].to(device))[:, :, stride].cpu()
            prev_ref = prev_ref.clamp_min(-1.0)
        first, last = k == 0, k == len(starts) - 1
        if linear:
            wk = linear_blend_weights(win, overlap, first, last)
            acc[sl] += latents_to_hdr(model, lat.to(device), gamma, M).double() * wk.view(-1, 1, 1, 1)
            wsum[sl] += wk
        else:
            wk = latent_blend_weights(win_lat, (overlap - 1) // TEMPORAL, first, last)
            acc[:, :, l0 : l0 + win_lat] += lat.double() * wk.view(1, 1, -1, 1, 1)
            wsum[l0 : l0 + win_lat] += wk
    if linear:
        hdr = (acc / wsum.view(-1, 1, 1, 1)).float()
    else:
        hdr = latents_to_hdr(model, (acc / wsum.view(1, 1, -1, 1, 1)).float().to(device), gamma, M)
    return hdr[:T, :, :H, :W].contiguous()

