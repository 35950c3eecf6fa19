"""Times the ops of bench_cuda in PyTorch on the same GPU and prints both side by side.
  python3 tools/bench/compare_cuda.py --results bench_cuda.jsonl
Reads bench_cuda's JSON lines; each op gets PyTorch's median time (CUDA events, after
warm-up) for the same shape and the ratio nmperm / PyTorch (below 1 is faster)."""
import argparse
import json

import torch


def median_ms(f, reps=20):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def peers():
    n = 1 << 26
    x, y = torch.full((n,), 0.5, device="cuda"), torch.full((n,), 0.5, device="cuda")
    big, row = torch.full((8192, 8192), 0.5, device="cuda"), torch.full((1, 8192), 0.5, device="cuda")
    rows, w = torch.full((65536, 1024), 0.5, device="cuda"), torch.full((1024,), 0.5, device="cuda")
    rows_g = rows.clone().requires_grad_()
    ln = torch.nn.functional.layer_norm(rows_g, (1024,), w, w, 1e-5)
    p = torch.full((n // 4,), 0.5, device="cuda")
    p.grad = torch.full_like(p, 0.5)
    opt = torch.optim.AdamW([p], fused=True)
    many = []
    for _ in range(64):
        for shape in ((512, 512), (1024,)):
            t = torch.full(shape, 0.5, device="cuda")
            t.grad = torch.full_like(t, 0.5)
            many.append(t)
    opt_many = torch.optim.AdamW(many, fused=True)
    out = {
        "gelu": lambda: torch.nn.functional.gelu(x),
        "add": lambda: x + y,
        "add_broadcast_row": lambda: big + row,
        "transpose_copy": lambda: big.t().contiguous(),
        "sum_rows": lambda: rows.sum(1),
        "softmax": lambda: torch.softmax(rows, 1),
        "layer_norm": lambda: torch.nn.functional.layer_norm(rows, (1024,), w, w, 1e-5),
        "layer_norm_backward": lambda: torch.autograd.grad(ln, rows_g, rows, retain_graph=True),
        "adamw": lambda: opt.step(),
        "adamw_many": lambda: opt_many.step(),
        "sum_squares": lambda: (x * x).sum(),
    }
    for s in (1024, 4096, 8192):
        a, b = torch.full((s, s), 0.01, device="cuda"), torch.full((s, s), 0.01, device="cuda")
        out[f"matmul_f32 {s}^3"] = lambda a=a, b=b: a @ b
    ba, bb = torch.full((512, 128, 64), 0.01, device="cuda"), torch.full((512, 64, 128), 0.01, device="cuda")
    out["bmm_f32"] = lambda: ba @ bb
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    ours = [json.loads(l) for l in open(args.results) if l.startswith("{")]
    theirs = peers()
    print(f"GPU: {torch.cuda.get_device_name()}, PyTorch {torch.__version__}")
    print("| op | shape | nmperm ms | achieved | PyTorch ms | ratio |")
    print("|---|---|---|---|---|---|")
    for r in ours:
        key = r["op"] if r["op"] in theirs else f'{r["op"]} {r["shape"]}'
        achieved = f'{r["GB/s"]:.0f} GB/s ({100 * r["peak_fraction"]:.0f}% of peak)' if "GB/s" in r \
            else f'{r["TFLOP/s"]:.1f} TFLOP/s'
        if key in theirs:
            t = median_ms(theirs[key])
            print(f'| {r["op"]} | {r["shape"]} | {r["ms"]:.3f} | {achieved} | {t:.3f} | {r["ms"] / t:.2f} |')
        else:
            print(f'| {r["op"]} | {r["shape"]} | {r["ms"]:.3f} | {achieved} | - | - |')


if __name__ == "__main__":
    main()
