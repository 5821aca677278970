"""train.py itself on 1 GPU, then N GPUs with DDP and with FSDP2: seconds per optimizer step,
weak-scaling efficiency and peak memory per GPU, under an 80 GB cap.

    python bench/bench_train_scaling.py --gpus 2                 # the whole 14B, 33x720x1280
    python bench/bench_train_scaling.py --gpus 2 --layers 8      # 14B widths, 8 of 40 blocks
    python bench/bench_train_scaling.py --gpus 2 --tiny --runs ddp1,ddp   # CPU smoke run (gloo)

Unlike bench_train_multi.py (the DiT alone), this is the whole of train.py: the VAE encoding of
target and context at 720p, the text-embedding cache (UMT5-XXL on the GPU, then off it), the DiT
with configs/train.yaml's switches (LoRA r=32, bf16, selective checkpointing, torch.compile),
4 micro-steps per optimizer step, checkpoints. The base is a random Wan2.1-VACE-14B of the real
shapes, written once into --work; the clips are generated 720p EXR sequences. Each run trains
--steps optimizer steps; the first includes compilation, so s/step is the mean of the others
(train.py's metrics.jsonl). Efficiency = t(1 GPU) / t(N GPUs): each GPU does the same work.
With --resume RUNS, each of those runs then resumes from its step-1 checkpoint and trains step 2 again: its
loss must repeat.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffhdr.synthetic import write_dataset  # noqa: E402
from diffhdr.tiny import REAL_TRANSFORMER, REAL_UMT5, REAL_VAE, write_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_inputs(work: Path, layers: int, tiny: bool, frames: int, h: int, w: int) -> tuple[Path, Path]:
    if tiny:
        base = write_tiny_model(work / "base_tiny")
    else:
        cfg = REAL_TRANSFORMER | dict(num_layers=layers, vace_layers=[i for i in REAL_TRANSFORMER["vace_layers"] if i < layers])
        base = write_tiny_model(work / f"base_{layers}L", transformer=cfg, vae=REAL_VAE, text_encoder=REAL_UMT5,
                                device="cuda", dtype=torch.bfloat16)
    data = work / f"data_{frames}x{h}x{w}"
    if not data.is_dir():
        write_dataset(data, sequences=2, frames=frames + 4, h=h, w=w)
    return base, data


def config(base: Path, data: Path, out: Path, a, frames: int, h: int, w: int) -> Path:
    """configs/train.yaml with this run's base, data, output and length."""
    cfg = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())
    cfg["model"]["backbone"] = str(base)
    if a.tiny:  # rank 32 is a fifth of the tiny DiT: the pre-flight check refuses it
        cfg["model"].update(compile=False, lora_rank=4, lora_alpha=4.0)
    cfg["data"].update(dataset_root=str(data), val_split=0, sequence_frames=frames + 4, num_workers=2)
    cfg["training"].update(num_steps=a.steps, log_every=1, checkpoint_every=1, validate_every=0,
                           resolution=[frames, h, w], gradient_accumulation=a.accumulation)
    cfg["output_dir"] = str(out)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(kind: str, n: int, a) -> tuple[list[str], dict]:
    """The command and environment of one run: accelerate launch on GPUs; on the CPU torchrun with
    accelerate's CPU switch (`accelerate launch --cpu` starts one process whatever N is)."""
    script = [str(ROOT / "bench" / "capped_train.py"), str(a.gib)]
    if a.tiny:
        env = os.environ | {"ACCELERATE_USE_CPU": "true", "ACCELERATE_MIXED_PRECISION": "no"}
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), *script], env
    acc = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--main_process_port", "29630"]
    if kind == "fsdp":
        acc += ["--config_file", str(ROOT / "configs" / "accelerate" / "fsdp.yaml")]
    else:
        acc += ["--mixed_precision", "bf16", "--dynamo_backend", "no"] + (["--multi_gpu"] if n > 1 else [])
    return acc + ["--num_processes", str(n), *script], dict(os.environ)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc). torchrun starts its workers in sessions of their own,
    so killing the launcher's process group leaves them running, on the GPUs the next run needs."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def call(cmd: list[str], env: dict, timeout: float) -> int:
    """Run a launch to the end, or kill it and every process below it at `timeout` (exit -9)."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [p.pid, *descendants(p.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        p.wait()
        return -9


def wait_for_free_gpus(limit_s: float = 90.0) -> None:
    """A killed run's GPU memory comes back some seconds after its processes die; the next run
    must not start into it (it did: an out-of-memory at 80 GB that was the previous run's)."""
    end = time.time() + limit_s
    while torch.cuda.is_available() and time.time() < end:
        if all(torch.cuda.mem_get_info(i)[0] > 0.9 * torch.cuda.mem_get_info(i)[1]
               for i in range(torch.cuda.device_count())):
            return
        time.sleep(2)


def metrics(out: Path) -> list[dict]:
    f = out / "metrics.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def run(name: str, n: int, base: Path, data: Path, a, shape) -> dict:
    kind = "ddp" if name == "ddp1" else name
    out = Path(a.work) / f"run_{kind}{n}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir(parents=True)
    cfg = config(base, data, out, a, *shape)
    wait_for_free_gpus()
    t0 = time.perf_counter()
    cmd, env = launch(kind, n, a)
    code = call(cmd + ["--config", str(cfg)], env, a.run_timeout)
    row = {"run": f"{kind} x{n}", "gpus": n, "exit": code, "wall_s": time.perf_counter() - t0}
    m = metrics(out)
    timed = [r["s_per_step"] for r in m[1:] if "s_per_step" in r]
    row |= {"steps": len(m), "s_per_step": sum(timed) / len(timed) if timed else None,
            "first_step_s": m[0].get("s_per_step") if m else None,
            "peak_gib": max((r["peak_gib"] for r in m if "peak_gib" in r), default=None),
            "losses": [r["loss"] for r in m]}
    if name in a.resume.split(",") and code == 0 and len(m) >= 2:
        row["resume_exit"] = call(cmd + ["--config", str(cfg), "--resume_from_checkpoint",
                                         str(out / "checkpoint-000001"), "--max_steps", "2"], env, a.run_timeout)
        resumed = metrics(out)[len(m):]
        row["step2_loss"], row["resumed_step2_loss"] = m[1]["loss"], resumed[0]["loss"] if resumed else None
    return row


def main():
    p = common.arguments(__doc__)
    p.add_argument("--gpus", type=int, default=2, help="N of the distributed runs")
    p.add_argument("--layers", type=int, default=40, help="DiT blocks (the 14B has 40)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    p.add_argument("--accumulation", type=int, default=4, help="micro-steps per optimizer step (paper: 4)")
    p.add_argument("--gib", type=float, default=80.0, help="GPU memory cap per process")
    p.add_argument("--runs", default="ddp1,ddp,fsdp", help="which of ddp1 (one GPU), ddp, fsdp")
    p.add_argument("--run_timeout", type=float, default=1800, help="seconds before a run is killed")
    p.add_argument("--resume", default="", help="runs (of --runs) to resume from step 1 afterwards")
    p.add_argument("--work", default="runs/bench_train_scaling", help="base model, clips and runs")
    a = p.parse_args()
    Path(a.work).mkdir(parents=True, exist_ok=True)
    shape = (5, 32, 32) if a.tiny else (33, 720, 1280)
    base, data = write_inputs(Path(a.work), a.layers, a.tiny, *shape)
    torch.cuda.empty_cache()
    rows = []
    for r in a.runs.split(","):
        rows.append(run(r, 1 if r == "ddp1" else a.gpus, base, data, a, shape))
        print(common.table(rows[-1:], ["run", "exit", "s_per_step", "peak_gib"]), flush=True)
        report(rows, a, shape)  # after every run: a later one may not finish
    print(common.table(rows, ["run", "exit", "s_per_step", "efficiency", "peak_gib", "first_step_s",
                              "step2_loss", "resumed_step2_loss"]))


def report(rows: list[dict], a, shape) -> None:
    one = next((r for r in rows if r["gpus"] == 1 and r["s_per_step"]), None)
    for r in rows:
        if one and r["gpus"] > 1 and r["s_per_step"]:
            r["efficiency"] = one["s_per_step"] / r["s_per_step"]
    payload = {"benchmark": "train_py_scaling", "environment": common.environment("cpu" if a.tiny else "cuda"),
               "config": {"layers": a.layers, "clip": list(shape), "accumulation": a.accumulation, "steps": a.steps,
                          "gib_cap": a.gib, "gpus": a.gpus, "tiny": a.tiny,
                          "train_yaml": "configs/train.yaml (backbone, data, length, logging replaced)"},
               "results": rows}
    common.write_json(f"train_scaling{a.gpus}_{'tiny' if a.tiny else f'{a.layers}L'}", payload, a.out)


if __name__ == "__main__":
    main()
