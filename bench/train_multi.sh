#!/usr/bin/env bash
# Scaling of training over N GPUs of one node (default 4): one GPU, then N with DDP, then N with
# FSDP2, each against the one-GPU run. Results in bench/results/train_multi_*.json.
# Usage: bash bench/train_multi.sh [N] [OUTDIR]
set -euo pipefail
n=${1:-4}
out=${2:-}
launch=(python3 -m accelerate.commands.launch --num_machines 1 --mixed_precision bf16 --dynamo_backend no)
"${launch[@]}" --num_processes 1 bench/bench_train_multi.py --tag 1gpu ${out:+--out "$out"}
base=$(ls bench/results/train_multi_1gpu_*.json | head -1)
"${launch[@]}" --multi_gpu --num_processes "$n" bench/bench_train_multi.py --tag "ddp$n" --baseline "$base" ${out:+--out "$out"}
python3 -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --num_processes "$n" \
  bench/bench_train_multi.py --tag "fsdp$n" --baseline "$base" ${out:+--out "$out"}
