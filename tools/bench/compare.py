#!/usr/bin/env python3
"""Runs nmperm's CPU op benchmarks and the same ops in PyTorch at the same thread count,
and prints ours, PyTorch's and the ratio (ours / PyTorch; below 1 means we are faster).
Matmul is also compared with cblas_sgemm called directly from the same process, the two
alternating call by call (bench_ops --interleaved-matmul).

    /usr/bin/python3 tools/bench/compare.py --bench build/bench_ops [--threads 1 2]

Run it with Debian's python3-torch. PyTorch's CPU speed depends on the libblas.so.3 it
loads: compare only when that is OpenBLAS (printed below), never the reference BLAS.
PyTorch 1.13 has no fused scaled_dot_product_attention or rms_norm: its attention and
RMSNorm here are the composed forms Hugging Face models run on that version; from 2.4 on
RMSNorm is F.rms_norm (PyTorch's best form, though transformers' LlamaRMSNorm still
composes it).
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
# kernels/runtime.h, select_blas_kernels): set before torch loads libopenblas.
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
        if hasattr(F, "rms_norm"):
            y = F.rms_norm(x, (C,), w, 1e-6)
        else:
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


def t_silu(R, C, fused):
    x, g = torch.randn(R, C, requires_grad=True), torch.randn(R, C)

    def f():
        y = F.silu(x) if fused else x * torch.sigmoid(x)
        y.backward(g)
        x.grad = None
    return f


def torch_case(name, args):
    base = name.replace("BM_", "")
    if base == "matmul":
        return t_matmul(*args)
    if base == "linear_fwdbwd":
        return t_linear_fwdbwd(*args)
    if base in ("silu_fwdbwd", "silu_composed_fwdbwd"):
        return t_silu(*args, base == "silu_fwdbwd")
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
        fn = getattr(ctypes.CDLL(lib), "openblas_set_num_threads", None)  # PyPI's numpy renames its OpenBLAS
        if fn is not None:
            fn(n)


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
            except (OSError, AttributeError):  # a renamed OpenBLAS (PyPI's numpy) lacks the symbol
                pass
    if hasattr(torch.backends, "mkldnn") and torch.backends.mkldnn.is_available():
        desc += "; oneDNN (mkldnn) available"
    if torch.backends.mkl.is_available():
        desc += "; MKL"
    return desc


def torch_worker(cases, min_time, threads):
    """Times the given cases in this process (started with the thread count in its env)."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    set_blas_threads(threads)
    out = []
    for name, args in cases:
        fn = torch_case(name, tuple(args))
        out.append(None if fn is None else time_torch(fn, min_time) * 1e3)
    return {"times": out, "threads": torch.get_num_threads(), "blas": blas_in_use(), "torch": torch.__version__}


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/bench_ops", help="path to the bench_ops binary")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to compare")
    ap.add_argument("--filter", default="", help="Google Benchmark filter regex for our side")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per op and side; the median is reported")
    ap.add_argument("--json", help="also write all rows to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:  # internal: time PyTorch cases listed in a JSON file, print JSON
        job = json.load(open(a.worker))
        print(json.dumps(torch_worker(job["cases"], a.min_time, job["threads"])))
        return 0

    rows = []
    for threads in a.threads:
        # Both sides get the thread count through the environment of a fresh process, so
        # OpenMP and every OpenBLAS copy start with it.
        env = dict(os.environ, NMPERM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads))
        # Alternate the two sides, one round each at a time, so a noisy stretch of the
        # machine hits both; report medians.
        cmd = [a.bench, "--benchmark_format=json", f"--benchmark_min_time={a.min_time}"]
        if a.filter:
            cmd.append(f"--benchmark_filter={a.filter}")
        import tempfile
        runs, peers, cases, job, ctx = {}, [], None, None, {}
        for _ in range(a.repeats):
            res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
            ctx = res["context"]
            for b in res["benchmarks"]:
                parts = b["name"].split("/")
                key = (parts[0], tuple(int(p) for p in parts[1:] if p.isdigit()))
                runs.setdefault(key, []).append(b["real_time"] / 1e6)  # ns -> ms
            if cases is None:
                cases = [(name, list(args)) for (name, args) in runs if name != "BM_openblas_sgemm"]
                with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                    json.dump({"cases": cases, "threads": threads}, f)
                job = f.name
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", job,
                                  "--min-time", str(a.min_time)], env=env, check=True, capture_output=True, text=True)
            peers.append(json.loads(out.stdout))
        os.unlink(job)
        ours = {k: median(v) for k, v in runs.items()}
        torch_ms = [median([p["times"][i] for p in peers]) if peers[0]["times"][i] is not None else None
                    for i in range(len(cases))]
        inter = subprocess.run([a.bench, "--interleaved-matmul"], env=env, check=True, capture_output=True, text=True)
        interleaved = [json.loads(line) for line in inter.stdout.splitlines() if line.startswith("{")]
        print(f"\nthreads: nmperm {ctx.get('nmperm_threads')}, PyTorch {peers[0]['threads']}")
        print(f"  nmperm products: {ctx.get('blas', '?')}")
        print(f"  PyTorch {peers[0]['torch']} BLAS: {peers[0]['blas']}")
        print(f"{'op':24} {'shape':22} {'nmperm ms':>10} {'peer ms':>10} {'ratio':>7}  peer   (medians of {a.repeats})")
        for i, (name, args) in enumerate(cases):
            args = tuple(args)
            ms = ours[(name, args)]
            if name == "BM_matmul":
                for r in interleaved:
                    if tuple(r["shape"]) == args:
                        o, p = r["nmperm_ms"], r["openblas_ms"]
                        rows.append(dict(op=name, args=args, threads=threads, ours=o, peer=p, peer_name="OpenBLAS sgemm"))
                        print(f"{name[3:]:24} {str(args):22} {o:10.3f} {p:10.3f} {o / p:7.2f}  OpenBLAS direct, "
                              "call by call")
            if torch_ms[i] is None:
                continue
            peer = torch_ms[i]
            rows.append(dict(op=name, args=args, threads=threads, ours=ms, peer=peer, peer_name="PyTorch"))
            print(f"{name[3:]:24} {str(args):22} {ms:10.3f} {peer:10.3f} {ms / peer:7.2f}  PyTorch")
    for peer_name in ("PyTorch", "OpenBLAS sgemm"):
        sel = [r for r in rows if r["peer_name"] == peer_name]
        if sel:
            w = max(sel, key=lambda r: r["ours"] / r["peer"])
            print(f"worst ratio against {peer_name}: {w['ours'] / w['peer']:.2f} "
                  f"({w['op'][3:]} {w['args']} at {w['threads']} threads)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
