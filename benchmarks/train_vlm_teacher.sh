#!/usr/bin/env bash
# Training of the shipped LiT-style teacher `clip-fmnist-teacher` (issue: small VLMs): image tower initialised from
# fmnist-vit's packaged weights (position embedding tiled to 28×56, each half marked), frozen MiniLM-L6 text tower
# with trained attention pooling over its token states (computed once per unique caption, then looked up), 256-d
# projections, CLIP loss with the pairs' hard negative captions as extra columns (same-content captions masked).
# Resumable: rerun the same command after a kill; it continues from OUT/checkpoint.pt (written after every epoch,
# with the dual encoder as it stands). The shipped weights are this whole 4-epoch cosine schedule (560 steps of 64
# pairs, 844 s on 1 thread of a 2-core AMD EPYC), see edgevit/weights/clip-fmnist-teacher/card.json.
#   bash benchmarks/train_vlm_teacher.sh            # then copy OUT's dual_encoder.json + *.safetensors to the package
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/clip-t}
STOP_AFTER=${STOP_AFTER:-4}
OMP_NUM_THREADS=1 $PY -m edgevit vlm train-teacher --image-tower fmnist-vit --text-tower minilm-l6 --text-pool attention \
    --data fashion-mnist-pairs --limit 8960 --epochs 4 --batch-size 64 --lr 5e-4 --eval-limit 500 --threads 1 \
    --stop-after "$STOP_AFTER" --resume --out "$OUT" --json "$OUT/train_record.json"
