#!/usr/bin/env bash
# One prepared GPU check (about 8 minutes in all), for a session lent a CUDA machine:
#
#   1 env           nvidia-smi, torch / CUDA versions
#   2 cuda_tests    the CUDA tests (pytest -m cuda: fast path, splines, features)
#   3 infer_speed   bench/inference_speed.py: the inference table, fp32 and bf16
#   4 train_speed   bench/train_speed.py: NanoFlow-r128, batch 8 x 16000 samples, bf16 and
#                   fp32 (the issue's figures), and fp16 with its grad scaler (skipped steps)
#   5 prepare       vocoder prepare of ljspeech-mini (its listed train/test split)
#   6 train         vocoder train, recipes/ljspeech/conf/nanoflow.yaml (NanoFlow-r128) in
#                   bf16 for TRAIN_SECONDS, then SIGTERM: it stops after the step, checkpointed
#   7 evaluate      vocoder evaluate --no-synthesis on the test split: the test LL
#   8 summary       summary.json: the figures the issue asks for, gathered
#
# Each step runs under `timeout` (a hang costs only its own limit) and tees its log into
# $OUT/<step>.log; one failing step does not stop the others. $OUT/summary.txt lists every
# step's exit status and seconds. Big files (data, checkpoints) stay in $WORK, not in $OUT.
# Cut short, pytest still reports what it ran (SIGTERM stops it like Ctrl-C) and the
# inference table keeps the rows it measured (it stops starting rows in time, target first).
#
# Layout: the data is a copy of ../shared/data/ljspeech-mini under the git-ignored
# .devdata/ folder of the repo (carried to the device machine by the run tool):
#
#   mkdir -p .devdata && cp -r ../shared/data/ljspeech-mini .devdata/
#
# .devdata/ljspeech-mini must hold wavs/, metadata.csv, train.txt and test.txt. The CUDA
# tests read only the clips shipped in tests/data.
#
# The device image has torch, torchaudio, scipy, numba, safetensors, tensorboard, yaml and
# tqdm, but not soundfile or librosa: carry them as wheels in the git-ignored .whl/ (the
# script installs whatever .whl/ holds into /tmp/site first; PESQ is not needed: the GPU
# evaluation scores the LL only). Here, in the repo root (Python 3.12 there):
#
#   pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     soundfile cffi pycparser librosa==0.11.0 audioread soxr pooch decorator pystoi
#   # device command:  bash bench/gpu_check.sh      (run tool: carry [".devdata", ".whl"])
#
# Environment: OUT (required: reports and logs), DATA_SRC (.devdata/ljspeech-mini), WORK
# (a fresh folder under /tmp), TRAIN_SECONDS (150), TRAIN_PRECISION (bf16),
# GPU_CHECK_BUDGET (540: seconds for everything; each step's limit is cut to what is left,
# and training to what is left minus 100 s), PYTHON (python3). GPU_CHECK_SMOKE=1 runs the
# same steps on the CPU with tiny settings (about a
# minute on a free core): a check of the script itself, no figures worth keeping.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
: "${OUT:?set OUT to the folder for reports and logs}"
DATA_SRC=${DATA_SRC:-.devdata/ljspeech-mini}
[[ -f "$DATA_SRC/train.txt" && -f "$DATA_SRC/test.txt" && -d "$DATA_SRC/wavs" ]] || {
  echo "gpu_check: no ljspeech-mini copy at $DATA_SRC (see the header for the layout)" >&2
  exit 2
}
TRAIN_SECONDS=${TRAIN_SECONDS:-150}
[[ ${GPU_CHECK_SMOKE:-0} == 1 ]] && TRAIN_SECONDS=${TRAIN_SECONDS_SMOKE:-25}
TRAIN_PRECISION=${TRAIN_PRECISION:-bf16}
BUDGET=${GPU_CHECK_BUDGET:-540}  # seconds for all the steps together
budget_end=$(($(date +%s) + BUDGET))
SMOKE=${GPU_CHECK_SMOKE:-0}
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the wheels are for the device's Python (3.12): a smoke run uses the local environment
if [[ $SMOKE != 1 ]] && compgen -G ".whl/*.whl" > /dev/null; then
  if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl; then
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  else  # the GPU steps need none of them: carry on, prepare and evaluate will say what lacks
    echo "gpu_check: installing .whl/ failed" >&2
  fi
fi
if [[ $SMOKE != 1 ]] && ! "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'
then
  echo "gpu_check: no CUDA GPU here (GPU_CHECK_SMOKE=1 checks the script on the CPU)" >&2
  exit 2
