#!/usr/bin/env python3
"""Injects known bugs into real CUDA kernels, one at a time, and records which of the CUDA
emulator's checks catches each.

  tools/emu_inject_bugs.py [--builds emu,asan,tsan] [--only NAME] [--out FILE]

For every bug: patch the kernel source, rebuild nmperm_cuda_tests in each emulated build
(build-emu, build-asan, build-tsan: make them first with ./setup.sh
test-cuda-emu / test-asan / test-cuda-tsan), run the tests that exercise the kernel
(thread orders forward and shuffle:1 on the plain build), note what reported it, and put
the source back. The table goes to stdout and to --out (markdown). The source is restored
even when interrupted; the builds are rebuilt from it at the end.
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ATTENTION = "CudaParity.AttentionForwardBackwardCausalAndGroupedHeads"
BUGS = [
    ("removed barrier", "kernels/cuda/attention.cu",
     "  stage(Vs, vh, s0, kKeys, d.S, d.D);\n  __syncthreads();\n}",
     "  stage(Vs, vh, s0, kKeys, d.S, d.D);\n}", ATTENTION),
    ("shared memory one row short", "kernels/cuda/attention.cu",
     "    size_t bytes = size_t(kRows + 2 * kKeys) * size_t(d.D + 1) * sizeof(T);",
     "    size_t bytes = size_t(kRows + 2 * kKeys - 1) * size_t(d.D + 1) * sizeof(T);", ATTENTION),
    ("warp mask missing a lane", "kernels/cuda/attention.cu",
     "  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n  return v;",
     "  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0x7fffffffu, v, o);\n  return v;", ATTENTION),
    ("off-by-one at a ragged edge", "kernels/cuda/reduce.cu",
     "  NMPERM_GRID_STRIDE(c, N) {", "  NMPERM_GRID_STRIDE(c, N + 1) {", "CudaParity.RowAndColumnReductions"),
    ("wrong row stride", "kernels/cuda/softmax.cu",
     "  const T* xr = x + int64_t(blockIdx.x) * K;", "  const T* xr = x + int64_t(blockIdx.x) * (K + 1);",
     "CudaParity.SoftmaxAndLogSoftmax"),
    ("launch over the shared-memory limit (opt-in removed)", "kernels/cuda/attention.cu",
     "    allow_shared(attention_forward_kernel<T>, bytes);\n", "", ATTENTION),
    ("shared accumulator never zeroed", "kernels/cuda/attention.cu",
     "  for (int64_t e = lane; e < kKeys * Dp; e += 32) dKs[e] = dVs[e] = T(0);\n", "", ATTENTION),
    ("race between blocks (every block adds into one output)", "kernels/cuda/reduce.cu",
     "  if (threadIdx.x == 0) out[blockIdx.x] = T(op == ReduceOp::Mean ? s / double(K) : s);",
     "  if (threadIdx.x == 0) out[blockIdx.x] = T(op == ReduceOp::Mean ? s / double(K) : s);\n"
     "  if (threadIdx.x == 1 && blockIdx.x > 0) out[0] += T(0) * out[blockIdx.x - 1];",
     "CudaParity.RowAndColumnReductions"),
]

BUILDS = {
    "emu": ("build-emu", [("forward", {}), ("shuffle:1", {})]),
    "asan": ("build-asan", [("forward", {"ASAN_OPTIONS": "detect_leaks=0"})]),
    "tsan": ("build-tsan", [("forward", {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                             "TSAN_OPTIONS": "halt_on_error=1"})]),
}


def verdict(rc, out):
    """What caught the bug, from a test run's exit status and output."""
    if "ThreadSanitizer: data race" in out:
        return "TSan: data race"
    m = re.search(r"AddressSanitizer: ([\w-]+)", out)
    if m:
        return "ASan: " + m.group(1)
    m = re.search(r"cuda emulator: (.*)", out)
    if m:
        line = m.group(1)
        for key, name in [("deadlock", "emulator: deadlock"), ("not in its own mask", "emulator: warp mask"),
                          ("exited, but", "emulator: warp mask"), ("meet at different", "emulator: warp mask"),
                          ("which mask", "emulator: warp mask"),
                          ("dynamic shared memory, more than", "emulator: launch over the shared-memory limit"),
                          ("wrote past its", "emulator: shared-memory guard"),
                          ("wrote past the end", "emulator: allocation canary"),
                          ("not in a live device allocation", "emulator: pointer check")]:
            if key in line:
                return name
        return "emulator: " + line[:80]
    if rc != 0:
        return "parity test: results differ" if "Failure" in out or "FAILED" in out else f"exit {rc}"
    return "not caught"


def run(cmd, env=None, timeout=900):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def build(dirname):
    rc, out = run(["cmake", "--build", dirname, "-j", str(os.cpu_count() or 2), "--target", "nmperm_cuda_tests"])
    if rc != 0:
        sys.exit(f"build of {dirname} failed:\n{out[-3000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builds", default="emu,asan,tsan")
    ap.add_argument("--only", help="run only the bug whose name contains this")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    builds = [b for b in a.builds.split(",") if b]
    for b in builds:
        if not os.path.isdir(os.path.join(ROOT, BUILDS[b][0])):
            sys.exit(f"{BUILDS[b][0]}/ is missing: build it first (see --help)")
    header = ["bug", "file"] + [f"{b} ({o})" for b in builds for o, _ in BUILDS[b][1]]
    rows = []
    touched = set()
    try:
        for name, path, old, new, tests in BUGS:
            if a.only and a.only not in name:
                continue
            full = os.path.join(ROOT, path)
            src = open(full).read()
            if src.count(old) != 1:
                sys.exit(f"{name}: the text to change is not found once in {path}")
            open(full, "w").write(src.replace(old, new))
            touched.add(path)
            row = [name, path]
            try:
                for b in builds:
                    d, orders = BUILDS[b]
                    build(d)
                    for order, env in orders:
                        t0 = time.time()
                        rc, out = run([f"{d}/nmperm_cuda_tests", f"--gtest_filter={tests}"],
                                      dict(env, NMPERM_CUDA_EMU_ORDER=order))
                        v = verdict(rc, out)
                        row.append(v)
                        first = re.search(r"(cuda emulator: .*|WARNING: ThreadSanitizer.*|ERROR: AddressSanitizer.*)", out)
                        print(f"  {name} | {b} {order}: {v} ({time.time() - t0:.0f} s)"
                              + (f"\n      {first.group(1)[:300]}" if first else ""), flush=True)
            finally:
                open(full, "w").write(src)
            rows.append(row)
    finally:
        for b in builds:
            build(BUILDS[b][0])
    table = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    table += "".join("| " + " | ".join(r) + " |\n" for r in rows)
    print(table)
    if a.out:
        open(a.out, "w").write(table)


if __name__ == "__main__":
    main()
