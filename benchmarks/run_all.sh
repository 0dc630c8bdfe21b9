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
# The figures that keep each form (docs/performance.md): the step, and the operation count,
# without it (a patch in benchmarks/without/ takes it out).
: >"$R/without_threads1_cpu.txt"
for spec in "conv_avg_pool_fusion notebook:1 notebook:64" "max_pool_taps default:64" "linear_outer notebook:1" \
  "relu_max_pool_fusion default:64 deep:64"; do
  read -r name workloads <<<"$spec"
  # shellcheck disable=SC2086  # workloads is a list of words on purpose
  cmd=(benchmarks/bench_against_commit.py --patch "benchmarks/without/$name.patch" --workloads $workloads
       --threads 1 --clock cpu --rounds 11)
  { echo "# python ${cmd[*]}"; "$PY" "${cmd[@]}"; echo; } | tee -a "$R/without_threads1_cpu.txt"
done
for name in relu_max_pool_fusion argmax_tiled_backward; do
  echo "# python benchmarks/bench_ops.py --patch benchmarks/without/$name.patch"
  "$PY" benchmarks/bench_ops.py --patch "benchmarks/without/$name.patch"
  echo
done | tee "$R/without_ops.txt"
# Inference against the commit before the inference work, then without each inference form.
{ echo '$ python benchmarks/bench_inference.py --rounds 5   # against 0614e3b, before issue 22'
  "$PY" benchmarks/bench_inference.py --rounds 5; } | tee "$R/inference.txt"
for name in conv_batchnorm_fusion inference_slices numpy_namespace; do
  { echo "\$ python benchmarks/bench_inference.py --patch benchmarks/without/$name.patch --rounds 5"
    "$PY" benchmarks/bench_inference.py --patch "benchmarks/without/$name.patch" --rounds 5; } \
    | tee "$R/inference_without_$name.txt"
done
ns=(benchmarks/bench_against_commit.py --patch benchmarks/without/numpy_namespace.patch
    --workloads notebook:1 notebook:64 default:64 --threads 1 --clock cpu --rounds 11)
{ echo "\$ python ${ns[*]}"; "$PY" "${ns[@]}"; } | tee "$R/without_numpy_namespace_threads1_cpu.txt"
run "$R/growth_threads$THREADS.txt" "$PY" benchmarks/bench_growth.py --threads "$THREADS" --plot "$R" \
  --json "$R/growth_threads$THREADS.json"
run "$R/allocator.txt" "$PY" benchmarks/bench_allocator.py
run "$R/jit_threads$THREADS.txt" env OMP_NUM_THREADS="$THREADS" "$PY" benchmarks/bench_jit.py --threads "$THREADS"
run "$R/distributed_threads1.txt" "$PY" benchmarks/bench_distributed.py
if [ "${SKIP_SLOW:-0}" != 1 ]; then
  "$PY" benchmarks/notebook_code_accuracy.py  # writes results/notebook_code_accuracy.txt itself
fi
echo "benchmarks/run_all.sh: done; results in $R" >&2
