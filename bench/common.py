"""Shared by the benchmarks: a model of the real 14B shapes with random weights, timing, JSON."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import time
from pathlib import Path

import torch

from diffhdr.cli import HelpFormatter

RESULTS = Path(__file__).resolve().parent / "results"


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options every model benchmark takes; add its own to the parser returned."""
    p = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a CPU smoke run of the same code on the tiny model")
    p.add_argument("--out", help="also copy the JSON here")
    return p


def device_of(args) -> str:
    return "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"


def environment(device) -> dict:
    import diffusers

    env = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version()}
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError:
        pass
    if torch.device(device).type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["device"] = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return env


def build_transformer(config: dict, device, dtype=torch.bfloat16):
    """WanVACETransformer3DModel with random weights, created directly in `dtype` on `device`."""
    from diffusers import WanVACETransformer3DModel

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = WanVACETransformer3DModel(**config)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def add_lora(transformer, rank: int, b_std: float = 0.0) -> None:
    """LoRA of `rank` (alpha = rank) on the main blocks' linears, as train.py places it; B drawn from
    N(0, b_std) (0: peft's zero start), so that a trained adapter's extra work and weights are there."""
    from peft.tuners.lora import LoraLayer

    from diffhdr.config import ModelConfig
    from diffhdr.model import DiffHDRModel

    DiffHDRModel(transformer, None, None, None).add_lora(ModelConfig(lora_rank=rank, lora_alpha=float(rank)))
    if b_std:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in transformer.modules():
                if isinstance(m, LoraLayer):
                    w = m.lora_B["default"].weight
                    w.copy_(torch.randn(w.shape, generator=g) * b_std)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of a against the reference b, in float32."""
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed(device, out: list):
    sync(device)
    t = time.perf_counter()
    yield
    sync(device)
    out.append(time.perf_counter() - t)


def reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def free(device):
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def write_json(name: str, payload: dict, extra_dir: str | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = payload["environment"]["device"].split(" (")[0].replace(" ", "_")
    path = RESULTS / f"{name}_{tag}.json"
    path.write_text(json.dumps(payload, indent=2))
    if extra_dir:
        Path(extra_dir).mkdir(parents=True, exist_ok=True)
        (Path(extra_dir) / path.name).write_text(path.read_text())
    return path


def profile_cuda(fn, path) -> None:
    """CUDA kernel time of fn(), by kernel, largest first (where the time goes), as a text table."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=60, max_name_column_width=90)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(table)


def table(rows: list[dict], cols: list[str]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(lines)
