"""Typed configuration: dataclasses <-> YAML.

The defaults here are the single source of truth; `configs/train.yaml` states the paper's
values explicitly, `configs/tiny.yaml` the CPU test model, `configs/reference.yaml` the
authors' release. Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names the file."""


@dataclass
class ModelConfig:
    backbone: str = "models/Wan2.1-VACE-14B-diffusers"  # local diffusers directory, or "tiny"
    lora_rank: int = 32  # 0: no LoRA, the whole transformer trains (small models from scratch)
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    # "main": LoRA on the main DiT blocks (the spec); "vace": on vace_blocks.* (the release).
    lora_branch: str = "main"
    # Suffixes of nn.Linear names that LoRA may target; matched against discovered names.
    lora_target_suffixes: list[str] = field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    )
    gradient_checkpointing: bool = True
    # Blocks (from the first; -1 = all) whose self-attention outputs are kept under gradient
    # checkpointing, ~0.33 GB each at 720p: their backward never re-runs attention.
    checkpoint_save_attention: int = -1
    attention_backend: str = "_native_cudnn"  # on CUDA; any diffusers backend name, or "native"
    fp8_base: bool = False  # fp8 GEMMs for the frozen base linears (see bench/results)
    fp8_attention: bool = False  # cuDNN fp8 self-attention, forward and backward (Hopper; diffhdr.fp8_attention)
    compile: bool = False  # torch.compile the repeated blocks (CUDA; a minute or two of warm-up)
    dtype: str = "bfloat16"  # DiT weights; the VAE is always float32


@dataclass
class DataConfig:
    dataset_root: str = "data"
    frame_pattern: str = "frame_%05d.exr"
    val_split: int = 50
    sequence_frames: int = 81
    hflip: bool = True
    # What to do with NaN/Inf/negative radiance: "error" or "clamp" (to 0).
    invalid_pixels: str = "error"
    # Before step 1, every frame of every sequence: "headers" (count, readable, sizes, channels),
    # "full" (also every pixel: NaN/Inf/negative), "auto" (full if it takes under a minute), "off".
    validate: str = "auto"
    num_workers: int = 2


@dataclass
class ColorMappingConfig:
    gamma: float = 2.2
    M: float = 1000.0


@dataclass
class MaskConfig:
    """Exposure masks (release recipe, reference-facts section 2)."""

    over_threshold: float = 0.95
    under_threshold: float = 0.01  # inference; training uses train_under_threshold
    train_under_threshold: float = 0.05
    soft_width: float = 0.02
    clip_eps: float = 0.02
    closing_kernel: int = 3
    ema_alpha: float = 0.7
    smooth_kernel: int = 9
    morph_kernel: int = 9
    binarize_threshold: float = 0.2
    use_under: bool = True


@dataclass
class AugmentationConfig:
    """HDR -> LDR synthesis (release recipe, reference-facts section 3)."""

    ev_min: int = -1
    ev_max: int = 2  # inclusive: EV in {-1, 0, 1, 2}
    radiance_clip: float = 65536.0
    noise_prob: float = 0.05
    noise_signal_sigma_max: float = 0.00085
    noise_const_sigma_max: float = 1.5e-5
    noise_temporal_rho: float = 0.5
    noise_scale: float = 0.01
    # The release starts the AR(1) noise state at zero, so frame 0's noise has 1 - rho^2 of the variance
    # the later frames approach; false: frame 0 drawn at the stationary variance.
    noise_from_zero: bool = False
    # A hybrid (text-to-video) sample's target: the release clamps after its EV shift, min(x 2^e, clip) 2^-e;
    # false: min(x, clip).
    hybrid_clip_exposed: bool = False
    camera_response: str = "none"  # "none" | "gamma" | "filmic" | "random"
    over_fill_prob: float = 0.1
    grey_value: float = 0.5


