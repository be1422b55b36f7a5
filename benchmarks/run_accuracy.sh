#!/usr/bin/env bash
# Reproduces every accuracy row of BENCHMARKS.md: MGCM ablations on the real tweet corpora with the offline
# encoders (../shared/tools/offline-models --with-mpnet), selection on valid only.
#
#   bash benchmarks/run_accuracy.sh            # every run, in priority order
#   ONLY='t15-minilm-(text|full)-' bash benchmarks/run_accuracy.sh   # the runs whose name matches
#   LIST=1 bash benchmarks/run_accuracy.sh     # print the run names and their state, run nothing
#
# Runs are named <dataset>-<encoder>-<config>-s<seed> and write to $OUT/<name>. A finished run (results.json, or
# its records in $ACCURACY: a new machine has none of the old run folders) is skipped and an interrupted one
# resumes from its last checkpoint (every CHECKPOINT_STEPS optimizer steps and at every epoch end), mid-epoch
# included, so the script can be stopped and started again across sessions that keep $OUT. Several copies may
# run at once (e.g. one per CPU core with THREADS=1): each
# run is claimed with a lock folder holding the owner's PID, and a lock whose owner is gone is taken over.
# Afterwards `python benchmarks/collect_accuracy.py` writes benchmarks/results/accuracy.json.
#
# Environment: OUT (outputs/benchmarks), MODELS (~/.cache/mgcm-offline-models), DATA (../shared/data),
# EPOCHS (5, for all-MiniLM-L6-v2), MPNET_EPOCHS (4, for all-mpnet-base-v2: the epoch count of the plain MPNet
# fine-tune the issue quotes as the reference, and what fits one session with 2 workers), PRECISION (bf16 on a
# CUDA GPU and where the CPU has avx512_bf16, 1.6x faster than fp32 there; no elsewhere, where the CPU emulates
# bf16 5-10x slower),
# CHECKPOINT_STEPS (25, for all-MiniLM-L6-v2: 3-10 minutes of one 1-thread worker), MPNET_CHECKPOINT_STEPS (10:
# an MPNet step takes 3-5 times as long; a session's end loses what came after the last checkpoint),
# KNOWLEDGE_LENGTH (200 word pieces of PGIM knowledge), KNOWLEDGE_DROPOUT (the knowledge
# input dropout of full+knowledge+dropout; unset = the rate benchmarks/select_input_dropout.py picks from the
# sweep, which runs only while KNOWLEDGE_DROPOUT is unset), DROPOUT_SWEEP (the sweep's rates: 0.25 0.5 0.75),
# SWEEP_EPOCHS (1), ACCURACY (benchmarks/results/accuracy.json; a path that is no file runs every run), THREADS
# (torch threads per run; unset = torch default), ONLY (regex), LIST.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-outputs/benchmarks}
MODELS=${MODELS:-$HOME/.cache/mgcm-offline-models}
DATA=${DATA:-../shared/data}
EPOCHS=${EPOCHS:-5}
MPNET_EPOCHS=${MPNET_EPOCHS:-4}
if [ -z "${PRECISION:-}" ]; then
  PRECISION=no
  if grep -q avx512_bf16 /proc/cpuinfo 2>/dev/null || python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    PRECISION=bf16
  fi
fi
CHECKPOINT_STEPS=${CHECKPOINT_STEPS:-25}
MPNET_CHECKPOINT_STEPS=${MPNET_CHECKPOINT_STEPS:-10}
KNOWLEDGE_LENGTH=${KNOWLEDGE_LENGTH:-200}
KNOWLEDGE_DROPOUT=${KNOWLEDGE_DROPOUT:-}
DROPOUT_SWEEP=${DROPOUT_SWEEP:-0.25 0.5 0.75}
SWEEP_EPOCHS=${SWEEP_EPOCHS:-1}
ONLY=${ONLY:-.}
ACCURACY=${ACCURACY:-benchmarks/results/accuracy.json}
RECORDED=
if [ -f "$ACCURACY" ]; then
  RECORDED=$(python -c 'import json, sys; print("\n".join({r["run"] for r in json.load(open(sys.argv[1]))}))' "$ACCURACY")
