#!/usr/bin/env bash
# The real CLIs on a GPU with the tiny model: bf16 training with cuDNN attention, selective
# checkpointing, fp8 base GEMMs and torch.compile (LDR synthesis and masks on the GPU); the same through accelerate
# with FSDP2 (configs/accelerate/fsdp.yaml, one process: the sharded code paths, no communication),
# stopped and resumed; fp8 self-attention (a model with heads of 128, which Hopper's fp8 kernels need),
# stopped, then resumed through FSDP2; then inference in each speed mode and each memory mode.
# Usage: bash bench/gpu_smoke.sh OUTDIR
set -euo pipefail
out=${1:-/tmp/gpu_smoke}
mkdir -p "$out"
work=$(mktemp -d)
export DIFFHDR_TINY_DIR=$work/tiny
python3 -c "from diffhdr.synthetic import write_dataset; write_dataset('$work/data', sequences=3, frames=21, h=48, w=64)"
cat > "$work/gpu.yaml" <<YAML
model: {backbone: tiny, lora_rank: 4, lora_alpha: 4.0, gradient_checkpointing: true, fp8_base: true, compile: true, dtype: bfloat16}
data: {dataset_root: $work/data, val_split: 1, sequence_frames: 21, num_workers: 2}
training: {num_steps: 20, log_every: 5, checkpoint_every: 10, validate_every: 10, resolution: [5, 32, 32], mixed_precision: bf16, learning_rate: 1.0e-3}
output_dir: $work/ckpt
YAML
python3 train.py --config "$work/gpu.yaml" 2>&1 | tee "$out/train.log"
sed "s#output_dir: .*#output_dir: $work/fsdp#" "$work/gpu.yaml" > "$work/fsdp.yaml"
fsdp=(python3 -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --num_processes 1
      train.py --config "$work/fsdp.yaml")
"${fsdp[@]}" --max_steps 10 2>&1 | grep -v "it/s" | tee "$out/train_fsdp.log"
"${fsdp[@]}" --resume_from_checkpoint latest 2>&1 | grep -v "it/s" | tee -a "$out/train_fsdp.log"
ls "$work/fsdp/checkpoint-final" | tee -a "$out/train_fsdp.log"
python3 -c "
import shutil, torch
from diffusers import WanVACETransformer3DModel
from diffhdr.tiny import TINY_TRANSFORMER, write_tiny_model
shutil.copytree(write_tiny_model('$work/tiny'), '$work/tiny128')
torch.manual_seed(0)
WanVACETransformer3DModel(**(TINY_TRANSFORMER | dict(num_attention_heads=2, attention_head_dim=128))).save_pretrained(
    '$work/tiny128/transformer')"
sed -e "s#backbone: tiny#backbone: $work/tiny128#" -e "s#fp8_base: true#fp8_base: true, fp8_attention: true#" \
    -e "s#output_dir: .*#output_dir: $work/fp8attn#" "$work/gpu.yaml" > "$work/fp8attn.yaml"
python3 train.py --config "$work/fp8attn.yaml" --max_steps 10 2>&1 | grep -v "it/s" | tee "$out/train_fp8attn.log"
python3 -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 train.py \
    --config "$work/fp8attn.yaml" --resume_from_checkpoint latest 2>&1 | grep -v "it/s" | tee -a "$out/train_fp8attn.log"
python3 -c "
import numpy as np
from diffhdr.synthetic import render_frame
from diffhdr.color_mapping import linear_to_srgb
from diffhdr.io import write_video
write_video('$work/ldr.mp4', (linear_to_srgb(np.stack([render_frame(72, 100, t) for t in range(40)])) * 255).astype(np.uint8))"
for combo in naive:full:ckpt default:full:ckpt default:low:ckpt fast:offload:fp8attn fast:full:fp8attn; do
  IFS=: read -r speed memory run <<< "$combo"
  {
    python3 inference.py --input_video "$work/ldr.mp4" --output_dir "$work/out_${speed}_$memory" \
      --lora_checkpoint "$work/$run/checkpoint-final" --prompt "[Overexposed: sun]; [Underexposed: room]" \
      --num_inference_steps 4 --speed $speed --memory $memory --device cuda --hdr10_preview 2>&1 | grep -v "it/s" | tee -a "$out/infer.log"
    ls "$work/out_${speed}_$memory/exr" | wc -l | sed "s/^/$speed $memory frames: /" | tee -a "$out/infer.log"
    ls "$work/out_${speed}_$memory" | tr '\n' ' ' | tee -a "$out/infer.log"; echo
  }
done
