# Sourced by the recipes' run.sh: what their stages share.

# a run folder that stage 2 has checkpointed (vocoder train writes DIR/checkpoints/step-N.pt)
has_checkpoint() { compgen -G "$1/checkpoints/step-*.pt" > /dev/null; }
count() { echo "$1 $2$([[ $1 -eq 1 ]] || echo s)"; }  # count 5 file: 5 files

# Stage 4 writes its audio into an empty EXP/wav, so that no wav of an earlier run stays
# beside this run's and every path synthesize prints is where the file stays. The earlier
# run's folder waits in EXP/wav.old (`wav_aside` set) until this run completes, and
# `restore_wav` (the recipe's EXIT trap) puts it back after a failure; the next stage 4
# does after a kill -9. A complete run's wav.old is renamed out of the way before it is
# deleted, so a signal during the deletion cannot bring half of it back.

put_back_wav() {
  rm -rf "$1/.wav.discard"
  if [[ -d "$1/wav.old" ]]; then rm -rf "$1/wav" && mv "$1/wav.old" "$1/wav"; fi
}

restore_wav() {  # EXP: after a failed stage 4
  if [[ -n "${wav_aside:-}" && -d "$1/wav.old" ]]; then
    put_back_wav "$1" && echo "run.sh: stage 4 failed: $1/wav holds the earlier run's audio again" >&2
  fi
}

# synthesize_fresh EXP INPUT...: the model of run folder EXP on the inputs, into EXP/wav
synthesize_fresh() {
  local exp=$1
  shift
  echo "stage 4: synthesize $(count $# "test clip") -> $exp/wav"
  put_back_wav "$exp"
  if [[ -e "$exp/wav" ]]; then mv "$exp/wav" "$exp/wav.old"; fi
  wav_aside=1
  vocoder synthesize "$@" --out "$exp/wav" --model "$exp" --seed 0 || return
  if [[ -e "$exp/wav.old" ]]; then mv "$exp/wav.old" "$exp/.wav.discard"; fi
  wav_aside=
  rm -rf "$exp/.wav.discard"
  echo "stage 4: $(count "$(find "$exp/wav" -type f | wc -l)" file) in $exp/wav"
}
