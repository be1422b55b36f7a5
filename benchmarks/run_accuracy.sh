#!/usr/bin/env bash
# Reproduces every accuracy row of BENCHMARKS.md: MGCM ablations on the real tweet corpora with the offline
# encoders (../shared/tools/offline-models --with-mpnet), selection on valid only.
#
#   bash benchmarks/run_accuracy.sh            # every run, in priority order
#   ONLY='t15-minilm-(text|full)-' bash benchmarks/run_accuracy.sh   # the runs whose name matches
#   LIST=1 bash benchmarks/run_accuracy.sh     # print the run names and their state, run nothing
#
# Runs are named <dataset>-<encoder>-<config>-s<seed> and write to $OUT/<name>. A finished run (results.json)
# is skipped and an interrupted one resumes from its last checkpoint (every CHECKPOINT_STEPS optimizer steps
# and at every epoch end), mid-epoch included, so the script can be stopped and started again across sessions. Several copies may run at once (e.g. one per CPU core with THREADS=1): each
# run is claimed with a lock folder holding the owner's PID, and a lock whose owner is gone is taken over.
# Afterwards `python benchmarks/collect_accuracy.py` writes benchmarks/results/accuracy.json.
#
# Environment: OUT (outputs/benchmarks), MODELS (~/.cache/mgcm-offline-models), DATA (../shared/data),
# EPOCHS (5, for all-MiniLM-L6-v2), MPNET_EPOCHS (4, for all-mpnet-base-v2: the epoch count of the plain MPNet
# fine-tune the issue quotes as the reference, and what fits one session with 2 workers), PRECISION (bf16 where
# the CPU has avx512_bf16, 1.6x faster than fp32 there; no elsewhere, where bf16 is emulated and ~10x slower),
# CHECKPOINT_STEPS (50), KNOWLEDGE_LENGTH (200 word pieces of PGIM knowledge), KNOWLEDGE_DROPOUT (0.3, the
# input dropout of full+knowledge+dropout), THREADS (torch threads per run; unset = torch default), ONLY
# (regex), LIST.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-outputs/benchmarks}
MODELS=${MODELS:-$HOME/.cache/mgcm-offline-models}
DATA=${DATA:-../shared/data}
EPOCHS=${EPOCHS:-5}
MPNET_EPOCHS=${MPNET_EPOCHS:-4}
if grep -q avx512_bf16 /proc/cpuinfo 2>/dev/null; then PRECISION=${PRECISION:-bf16}; else PRECISION=${PRECISION:-no}; fi
CHECKPOINT_STEPS=${CHECKPOINT_STEPS:-50}
KNOWLEDGE_LENGTH=${KNOWLEDGE_LENGTH:-200}
KNOWLEDGE_DROPOUT=${KNOWLEDGE_DROPOUT:-0.3}
ONLY=${ONLY:-.}
GLOVE="$MODELS/glove-6b-50d"
mkdir -p "$OUT"

# Each config differs from the one above it by one part (text+shape+sa-add: the augmentation mode only);
# the +knowledge configs add PGIM's knowledge to full (or text) in one way each.
config_args() {
  local captions=$1 knowledge=$2
  local full="--captions_file $captions --word_vectors $GLOVE --augmentation_mode gate"
  local with_knowledge="--text_source knowledge=$knowledge --text_source_max_length knowledge=$KNOWLEDGE_LENGTH"
  case $3 in
    text) echo "--granularities= --augmentation_mode none --no_word_shape" ;;
    text+shape) echo "--granularities= --augmentation_mode none" ;;
    text+shape+sa) echo "--granularities= --word_vectors $GLOVE --augmentation_mode gate" ;;
    text+shape+sa-add) echo "--granularities= --word_vectors $GLOVE --augmentation_mode add" ;;
    full) echo "--granularities=caption --captions_file $captions --word_vectors $GLOVE --augmentation_mode gate" ;;
    full-aux)
      echo "--granularities=caption --captions_file $captions --word_vectors $GLOVE --augmentation_mode gate" \
        "--aux_span_loss_weight 0"
      ;;
    text+caption-concat)
      echo "--granularities= --captions_file $captions --caption_as_text_segment --augmentation_mode none" \
        "--no_word_shape"
      ;;
    full+knowledge)
      echo "--granularities=caption,knowledge $full $with_knowledge --drop_text_sources_at_eval knowledge"
      ;;
    full+knowledge-shared)
      echo "--granularities=caption,knowledge $full $with_knowledge --share_text_source_block" \
        "--drop_text_sources_at_eval knowledge"
      ;;
    full+knowledge+dropout)
      echo "--granularities=caption,knowledge $full $with_knowledge --input_dropout knowledge=$KNOWLEDGE_DROPOUT" \
        "--drop_text_sources_at_eval knowledge"
      ;;
    full+knowledge-concat)
      echo "--granularities=caption $full $with_knowledge --text_source_as_segment knowledge"
      ;;
    text+knowledge-concat)
      echo "--granularities= $with_knowledge --text_source_as_segment knowledge --augmentation_mode none" \
        "--no_word_shape"
      ;;
    *) echo "unknown config $3" >&2 && return 1 ;;
  esac
}

