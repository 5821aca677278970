"""DiffHDRModel: Wan-2.1-VACE transformer + LoRA, frozen float32 VAE, frozen UMT5 text encoder.

Shapes: pixel video (B, 3, T, H, W) in [-1, 1]; latents (B, C, T', H/s, W/s), T' = (T - 1) / 4 + 1, C the
VAE's z_dim and s its spatial factor (16 and 8 for Wan 2.1); VACE context (B, 2C + s^2, T', H/s, W/s) =
inactive (C) + reactive (C) latents + mask (s^2).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.utils.checkpoint

from . import fp8_attention  # noqa: F401  (registers diffhdr::fp8_sdpa_fwd, named by the policy below)
from .config import ModelConfig
from .errors import InputError
from .mask_detection import mask_to_latent
from .prompting import encode_prompts

log = logging.getLogger(__name__)

# Names diffusers versions have used for the VACE context argument of the transformer.
CTX_PARAM_CANDIDATES = ("control_hidden_states", "vace_context", "control_latents")
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def discover_lora_targets(transformer: nn.Module, branch: str, suffixes: list[str]) -> list[str]:
    """Names of the nn.Linear modules LoRA wraps, found by walking the model, never hard-coded:
    those inside `blocks.*` (branch "main") or `vace_blocks.*` (branch "vace") whose name ends
    with one of `suffixes` (attention q/k/v/out and the two FFN projections by default)."""
    prefix = {"main": "blocks.", "vace": "vace_blocks."}[branch]
    ends = tuple("." + s for s in suffixes)
    return sorted(
        name
        for name, m in transformer.named_modules()
        if isinstance(m, nn.Linear) and name.startswith(prefix) and name.endswith(ends)
    )


def context_halves(control: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VACE's split of the control video (B, 3, T, H, W) by a binary mask (B, T, H, W): the inactive
    part (outside the mask) and the reactive part (inside), each zero, the middle of [-1, 1], elsewhere."""
    m = (mask > 0.5).to(control.dtype)[:, None]
    return control * (1 - m), control * m


def _vae_latent_stats(vae, device) -> tuple[torch.Tensor, torch.Tensor]:
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=device).view(1, z, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=device).view(1, z, 1, 1, 1)
    return mean, std


# Overloads, not packets: a selective-checkpoint policy is called with `aten.<op>.default`.
_SDPA_OPS = {
    getattr(torch.ops.aten, name).default
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
    )
    if hasattr(torch.ops.aten, name)
}


SELF_ATTENTION_MIN_KEYS = 1024  # more keys than the 512 text tokens: self-attention over video


def _save_self_attention_policy(ctx, op, *args, **kwargs):
    """Keep SDPA results whose keys are long (self-attention over the video tokens), and fp8
    self-attention's (O in fp8 and the softmax statistics); cross-attention over the text is cheap
    to recompute."""
    from torch.utils.checkpoint import CheckpointPolicy

    if op is torch.ops.diffhdr.fp8_sdpa_fwd.default:
        return CheckpointPolicy.MUST_SAVE
    if op in _SDPA_OPS and args[1].shape[-2] > SELF_ATTENTION_MIN_KEYS:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _save_self_attention_context():
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(_save_self_attention_policy)


def enable_gradient_checkpointing(transformer, blocks: str | int = "all", save_attention: int = 0) -> None:
    """Recompute main blocks in backward. `blocks` = "all" or the number of leading main
    blocks to recompute (the rest keep their activations, where memory allows).
    In the first `save_attention` blocks (-1: all) the self-attention outputs are kept (~0.33 GB a
    block at 720p) and only the cheap rest is recomputed: backward never re-runs that attention.
    A VACE block without trainable weights runs under no_grad: its inputs carry no
    gradient, so it needs neither saved activations nor a recompute."""
    main = list(transformer.blocks)
    n = len(main) if blocks == "all" else int(blocks)
    recompute = {id(b) for b in main[:n]}
    keep = {id(b) for b in (main if save_attention < 0 else main[:save_attention])}

    def run(block, *args):
        if id(block) in recompute:
            fn = _save_self_attention_context if id(block) in keep else torch.utils.checkpoint.noop_context_fn
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False, context_fn=fn)
        if not any(p.requires_grad for p in block.parameters()):
            with torch.no_grad():
                return block(*args)
        return block(*args)

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=run)


