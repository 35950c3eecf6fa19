#!/usr/bin/env bash
# Fuzzes every reader of outside data with libFuzzer (clang, AddressSanitizer + UBSan):
#   tools/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET...]
# Targets: safetensors config checkpoint idx tokens permutations (fuzz/targets.cpp).
# Builds into build-fuzz/, starts from the seeds in fuzz/corpus/<target> (regenerate with
# tools/make_fuzz_seeds.py) and keeps what it learns in build-fuzz/corpus/<target>.
# A crashing, hanging or memory-hungry input is written to build-fuzz/findings/ and the
# script exits 1; once fixed, copy it to fuzz/regressions/<target>/ so the test suite
# replays it (tests/test_fuzz_inputs.cpp). Prints executions and coverage per target.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(safetensors config checkpoint idx tokens permutations)

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNMPERM_FUZZ=ON -DNMPERM_CUDA=OFF \
  -DBUILD_TESTING=OFF >/dev/null
cmake --build build-fuzz -j "${JOBS:-$(nproc)}" --target $(printf 'fuzz_%s ' "${targets[@]}")

mkdir -p build-fuzz/findings
status=0
printf '%-14s %12s %10s %8s %8s  %s\n' target executions exec/s cov ft result
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  log="build-fuzz/fuzz_$t.log"
  # rss/malloc limits turn an unbounded allocation into a finding; -timeout a hang.
  if OMP_NUM_THREADS=1 "build-fuzz/fuzz_$t" "build-fuzz/corpus/$t" "fuzz/corpus/$t" -max_total_time="$secs" \
       -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 \
       -artifact_prefix="build-fuzz/findings/$t-" >"$log" 2>&1; then
    result=ok
  else
    result="FINDING (see $log, build-fuzz/findings/)"
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'exec/s: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  printf '%-14s %12s %10s %8s %8s  %s\n' "$t" "$execs" "$rate" "$cov" "$ft" "$result"
done
exit $status