# The plan, in priority order: <dataset> <encoder> <config> <seed>.
plan() {
  local dataset config seed
  for seed in 1 2 3; do
    for dataset in t15 t17; do
      for config in text full; do echo "$dataset minilm $config $seed"; done
    done
  done
  for dataset in t15 t17; do
    for config in text+shape text+shape+sa text+shape+sa-add full-aux text+caption-concat; do
      echo "$dataset minilm $config 1"
    done
  done
  for dataset in t15 t17; do
    for config in text full; do echo "$dataset mpnet $config 1"; done
  done
  # More seeds where one seed left a question open: the MPNet target on Twitter-2015 test, and the two
  # single-seed Twitter-2017 rows that came out above the full model.
  for seed in 2 3; do
    for config in full text; do echo "t15 mpnet $config $seed"; done
  done
  for seed in 2 3; do
    for config in text+shape+sa-add full-aux; do echo "t17 minilm $config $seed"; done
  done
  # PGIM's knowledge (issue 16): MiniLM on both corpora, then MPNet on Twitter-2015.
  for seed in 1 2 3; do
    for dataset in t15 t17; do
      for config in full+knowledge full+knowledge-concat; do echo "$dataset minilm $config $seed"; done
    done
  done
  for dataset in t15 t17; do
    for config in text+knowledge-concat full+knowledge+dropout full+knowledge-shared; do
      echo "$dataset minilm $config 1"
    done
  done
  for seed in 1 2 3; do echo "t15 mpnet full+knowledge $seed"; done
  echo "t15 mpnet full+knowledge-concat 1"
  echo "t17 mpnet full+knowledge 1"
}

run_one() {
  local dataset=$1 encoder=$2 config=$3 seed=$4
  local name="$dataset-$encoder-$config-s$seed" dataset_dir captions knowledge splits encoder_dir epochs
  local run_dir="$OUT/$name" lock="$OUT/$name.lock"
  if [ -f "$run_dir/results.json" ]; then
    [ -n "${LIST:-}" ] && echo "done     $name"
    return 0
  fi
  if [ -n "${LIST:-}" ]; then
    if [ -d "$run_dir/checkpoints" ]; then echo "started  $name"; else echo "todo     $name"; fi
    return 0
  fi
  if ! mkdir "$lock" 2>/dev/null; then
    local owner
    owner=$(cat "$lock/pid" 2>/dev/null || true)
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then return 0; fi
    echo "taking over the stale lock of $name (owner ${owner:-unknown} is gone)"
  fi
  echo $$ >"$lock/pid"
  case $dataset in
    t15) dataset_dir="$DATA/twitter2015" splits=valid,test ;;
    t17) dataset_dir="$DATA/twitter2017" splits=valid ;;
  esac
  captions="$DATA/captions/${dataset_dir##*/}_blip2.txt" knowledge="$DATA/knowledge/${dataset_dir##*/}_pgim.txt"
  case $encoder in
    minilm) encoder_dir="$MODELS/all-MiniLM-L6-v2" epochs=$EPOCHS ;;
    mpnet) encoder_dir="$MODELS/all-mpnet-base-v2" epochs=$MPNET_EPOCHS ;;
  esac
  echo "$(date -u +%FT%TZ) start $name"
  # shellcheck disable=SC2046 # config_args yields separate arguments on purpose
  if ! ${THREADS:+env OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS} \
    accelerate launch --num_processes 1 --num_machines 1 --mixed_precision "$PRECISION" --dynamo_backend no \
    examples/train.py --dataset_dir "$dataset_dir" --text_model "$encoder_dir" \
    $(config_args "$captions" "$knowledge" "$config") \
    --url_token http --mixed_precision "$PRECISION" --num_train_epochs "$epochs" --seed "$seed" --final_eval_splits "$splits" \
    --output_dir "$run_dir" --cache_dir "$OUT/cache-$dataset" --keep_checkpoints 1 \
    --checkpointing_steps "$CHECKPOINT_STEPS" \
    --resume_from_checkpoint latest >"$OUT/$name.log" 2>&1; then
    echo "$(date -u +%FT%TZ) FAILED $name: see $OUT/$name.log" >&2
    rm -rf "$lock"
    return 0
  fi
  rm -rf "$run_dir/checkpoints" "$run_dir/best_model" "$lock"
  echo "$(date -u +%FT%TZ) done  $name"
}

plan | while read -r dataset encoder config seed; do
  [[ "$dataset-$encoder-$config-s$seed" =~ $ONLY ]] || continue
  run_one "$dataset" "$encoder" "$config" "$seed"
done