def compile_blocks(transformer) -> None:
    """torch.compile each main and VACE block, as diffusers' compile_repeated_blocks does; that one
    finds the blocks by class name, which FSDP2 changes (FSDPWanTransformerBlock), so training,
    inference and the benchmarks all compile them through this."""
    for block in [*transformer.blocks, *getattr(transformer, "vace_blocks", [])]:
        block.compile(fullgraph=False, dynamic=False)


def lora_inputs_stay_in_compute_dtype(transformer) -> None:
    """For training under bf16 autocast with float32 LoRA weights. peft casts each LoRA input to
    the weights' float32, then autocast casts it straight back to bf16 for the matmul: two copies
    of every activation per wrapped linear, forward and recompute, for the same result. With the
    cast off the input stays bf16 and autocast casts the small A and B instead. Needs autocast."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


class DiffHDRModel(nn.Module):
    def __init__(self, transformer, vae, text_encoder, tokenizer, scheduler=None, base_model: str = ""):
        """Components may be None for partial models (the benchmarks: DiT-only, VAE-only)."""
        super().__init__()
        self.transformer = transformer
        if vae is not None and vae.dtype != torch.float32:
            vae = vae.to(torch.float32)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.text_encoder = text_encoder.eval().requires_grad_(False) if text_encoder is not None else None
        # Freeze the base before LoRA is added: peft leaves its own new weights trainable.
        if transformer is not None:
            transformer.requires_grad_(False)
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.base_model = base_model
        self.lora_targets: list[str] = []
        # The module the DiT forward runs through: `transformer` itself, or the DDP wrapper that
        # accelerate made of it (kept out of the module tree so it is not counted twice).
        self.set_forward_module(None)
        params = inspect.signature(transformer.forward).parameters if transformer is not None else CTX_PARAM_CANDIDATES
        self.ctx_param = next((p for p in CTX_PARAM_CANDIDATES if p in params), None)
        if self.ctx_param is None:
            log.warning("VACE context parameter not found. Running DiT without context conditioning.")

    @property
    def spatial(self) -> int:
        """Pixels per latent, per side: VACE's mask channels are the s x s pixels under a latent
        (vace_in_channels = 2 z_dim + s^2), 8 for Wan 2.1; DiffHDR-mini's VAE downsamples by 4."""
        c = self.transformer.config
        return math.isqrt(c.vace_in_channels - 2 * c.in_channels)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.bfloat16, device=None) -> "DiffHDRModel":
        """Load a local diffusers directory in the Wan2.1-VACE-14B-diffusers layout."""
        from diffusers import AutoencoderKLWan, WanVACETransformer3DModel
        from diffusers.utils import logging as diffusers_logging
        from transformers import AutoTokenizer, UMT5EncoderModel

        diffusers_logging.disable_progress_bar()  # its shard bars landed inside our log (cli.setup_logging)
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: base model directory not found (the README's Real-model usage says how to download it)")
        missing = [c for c in COMPONENTS if not (path / c).is_dir()]
        if missing:
            raise InputError(f"{path}: base model directory lacks {', '.join(c + '/' for c in missing)}")
        try:
            transformer = WanVACETransformer3DModel.from_pretrained(path / "transformer", torch_dtype=dtype)
            vae = AutoencoderKLWan.from_pretrained(path / "vae", torch_dtype=torch.float32)
            text_encoder = UMT5EncoderModel.from_pretrained(path / "text_encoder", dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot load the base model ({str(e).splitlines()[0]})") from None
        scheduler = None
        if (path / "scheduler").is_dir():
            from diffusers import UniPCMultistepScheduler

            scheduler = UniPCMultistepScheduler.from_pretrained(path / "scheduler")
        model = cls(transformer, vae, text_encoder, tokenizer, scheduler, base_model=str(path))
        if 2 ** len(vae.config.temperal_downsample) != model.spatial:
            raise InputError(f"{path}: the VAE downsamples by {2 ** len(vae.config.temperal_downsample)}, the "
                             f"transformer's VACE mask channels expect {model.spatial}")
        return model.to(device) if device is not None else model

    # ------------------------------------------------------------------ LoRA
    def add_lora(self, cfg: ModelConfig) -> list[str]:
        from peft import LoraConfig

        targets = discover_lora_targets(self.transformer, cfg.lora_branch, cfg.lora_target_suffixes)
        if not targets:
            raise InputError(f"no nn.Linear in {cfg.lora_branch} blocks matches {cfg.lora_target_suffixes}")
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            init_lora_weights=True,
        )
        self.transformer.add_adapter(lora)
        self.lora_targets = targets
        return targets

    def train_whole(self) -> None:
        """Every transformer weight trains (model.lora_rank 0): for a small model trained from
        scratch, such as DiffHDR-mini. The 14B recipe stays LoRA."""
        self.transformer.requires_grad_(True)

    def parameter_counts(self) -> tuple[int, int]:
        params = list(self.transformer.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def enable_gradient_checkpointing(self, blocks: str | int = "all", save_attention: int = 0) -> None:
        enable_gradient_checkpointing(self.transformer, blocks, save_attention)

    # ------------------------------------------------------------------ VAE (always float32)
    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, C, T', H/s, W/s), float32."""
        with torch.autocast(device_type=video.device.type, enabled=False):
            z = self.vae.encode(video.float()).latent_dist.mode()
            mean, std = _vae_latent_stats(self.vae, z.device)
            return (z.float() - mean) / std

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> (B, 3, T, H, W), nominally [-1, 1], float32."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            mean, std = _vae_latent_stats(self.vae, latents.device)
            return self.vae.decode(latents.float() * std + mean).sample.float()

    @torch.no_grad()
    def vace_context(
        self, control: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The context WanVACEPipeline builds: VAE(control * (1 - m)), VAE(control * m), mask channels.

        control (B, 3, T, H, W) in [-1, 1]; mask (B, T, H, W) binary; reference (B, 3, H, W) in [-1, 1]
        or None. With a reference, its latent (+C zero channels) and a zero mask frame lead in time.
        """
        b = control.shape[0]
        # inactive and reactive in one VAE call: the batch elements are independent
        both = self.encode_video(torch.cat(context_halves(control, mask)))
        latents = torch.cat([both[:b], both[b:]], dim=1)  # (B, 2C, T', h, w)
        masks = torch.stack([mask_to_latent(mk, self.spatial) for mk in mask]).to(latents)  # (B, s^2, T', h, w)
        if reference is not None:
            ref = self.encode_video(reference[:, :, None])  # (B, C, 1, h, w)
            latents = torch.cat([torch.cat([ref, torch.zeros_like(ref)], dim=1), latents], dim=2)
            masks = torch.cat([torch.zeros_like(masks[:, :, :1]), masks], dim=2)
        return torch.cat([latents, masks], dim=1)

    # ------------------------------------------------------------------ text
    def encode_text(self, prompts: list[str], max_sequence_length: int = 512) -> torch.Tensor:
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, max_sequence_length)

    # ------------------------------------------------------------------ DiT
    def _dit_forward(
        self, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """Velocity prediction (B, C, T', h, w) for noisy latents at `timestep` (B,) in [0, 1000]."""
        dtype = self.transformer.dtype
        kwargs = dict(hidden_states=latents.to(dtype), timestep=timestep, encoder_hidden_states=text.to(dtype))
        if self.ctx_param is not None:
            kwargs[self.ctx_param] = context.to(dtype)
        return (self.forward_module or self.transformer)(**kwargs, return_dict=False)[0]

    def set_forward_module(self, module) -> None:
        object.__setattr__(self, "forward_module", module)

    @contextlib.contextmanager
    def unwrapped(self):
        """Run the plain transformer (e.g. validation on one rank: DDP's forward would wait for all)."""
        wrapper = self.forward_module
        self.set_forward_module(None)
        try:
            yield self
        finally:
            self.set_forward_module(wrapper)

