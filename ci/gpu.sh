#!/usr/bin/env bash
# GPU parity, training and benchmark on a CUDA machine; writes a results file. See docs/gpu.md.
#
#   bash ci/gpu.sh [RESULTS_DIR]      # default: $OUT/gpu when $OUT is set, else runs/gpu
#
# Installs nothing from the network. The machine is expected to have Python, NumPy, CuPy, PyTorch,
# pytest and hypothesis; what it lacks (array-api-compat, array-api-strict, array-api-extra,
# safetensors, mlxtend) comes from the wheels in $WHEELS (default .whl, filled beforehand with
# `pip download --only-binary=:all: --no-deps --dest .whl ...`, see docs/gpu.md, and carried with
# the tree), installed into /tmp/site.
#
# Steps, each logged to RESULTS_DIR/<step>.log and summarised in RESULTS_DIR/results.md:
#   env       GPU, driver, library versions, xpcnn.available_backends()
#   cupy      CuPy must load as an xpcnn backend (a GPU run that silently skips proves nothing)
#   pytest    the parity suite (tests/test_parity.py, test_ops.py) with --backend
#             for each of $BACKENDS (cupy first): a backend that cannot load fails the run
#   parity    python -m xpcnn parity on numpy and $BACKENDS (the table)
#   train     XPCNN_BACKEND=cupy python -m xpcnn train $TRAIN_ARGS
#   bench     benchmarks/bench_train.py: xpcnn on CuPy against PyTorch on CUDA (--torch-device cuda;
#             every timed step synchronised): the notebook and default networks at batch 64, the
#             deep network and resnet8 at batch 256, inference at batch 1000
#   bench-torch  the same deep network and resnet8 at batch 256 with xpcnn on torch:cuda
# Exit status: 0 when every step passed, 1 otherwise. Every step runs regardless; a failing step
# is announced on stderr at once and listed again at the end.
#
# Environment: PYTHON (default python3), WHEELS (default .whl), BACKENDS (default "cupy torch:cuda";
# torch:cuda rows are skipped with their reason when PyTorch has no CUDA), TRAIN_ARGS (default none).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
BACKENDS=${BACKENDS:-cupy torch:cuda}
TRAIN_BACKEND=${BACKENDS%% *}
RESULTS=${1:-${OUT:+$OUT/gpu}}
RESULTS=${RESULTS:-runs/gpu}
mkdir -p "$RESULTS"
SUMMARY=$RESULTS/results.md

# Parity needs full-precision float32 matmuls: no TF32 anywhere.
unset CUPY_TF32
export NVIDIA_TF32_OVERRIDE=0

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$WHEELS"/*.whl || {
    echo "ci/gpu.sh: installing the wheels in $WHEELS failed" >&2; exit 2; }
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  wheels_note="installed from $WHEELS: $(find "$WHEELS" -maxdepth 1 -name '*.whl' -printf '%f ')"
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  wheels_note="no wheels in $WHEELS: using what $PY already has"
fi

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | paste -sd ';') \
  || gpu="nvidia-smi not available"
failed=()
{
  echo "# xpcnn GPU run"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- host: $(hostname)"
  echo "- gpu: $gpu"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- wheels: $wheels_note"
  echo "- backends: $BACKENDS"
  echo
  echo "| step | result | seconds | log |"
  echo "|---|---|---|---|"
} >"$SUMMARY"

# step NAME COMMAND...: run, log to RESULTS/NAME.log, append a summary row.
step() {
  local name=$1; shift
  local log=$RESULTS/$name.log start rc
  echo "== $name: $*" | tee "$log"
  start=$(date +%s)
  "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  local result=PASS
  if [ "$rc" -ne 0 ]; then
    result="FAIL (exit $rc)"
    failed+=("$name")
    echo "ci/gpu.sh: step '$name' FAILED (exit $rc); log: $log" >&2
  fi
  echo "| $name | $result | $(( $(date +%s) - start )) | $name.log |" >>"$SUMMARY"
}

step env bash -c "nvidia-smi; \"$PY\" - <<'EOF'
import platform, numpy, xpcnn
print('python', platform.python_version(), '| numpy', numpy.__version__, '| xpcnn', xpcnn.__version__)
for name in ('cupy', 'torch', 'array_api_compat', 'array_api_strict', 'safetensors', 'mlxtend'):
    try:
        module = __import__(name)
        print(name, getattr(module, '__version__', '?'))
    except ImportError as e:
        print(name, 'MISSING:', e)
try:
    import torch
    print('torch.cuda.is_available():', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
except ImportError:
    pass
for name, status in xpcnn.available_backends().items():
    print(f'{name}: {status}')
EOF"

step cupy "$PY" -c "from xpcnn.backend import load_backend; b = load_backend('$TRAIN_BACKEND'); print('loaded', b, 'device', b.device)"

backend_flags=()
for b in $BACKENDS; do backend_flags+=(--backend "$b"); done
step pytest "$PY" -m pytest tests/test_parity.py tests/test_ops.py "${backend_flags[@]}" \
  -p no:cacheprovider -q -rs

step parity "$PY" -m xpcnn parity --backend numpy "${backend_flags[@]}"

# shellcheck disable=SC2086  # TRAIN_ARGS is a list of words on purpose
step train env XPCNN_BACKEND="$TRAIN_BACKEND" "$PY" -m xpcnn train ${TRAIN_ARGS:-}

# Both sides on the GPU, both synchronised before the clock is read (benchmarks/harness.py).
step bench "$PY" benchmarks/bench_train.py --backend cupy --torch-device cuda --no-memory \
  --scenario train:notebook:64 --scenario train:default:64 --scenario train:deep:256 \
  --scenario train:resnet8:256 --scenario infer:notebook:1000 --json "$RESULTS/bench.json"

step bench-torch "$PY" benchmarks/bench_train.py --backend torch:cuda --torch-device cuda --no-memory \
  --scenario train:deep:256 --scenario train:resnet8:256 --json "$RESULTS/bench_torch.json"

{
  echo
  echo "## parity table"
  echo
  echo '```'
  grep -v '^== ' "$RESULTS/parity.log"
  echo '```'
  echo
  echo "## pytest summary"
  echo
  echo '```'
  grep -E 'parity cases run|skipped [0-9]+:|passed|failed|error' "$RESULTS/pytest.log" | tail -n 20
  echo '```'
  echo
  echo "## training (last lines)"
  echo
  echo '```'
  tail -n 8 "$RESULTS/train.log"
  echo '```'
  echo
  for name in bench bench-torch; do
    echo "## $name"
    echo
    echo '```'
    grep -v '^== ' "$RESULTS/$name.log" | tail -n 60
    echo '```'
  done
} >>"$SUMMARY"

echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "ci/gpu.sh: all steps passed; summary: $SUMMARY"
  exit 0
fi
echo "ci/gpu.sh: FAILED steps: ${failed[*]}; summary: $SUMMARY" >&2
exit 1
