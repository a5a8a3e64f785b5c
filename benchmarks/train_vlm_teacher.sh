#!/usr/bin/env bash
# Training of the shipped LiT-style teacher `clip-fmnist-teacher` (issue: small VLMs): image tower initialised from
# fmnist-vit's packaged weights (position embedding tiled to 28×56), frozen MiniLM-L6 text tower (every unique
# caption embedded once, then looked up), 256-d projections, CLIP loss with the pairs' hard negative captions as
# extra columns. Resumable: rerun the same command after a kill; it continues from OUT/checkpoint.pt (written after
# every epoch, with the dual encoder as it stands). The shipped weights are those after 2 epochs of this 4-epoch
# cosine schedule (280 steps of 64 pairs, 44 min on a shared 2-core machine: the time one session had), see
# edgevit/weights/clip-fmnist-teacher/card.json; STOP_AFTER=4 (or a rerun with --resume) trains the whole schedule.
#   bash benchmarks/train_vlm_teacher.sh            # then copy OUT's dual_encoder.json + *.safetensors to the package
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/clip-t}
STOP_AFTER=${STOP_AFTER:-2}
OMP_NUM_THREADS=1 $PY -m edgevit vlm train-teacher --image-tower fmnist-vit --text-tower minilm-l6 \
    --data fashion-mnist-pairs --limit 8960 --epochs 4 --batch-size 64 --lr 5e-4 --eval-limit 500 --threads 1 \
    --stop-after "$STOP_AFTER" --resume --out "$OUT" --json "$OUT/train_record.json"
