#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and nvcc:
#   tools/gpu-check.sh OUT_DIR
# Builds with CUDA (build-gpu/), runs every test, the CUDA parity tests included
# (ctest -L cuda), then one permutation learning step of a 4096 x 4096 site on the GPU
# (bench_permute), the GPU microbenchmarks (tools/bench/bench_cuda.cpp) and, when PyTorch
# with CUDA is importable, the same ops in PyTorch with the ratios, and training steps of
# the embedded models. Everything lands in OUT_DIR: nvidia-smi.txt, build.log,
# ctest-cuda.log, ctest-cpu.log, permute_step.txt, bench_cuda.jsonl, bench_cuda.md,
# train_step.txt, scale_1b.txt (a timed block-by-block prune of a Llama-3.2-1B-shaped
# checkpoint on the GPU), summary.txt. Sized to finish in a few minutes on one H200.
set -uo pipefail
out=${1:?usage: tools/gpu-check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
jobs=$(nproc)
summary="$out/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || note "nvidia-smi failed (see nvidia-smi.txt)"
start=$(date +%s)
if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DNMPERM_CUDA=ON -DNMPERM_CUDA_ARCHS="${NMPERM_CUDA_ARCHS:-90}" &&
       cmake --build build-gpu -j "$jobs"; } >"$out/build.log" 2>&1; then
  note "BUILD FAILED after $(( $(date +%s) - start )) s (build.log; a missing package shows near its end)"
  tail -30 "$out/build.log"
  exit 1
fi
note "build: $(( $(date +%s) - start )) s"

status=0
(cd build-gpu && ctest -L cuda --output-on-failure --timeout 300) >"$out/ctest-cuda.log" 2>&1 || status=1
note "cuda tests: $(grep -E 'tests passed|tests failed' "$out/ctest-cuda.log" | tail -1)"
grep -q "Not Run\|Skipped" "$out/ctest-cuda.log" && note "WARNING: some CUDA tests were skipped (no device seen?)"
(cd build-gpu && ctest -L cpu -j "$jobs" --output-on-failure --timeout 300) >"$out/ctest-cpu.log" 2>&1 || status=1
note "cpu tests: $(grep -E 'tests passed|tests failed' "$out/ctest-cpu.log" | tail -1)"

timeout 180 build-gpu/bench_permute 4096 5 --device cuda >"$out/permute_step.txt" 2>&1 || { note "bench_permute failed"; status=1; }
cat "$out/permute_step.txt"

build-gpu/bench_cuda >"$out/bench_cuda.jsonl" 2>>"$summary" || { note "bench_cuda failed"; status=1; }
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  python3 tools/bench/compare_cuda.py --results "$out/bench_cuda.jsonl" >"$out/bench_cuda.md" 2>&1 || status=1
else
  note "PyTorch with CUDA not importable: no peer timings"
  cp "$out/bench_cuda.jsonl" "$out/bench_cuda.md"
fi
cat "$out/bench_cuda.md"

# Training steps of the embedded models on the GPU, beside PyTorch when it has CUDA.
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  timeout 120 python3 tools/bench/compare_train.py --bench build-gpu/bench_train --device cuda --rounds 1 \
    >"$out/train_step.txt" 2>&1 || { note "compare_train failed"; status=1; }
else
  timeout 120 build-gpu/bench_train --device cuda >"$out/train_step.txt" 2>&1 || { note "bench_train failed"; status=1; }
fi
# Mixed precision (bf16 linear layers through cuBLAS GemmEx, f32 masters).
timeout 120 build-gpu/bench_train --device cuda --precision bf16 >>"$out/train_step.txt" 2>&1 ||
  { note "bench_train --precision bf16 failed"; status=1; }
cat "$out/train_step.txt"
# One timed run of the block pipeline at Llama-3.2-1B's shapes: every block moved to the GPU
# as it is loaded from the mapped bf16 shards, calibrated, pruned (Wanda 2:4; the
# permutation searches are host code) and evaluated.
ckpt=build-gpu/llama-1b
if build-gpu/make_llama "$ckpt" >"$out/scale_1b.txt" 2>&1; then
  cp tests/fixtures/tokenizers/llama3/tokenizer.json tests/fixtures/tokenizers/llama3/tokenizer_config.json "$ckpt"/
  text=tests/fixtures/tokenizers/corpus.jsonl.gz
  /usr/bin/time -v timeout 300 build-gpu/nmperm prune --checkpoint "$ckpt" --text "$text" --calib "$text" \
    --seqlen 512 --nsamples 16 --eval-windows 16 --permute none --device cuda >>"$out/scale_1b.txt" 2>&1 ||
    { note "1B-shape prune on the GPU failed"; status=1; }
  note "1B-shape prune on the GPU: $(grep -E 'Elapsed|Maximum resident' "$out/scale_1b.txt" | tr -s ' ' | tr '\n' ';')"
  # The same model's evaluation in f32 and in bf16 (cuBLAS GemmEx), for their ratio.
  for p in f32 bf16; do
    timeout 120 build-gpu/nmperm eval --checkpoint "$ckpt" --text "$text" --seqlen 512 --windows 16 \
      --pipeline block --device cuda --precision "$p" --json >>"$out/scale_1b.txt" 2>&1 ||
      { note "1B-shape eval --precision $p on the GPU failed"; status=1; }
  done
else
  note "make_llama failed"; status=1
fi
tail -5 "$out/scale_1b.txt"
note "total: $(( $(date +%s) - start )) s, status $status"
exit $status
