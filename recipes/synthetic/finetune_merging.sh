#!/bin/bash
# Fine-tune the synthetic recipe's model (`python -m recipes.synthetic.run` first) into the merging
# models of docs/merging.md, then decode each at every granularity, streaming 320 / 640 ms and offline.
#
#   matryoshka   4 blocks (the base's 3 plus one grown as an identity), merges after blocks 2 and 3,
#                trained at full / fine / medium / coarse at once
#   coarse-only  the same model trained at coarse alone: the separately trained comparison
#   full-only    the same model trained at full alone (no merging): the comparison for full
#   mome         matryoshka with MoME feed-forwards after the merges (equal active size)
#
# Runs go JOBS at a time with THREADS threads each (1); a stopped run resumes from its last checkpoint, and a
# finished one is only decoded again. WER tables land in $PREFIX-<run>/wer.md (and their pictures in wer.png).
#
#   bash recipes/synthetic/finetune_merging.sh                                # the three runs, 2,000 steps
#   RUNS=coarse-only JOBS=1 THREADS=2 bash recipes/synthetic/finetune_merging.sh  # one run, both cores
#   RUNS="matryoshka coarse-only" STEPS=4000 bash recipes/synthetic/finetune_merging.sh
#   PREFIX=exp/noctc RUNS=matryoshka EXTRA="--set model.loss.ctc_on_merged=false" bash recipes/synthetic/finetune_merging.sh
#   BASE=exp/merging-matryoshka/final.pt PREFIX=exp/more bash ...           # 2,000 more steps, schedule restarted
set -eo pipefail
cd "$(dirname "$0")/../.."
BASE=${BASE:-exp/synthetic-cpu-small/final.pt}
DATA=${DATA:-data/synthetic/prepared}
STEPS=${STEPS:-2000}
RUNS=${RUNS:-matryoshka coarse-only mome}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
PREFIX=${PREFIX:-exp/merging}
EXTRA=${EXTRA:-}
PY=${PY:-.venv/bin/python}
[ -f "$BASE" ] || { echo "no base model at $BASE: run python -m recipes.synthetic.run first (or set BASE)" >&2; exit 1; }
CONF="--config recipes/librispeech/conf/cpu-small.yaml --config recipes/librispeech/conf/matryoshka.yaml"
CONF="$CONF --config recipes/librispeech/conf/matryoshka-late.yaml"
COMMON="--set init_from=$BASE --set data.data_dir=$DATA --set data.train_parts=[train-clean-100,train-clean-360]"
COMMON="$COMMON --set max_steps=$STEPS --set optim.lr=1.0e-3 --set optim.warmup_steps=50"

one() {
  local run=$1 dir=$PREFIX-$1 extra=""
  case $run in
    matryoshka) ;;
    coarse-only) extra="--set model.encoder.merge.granularities=[coarse] --set model.encoder.merge.values=[0.4]
                        --set model.encoder.merge.loss_weights=[1.0]";;
    full-only) extra="--set model.encoder.merge.granularities=[full] --set model.encoder.merge.values=[0.0]
                      --set model.encoder.merge.loss_weights=[1.0]";;
    mome) extra="--set model.encoder.moe.enabled=true";;
    *) echo "unknown run '$run': matryoshka, coarse-only, full-only or mome" >&2; return 1;;
  esac
  mkdir -p "$dir"
  if [ ! -f "$dir/final.pt" ]; then
    echo "$(date +%T) training $dir ($STEPS steps; log $dir/train.log, figures $dir/train_log.csv)"
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=$THREADS $PY -m asr.train $CONF $COMMON --set exp_dir="$dir" $extra $EXTRA > "$dir/train.log" 2>&1
  fi
  echo "$(date +%T) decoding $dir"
  OMP_NUM_THREADS=$THREADS $PY -m asr.evaluate --checkpoint "$dir/final.pt" --data-dir "$DATA" --granularities all \
    --chunks 8 16 -1 > "$dir/evaluate.log" 2>&1
  echo "$(date +%T) done $dir: $dir/wer.md"
}

running=0 failed=0
for run in $RUNS; do
  one "$run" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n || failed=1; running=$((running - 1)); fi
done
while [ "$running" -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
for run in $RUNS; do
  if [ -f "$PREFIX-$run/wer.md" ]; then echo "== $PREFIX-$run"; cat "$PREFIX-$run/wer.md"
  else echo "== $PREFIX-$run failed: see $PREFIX-$run/train.log and evaluate.log" >&2; fi
done
exit $failed
