#!/usr/bin/env bash
# nmperm set-up and entry point for a fresh Debian 12 machine.
#
#   ./setup.sh demo [ARGS...]   install what is missing, build, run `nmperm demo ARGS...`
#   ./setup.sh test             install what is missing, then everything CI runs: the CPU suite
#                               (build/), every CUDA test on the CUDA emulator in two thread
#                               orders (build-emu/), and both suites under ASan + UBSan (build-asan/)
#   ./setup.sh test-cpu         the CPU suite only (build/; CUDA tests skip without a GPU)
#   ./setup.sh test-cuda-emu    every CUDA test on the CUDA emulator, thread orders forward and
#                               shuffle:$SHUFFLE_SEED (default 1) (build-emu/)
#   ./setup.sh test-asan        the CPU suite and the emulated CUDA tests under AddressSanitizer +
#                               UBSan (build-asan/: -O2 with debug info, and the emulator)
#   ./setup.sh test-cuda-asan   only the emulated CUDA tests of that build
#   ./setup.sh test-cuda-tsan   the emulated CUDA tests under ThreadSanitizer (build-tsan/)
#   ./setup.sh fuzz [SECONDS]   libFuzzer on every reader of outside data, SECONDS per target (default 60)
#   ./setup.sh bench            build and run the CPU benchmarks (ops, training steps, the assignment
#                               solver) against today's PyTorch 2.x and SciPy from PyPI (a virtual
#                               environment, BENCH_VENV, default ~/.cache/nmperm/bench-venv) and
#                               against Debian's PyTorch 1.13; then mixed precision (bf16) against
#                               PyTorch's autocast, at the embedded widths and at real ones
#   ./setup.sh build            install what is missing and build only
#
# Packages come from Debian's archive and are installed only when missing (as root, or
# through sudo). CUDA is compiled in automatically when nvcc is found (/usr/local/cuda).
# Environment: BUILD_DIR (default build), JOBS (default: number of cores). The CUDA emulator
# reads NMPERM_CUDA_EMU_ORDER (forward, reverse, shuffle[:SEED], warp-ahead).
set -euo pipefail
cd "$(dirname "$0")"

# libopenblas-openmp-dev: the OpenMP build of OpenBLAS shares nmperm's thread pool.
BUILD_PKGS=(build-essential cmake pkg-config git libfmt-dev libgtest-dev libbenchmark-dev libopenblas-dev
            libopenblas-openmp-dev libcli11-dev nlohmann-json3-dev zlib1g-dev libpcre2-dev libutf8proc-dev
            libsentencepiece-dev libjpeg-dev libstb-dev libdnnl-dev)
DATA_PKGS=(dataset-fashion-mnist bible-kjv)
BENCH_PKGS=(python3-torch python3-numpy python3-scipy python3-venv)
BENCH_PYPI=(torch numpy scipy)  # the peers a user would install today, into BENCH_VENV
DEMO_PKGS=(gnuplot-nox)  # the demo report's plots (the tables do not need it)
FUZZ_PKGS=(clang libclang-rt-14-dev libomp-dev)
JOBS=${JOBS:-$(nproc)}

