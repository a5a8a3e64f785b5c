#!/usr/bin/env bash
# Background ShiftAddViT finetunes of fmnist-vit (issue 13 accuracy runs), as a user runs them: convert, then
# finetune with distillation from the dense teacher (the model before conversion; soft targets at T = 2, weight
# 0.5), the training state saved every CKPT steps; then top-1 on the FULL 10k test set. Resumable: rerun the same
# command after a kill (a finished step is skipped: its JSON record exists; an interrupted finetune continues from
# its state file with --resume). One torch thread per lane so that lanes share the cores.
#   LANE=attn  bash benchmarks/shiftadd_finetune.sh   # MatAdd attention in all 12 blocks (dense MLPs)
#   LANE=mixed bash benchmarks/shiftadd_finetune.sh   # shift MLPs; MatAdd with softmax kept in blocks 0-2; then
#                                                      # MoE MLPs on that (recipe step 2)
#   LANE=full  bash benchmarks/shiftadd_finetune.sh   # shift MLPs on the MatAdd model of the mixed lane
#   LANE=matadd6 bash benchmarks/shiftadd_finetune.sh # MatAdd in 6 blocks + shift MLPs in one convert, 3 epochs of
#                                                      # batch 32 (~1 h on one core): the variant that meets both goals
#   PYTHONPATH=. python benchmarks/shiftadd_finetune_report.py --work runs/sa2    # the table
# Budgets (optimiser steps of batch BS=16) are sized for 2 cores shared with other jobs: ATTN_STEPS, ATTN9_STEPS,
# MOE_STEPS, FULL_STEPS, SHIFT_STEPS (0: the shift-MLP conversion is evaluated unfinetuned).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
W=${W:-runs/sa2}
BS=${BS:-16}
CKPT=${CKPT:-40}
EA=(--eval-limit 200 --threads 1)
FT=(--batch-size "$BS" --checkpoint-every "$CKPT" --log-every 25 --resume "${EA[@]}")
sa() { $PY -m edgevit shiftadd "$@"; }
convert() {  # convert OUT_DIR ARGS...
    local out=$1; shift
    [ -f "$out/convert.json" ] || sa convert --out "$out" "${EA[@]}" "$@"
}
finetune() {  # finetune RUN_DIR TAG ARGS...
    local run=$1 tag=$2; shift 2
    [ -f "$run/ft_$tag.json" ] || sa finetune "$run" "${FT[@]}" --json "$run/ft_$tag.json" "$@"
}
evaluate() {  # evaluate RUN_DIR [NAME]: top-1 on the full 10k test set → RUN_DIR/NAME.json
    local out="$1/${2:-eval_test10k}.json"
    [ -f "$out" ] || $PY -m edgevit eval --model "$1/model.safetensors" --data fashion-mnist --threads 1 --json "$out"
}
case "${LANE:-mixed}" in
attn)
    convert "$W/attn12" --model fmnist-vit --attention matadd --mlp dense
    finetune "$W/attn12" attention --epochs 2 --steps "${ATTN_STEPS:-120}"
    evaluate "$W/attn12" ;;
mixed)
    convert "$W/shift" --model fmnist-vit --attention softmax --mlp shift
    [ -f "$W/shift/ft_attention.json" ] || evaluate "$W/shift" eval_test10k_converted  # the conversion alone
    if [ "${SHIFT_STEPS:-0}" -gt 0 ]; then  # it matches the teacher unfinetuned: no finetune unless asked
        finetune "$W/shift" attention --epochs 1 --steps "$SHIFT_STEPS"
        evaluate "$W/shift"
    fi
    convert "$W/attn9" --model fmnist-vit --attention matadd --mlp dense --softmax-blocks 0 1 2
    finetune "$W/attn9" attention --epochs 1 --steps "${ATTN9_STEPS:-200}"
    evaluate "$W/attn9"
    convert "$W/attn9_moe" --model "$W/attn9/model.safetensors" --mlp moe  # recipe step 2: α measured here
    finetune "$W/attn9_moe" moe --epochs 1 --steps "${MOE_STEPS:-40}"  # moe stage: 0.2 × 2e-4
    evaluate "$W/attn9_moe" ;;
full)  # recipe step 2 with shift MLPs on the finetuned MatAdd model of the mixed lane (run beside its MoE step)
    convert "$W/attn9_full" --model "$W/attn9/model.safetensors" --mlp shift
    finetune "$W/attn9_full" attention --epochs 1 --steps "${FULL_STEPS:-60}" --lr 4e-5  # step 2: lower lr
    evaluate "$W/attn9_full" ;;
matadd6)  # softmax kept in the 6 blocks the per-block probe found costliest to convert (0 1 2 4 5 7)
    convert "$W/m6" --model fmnist-vit --attention matadd --mlp shift --softmax-blocks 0 1 2 4 5 7
    [ -f "$W/m6/ft_attention.json" ] || sa finetune "$W/m6" --epochs 3 --batch-size 32 --checkpoint-every 200 \
        --log-every 100 --resume --eval-limit 1000 --threads 1 --json "$W/m6/ft_attention.json"
    evaluate "$W/m6" ;;
*) echo "LANE must be attn, mixed, full or matadd6" >&2; exit 2 ;;
esac
