#!/usr/bin/env bash
# Training of the shipped LiT-style teacher `clip-fmnist-teacher` (issue: small VLMs): image tower initialised from
# fmnist-vit's packaged weights (position embedding tiled to 28×56), frozen MiniLM-L6 text tower (every unique
# caption embedded once, then looked up), 256-d projections, CLIP loss with the pairs' hard negative captions as
# extra columns. Resumable: rerun the same command after a kill; it continues from OUT/checkpoint.pt (written after
# every epoch, with the dual encoder as it stands). MAX_SECONDS caps the training time of one run (the shipped run
# stopped there, see edgevit/weights/clip-fmnist-teacher/card.json).
#   bash benchmarks/train_vlm_teacher.sh            # then copy OUT's dual_encoder.json + *.safetensors to the package
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/clip-t}
MAX_SECONDS=${MAX_SECONDS:-3300}
OMP_NUM_THREADS=1 $PY -m edgevit vlm train-teacher --image-tower fmnist-vit --text-tower minilm-l6 \
    --data fashion-mnist-pairs --limit 8960 --epochs 4 --batch-size 64 --lr 5e-4 --eval-limit 500 --threads 1 \
    --max-seconds "$MAX_SECONDS" --resume --out "$OUT" --json "$OUT/train_record.json"
