#!/usr/bin/env bash
# Reproduce pretrained/waveflow-small-cpu: prepare, train on CPU, evaluate, register.
#
#   bash recipes/pretrained/run.sh [FIRST_STAGE [LAST_STAGE]]   (from anywhere)
#
# 1 vocoder prepare --config: ljspeech-mini and male-reader with their listed splits; the two
#   train (and valid) lists joined into exp/pretrained/data/{train,valid}.txt
# 2 vocoder train (waveflow-small-cpu.yaml) until MAX_STEPS; run again to resume
# 3 write fp32 and fp16 candidates; vocoder evaluate on both TEST splits: the full report
#   (LL and copy-synthesis vs Griffin-Lim) for DTYPE, the LL alone for the other one
# 4 vocoder synthesize: the CPU real-time factor on the LJ Speech test clips
# 5 collect the figures; copy the chosen candidate into pretrained/ and register it
# The test splits are read in stages 3 and 4 only: training never sees them.
set -euo pipefail
cd "$(dirname "$0")/../.."
first=${1:-1}
last=${2:-5}
SHARED=${SHARED:-../shared/data}
EXP=exp/pretrained
DATA=$EXP/data
RUN=$EXP/wf-small
EVAL=$EXP/eval
MAX_STEPS=${MAX_STEPS:-11000}
DTYPE=${DTYPE:-fp32}           # the shipped storage precision (stage 3 scores both)
PRECISION=${PRECISION:-}       # training precision; empty: the config's (auto)
HERE=recipes/pretrained
run() { [ "$first" -le "$1" ] && [ "$1" -le "$last" ]; }
die() { echo "run.sh: $*" >&2; exit 2; }
# a stage run before the stages that make its input: one line, exit 2 (missing STAGE WHAT M)
missing() {
  local stages="stages 1-$3"
  [ "$3" = 1 ] && stages="stage 1"
  die "stage $1 needs $2 (run $stages first; stage 1 needs $SHARED)"
}
. "$(dirname "$0")/../stages.sh"  # has_checkpoint
for value in "$first" "$last"; do
  [[ "$value" =~ ^[1-5]$ ]] || die "stages are 1..5, got '$value' (usage: run.sh [FIRST [LAST]])"
done
[ "$first" -le "$last" ] || die "stage $first is after stage $last: no stage to run"

if run 1; then
  for set in ljspeech-mini male-reader; do
    [ -d "$SHARED/$set" ] || die "stage 1 needs the shared data set $SHARED/$set (../shared/data beside the repo, or SHARED=DIR)"
  done
  vocoder prepare "$SHARED/ljspeech-mini" --out $DATA/ljspeech-mini --config $HERE/waveflow-small-cpu.yaml --force
  vocoder prepare "$SHARED/male-reader" --out $DATA/male-reader --config $HERE/waveflow-small-cpu.yaml --force
  for part in train valid; do
    cat $DATA/ljspeech-mini/$part.txt $DATA/male-reader/$part.txt > $DATA/$part.txt
  done
fi
if run 2; then
  for part in train valid; do
    [ -f $DATA/$part.txt ] || missing 2 "stage 1's list $DATA/$part.txt" 1
  done
  resume=()
  [ -d $RUN/checkpoints ] && resume=(--resume)
  precision=()
  [ -n "$PRECISION" ] && precision=("train.precision=$PRECISION")
  vocoder train --config $HERE/waveflow-small-cpu.yaml --out $RUN "${resume[@]}" \
    --max-steps "$MAX_STEPS" "${precision[@]}"
fi
if run 3; then
  has_checkpoint "$RUN" || missing 3 "stage 2's checkpoint $RUN" 2
  for split in ljspeech-mini male-reader; do
    [ -f $DATA/$split/test.txt ] || missing 3 "stage 1's test list $DATA/$split/test.txt" 1
  done
  mkdir -p $EVAL
  for d in fp32 fp16; do
    python $HERE/register.py $RUN --dtype $d --out $EVAL/$d --no-registry
    ll_only=()
    [ "$d" = "$DTYPE" ] || ll_only=(--no-synthesis)
    for split in ljspeech-mini male-reader; do
      vocoder evaluate --checkpoint $EVAL/$d.safetensors --filelist $DATA/$split/test.txt \
        --device cpu --sigma 0.8 --seed 0 --out $EVAL/$d-$split.json --force "${ll_only[@]}"
    done
  done
fi
if run 4; then
  [ -f $EVAL/$DTYPE.safetensors ] || missing 4 "stage 3's $DTYPE model $EVAL/$DTYPE.safetensors" 3
  [ -f $DATA/ljspeech-mini/test.txt ] || missing 4 "stage 1's test list $DATA/ljspeech-mini/test.txt" 1
  if ! vocoder synthesize $DATA/ljspeech-mini/test.txt --model $EVAL/$DTYPE.safetensors \
    --device cpu --batch-size 1 --seed 0 --out $EVAL/synthesized --force 2>&1 | tee $EVAL/synthesize.log; then
    rm -f $EVAL/synthesize.log  # no timing of a failed run for stage 5 to read
    exit 2
  fi
fi
if run 5; then
  other=$([ "$DTYPE" = fp32 ] && echo fp16 || echo fp32)
  has_checkpoint "$RUN" || missing 5 "stage 2's checkpoint $RUN" 2
  for report in $EVAL/{$DTYPE,$other}-{ljspeech-mini,male-reader}.json; do
    [ -f "$report" ] || missing 5 "stage 3's report $report" 3
  done
  [ -f $EVAL/synthesize.log ] || missing 5 "stage 4's log $EVAL/synthesize.log" 4
  python $HERE/collect_figures.py $EVAL/$DTYPE-ljspeech-mini.json $EVAL/$DTYPE-male-reader.json \
    --synthesize-log $EVAL/synthesize.log --other-dtype $other $EVAL/$other-*.json \
    --out $HERE/figures.json
  python $HERE/register.py $RUN --dtype $DTYPE --figures $HERE/figures.json
  vocoder models
fi
