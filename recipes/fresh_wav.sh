# Sourced by the recipes' run.sh: stage 4 writes its audio into an empty EXP/wav, so that no
# wav of an earlier run stays beside this run's and every path synthesize prints is where
# the file stays. The earlier run's folder waits in EXP/wav.old until this run completes;
# `put_back_wav EXP` (the recipe's EXIT trap, while `wav_aside` is set) restores it after a
# failure, and the next stage 4 does after a kill -9.

# a run folder that stage 2 has checkpointed (vocoder train writes DIR/checkpoints/step-N.pt)
has_checkpoint() { compgen -G "$1/checkpoints/step-*.pt" > /dev/null; }
count() { echo "$1 $2$([[ $1 -eq 1 ]] || echo s)"; }  # count 5 file: 5 files

put_back_wav() {
  if [[ -d "$1/wav.old" ]]; then rm -rf "$1/wav" && mv "$1/wav.old" "$1/wav"; fi
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
  rm -rf "$exp/wav.old"
  wav_aside=
  echo "stage 4: $(count "$(find "$exp/wav" -type f | wc -l)" file) in $exp/wav"
}
