#!/usr/bin/env bash
# DiffHDR-mini from a folder of HDR images, on one GPU: sequences -> VAE -> DiT -> diffhdr/mini/.
#   bash scripts/train_mini.sh /path/to/hdr_images [OUT]       (OUT default runs/mini)
# configs/mini.yaml holds the DiT's recipe; the model lands in OUT/model (copy it to diffhdr/mini to ship).
# VAE_STEPS (600), DIT_STEPS (the config's 1500) and DIT_TIMEOUT (seconds; SIGTERM makes train.py
# checkpoint and stop) shorten a run.
set -euo pipefail
images=$1
out=${2:-runs/mini}
mkdir -p "$out"
python3 scripts/make_hdri_dataset.py --images "$images" --out "$out/data" --sequences_per_image 12 \
  --frames 33 --height 144 --width 176 --overwrite
python3 -c "from diffhdr.tiny import MINI_TRANSFORMER, MINI_VAE, write_tiny_model
write_tiny_model('$out/base', transformer=MINI_TRANSFORMER, vae=MINI_VAE)"
python3 scripts/train_vae.py --model_dir "$out/base" --dataset_root "$out/data/train" --steps ${VAE_STEPS:-600}
sed -e "s#runs/mini#$out#g" configs/mini.yaml > "$out/mini.yaml"
${DIT_TIMEOUT:+timeout -s TERM $DIT_TIMEOUT} python3 train.py --config "$out/mini.yaml" ${DIT_STEPS:+--max_steps $DIT_STEPS} || true
last=$(ls -d "$out"/dit/checkpoint-* | tail -1)  # checkpoint-final, or the last one a SIGTERM left
python3 scripts/package_mini.py --base "$out/base" --checkpoint "$last" --out "$out/model"
