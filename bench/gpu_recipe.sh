#!/bin/bash
# The GPU half of the recipe and merging measurements, for a lent GPU machine (see
# bench/device_setup.sh for the carried packages). Phases, each resumable, run in order:
#   ablate      bench/ablations/cpu-small.yaml: the CPU recipe's 4846 steps per variant, side by side
#   medium      the ~19M gpu-medium model with Matryoshka merging on the 12 h corpus, for $MINUTES
#               minutes: training throughput, WER at every granularity, bench/merging at batch 1 and 64
# Usage: bash bench/gpu_recipe.sh [PHASE ...]     (default: ablate medium)
# Env: MINUTES (medium training budget, default 7), PLAN (ablation plan), PARALLEL (default 7),
#      WORKERS (default: all cores), BENCH_UTTS (utterances for bench/merging, 0 = all).
set -euo pipefail
PLAN=${PLAN:-bench/ablations/cpu-small.yaml}
MINUTES=${MINUTES:-7}
PARALLEL=${PARALLEL:-7}
WORKERS=${WORKERS:-$(nproc)}
BENCH_UTTS=${BENCH_UTTS:-0}
MEDIUM_DATA=${MEDIUM_DATA:-data/synthetic12h}
MEDIUM_EXP=${MEDIUM_EXP:-exp/gpu-medium-matryoshka}
MEDIUM_SET=${MEDIUM_SET:-}
MEDIUM_CORPUS=${MEDIUM_CORPUS:---train-hours 12 --train-360-hours 0}
DEVICE=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
phases=${*:-ablate medium}
for phase in $phases; do
  echo "=== $phase $(date +%T)"
  case $phase in
    ablate)
      python3 -m bench.recipe_ablation "$PLAN" --parallel "$PARALLEL" --workers "$WORKERS" ;;
    medium)
      python3 -m recipes.synthetic.run --work-dir "$MEDIUM_DATA" --exp-dir "$MEDIUM_EXP" \
        --config recipes/librispeech/conf/gpu-medium.yaml --config recipes/librispeech/conf/matryoshka.yaml \
        --set data.vocab_size=256 --set data.max_duration=300 \
        --set data.num_workers=4 --set 'model.encoder.merge.layers=[4,8]' $MEDIUM_SET \
        $MEDIUM_CORPUS --workers "$WORKERS" --max-minutes "$MINUTES" --stages data,train,decode
      python3 -m asr.evaluate --checkpoint "$MEDIUM_EXP/final.pt" --data-dir "$MEDIUM_DATA/prepared" \
        --parts test-clean --chunks 8 -1 --granularities all --device "$DEVICE"
      python3 -m bench.merging --checkpoint "$MEDIUM_EXP/final.pt" --data-dir "$MEDIUM_DATA/prepared" \
        --device "$DEVICE" --batch-sizes 1 64 --chunks -1 8 16 --max-utterances "$BENCH_UTTS" ;;
    *) echo "unknown phase $phase (ablate, medium)"; exit 2 ;;
  esac
done
echo "=== done $(date +%T)"
