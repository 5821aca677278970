"""LoRA weights on disk: our PEFT adapter, diffusers/ComfyUI exports, and the authors' release.

Key layouts (one LoRA pair shown):

    ours (PEFT)   base_model.model.blocks.0.attn1.to_q.lora_A.weight        + adapter_config.json
    diffusers     transformer.blocks.0.attn1.to_q.lora_A.weight             (scale folded into B)
    ComfyUI       diffusion_model.blocks.0.self_attn.q.lora_A.weight        (Wan names, scale folded)
    release       vace_blocks.0.self_attn.q.lora_A.default.weight           (DiffSynth; alpha = rank)

Wan <-> diffusers names follow diffusers' scripts/convert_wan_to_diffusers.py.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import InputError
from .io import atomic_path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FULL_DIR, FULL_WEIGHTS = "transformer", "diffusion_pytorch_model.safetensors"  # a transformer trained whole
PEFT_PREFIX = "base_model.model."


@contextlib.contextmanager
def _readable(path):
    """A truncated or foreign safetensors file, reported in one line."""
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path}: unreadable safetensors file ({e})") from None


def load_file(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file as load

    with _readable(path):
        return load(str(path))


# Wan / DiffSynth module names -> diffusers names, for the modules LoRA touches.
WAN_TO_DIFFUSERS = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
DIFFUSERS_TO_WAN = {v: k for k, v in WAN_TO_DIFFUSERS.items()}
_KEY = re.compile(r"^((?:vace_)?blocks\.\d+)\.(.+)\.(lora_[AB])(?:\.default)?\.weight$")


def _whole(t: torch.Tensor) -> torch.Tensor:
    """A weight FSDP2 shards (a DTensor) -> the whole tensor; a collective, so every rank calls it."""
    full = getattr(t, "full_tensor", None)
    return full() if full is not None else t


def _lora_state(transformer) -> dict[str, torch.Tensor]:
    """{module name: {'lora_A': A, 'lora_B': B}} flattened as '<module>.lora_A.weight' keys."""
    from peft.utils import get_peft_model_state_dict

    return {k: _whole(v).detach().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}


def adapter_state(transformer) -> dict[str, torch.Tensor]:
    """What adapter_model.safetensors holds. Under FSDP every rank must call it (it gathers)."""
    return {PEFT_PREFIX + k: v for k, v in _lora_state(transformer).items()}


def trained_state(transformer) -> dict[str, torch.Tensor]:
    """What a checkpoint stores: the LoRA (adapter_state), or every weight of a transformer trained
    whole (model.lora_rank 0). Under FSDP every rank must call it (it gathers)."""
    if getattr(transformer, "peft_config", None):
        return adapter_state(transformer)
    return {k: _whole(v).detach().cpu().contiguous() for k, v in transformer.state_dict().items()}


def save_transformer(transformer, directory: Path, state: dict[str, torch.Tensor]) -> None:
    """A transformer trained whole, in diffusers' layout (config.json + safetensors)."""
    directory.mkdir(parents=True, exist_ok=True)
    transformer.save_config(directory)
    with atomic_path(directory / FULL_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


def load_transformer_weights(transformer, directory: Path) -> None:
    path = Path(directory) / FULL_WEIGHTS
    if not path.is_file():
        raise InputError(f"{directory}: no {FULL_WEIGHTS}")
    try:
        transformer.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not fit the base model ({str(e).splitlines()[1].strip()})") from None


def _scale(transformer) -> float:
    cfg = transformer.peft_config["default"]
    return cfg.lora_alpha / cfg.r


def save_adapter(transformer, directory: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """adapter_config.json + adapter_model.safetensors, loadable by peft's PeftModel too.
    `state`: adapter_state(transformer), when the caller gathered it already."""
    cfg = transformer.peft_config["default"]
    directory.mkdir(parents=True, exist_ok=True)
    config = cfg.to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    with atomic_path(directory / ADAPTER_CONFIG) as tmp:
        tmp.write_text(json.dumps(config, indent=2, default=str))
    state = adapter_state(transformer) if state is None else state
    with atomic_path(directory / ADAPTER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


def load_adapter(transformer, directory: Path, dtype: torch.dtype | None = None) -> None:
    """Add (if needed) and fill the LoRA adapter from a checkpoint folder. `dtype`: the adapter's
    weights in this dtype whatever the base's (peft makes them the base's: bf16 rounds a float32 LoRA)."""
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            raise InputError(f"{directory}: checkpoint lacks {name}")
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    if not getattr(transformer, "peft_config", None):
        known = set(LoraConfig.__dataclass_fields__)
        transformer.add_adapter(LoraConfig(**{k: v for k, v in config.items() if k in known}))
    if dtype is not None:
        for name, p in transformer.named_parameters():
            if ".lora_" in name:
                p.data = p.data.to(dtype)
    state = load_file(str(directory / ADAPTER_WEIGHTS))
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()}
    _load_checked(transformer, state, directory / ADAPTER_WEIGHTS, set_peft_model_state_dict)


def _load_checked(transformer, state: dict, source: Path, setter) -> None:
    expected = {k.replace(".default", "") for k in _lora_state(transformer)}
    missing, extra = expected - set(state), set(state) - expected
    if missing or extra:
        raise InputError(
            f"{source}: LoRA keys do not match the base model ({len(missing)} missing, {len(extra)} unexpected, "
            f"e.g. {sorted(missing or extra)[0]})"
        )
    params = dict(transformer.named_parameters())
    for k, v in state.items():
        p = params[k.replace(".weight", ".default.weight")]
        if p.shape != v.shape:
            raise InputError(f"{source}: {k} has shape {tuple(v.shape)}, the base model needs {tuple(p.shape)}")
    setter(transformer, state)


COLOR_METADATA = "diffhdr_color_mapping"  # safetensors metadata key of an export: gamma, M, base, branch, profile
RELEASE_COLOR = {"gamma": 2.2, "M": 65536.0}  # the authors' DiffHDR.safetensors (reference-facts section 2)


def file_color_mapping(path: Path) -> dict | None:
    """What a single LoRA file says of its colour mapping: our exports carry it in their metadata;
    the authors' DiffHDR.safetensors is known by its key layout (DiffSynth's 'vace_blocks.N.<wan
    name>.lora_A.default.weight'); anything else says nothing (None)."""
    from safetensors import safe_open

    with _readable(path), safe_open(str(path), "pt") as f:
        meta, keys = f.metadata() or {}, list(f.keys())
    if COLOR_METADATA in meta:
        return json.loads(meta[COLOR_METADATA])
    release = re.compile(r"^vace_blocks\.\d+\.(self_attn|cross_attn|ffn)\.[a-z0-9]+\.lora_[AB]\.default\.weight$")
    if keys and all(release.match(k) for k in keys):
        return dict(RELEASE_COLOR)
    return None


def export_lora(transformer, path: Path, layout: str, color: dict | None = None) -> int:
    """Write the LoRA as `layout` 'diffusers' or 'comfyui', the alpha/r scale folded into B; `color`
    (the checkpoint's color_mapping_config.json) goes into the metadata, for inference to read."""
    scale = _scale(transformer)
    out = {}
    for k, v in _lora_state(transformer).items():
        v = v * scale if ".lora_B." in k else v
        if layout == "diffusers":
            out["transformer." + k] = v
        elif layout == "comfyui":
            m = _KEY.match(k)
            if m is None or m.group(2) not in DIFFUSERS_TO_WAN:
                raise InputError(f"{k}: no ComfyUI (Wan) name for this LoRA target; export it with --layout diffusers")
            out[f"diffusion_model.{m.group(1)}.{DIFFUSERS_TO_WAN[m.group(2)]}.{m.group(3)}.weight"] = v
        else:
            raise ValueError(f"unknown LoRA layout {layout!r}")
    meta = {"format": "pt"} | ({COLOR_METADATA: json.dumps(color)} if color else {})
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata=meta)
    return len(out)


# Every single-file layout we read: the release's (DiffSynth: Wan names, PEFT's '.default'), ComfyUI's and
# ComfyUI-trainer's ('diffusion_model.' + Wan names, lora_up/lora_down, '.alpha'), musubi-tuner's
# ('lora_unet_blocks_0_self_attn_q.lora_down.weight', '.alpha'), diffusers' ('transformer.' + our names).
_PREFIXES = ("diffusion_model.", "transformer.", "base_model.model.")
_DOTTED = re.compile(r"^(?P<block>(?:vace_)?blocks\.\d+)\.(?P<module>.+?)\."
                     r"(?:(?P<part>lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.weight|(?P<alpha>alpha))$")
_MUSUBI = re.compile(r"^lora_unet_(?P<block>(?:vace_)?blocks)_(?P<n>\d+)_(?P<module>\w+?)\."
                     r"(?:(?P<part>lora_down|lora_up)\.weight|(?P<alpha>alpha))$")
_MUSUBI_NAMES = {k.replace(".", "_"): v for k, v in WAN_TO_DIFFUSERS.items()}
_SLOT = {"lora_A": "A", "lora_down": "A", "lora_B": "B", "lora_up": "B"}


def _place(key: str) -> tuple[str, str] | None:
    """A file's key -> (our module name, 'A' | 'B' | 'alpha'), or None where it names nothing we know."""
    k = key
    for prefix in _PREFIXES:
        k = k.removeprefix(prefix)
    if m := _MUSUBI.match(k):
        block, module = f"{m['block']}.{m['n']}", _MUSUBI_NAMES.get(m["module"])
    elif m := _DOTTED.match(k):
        block, module = m["block"], m["module"]
        module = WAN_TO_DIFFUSERS.get(module, module if module in DIFFUSERS_TO_WAN else None)
    else:
        return None
    return (f"{block}.{module}", "alpha" if m["alpha"] else _SLOT[m["part"]]) if module else None


def lora_file_to_ours(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """A single LoRA file in any layout above -> '<our module>.lora_[AB].weight', each module's alpha/r
    folded into its B (so that it loads at alpha = r); every key placed, or one line naming the first
    that is not."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in state.items():
        placed = _place(key)
        if placed is None:
            raise InputError(f"{source}: cannot place LoRA key {key!r} (known: the attention and FFN linears of "
                             "blocks.N / vace_blocks.N, in Wan, diffusers or musubi names)")
        parts.setdefault(placed[0], {})[placed[1]] = v
    out = {}
    for module, p in sorted(parts.items()):
        if "A" not in p or "B" not in p:
            raise InputError(f"{source}: {module} has no {'lora_B/lora_up' if 'A' in p else 'lora_A/lora_down'}")
        rank = p["A"].shape[0]
        scale = float(p["alpha"]) / rank if "alpha" in p else 1.0  # no alpha: alpha = r, as the release
        out[f"{module}.lora_A.weight"] = p["A"]
        out[f"{module}.lora_B.weight"] = p["B"].float() * scale if scale != 1.0 else p["B"]
    return out


def load_lora_file(transformer, path: Path) -> int:
    """Load a single .safetensors LoRA (lora_file_to_ours) into `transformer`, scale 1 in every module.
    Every key must be consumed; returns how many LoRA-wrapped modules it filled."""
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    if not path.is_file():
        raise InputError(f"{path}: LoRA file not found")
    state = lora_file_to_ours(load_file(str(path)), path)
    ranks = {k.rsplit(".lora_", 1)[0]: v.shape[0] for k, v in state.items() if ".lora_A." in k}
    rank = max(set(ranks.values()), key=list(ranks.values()).count)
    others = {m: r for m, r in ranks.items() if r != rank}  # files may mix ranks: peft's per-module patterns
    if not getattr(transformer, "peft_config", None):
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(ranks),
                                           rank_pattern=others, alpha_pattern=others, init_lora_weights=True))
    state = {k: v.to(next(transformer.parameters()).dtype) for k, v in state.items()}
    _load_checked(transformer, state, path, set_peft_model_state_dict)
    return len(ranks)


def load_any_lora(transformer, path: Path) -> str:
    """A checkpoint folder (ours) or a single .safetensors file (load_lora_file's layouts)."""
    path = Path(path)
    if (path / FULL_DIR).is_dir():
        load_transformer_weights(transformer, path / FULL_DIR)
        return "whole transformer"
    if path.is_dir():
        load_adapter(transformer, path)
        return "adapter"
    load_lora_file(transformer, path)
    return "file"
