#!/usr/bin/env bash
# LJ Speech recipe: a flow vocoder from download to synthesized test audio.
#
#   stage 0: download LJSpeech-1.1 (or unpack --archive), verify its SHA-256
#   stage 1: vocoder prepare --config: validate, split, write filelists; the manifest
#            records the conf's mel convention, which training checks
#   stage 2: vocoder train (--nproc N for N GPUs); resumes where it stopped
#   stage 3: vocoder evaluate: test-set LL, copy-synthesis vs Griffin-Lim
#   stage 4: vocoder synthesize: audio for the first test clips
#
# Usage: ./run.sh [options] [-- key.path=value ...]   (overrides go to vocoder train)
#   --stage N / --stop-stage N   run stages N..M (0..4)
#   --conf FILE                  experiment config (conf/waveflow-r64.yaml)
#   --db-root DIR                where LJSpeech-1.1/ is, or is unpacked to (downloads)
#   --corpus DIR                 the LJ Speech folder itself (default DB_ROOT/LJSpeech-1.1)
#   --data-dir DIR               prepared data (data/ljspeech)
#   --exp DIR                    run folder (exp/<conf name>)
#   --ngpu N                     GPUs for training (1): vocoder train --nproc N
#   --split NAME                 nanoflow (first 1,310 clips held out), espnet, tacotron2,
#                                hifigan (need --splits-dir), listed (the corpus's own
#                                train.txt/test.txt); default: listed when the corpus has
#                                those lists, else nanoflow (as vocoder prepare decides)
#   --splits-dir DIR             folder of the tacotron2_*/hifigan_* id lists
#   --archive FILE               a local LJSpeech-1.1.tar.bz2 (no download)
#   --sha256 HEX                 expected archive checksum (the published one by default)
#   --average N                  evaluate the mean of the last N checkpoints (1: off)
#   --eval-max-files N           evaluate on the first N test files only
#   --synth-max-files N          clips synthesized in stage 4 (10)
# Relative paths are taken from this folder (the script runs from here).
set -euo pipefail

stage=0
stop_stage=4
conf=conf/waveflow-r64.yaml
db_root=downloads
corpus=
data_dir=data/ljspeech
exp=
ngpu=1
split=
splits_dir=
archive=
url=https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2
sha256=be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5
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
    --conf) need "$@"; conf=$2; shift 2 ;;
    --db-root) need "$@"; db_root=$2; shift 2 ;;
    --corpus) need "$@"; corpus=$2; shift 2 ;;
    --data-dir) need "$@"; data_dir=$2; shift 2 ;;
    --exp) need "$@"; exp=$2; shift 2 ;;
    --ngpu) need "$@"; ngpu=$2; shift 2 ;;
    --split) need "$@"; split=$2; shift 2 ;;
    --splits-dir) need "$@"; splits_dir=$2; shift 2 ;;
    --archive) need "$@"; archive=$2; shift 2 ;;
    --sha256) need "$@"; sha256=$2; shift 2 ;;
    --average) need "$@"; average=$2; shift 2 ;;
    --eval-max-files) need "$@"; eval_max_files=$2; shift 2 ;;
    --synth-max-files) need "$@"; synth_max_files=$2; shift 2 ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

for value in "$stage" "$stop_stage"; do
  [[ "$value" =~ ^[0-4]$ ]] || die "--stage and --stop-stage take a stage 0..4, got '$value'"
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
corpus=${corpus:-$db_root/LJSpeech-1.1}

