#!/bin/bash
# Fine-tune the recipe's model (BASE) into a Matryoshka merging model, a coarse-only merging model
# and a Matryoshka model with MoME layers, each for STEPS steps, then decode each at every
# granularity. Usage: BASE=exp/synthetic-cpu-small/final.pt DATA=data/synthetic6h/prepared STEPS=300 \
#     bash recipes/synthetic/finetune_merging.sh
set -e
cd "$(dirname "$0")/../.."
BASE=${BASE:-exp/synthetic-cpu-small/final.pt}
DATA=${DATA:-data/synthetic6h/prepared}
STEPS=${STEPS:-300}
COMMON="--config recipes/librispeech/conf/cpu-small.yaml --config recipes/librispeech/conf/matryoshka.yaml --set init_from=$BASE --set data.data_dir=$DATA --set max_steps=$STEPS --set optim.lr=1.0e-3 --set optim.warmup_steps=50 --set checkpoint_every=100 --set model.encoder.dropout=0.05"
for m in matryoshka coarse-only matryoshka-mome; do
  case $m in
    matryoshka) extra="";;
    coarse-only) extra="--set model.encoder.merge.granularities=[coarse] --set model.encoder.merge.values=[0.4] --set model.encoder.merge.loss_weights=[1.0]";;
    matryoshka-mome) extra="--set model.encoder.moe.enabled=true";;
  esac
  [ -f exp/$m/final.pt ] || .venv/bin/python -m asr.train $COMMON --set exp_dir=exp/$m $extra > exp/$m.log 2>&1
  .venv/bin/python -m asr.evaluate --checkpoint exp/$m/final.pt --data-dir $DATA --parts test-clean --granularities all --chunks 8 -1 > exp/$m-eval.log 2>&1
done
echo "results: exp/{matryoshka,coarse-only,matryoshka-mome}/wer.md"
