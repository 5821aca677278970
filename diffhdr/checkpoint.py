"""Training checkpoints, written atomically.

    checkpoint-005000/
      adapter_config.json          PEFT LoRA config
      adapter_model.safetensors    LoRA weights only
      color_mapping_config.json    gamma, M, base_model (+ LoRA branch and profile)
      step.txt                     global step
      training_state.pt            optimizer, LR schedule, RNG states (for --resume_from_checkpoint)

A checkpoint is assembled in a hidden temporary folder and renamed into place when complete,
so a crash or kill never leaves a half-written checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .errors import InputError
from .io import atomic_path, read_json
from .lora_io import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, FULL_DIR, load_adapter, load_transformer_weights, save_adapter,
                      save_transformer)

COLOR_CONFIG = "color_mapping_config.json"
STEP_FILE = "step.txt"
STATE_FILE = "training_state.pt"
MODEL_DEFAULTS = "diffhdr_defaults.json"  # in a packaged base model (scripts/package_mini.py)
REQUIRED = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, COLOR_CONFIG, STEP_FILE)  # a LoRA run's; a whole-DiT run has transformer/


def checkpoint_name(step: int | str) -> str:
    return "checkpoint-final" if step == "final" else f"checkpoint-{int(step):06d}"


def save_checkpoint(
    directory: Path, transformer, color: dict, step: int, training_state: dict | None = None,
    lora_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """`lora_state`: trained_state(transformer), gathered by every rank beforehand under FSDP: the
    LoRA, or for a transformer trained whole (no LoRA) every weight, in transformer/."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if getattr(transformer, "peft_config", None):
        save_adapter(transformer, tmp, lora_state)
    else:
        save_transformer(transformer, tmp / FULL_DIR, lora_state)
    (tmp / COLOR_CONFIG).write_text(json.dumps(color, indent=2))
    (tmp / STEP_FILE).write_text(f"{step}\n")
    if training_state is not None:
        with atomic_path(tmp / STATE_FILE) as t:
            torch.save(training_state, t)
    if directory.exists():  # e.g. checkpoint-final of a previous run: swap, then delete
        old = directory.with_name(f".{directory.name}.old{os.getpid()}")
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)
    return directory


def _full_state_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def optimizer_state(model, optimizer) -> dict | None:
    """The optimizer's state as one unsharded dict (keys: parameter names), whatever the wrapping
    (none, DDP, FSDP2); every rank calls it, rank 0 gets the dict. None before the first step
    (torch would run a zero step to create the state, shifting Adam's step count)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    if not optimizer.state:
        return None
    return get_optimizer_state_dict(model, optimizer, options=_full_state_options(cpu_offload=True))


def load_optimizer_state(model, optimizer, state: dict | None) -> None:
    """Inverse of optimizer_state, after the model is wrapped: FSDP takes each rank's shard."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    if state is not None:
        set_optimizer_state_dict(model, optimizer, state, options=_full_state_options())


def read_color_config(directory: Path) -> dict:
    path = Path(directory) / COLOR_CONFIG
    if not path.is_file():
        raise InputError(f"{directory}: checkpoint lacks {COLOR_CONFIG}")
    cfg = read_json(path)
    for k in ("gamma", "M"):
        if k not in cfg:
            raise InputError(f"{path}: no '{k}'")
    return cfg


def check_checkpoint(directory: Path) -> None:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: checkpoint folder not found")
    need = (COLOR_CONFIG, STEP_FILE) if (directory / FULL_DIR).is_dir() else REQUIRED
    missing = [f for f in need if not (directory / f).is_file()]
    if missing:
        raise InputError(f"{directory}: checkpoint lacks {', '.join(missing)}")


def read_step(directory: Path) -> int:
    text = (Path(directory) / STEP_FILE).read_text().strip()
    if not text.isdigit():
        raise InputError(f"{Path(directory) / STEP_FILE}: not a step number ({text!r})")
    return int(text)


def load_for_resume(directory: Path, transformer, gamma: float, M: float) -> tuple[int, dict | None]:
    """Fill the LoRA (or the whole transformer) from a checkpoint written with the same gamma/M;
    return (step, training state)."""
    directory = Path(directory)
    check_checkpoint(directory)
    color = read_color_config(directory)
    if abs(color["gamma"] - gamma) > 1e-9 or abs(color["M"] - M) > 1e-9:
        raise InputError(
            f"{directory / COLOR_CONFIG}: written with gamma={color['gamma']}, M={color['M']}; "
            f"the config says gamma={gamma}, M={M}"
        )
    if (directory / FULL_DIR).is_dir():
        load_transformer_weights(transformer, directory / FULL_DIR)
    else:
        load_adapter(transformer, directory)
    state = None
    if (directory / STATE_FILE).is_file():
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    return read_step(directory), state


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted(p for p in Path(output_dir).glob("checkpoint-[0-9]*") if p.is_dir())
    return ckpts[-1] if ckpts else None


def earlier_run(output_dir: Path) -> list[Path]:
    """What a training run left in `output_dir`: its checkpoints, metrics and validation samples."""
    d = Path(output_dir)
    return sorted(p for p in (*d.glob("checkpoint-*"), d / "metrics.jsonl", d / "validation") if p.exists())


def clear_earlier_run(output_dir: Path) -> None:
    for p in earlier_run(output_dir):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def model_defaults(base: Path) -> dict | None:
    """gamma, M and inference defaults a packaged model stores with itself (scripts/package_mini.py),
    or None for a plain diffusers base."""
    path = Path(base) / MODEL_DEFAULTS
    return read_json(path) if path.is_file() else None
