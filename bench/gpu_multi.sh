#!/usr/bin/env bash
# Checks on N GPUs of one node (default 2) with the tiny model and the real CLIs:
#  1. training with configs/train.yaml's switches (bf16, selective checkpointing, torch.compile)
#     through DDP (the spec's `accelerate launch --multi_gpu`): 20 steps straight, and 10 steps,
#     stopped, then resumed to 20; the two loss curves are printed side by side;
#  2. the same stopped and resumed through FSDP2 (configs/accelerate/fsdp.yaml);
#  3. inference: one process against Ulysses, ring and CFG-parallel on N processes, EXRs compared.
# Usage: bash bench/gpu_multi.sh OUTDIR [N] [train|infer|all]
set -uo pipefail
out=${1:-/tmp/gpu_multi}
n=${2:-2}
what=${3:-all}
mkdir -p "$out"
work=$(mktemp -d)
export DIFFHDR_TINY_DIR=$work/tiny
python3 -c "from diffhdr.tiny import write_tiny_model; write_tiny_model('$work/tiny')
from diffhdr.synthetic import write_dataset; write_dataset('$work/data', sequences=3, frames=21, h=48, w=64)"
yaml() {  # $1 output_dir
  cat <<YAML
model: {backbone: tiny, lora_rank: 4, lora_alpha: 4.0, gradient_checkpointing: true, compile: true, dtype: bfloat16}
data: {dataset_root: $work/data, val_split: 1, sequence_frames: 21, num_workers: 2}
training: {num_steps: 20, log_every: 5, checkpoint_every: 10, validate_every: 0, resolution: [5, 32, 32], mixed_precision: bf16, learning_rate: 1.0e-3}
output_dir: $1
YAML
}
launch=(python3 -m accelerate.commands.launch --num_machines 1 --mixed_precision bf16 --dynamo_backend no
        --main_process_port 29610)  # the inference checks below run at the same time, on torchrun's 29500
ddp=("${launch[@]}" --multi_gpu --num_processes "$n" train.py)
fsdp=(python3 -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --main_process_port 29620
      --num_processes "$n" train.py)
train_checks() {
  yaml "$work/ddp_straight" > "$work/a.yaml"; yaml "$work/ddp_split" > "$work/b.yaml"; yaml "$work/fsdp" > "$work/c.yaml"
  "${ddp[@]}" --config "$work/a.yaml" 2>&1 | tr '\r' '\n' | grep -v "it/s" > "$out/train_ddp_straight.log"; echo "ddp straight: $?"
  "${ddp[@]}" --config "$work/b.yaml" --max_steps 10 2>&1 | tr '\r' '\n' | grep -v "it/s" > "$out/train_ddp_split.log"
  "${ddp[@]}" --config "$work/b.yaml" --resume_from_checkpoint latest 2>&1 | tr '\r' '\n' | grep -v "it/s" >> "$out/train_ddp_split.log"
  "${fsdp[@]}" --config "$work/c.yaml" --max_steps 10 2>&1 | tr '\r' '\n' | grep -v "it/s" > "$out/train_fsdp_split.log"
  "${fsdp[@]}" --config "$work/c.yaml" --resume_from_checkpoint latest 2>&1 | tr '\r' '\n' | grep -v "it/s" >> "$out/train_fsdp_split.log"
  python3 - "$work" <<'PY' | tee "$out/train_curves.txt"
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
def curve(d):
    f = w / d / "metrics.jsonl"
    return [json.loads(l) for l in f.read_text().splitlines()] if f.is_file() else []
runs = {d: curve(d) for d in ("ddp_straight", "ddp_split", "fsdp")}
print("step  " + "  ".join(f"{d:>14}" for d in runs))
for i in range(4):
    print(f"{5 * (i + 1):4d}  " + "  ".join(f"{r[i]['loss']:14.6f}" if len(r) > i else f"{'-':>14}" for r in runs.values()))
print("final checkpoints:", {d: (w / d / "checkpoint-final/adapter_model.safetensors").is_file() for d in runs})
PY
}
infer_checks() {
  python3 -c "
import numpy as np
from diffhdr.synthetic import render_frame
from diffhdr.color_mapping import linear_to_srgb
from diffhdr.io import write_video
write_video('$work/ldr.mp4', (linear_to_srgb(np.stack([render_frame(64, 96, t) for t in range(40)])) * 255).astype(np.uint8))"
  yaml "$work/ckpt" | sed 's/num_steps: 20/num_steps: 4/' > "$work/i.yaml"
  python3 train.py --config "$work/i.yaml" > "$out/infer_train.log" 2>&1
  args=(inference.py --input_video "$work/ldr.mp4" --lora_checkpoint "$work/ckpt/checkpoint-final" --device cuda
        --prompt "[Overexposed: sun]; [Underexposed: room]" --num_inference_steps 2)
  python3 "${args[@]}" --output_dir "$work/one" --speed naive > "$out/infer.log" 2>&1
  tr=(python3 -m torch.distributed.run --nproc_per_node "$n")
  for run in ulysses:naive:"" ring:naive:"" ring:default:"" ulysses:naive:--cfg_parallel; do
    IFS=: read -r kind speed extra <<< "$run"
    "${tr[@]}" "${args[@]}" --output_dir "$work/${kind}_${speed}$extra" --speed "$speed" --context_parallel "$kind" \
      $extra >> "$out/infer.log" 2>&1; echo "$kind $speed $extra: $?" >> "$out/infer.log"
  done
  python3 - "$work" <<'PY' | tee "$out/infer_compare.txt"
import sys
from pathlib import Path
import numpy as np
from diffhdr.io import read_exr
w = Path(sys.argv[1])
one = np.stack([read_exr(p) for p in sorted((w / "one/exr").glob("*.exr"))])
for d in sorted(w.iterdir()):
    if d.name == "one" or not (d / "exr").is_dir():
        continue
    x = np.stack([read_exr(p) for p in sorted((d / "exr").glob("*.exr"))])
    if x.shape != one.shape:
        print(d.name, "shape", x.shape); continue
    print(f"{d.name:28s} max|diff|/max {np.abs(x - one).max() / np.abs(one).max():.4f}  mean|diff| {np.abs(x - one).mean():.5f}")
PY
}
[ "$what" = infer ] || train_checks &
[ "$what" = train ] || infer_checks &
wait
rm -rf "$work"
