#!/usr/bin/env python3
"""Runs nmperm's CPU op benchmarks and the same ops in PyTorch at the same thread count,
and prints ours, PyTorch's and the ratio (ours / PyTorch; below 1 means we are faster).
Matmul is also compared with cblas_sgemm called directly from the same process.

    /usr/bin/python3 tools/bench/compare.py --bench build/bench_ops [--threads 1 2]

Run it with Debian's python3-torch. PyTorch's CPU speed depends on the libblas.so.3 it
loads: compare only when that is OpenBLAS (printed below), never the reference BLAS.
PyTorch 1.13 has no fused scaled_dot_product_attention or rms_norm: its attention and
RMSNorm here are the composed forms Hugging Face models run on that version.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# Give PyTorch's OpenBLAS the same kernel set nmperm selects for itself (see
# kernels/dispatch.h, select_blas_kernels): set before torch loads libopenblas.
if "OPENBLAS_CORETYPE" not in os.environ:
    _flags = _cpu_flags()
    if "avx512f" in _flags:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif "avx2" in _flags:
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# name -> (torch function builder) ; args mirror tools/bench/bench_ops.cpp
def t_matmul(M, K, N):
    a, b = torch.randn(M, K), torch.randn(K, N)
    return lambda: a @ b


def t_linear_fwdbwd(R, I, O):
    x, w, b = (torch.randn(R, I, requires_grad=True), torch.randn(O, I, requires_grad=True),
               torch.randn(O, requires_grad=True))
    g = torch.randn(R, O)

    def f():
        F.linear(x, w, b).backward(g)
        x.grad = w.grad = b.grad = None
    return f


def t_softmax(R, C, bwd):
    x, g = torch.randn(R, C, requires_grad=bwd), torch.randn(R, C)

    def f():
        y = F.softmax(x, -1)
        if bwd:
            y.backward(g)
            x.grad = None
    return f


def t_layer_norm(R, C, bwd):
    x, w, b = (torch.randn(R, C, requires_grad=bwd), torch.randn(C, requires_grad=bwd),
               torch.randn(C, requires_grad=bwd))
    g = torch.randn(R, C)

    def f():
        y = F.layer_norm(x, (C,), w, b, 1e-5)
        if bwd:
            y.backward(g)
            x.grad = w.grad = b.grad = None
    return f


def t_rms_norm(R, C, bwd):
    x, w, g = torch.randn(R, C, requires_grad=bwd), torch.randn(C, requires_grad=bwd), torch.randn(R, C)

    def f():
        y = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
        if bwd:
            y.backward(g)
            x.grad = w.grad = None
    return f


def t_attention(B, H, T, D, Hkv, causal, bwd):
    q = torch.randn(B, H, T, D, requires_grad=bwd)
    k = torch.randn(B, Hkv, T, D, requires_grad=bwd)
    v = torch.randn(B, Hkv, T, D, requires_grad=bwd)
    g = torch.randn(B, H, T, D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()

    def f():
        kk, vv = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        s = q @ kk.transpose(-1, -2) * (D ** -0.5)
        if causal:
            s = s.masked_fill(~mask, float("-inf"))
        y = F.softmax(s, -1) @ vv
        if bwd:
            y.backward(g)
            q.grad = k.grad = v.grad = None
    return f


def torch_case(name, args):
    base = name.replace("BM_", "")
    if base == "matmul":
        return t_matmul(*args)
    if base == "linear_fwdbwd":
        return t_linear_fwdbwd(*args)
    for op, fn in (("softmax", t_softmax), ("layer_norm", t_layer_norm), ("rms_norm", t_rms_norm),
                   ("attention", t_attention)):
        if base.startswith(op + "_"):
            return fn(*args, base.endswith("fwdbwd"))
    return None


def time_torch(fn, min_time=0.5):
    fn()  # warm-up
    n, best = 1, float("inf")
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = (time.perf_counter() - t0) / n
        best = min(best, dt)
        if dt * n >= min_time:
            # one more full round, keep the best per-iteration time (as the C++ side reports a mean
            # over a similar window, take the mean of this round for fairness)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - t0) / n
        n *= 2


def set_blas_threads(n):
    """torch.set_num_threads sets OpenMP's count only; PyTorch's OpenBLAS (pthreads build)
    keeps its own, so set it too or a '1 thread' PyTorch row would run BLAS on all cores."""
    import ctypes
    with open("/proc/self/maps") as f:
        libs = {os.path.realpath(line.split()[-1]) for line in f if "openblas" in line.lower()}
    for lib in libs:
        ctypes.CDLL(lib).openblas_set_num_threads(n)


def blas_in_use():
    """The BLAS library PyTorch loaded, and OpenBLAS's kernel set when it is OpenBLAS."""
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({os.path.realpath(line.split()[-1]) for line in f if "blas" in line.lower()})
    except OSError:
        return "unknown"
    desc = ", ".join(libs) or "unknown"
    for lib in libs:
        if "openblas" in lib:
            try:
                h = ctypes.CDLL(lib)
                h.openblas_get_corename.restype = ctypes.c_char_p
                desc += f" (OpenBLAS kernels: {h.openblas_get_corename().decode()})"
            except OSError:
                pass
    return desc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/bench_ops", help="path to the bench_ops binary")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to compare")
    ap.add_argument("--filter", default="", help="Google Benchmark filter regex for our side")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    ap.add_argument("--json", help="also write all rows to this file")
    a = ap.parse_args()

    torch.manual_seed(0)
    print(f"PyTorch {torch.__version__}; BLAS loaded by PyTorch: {blas_in_use()}")
    rows = []
    for threads in a.threads:
        env = dict(os.environ, NMPERM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        cmd = [a.bench, "--benchmark_format=json", f"--benchmark_min_time={a.min_time}"]
        if a.filter:
            cmd.append(f"--benchmark_filter={a.filter}")
        res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
        ctx = res["context"]
        torch.set_num_threads(threads)
        set_blas_threads(threads)
        print(f"\nthreads: nmperm {ctx.get('nmperm_threads')}, PyTorch {torch.get_num_threads()}; "
              f"nmperm BLAS: {ctx.get('blas', '?')}")
        ours = {}
        for b in res["benchmarks"]:
            parts = b["name"].split("/")
            ours[(parts[0], tuple(int(p) for p in parts[1:] if p.isdigit()))] = b["real_time"] / 1e6  # ns -> ms
        print(f"{'op':24} {'shape':22} {'nmperm ms':>10} {'peer ms':>10} {'ratio':>7}  peer")
        for (name, args), ms in ours.items():
            if name == "BM_openblas_sgemm":
                continue
            if name == "BM_matmul" and ("BM_openblas_sgemm", args) in ours:
                peer = ours[("BM_openblas_sgemm", args)]
                rows.append(dict(op=name, args=args, threads=threads, ours=ms, peer=peer, peer_name="OpenBLAS sgemm"))
                print(f"{name[3:]:24} {str(args):22} {ms:10.3f} {peer:10.3f} {ms / peer:7.2f}  OpenBLAS direct")
            fn = torch_case(name, args)
            if fn is None:
                continue
            peer = time_torch(fn, a.min_time) * 1e3
            rows.append(dict(op=name, args=args, threads=threads, ours=ms, peer=peer, peer_name="PyTorch"))
            print(f"{name[3:]:24} {str(args):22} {ms:10.3f} {peer:10.3f} {ms / peer:7.2f}  PyTorch")
    worst = max((r for r in rows if r["peer_name"] == "PyTorch"), key=lambda r: r["ours"] / r["peer"], default=None)
    if worst:
        print(f"\nworst ratio against PyTorch: {worst['ours'] / worst['peer']:.2f} "
              f"({worst['op'][3:]} {worst['args']} at {worst['threads']} threads)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
