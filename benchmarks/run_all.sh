#!/usr/bin/env bash
# Regenerate every committed benchmark result in benchmarks/results/ (and the figures in
# docs/benchmarks.md come from these files). Run it on a quiet machine: each script alternates
# its contenders and prints how busy the other processes kept the CPUs.
#
#   bash benchmarks/run_all.sh            # ~20 minutes, then ~40 more for the notebook-code accuracies
#   SKIP_SLOW=1 bash benchmarks/run_all.sh     # all but notebook_code_accuracy.py
#
# Environment: PYTHON (default python3), THREADS (default 2: the project's machine has 2 cores).
# Stops at the first script that fails (set -e with pipefail: a failure is never hidden by tee).
set -euo pipefail
cd "$(dirname "$0")/.." || exit 2

PY=${PYTHON:-python3}
THREADS=${THREADS:-2}
R=benchmarks/results
mkdir -p "$R"

run() {  # run OUTPUT COMMAND...: the command's stdout to the terminal and to OUTPUT
  local out=$1; shift
  echo "== $* > $out" >&2
  "$@" | tee "$out"
}

run "$R/train_threads$THREADS.txt" "$PY" benchmarks/bench_train.py --threads "$THREADS" \
  --json "$R/train_threads$THREADS.json"
run "$R/ops_per_step.txt" "$PY" benchmarks/bench_ops.py
run "$R/profile_threads$THREADS.txt" "$PY" benchmarks/bench_profile.py --threads "$THREADS"
run "$R/conv_pool_threads$THREADS.txt" "$PY" benchmarks/bench_conv_pool.py --threads "$THREADS"
run "$R/pool_method_threads$THREADS.txt" "$PY" benchmarks/bench_pool_method.py --threads "$THREADS"
run "$R/forms_threads$THREADS.txt" "$PY" benchmarks/bench_forms.py --threads "$THREADS"
run "$R/conv_parts_threads$THREADS.txt" "$PY" benchmarks/bench_conv_parts.py --threads "$THREADS"
run "$R/growth_threads$THREADS.txt" "$PY" benchmarks/bench_growth.py --threads "$THREADS" --plot "$R" \
  --json "$R/growth_threads$THREADS.json"
run "$R/allocator.txt" "$PY" benchmarks/bench_allocator.py
run "$R/jit_threads$THREADS.txt" env OMP_NUM_THREADS="$THREADS" "$PY" benchmarks/bench_jit.py --threads "$THREADS"
run "$R/distributed_threads1.txt" "$PY" benchmarks/bench_distributed.py
if [ "${SKIP_SLOW:-0}" != 1 ]; then
  "$PY" benchmarks/notebook_code_accuracy.py  # writes results/notebook_code_accuracy.txt itself
fi
echo "benchmarks/run_all.sh: done; results in $R" >&2
