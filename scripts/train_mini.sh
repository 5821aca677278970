#!/usr/bin/env bash
# DiffHDR-mini from a folder of HDR images: sequences -> VAE -> DiT -> a packaged model.
#   bash scripts/train_mini.sh /path/to/hdr_images [OUT]       (OUT default runs/mini)
# configs/mini.yaml (or CONFIG) holds the DiT's recipe; the model lands in OUT/model (copy it to diffhdr/mini
# to ship). The defaults remake the shipped model in about 8 minutes on one H200 (docs/mini.md).
# Environment: VAE_MINUTES (2.5; the VAE's schedule is fitted to it), VAE_STEPS (at most 4000), VAE_LR (6e-4),
# VAE_TIMEOUT (seconds), DIT_STEPS (stop early; the schedule keeps the config's num_steps), DIT_TIMEOUT (seconds;
# SIGTERM makes train.py checkpoint and stop), DIT_GPUS (1; more run the DiT with DDP through accelerate, each
# GPU a batch of the config's size), STOP_AFTER (data or vae: that stage only, e.g. one job of a SLURM chain).
# Run again with the same OUT, it goes on where it stopped (a time limit, a SLURM job): the data and a
# finished VAE are kept, a stopped VAE trains again, the DiT resumes from its newest checkpoint.
set -euo pipefail
images=$1
out=${2:-runs/mini}
mkdir -p "$out"
[ -d "$out/data/train" ] || python3 scripts/make_hdri_dataset.py --images "$images" --out "$out/data" \
  --sequences_per_image 12 --frames 33 --height 144 --width 176
sed -e "s#runs/mini#$out#g" "${CONFIG:-configs/mini.yaml}" > "$out/mini.yaml"
[ "${STOP_AFTER:-}" = data ] && exit 0
vae_done() { python3 -c "import json, sys; s = json.load(open(sys.argv[1])); sys.exit(s['steps_done'] < s['steps'])" \
  "$out/base/vae/train_vae.json" 2>/dev/null; }
if ! vae_done; then
  python3 -c "from diffhdr.tiny import MINI_TRANSFORMER, MINI_VAE, write_tiny_model
write_tiny_model('$out/base', transformer=MINI_TRANSFORMER, vae=MINI_VAE)"
  # 64 px crops beat 128 px on held-out loss (0.165 against 0.279 after ~100 steps of x8 and x4, at 0.57 and
  # 0.59 s a step on an H200): the VAE is convolutional, and more clips a second teach it more than larger ones.
  # Its steps are bound by kernel launches more than arithmetic, hence 16 clips a step
  ${VAE_TIMEOUT:+timeout -s TERM $VAE_TIMEOUT} python3 scripts/train_vae.py --model_dir "$out/base" \
    --config "$out/mini.yaml" --val_root "$out/data/val" --clip 33 64 64 --batch_size 16 --workers 12 \
    --steps "${VAE_STEPS:-4000}" --minutes "${VAE_MINUTES:-2.5}" --lr "${VAE_LR:-6e-4}"
  vae_done || { echo "the VAE stopped early: run again to train it whole" >&2; exit 3; }
fi
[ "${STOP_AFTER:-}" = vae ] && exit 0
gpus=${DIT_GPUS:-1}
launch=(python3)
[ "$gpus" -gt 1 ] && launch=(python3 -m accelerate.commands.launch --multi_gpu --num_processes "$gpus"
                             --num_machines 1 --mixed_precision bf16 --dynamo_backend no)
dit_done() { python3 -c "import sys, yaml; from pathlib import Path
f = Path(sys.argv[1]) / 'dit/checkpoint-final/step.txt'
sys.exit(not f.is_file() or int(f.read_text()) < yaml.safe_load(open(sys.argv[2]))['training']['num_steps'])" \
  "$out" "$out/mini.yaml"; }
resume=()
ls -d "$out"/dit/checkpoint-* > /dev/null 2>&1 && resume=(--resume_from_checkpoint latest)
dit_done || ${DIT_TIMEOUT:+timeout -s TERM $DIT_TIMEOUT} "${launch[@]}" train.py --config "$out/mini.yaml" \
  "${resume[@]}" ${DIT_STEPS:+--max_steps $DIT_STEPS} || true
last=$(ls -d "$out"/dit/checkpoint-* | tail -1)  # checkpoint-final, or the last one a SIGTERM left
python3 scripts/package_mini.py --base "$out/base" --checkpoint "$last" --out "$out/model"