@dataclass
class TrainingConfig:
    batch_size: int = 1
    gradient_accumulation: int = 4
    num_steps: int = 10000
    learning_rate: float = 1.0e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # "constant" | "cosine"
    max_grad_norm: float = 1.0
    log_every: int = 50
    checkpoint_every: int = 500
    validate_every: int = 1000
    resolution: list[int] = field(default_factory=lambda: [33, 720, 1280])  # T H W
    seed: int = 42
    mixed_precision: str = "bf16"
    timestep_sampling: str = "shifted"  # "uniform" | "logit_normal" | "shifted"
    timestep_shift: float = 5.0
    loss_weighting: str = "none"  # "none" | "reference" (the release's Gaussian bump)
    # Prompt mix: "caption" (the spec: always the full caption) or "reference" (the release's mix).
    prompt_mix: str = "caption"
    # The release's reference image in training: in 37.5% of samples (its draw u >= 0.625) the first
    # target frame, linear with only 2x - 1 applied, leads the VACE context and the target latents.
    reference_image: bool = False
    # Debugging aid: every step reuses the first batch, noise and timestep. A healthy setup
    # drives this loss towards zero; one that cannot overfit a single batch has a bug.
    overfit_one_batch: bool = False


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    color_mapping: ColorMappingConfig = field(default_factory=ColorMappingConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    output_dir: str = "checkpoints"
    use_wandb: bool = False
    initial_checkpoint: bool = False
    profile: str = "spec"  # "spec" | "reference"


def _build(cls, raw: dict, where: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key, source)
        else:
            kwargs[name] = _coerce(hint, value, key, source)
    return cls(**kwargs)


def _coerce(hint, value, key, source):
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return hint(value)
    if hint is str:
        return str(value)
    return value


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    return _build(Config, raw or {}, "", source)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    cfg = config_from_dict(raw, str(path))
    validate(cfg, str(path))
    return cfg


def validate(cfg: Config, source: str) -> None:
    def need(ok: bool, msg: str):
        if not ok:
            raise ConfigError(f"{source}: {msg}")

    need(cfg.model.lora_branch in ("main", "vace"), "model.lora_branch must be 'main' or 'vace'")
    need(cfg.color_mapping.gamma > 0 and cfg.color_mapping.M > 0, "color_mapping.gamma and M must be positive")
    need(len(cfg.training.resolution) == 3, "training.resolution must be [T, H, W]")
    t, h, w = cfg.training.resolution
    need((t - 1) % 4 == 0, f"training.resolution T={t} must be 4k+1 (the VAE compresses time by 4)")
    need(h % 16 == 0 and w % 16 == 0, f"training.resolution H, W = {h}, {w} must be multiples of 16")
    need(t <= cfg.data.sequence_frames, f"clip length {t} exceeds data.sequence_frames {cfg.data.sequence_frames}")
    need(cfg.data.invalid_pixels in ("error", "clamp"), "data.invalid_pixels must be 'error' or 'clamp'")
    need(cfg.data.validate in ("auto", "full", "headers", "off"), "data.validate must be auto, full, headers or off")
    need(cfg.training.timestep_sampling in ("uniform", "logit_normal", "shifted"), "unknown training.timestep_sampling")
    need(cfg.training.loss_weighting in ("none", "reference"), "training.loss_weighting must be 'none' or 'reference'")
    need(cfg.training.prompt_mix in ("caption", "reference"), "training.prompt_mix must be 'caption' or 'reference'")
    need(not cfg.training.reference_image or cfg.training.batch_size == 1,
         "training.reference_image needs training.batch_size 1 (a reference adds a frame to some samples only)")
    need(cfg.training.lr_schedule in ("constant", "cosine"), "training.lr_schedule must be 'constant' or 'cosine'")
    need(cfg.augmentation.camera_response in ("none", "gamma", "filmic", "random"), "unknown augmentation.camera_response")
    need(cfg.augmentation.ev_min <= cfg.augmentation.ev_max, "augmentation.ev_min must be <= ev_max")
    need(cfg.profile in ("spec", "reference"), "profile must be 'spec' or 'reference'")


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
