#!/usr/bin/env bash
# Custom-voice recipe: a flow vocoder for your own recordings, from scratch or fine-tuned.
#
#   stage 1: vocoder prepare --config: scan the folder (wav/flac/ogg, any rate, searched
#            recursively), mix down to mono, resample to the conf's rate, split; the
#            manifest records the conf's mel convention, which training checks
#   stage 2: vocoder train (--nproc N for N GPUs); resumes where it stopped;
#            --init-from starts from a trained model; --mel-dir trains on your TTS
#            model's mels (<stem>.npy beside each recording's stem)
#   stage 3: vocoder evaluate: test-set LL, copy-synthesis vs Griffin-Lim (and, with
#            --mel-dir, a second report on the TTS mels)
#   stage 4: vocoder synthesize: audio for the first test clips
#
# Usage: ./run.sh --audio-dir DIR [options] [-- key.path=value ...]
#   --audio-dir DIR              your recordings (train.txt/test.txt id lists at its top
#                                give a listed split; else a seeded random 90/5/5 split)
#   --stage N / --stop-stage N   run stages N..M (1..4)
#   --conf FILE                  experiment config (conf/finetune-nanoflow.yaml)
#   --data-dir DIR               prepared data (data/<audio folder name>)
#   --exp DIR                    run folder (exp/<conf name>)
#   --ngpu N                     GPUs for training (1): vocoder train --nproc N
#   --init-from MODEL            fine-tune from this checkpoint / run folder / export,
#                                published checkpoint or pretrained name (same model
#                                and mel settings as the conf)
#   --mel-dir DIR                fine-tune on TTS-predicted mels (natural-log,
#                                [n_mels, frames] at the conf's hop)
#   --split NAME                 random or listed (default: listed when the lists exist)
#   --average N                  evaluate the mean of the last N checkpoints (1: off)
#   --eval-max-files N           evaluate on the first N test files only
#   --synth-max-files N          clips synthesized in stage 4 (10)
# Relative paths are taken from this folder (the script runs from here).
set -euo pipefail

stage=1
stop_stage=4
audio_dir=
conf=conf/finetune-nanoflow.yaml
data_dir=
exp=
ngpu=1
init_from=
mel_dir=
split=
average=1
eval_max_files=
synth_max_files=10
overrides=()

die() { echo "run.sh: $*" >&2; exit 2; }
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage) need "$@"; stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) need "$@"; stop_stage=$2; shift 2 ;;
    --audio-dir) need "$@"; audio_dir=$2; shift 2 ;;
    --conf) need "$@"; conf=$2; shift 2 ;;
    --data-dir) need "$@"; data_dir=$2; shift 2 ;;
    --exp) need "$@"; exp=$2; shift 2 ;;
    --ngpu) need "$@"; ngpu=$2; shift 2 ;;
    --init-from) need "$@"; init_from=$2; shift 2 ;;
    --mel-dir) need "$@"; mel_dir=$2; shift 2 ;;
    --split) need "$@"; split=$2; shift 2 ;;
    --average) need "$@"; average=$2; shift 2 ;;
    --eval-max-files) need "$@"; eval_max_files=$2; shift 2 ;;
    --synth-max-files) need "$@"; synth_max_files=$2; shift 2 ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

for value in "$stage" "$stop_stage"; do
  [[ "$value" =~ ^[1-4]$ ]] || die "--stage and --stop-stage take a stage 1..4, got '$value'"
done
(( stage <= stop_stage )) || die "--stage $stage is after --stop-stage $stop_stage: no stage to run"
[[ "$ngpu" =~ ^[1-9][0-9]*$ ]] || die "--ngpu takes a positive whole number, got '$ngpu'"
[[ "$synth_max_files" =~ ^[1-9][0-9]*$ ]] \
  || die "--synth-max-files takes a positive whole number, got '$synth_max_files'"

cd "$(dirname "$0")"
repo_root=$(cd ../.. && pwd)
export PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python}
. ../run_child.sh
. ../stages.sh
vocoder() { run_child "$python" -m vocoder "$@"; }
[[ -f "$conf" ]] || die "no such config: $conf"
exp=${exp:-exp/$(basename "${conf%.*}")}
if [[ -z "$data_dir" ]]; then
  [[ -n "$audio_dir" ]] || die "give --audio-dir (or --data-dir of a prepared folder)"
  data_dir=data/$(basename "$audio_dir")