fi
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
    full+knowledge-grad) # target 2's probes: the knowledge pass trained, or read in two cross-attention layers
      echo "--granularities=caption,knowledge $full $with_knowledge --text_source_gradient" \
        "--drop_text_sources_at_eval knowledge"
      ;;
    full+knowledge-cross2)
      echo "--granularities=caption,knowledge $full $with_knowledge --num_cross_attention_layers 2" \
        "--drop_text_sources_at_eval knowledge"
      ;;
    full+knowledge+dropout*) # the rate is the name's suffix (the sweep) or the sweep's choice
      echo "--granularities=caption,knowledge $full $with_knowledge" \
        "--input_dropout knowledge=${3#full+knowledge+dropout}" "--drop_text_sources_at_eval knowledge"
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
  # PGIM's knowledge (issue 16), cheapest answer to each target first: one seed of MGCM's way and of PGIM's
  # way (target 2), the MPNet run of target 1, the short input-dropout sweep (1 epoch each, MiniLM,
  # Twitter-2015 valid) and the dropout run it sets (target 3), Twitter-2017 valid (target 4); then seeds.
  echo "t15 minilm full+knowledge 1"
  echo "t15 minilm full+knowledge-concat 1"
  echo "t15 mpnet full+knowledge 1"
  if [ -z "$KNOWLEDGE_DROPOUT" ]; then
    for rate in $DROPOUT_SWEEP; do echo "t15 minilm full+knowledge+dropout$rate 1 $SWEEP_EPOCHS"; done
  fi
  echo "t15 minilm full+knowledge+dropout 1"
  echo "t17 minilm full+knowledge 1"
  # Target 2's probes: is concat's lead the gradient through the knowledge, or the one cross-attention step?
  for config in full+knowledge-cross2 full+knowledge-grad; do echo "t15 minilm $config 1"; done
  echo "t15 minilm text+knowledge-concat 1"
  for seed in 2 3; do
    for config in full+knowledge full+knowledge-concat; do echo "t15 minilm $config $seed"; done
  done
  for seed in 2 3; do echo "t15 mpnet full+knowledge $seed"; done
  echo "t17 mpnet full+knowledge 1"
  echo "t17 minilm full+knowledge-concat 1"
  for config in text+knowledge-concat full+knowledge+dropout; do echo "t17 minilm $config 1"; done
  for seed in 2 3; do
    for config in full+knowledge full+knowledge-concat; do echo "t17 minilm $config $seed"; done
  done
  for dataset in t15 t17; do echo "$dataset minilm full+knowledge-shared 1"; done
  echo "t15 mpnet full+knowledge-concat 1"
}

# Prints the input-dropout rate of full+knowledge+dropout: KNOWLEDGE_DROPOUT, else the sweep's choice; fails
# while the sweep is unfinished.
chosen_dropout() {
  if [ -n "$KNOWLEDGE_DROPOUT" ]; then echo "$KNOWLEDGE_DROPOUT" && return 0; fi
  # shellcheck disable=SC2086 # one argument per rate
  python benchmarks/select_input_dropout.py "$OUT/sweep-e$SWEEP_EPOCHS" $DROPOUT_SWEEP 2>/dev/null
}

# run_one <dataset> <encoder> <config> <seed> [<epochs>]: a run with an epoch count of its own is a sweep
# point, kept apart under $OUT/sweep-e<epochs>/.
run_one() {
  local dataset=$1 encoder=$2 config=$3 seed=$4 sweep_epochs=${5:-}
  local name="${sweep_epochs:+sweep-e$sweep_epochs/}$dataset-$encoder-$config-s$seed"
  local dataset_dir captions knowledge splits encoder_dir epochs checkpoint_steps rate
  local run_dir="$OUT/$name" lock="$OUT/$name.lock"
  if [ -f "$run_dir/results.json" ]; then
    [ -n "${LIST:-}" ] && echo "done     $name"
    return 0
  fi
  if grep -qxF "$name" <<<"$RECORDED"; then
    [ -n "${LIST:-}" ] && echo "recorded $name"
    return 0
  fi
  if [ "$config" = full+knowledge+dropout ]; then
    if ! rate=$(chosen_dropout); then
      [ -n "${LIST:-}" ] && echo "waiting  $name (for the input-dropout sweep)"
      return 0
    fi
    config=full+knowledge+dropout$rate
  fi
  if [ -n "${LIST:-}" ]; then
    if [ -d "$run_dir/checkpoints" ]; then echo "started  $name"; else echo "todo     $name"; fi
    return 0
  fi
  mkdir -p "$(dirname "$lock")"
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
  [ -n "$sweep_epochs" ] && splits=valid
  captions="$DATA/captions/${dataset_dir##*/}_blip2.txt" knowledge="$DATA/knowledge/${dataset_dir##*/}_pgim.txt"
  case $encoder in
    minilm) encoder_dir="$MODELS/all-MiniLM-L6-v2" epochs=$EPOCHS checkpoint_steps=$CHECKPOINT_STEPS ;;
    mpnet) encoder_dir="$MODELS/all-mpnet-base-v2" epochs=$MPNET_EPOCHS checkpoint_steps=$MPNET_CHECKPOINT_STEPS ;;
  esac
  epochs=${sweep_epochs:-$epochs}
  echo "$(date -u +%FT%TZ) start $name"
  # shellcheck disable=SC2046 # config_args yields separate arguments on purpose
  if ! ${THREADS:+env OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS} \
    accelerate launch --num_processes 1 --num_machines 1 --mixed_precision "$PRECISION" --dynamo_backend no \
    examples/train.py --dataset_dir "$dataset_dir" --text_model "$encoder_dir" \
    $(config_args "$captions" "$knowledge" "$config") \
    --url_token http --mixed_precision "$PRECISION" --num_train_epochs "$epochs" --seed "$seed" --final_eval_splits "$splits" \
    --output_dir "$run_dir" --cache_dir "$OUT/cache-$dataset" --keep_checkpoints 1 \
    --checkpointing_steps "$checkpoint_steps" \
    --resume_from_checkpoint latest >>"$OUT/$name.log" 2>&1; then
    echo "$(date -u +%FT%TZ) FAILED $name: see $OUT/$name.log" >&2
    rm -rf "$lock"
    return 0
  fi
  rm -rf "$run_dir/checkpoints" "$run_dir/best_model" "$lock"
  echo "$(date -u +%FT%TZ) done  $name"
}

plan | while read -r dataset encoder config seed sweep_epochs; do
  [[ "$dataset-$encoder-$config-s$seed" =~ $ONLY ]] || continue
  run_one "$dataset" "$encoder" "$config" "$seed" $sweep_epochs
done