install_missing() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {  # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

timed() {  # timed LABEL COMMAND...: runs it, says how long it took
  local t0=$SECONDS
  "$@"
  echo "setup: $1 ... took $((SECONDS - t0)) s"
}

test_cpu() {
  build "${BUILD_DIR:-build}"
  (cd "${BUILD_DIR:-build}" && ctest --output-on-failure -j "$JOBS" -L cpu)
}

# Every CUDA test on the emulator, once per thread order.
test_cuda_emu() {  # DIR [cmake args...]
  local dir=$1; shift
  build "$dir" -DNMPERM_CUDA=EMU "$@"
  for order in forward "shuffle:${SHUFFLE_SEED:-1}"; do
    echo "setup: CUDA tests on the emulator, thread order $order"
    (cd "$dir" && NMPERM_CUDA_EMU_ORDER=$order ctest --output-on-failure -j "$JOBS" -L cuda)
  done
}

# Under AddressSanitizer + UBSan, with the CUDA emulator: LABEL cpu, cuda or "" for both.
test_asan() {
  build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNMPERM_SANITIZE=ON -DNMPERM_CUDA=EMU
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j "$JOBS" ${1:+-L "$1"})
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    install_missing "${BUILD_PKGS[@]}" "${DATA_PKGS[@]}" "${DEMO_PKGS[@]}"
    build "${BUILD_DIR:-build}"
    exec "${BUILD_DIR:-build}/nmperm" demo "$@" ;;
  test)
    install_missing "${BUILD_PKGS[@]}" "${DATA_PKGS[@]}"
    timed test_cpu
    timed test_cuda_emu build-emu
    timed test_asan ;;
  test-cpu)
    install_missing "${BUILD_PKGS[@]}" "${DATA_PKGS[@]}"
    test_cpu ;;
  test-cuda-emu)
    install_missing "${BUILD_PKGS[@]}" "${DATA_PKGS[@]}"
    test_cuda_emu build-emu ;;
  test-cuda-asan)
    install_missing "${BUILD_PKGS[@]}" "${DATA_PKGS[@]}"
    test_asan cuda ;;
  test-cuda-tsan)
    install_missing "${BUILD_PKGS[@]}" "${DATA_PKGS[@]}"
    build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNMPERM_CUDA=EMU -DNMPERM_TSAN=ON
    # One OpenMP and one OpenBLAS thread: their pools are not TSan-instrumented, and the
    # CPU reference kernels would report their barriers as races.
    cd build-tsan && OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
      exec ctest --output-on-failure -j "$JOBS" -L cuda ;;
  test-asan)
    install_missing "${BUILD_PKGS[@]}" "${DATA_PKGS[@]}"
    test_asan ;;
  fuzz)
    install_missing "${BUILD_PKGS[@]}" "${FUZZ_PKGS[@]}"
    exec tools/fuzz.sh "$@" ;;
  bench)
    install_missing "${BUILD_PKGS[@]}" "${BENCH_PKGS[@]}"
    build "${BUILD_DIR:-build}"
    venv=${BENCH_VENV:-$HOME/.cache/nmperm/bench-venv}
    [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade "${BENCH_PYPI[@]}"
    for py in "$venv/bin/python" /usr/bin/python3; do
      echo "setup: peers from $py: $("$py" -c 'import torch, scipy; print("PyTorch", torch.__version__, "SciPy", scipy.__version__)')"
      "$py" tools/bench/compare.py --bench "${BUILD_DIR:-build}/bench_ops" "$@"
      "$py" tools/bench/compare_train.py --bench "${BUILD_DIR:-build}/bench_train" --threads 2 1 --profile
      "$py" tools/bench/compare_assignment.py --bench "${BUILD_DIR:-build}/bench_assignment"
    done
    # Mixed precision against today's PyTorch, at the embedded widths and at real ones.
    py="$venv/bin/python"
    wide=(--vit-config tools/bench/configs/vit-base-4layers.json --vit-batch 16
          --llama-config tools/bench/configs/llama-2048-2layers.json --llama-batch 2 --llama-seq 256)
    "$py" tools/bench/compare_train.py --bench "${BUILD_DIR:-build}/bench_train" --threads 2 1 --precision bf16
    "$py" tools/bench/compare_train.py --bench "${BUILD_DIR:-build}/bench_train" --threads 2 --steps 3 "${wide[@]}"
    "$py" tools/bench/compare_train.py --bench "${BUILD_DIR:-build}/bench_train" --threads 2 --steps 3 "${wide[@]}" \
      --precision bf16 ;;
  build)
    install_missing "${BUILD_PKGS[@]}"
    build "${BUILD_DIR:-build}" ;;
  -h|--help|"")
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    echo "setup.sh: unknown command '$cmd' (try ./setup.sh --help)" >&2
    exit 2 ;;
esac