fi
[[ -z "$mel_dir" || -d "$mel_dir" ]] || die "no such mel folder: $mel_dir"

# The conf with the overrides applied, fully resolved: prepare takes its mel convention
# (sample rate, hop, mels...) and segment length from it, so the data and the run agree.
resolved=$(mktemp "${TMPDIR:-/tmp}/conf.XXXXXX.yaml")
wav_aside=  # set while stage 4 runs with the earlier run's wav folder set aside
on_exit() {
  rm -f "$resolved"
  restore_wav "$exp"
}
trap on_exit EXIT
convention=$("$python" ../resolve_conf.py "$conf" "$resolved" ${overrides[@]+"${overrides[@]}"}) || exit 2

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  if [[ -f "$data_dir/manifest.json" ]]; then
    if [[ -n "$audio_dir" ]]; then  # made from these recordings, with the split asked for
      "$python" ../prepared_as.py "$data_dir" --source "$audio_dir" --layout folder \
        ${split:+--split "$split"} > /dev/null || exit 2
    fi
    echo "stage 1: $data_dir is prepared already (delete it to redo; training checks its mel convention)"
  else
    [[ -n "$audio_dir" ]] || die "stage 1 needs --audio-dir (no prepared data in $data_dir)"
    echo "stage 1: prepare $audio_dir -> $data_dir ($convention)"
    vocoder prepare "$audio_dir" --out "$data_dir" --layout folder --config "$resolved" \
      --resample --mixdown --skip-bad ${split:+--split "$split"}
  fi
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  [[ -f "$data_dir/manifest.json" ]] \
    || die "stage 2 needs stage 1's prepared data in $data_dir (run stage 1 first)"
  echo "stage 2: train $conf -> $exp (ngpu $ngpu)${init_from:+, from $init_from}${mel_dir:+, on the mels in $mel_dir}"
  if [[ -z "$init_from" && "$conf" == *finetune* && ! -d "$exp/checkpoints" ]]; then
    echo "  note: no --init-from: $(basename "$conf") trains from scratch (fine-tuning needs a trained model)"
  fi
  args=(train --nproc "$ngpu" --config "$conf" --out "$exp" --resume "data.prepared=$data_dir")
  [[ -n "$init_from" ]] && args+=("train.init_from=$init_from")
  [[ -n "$mel_dir" ]] && args+=("data.mel_dir=$mel_dir")
  args+=(${overrides[@]+"${overrides[@]}"})
  vocoder "${args[@]}"
fi

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  [[ -f "$data_dir/test.txt" ]] || die "stage 3 needs stage 1's $data_dir/test.txt (run stage 1 first)"
  has_checkpoint "$exp" || die "stage 3 needs stage 2's checkpoint in $exp (run stage 2 first)"
  echo "stage 3: evaluate $exp on $data_dir/test.txt"
  eval_args=(--checkpoint "$exp" --filelist "$data_dir/test.txt" --average "$average" --force
             ${eval_max_files:+--max-files "$eval_max_files"})
  vocoder evaluate "${eval_args[@]}" --out "$exp/eval/report.json"
  if [[ -n "$mel_dir" ]]; then
    echo "stage 3: ... and on the TTS mels in $mel_dir"
    vocoder evaluate "${eval_args[@]}" --mel-dir "$mel_dir" --out "$exp/eval/report_tts_mels.json"
  fi
fi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  [[ -f "$data_dir/test.txt" ]] || die "stage 4 needs stage 1's $data_dir/test.txt (run stage 1 first)"
  has_checkpoint "$exp" || die "stage 4 needs stage 2's checkpoint in $exp (run stage 2 first)"
  inputs=()
  while IFS= read -r line; do
    line=${line%%|*}
    [[ -z "$line" || "$line" == \#* ]] && continue
    [[ "$line" == /* ]] || line="$data_dir/$line"
    if [[ -n "$mel_dir" ]]; then  # the TTS mel: what the vocoder will get
      line="$mel_dir/$(basename "${line%.*}").npy"
      [[ -f "$line" ]] || die "$line: no such file (stage 4 synthesizes from the --mel-dir mels)"
    fi
    inputs+=("$line")
    [[ ${#inputs[@]} -ge $synth_max_files ]] && break
  done < "$data_dir/test.txt"
  [[ ${#inputs[@]} -gt 0 ]] || die "$data_dir/test.txt lists no files"
  synthesize_fresh "$exp" "${inputs[@]}"
fi
