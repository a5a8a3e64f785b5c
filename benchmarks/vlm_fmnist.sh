#!/usr/bin/env bash
# benchmarks/vlm_fmnist.py's parts in the order (and overlap) used for BENCHMARKS.md on a 2-core machine: the
# contrastive-only student needs no teacher and starts at once; the cache is written once, then the two distilled
# students train side by side while the teacher is evaluated; latency last, then the report. Resumable: every
# student continues from its checkpoint; a finished part is rerun cheaply (--resume finds its last epoch).
#   TEACHER=clip-fmnist-teacher STEPS=128 bash benchmarks/vlm_fmnist.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
B=benchmarks/vlm_fmnist.py
W=(--work "${WORK:-runs/vlm-bench}")
T=(--teacher "${TEACHER:-clip-fmnist-teacher}")
S=(--steps "${STEPS:-128}" --batch-size "${BATCH:-128}" --train-pairs "${PAIRS:-4096}" --cache-epochs "${CACHE_EPOCHS:-1}")
export OMP_NUM_THREADS=1
$PY $B student "${W[@]}" "${S[@]}" --method contrastive > "${WORK:-runs/vlm-bench}.contrastive.log" 2>&1 &
$PY $B cache "${W[@]}" "${T[@]}" "${S[@]}" --threads 2
$PY $B student "${W[@]}" "${S[@]}" --method affinity > "${WORK:-runs/vlm-bench}.affinity.log" 2>&1 &
$PY $B student "${W[@]}" "${S[@]}" --method dcd > "${WORK:-runs/vlm-bench}.dcd.log" 2>&1 &
$PY $B teacher "${W[@]}" "${T[@]}"
wait
$PY $B latency "${W[@]}" "${T[@]}"
$PY $B report "${W[@]}"