# The conf with the overrides applied, fully resolved: prepare takes its mel convention
# (sample rate, hop, mels...) and segment length from it, so the data and the run agree.
resolved=$(mktemp "${TMPDIR:-/tmp}/conf.XXXXXX.yaml")
# what a failing stage 0 made and takes back on the way out, last made first: its folders
# if still empty, an empty download (a partial one stays: the next run resumes it)
made=()
wav_aside=  # set while stage 4 runs with the earlier run's wav folder set aside
on_exit() {  # made and wav_aside are emptied as their stage completes
  local i path
  rm -f "$resolved"
  for (( i = ${#made[@]} - 1; i >= 0; i-- )); do
    path=${made[i]}
    if [[ -d "$path" ]]; then
      rmdir "$path" 2> /dev/null || true
    elif [[ -f "$path" && ! -s "$path" ]]; then
      rm -f "$path"
    fi
  done
  restore_wav "$exp"
}
trap on_exit EXIT
# mkdir -p DIR, noting in $made the folders it makes, outermost first
make_dir() {
  local dir=$1 new=()
  while [[ ! -e "$dir" ]]; do new=("$dir" ${new[@]+"${new[@]}"}); dir=$(dirname "$dir"); done
  mkdir -p "$1"
  made+=(${new[@]+"${new[@]}"})
}
convention=$("$python" ../resolve_conf.py "$conf" "$resolved" ${overrides[@]+"${overrides[@]}"}) || exit 2

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  echo "stage 0: LJSpeech-1.1 into $corpus"
  if [[ -f "$corpus/metadata.csv" ]]; then
    echo "  $corpus is there already"
  else
    [[ "$(basename "$corpus")" == LJSpeech-1.1 ]] || die "--corpus must end in LJSpeech-1.1 to unpack into it"
    downloaded=
    if [[ -z "$archive" ]]; then
      archive="$db_root/LJSpeech-1.1.tar.bz2"
      if [[ ! -f "$archive" ]]; then
        make_dir "$db_root"
        [[ -e "$archive.part" ]] || made+=("$archive.part")
        echo "  downloading $url (2.6 GB)"
        if command -v curl > /dev/null; then
          curl -fL --retry 3 -C - -o "$archive.part" "$url" || die "download failed (offline? pass --archive)"
        else
          wget -c -O "$archive.part" "$url" || die "download failed (offline? pass --archive)"
        fi
        mv "$archive.part" "$archive"
        downloaded=1
      fi
    fi
    [[ -f "$archive" ]] || die "no such archive: $archive"
    echo "  checking the SHA-256 of $archive"
    actual=$(sha256sum "$archive" | cut -d' ' -f1)
    if [[ "$actual" != "$sha256" ]]; then
      [[ -n "$downloaded" ]] && rm -f "$archive"  # a damaged download: the next run fetches it anew
      die "$archive: SHA-256 $actual, expected $sha256${downloaded:+ (the download is deleted)}"
    fi
    make_dir "$(dirname "$corpus")"
    tar -xjf "$archive" -C "$(dirname "$corpus")"
    [[ -f "$corpus/metadata.csv" ]] || die "$archive did not unpack to $corpus"
  fi
  made=()
fi

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  echo "stage 1: prepare $corpus -> $data_dir (${split:-default} split, $convention)"
  if [[ -f "$data_dir/manifest.json" ]]; then
    prepared=$("$python" ../prepared_as.py "$data_dir" ${split:+--split "$split"}) || exit 2
    echo "  $data_dir is prepared already ($prepared split; delete it to redo; training checks its mel convention)"
  else
    [[ -d "$corpus" ]] || die "stage 1 needs the corpus $corpus (run stage 0 first, or pass --corpus)"
    vocoder prepare "$corpus" --out "$data_dir" --config "$resolved" ${split:+--split "$split"} \
      ${splits_dir:+--splits-dir "$splits_dir"}
  fi
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  [[ -f "$data_dir/manifest.json" ]] \
    || die "stage 2 needs stage 1's prepared data in $data_dir (run stage 1 first)"
  echo "stage 2: train $conf -> $exp (ngpu $ngpu)"
  args=(train --nproc "$ngpu" --config "$conf" --out "$exp" --resume "data.prepared=$data_dir" ${overrides[@]+"${overrides[@]}"})
  vocoder "${args[@]}"
fi

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  [[ -f "$data_dir/test.txt" ]] || die "stage 3 needs stage 1's $data_dir/test.txt (run stage 1 first)"
  has_checkpoint "$exp" || die "stage 3 needs stage 2's checkpoint in $exp (run stage 2 first)"
  echo "stage 3: evaluate $exp on $data_dir/test.txt"
  vocoder evaluate --checkpoint "$exp" --filelist "$data_dir/test.txt" \
    --out "$exp/eval/report.json" --average "$average" --force \
    ${eval_max_files:+--max-files "$eval_max_files"}
fi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  [[ -f "$data_dir/test.txt" ]] || die "stage 4 needs stage 1's $data_dir/test.txt (run stage 1 first)"
  has_checkpoint "$exp" || die "stage 4 needs stage 2's checkpoint in $exp (run stage 2 first)"
  inputs=()
  while IFS= read -r line; do
    line=${line%%|*}
    [[ -z "$line" || "$line" == \#* ]] && continue
    [[ "$line" == /* ]] || line="$data_dir/$line"
    inputs+=("$line")
    [[ ${#inputs[@]} -ge $synth_max_files ]] && break
  done < "$data_dir/test.txt"
  [[ ${#inputs[@]} -gt 0 ]] || die "$data_dir/test.txt lists no files"
  synthesize_fresh "$exp" "${inputs[@]}"
fi
