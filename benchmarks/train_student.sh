#!/usr/bin/env bash
# Long background distillation of the shipped student `fmnist-vit-micro` from the teacher `fmnist-vit`
# (issue: compress end to end, headline benchmark). Resumable: rerun the same command after a kill; the cache
# reuses the epochs it already stores and training continues from OUT/checkpoint.pt (written every epoch).
#   bash benchmarks/train_student.sh            # EPOCHS=30 CACHE_EPOCHS=3 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-30}
CACHE_EPOCHS=${CACHE_EPOCHS:-3}
CACHE=${CACHE:-runs/student-cache}
OUT=${OUT:-benchmarks/checkpoints/fmnist-vit-micro}
AUG=(--randaug-n 1 --randaug-m 6 --erase-prob 0.1)
$PY -m edgevit distill cache --teacher fmnist-vit --data fashion-mnist --epochs "$CACHE_EPOCHS" "${AUG[@]}" \
    --out "$CACHE" --json "$CACHE.json"
$PY -m edgevit distill train --student fmnist-vit-micro --cache "$CACHE" --epochs "$EPOCHS" --replay-cache \
    --batch-size 128 --lr 1e-3 --warmup-epochs 1 --out "$OUT" --resume --json "$OUT/train_record.json"