fi
WORK=${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT" "$WORK"
summary="$OUT/summary.txt"
: > "$summary"
failed=()  # steps that failed (train's 124 is its expected stop)

# the limit a step starting now gets: LIMIT, or what is left of the overall budget
limit_now() {
  local left=$((budget_end - $(date +%s)))
  echo $(($1 < left ? $1 : left))
}

# step NAME LIMIT_SECONDS COMMAND...: run under timeout (never past the overall budget),
# tee the log, record the status
step() {
  local name=$1 limit start rc
  limit=$(limit_now "$2")
  shift 2
  start=$(date +%s)
  if ((limit < 10)); then
    echo "$name skipped: the ${BUDGET}s budget is spent" | tee -a "$summary"
    return 125
  fi
  echo "=== $name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=20 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  echo "$name rc=$rc $(($(date +%s) - start))s" | tee -a "$summary"
  if ((rc != 0)) && ! [[ $name == train && $rc == 124 ]]; then
    failed+=("$name")
  fi
  return "$rc"
}

if [[ $SMOKE == 1 ]]; then
  device=cpu
  infer_args=(--device cpu --methods incremental --models waveflow-h16-r64 --repeats 1
              --cases 1x0.1 --threads 1)
  speed_args=(--model waveflow-h16-r64 --device cpu --batch 1 --samples 2048 --steps 1
              --warmup 0 --precisions fp32)
  train_conf=recipes/ljspeech/conf/smoke.yaml
  train_args=(data.num_workers=1 train.precision=fp32)  # a worker, as on the GPU
  eval_args=(--max-files 2)
  test_limit=120 infer_limit=120 speed_limit=60
else
  device=cuda
  # the plain inverse re-runs the whole network per row: time it on 1 s and scale
  infer_args=(--device cuda --precisions fp32,bf16 --repeats 3 --plain-max-seconds 1)
  speed_args=(--model nanoflow-h16-r128 --device cuda --batch 8 --samples 16000 --steps 30
              --warmup 5 --precisions bf16,fp32,fp16)
  train_conf=recipes/ljspeech/conf/nanoflow.yaml
  train_args=(data.num_workers=6 "train.precision=$TRAIN_PRECISION" train.device=cuda)
  eval_args=(--batch-size 8)
  test_limit=150 infer_limit=130 speed_limit=60
fi

step env 30 bash -c "nvidia-smi || true; $python -c 'import torch; print(torch.__version__, \
torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) \
if torch.cuda.is_available() else \"no CUDA\")'"

# pytest, with SIGTERM taken as Ctrl-C: stopped at its limit, it still lists what failed
pytest_stoppable='import signal, sys, pytest
signal.signal(signal.SIGTERM, signal.default_int_handler)
sys.exit(pytest.main(sys.argv[1:]))'
step cuda_tests "$test_limit" "$python" -c "$pytest_stoppable" -q -p no:cacheprovider -m cuda \
  -o faulthandler_timeout=60 --durations=15 \
  tests/test_inference_cuda.py tests/test_splines.py tests/test_features.py

# the table stops starting rows 30 s before its limit (a row takes up to about 20 s)
infer_budget=$(($(limit_now "$infer_limit") - 30))
step infer_speed "$infer_limit" "$python" bench/inference_speed.py "${infer_args[@]}" \
  --budget "$((infer_budget > 10 ? infer_budget : 10))" --json "$OUT/inference_speed.json"

step train_speed "$speed_limit" "$python" bench/train_speed.py "${speed_args[@]}" \
  --json "$OUT/train_speed.json"

step prepare 60 "$python" -m vocoder prepare "$DATA_SRC" --out "$WORK/data" --split listed

# Trains until TRAIN_SECONDS, then SIGTERM: the trainer finishes the step and checkpoints
# (timeout then reports 124: expected here). Validation is off (the test LL comes next).
left=$((budget_end - $(date +%s) - 100))  # keep 100 s for evaluate and summary
((TRAIN_SECONDS > left)) && TRAIN_SECONDS=$((left > 30 ? left : 30))
step train "$TRAIN_SECONDS" "$python" -m vocoder train --config "$train_conf" \
  --out "$WORK/run" "data.prepared=$WORK/data" train.max_steps=1000000 train.log_every=25 \
  train.valid_every=1000000 train.checkpoint_every=500 train.keep_last=2 "${train_args[@]}"
mkdir -p "$OUT/train"
cp "$WORK/run/config.yaml" "$WORK/run/train_log.jsonl" "$OUT/train/" 2> /dev/null

step evaluate 75 "$python" -m vocoder evaluate --checkpoint "$WORK/run" \
  --filelist "$WORK/data/test.txt" --no-synthesis --device "$device" --force \
  --out "$OUT/eval_test_ll.json" "${eval_args[@]}"

step summary 30 "$python" - "$OUT" << 'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def read(name):
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None

result = {}
speed = read("train_speed.json")
if speed:
    result["train_speed"] = {
        "model": speed["model"], "hardware": speed["hardware"],
        "batch": f'{speed["batch"]} x {speed["samples"]}',
        **{r["precision"]: {k: r[k] for k in ("steps_per_s", "samples_per_s")}
           for r in speed["results"]},
    }
log = out / "train" / "train_log.jsonl"
if log.is_file():
    entries = [json.loads(line) for line in log.read_text().splitlines() if line]
    train = [e for e in entries if e.get("kind") == "train"]
    if train:
        rates = [e["steps_per_s"] for e in train[1:] or train]
        result["train_run"] = {
            "steps": train[-1]["step"], "last_train_ll": train[-1]["ll"],
            "steps_per_s": sum(rates) / len(rates),
        }
report = read("eval_test_ll.json")
if report:
    result["test_ll"] = report["summary"]["ll"]
    result["test_files"] = report["summary"]["files"]
    result["test_ll_step"] = report["info"].get("step")
infer = read("inference_speed.json")
if infer:
    result["inference_rows"] = len(infer.get("results", []))
(out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
EOF

echo "work folder (data, checkpoints): $WORK"
cat "$summary"
if ((${#failed[@]})); then
  echo "gpu_check: failed: ${failed[*]}" >&2
  exit 1
fi
