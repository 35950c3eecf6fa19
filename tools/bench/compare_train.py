#!/usr/bin/env python3
"""Training-step time (forward + backward + clip + AdamW) of the embedded default ViT and
Llama: nmperm (tools/bench/bench_train.cpp) against the same models written in PyTorch,
same batch, same thread count, alternating the two sides in fresh processes; medians.

    /usr/bin/python3 tools/bench/compare_train.py --bench build/bench_train [--threads 2]
    python3 tools/bench/compare_train.py --bench build-gpu/bench_train --device cuda   (GPU, both sides)
    python3 tools/bench/compare_train.py --precision bf16   (mixed precision: nmperm --precision bf16
                                                             against PyTorch's bf16 autocast)
    python3 tools/bench/compare_train.py --profile    (also: milliseconds per step in each op family,
                                                       nmperm's core/profile.h against torch.profiler)
    python3 tools/bench/compare_train.py --compile    (PyTorch >= 2.0: its models under torch.compile,
                                                       compiled during the warm-up steps)
    python3 tools/bench/compare_train.py --vit-config tools/bench/configs/vit-base-4layers.json --vit-batch 16 \
        --llama-config tools/bench/configs/llama-2048-2layers.json --llama-batch 2 --llama-seq 256
                                                      (any Hugging Face config.json, random weights, on
                                                       both sides: the figures at real widths)

With --precision bf16 each round also runs nmperm in f32, and the table adds nmperm's bf16
time over its own f32 time; nmperm's bf16 evaluation keeps the linear weights in bf16, as
`nmperm eval --precision bf16` does.

The PyTorch models mirror Hugging Face's ViTForImageClassification and LlamaForCausalLM
with the same sizes. Their attention is PyTorch's best CPU setting, scaled_dot_product_attention
(SDPA, PyTorch >= 2.0, as transformers uses it there); PyTorch 1.13 has no SDPA and runs the
eager form (--attention eager forces it anywhere).
"""
import argparse
import collections
import contextlib
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import blas_in_use, median, set_blas_threads  # noqa: E402 (sets OPENBLAS_CORETYPE first)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


ATTENTION = "sdpa" if hasattr(F, "scaled_dot_product_attention") else "eager"
PROFILING = False  # the optimizer's work is marked as a region only while profiling


def optimizer_region():
    return torch.profiler.record_function("optimizer") if PROFILING else contextlib.nullcontext()


# PyTorch's ops by family, as nmperm's core/profile.h groups its kernels (self time of each
# op; everything under the "optimizer" region counts as optimizer).
FAMILIES = [
    ("attention", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "conv", "mkldnn_convolution")),
    ("norms", ("layer_norm",)),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("softmax", ("softmax",)),
    ("index/embedding", ("embedding", "index_select", "gather", "scatter", "aten::index")),
    ("copies", ("copy_", "clone", "contiguous", "aten::cat", "repeat_interleave", "_to_copy", "aten::to")),
    ("allocation", ("aten::empty", "aten::zeros", "zeros_like", "new_zeros", "new_empty", "aten::fill_",
                    "aten::zero_", "resize_")),
    ("reductions", ("aten::sum", "aten::mean", "aten::amax", "aten::max")),
    ("elementwise", ("aten::add", "aten::mul", "aten::div", "aten::sub", "aten::neg", "aten::pow", "aten::rsqrt",
                     "gelu", "silu", "aten::cos", "aten::sin", "masked_fill", "aten::where", "threshold", "aten::exp",
                     "aten::sqrt", "aten::reciprocal", "aten::sigmoid")),
]


def torch_family(ev):
    p = ev
    while p is not None:
        if p.name == "optimizer":
            return "optimizer"
        p = p.cpu_parent
    for fam, keys in FAMILIES:
        if any(k in ev.name for k in keys):
            return fam
    return "autograd and other"


def profile_steps(fn, steps):
    """{family: ms per step} of `steps` steps under torch.profiler; "step" is their wall time
    (which includes the profiler's own overhead)."""
    global PROFILING
    PROFILING = True
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        wall = (time.perf_counter() - t0) * 1e3 / steps
    PROFILING = False
    fam = collections.Counter()
    for ev in prof.events():
        fam[torch_family(ev)] += ev.self_cpu_time_total / 1e3 / steps
    fam["autograd and other"] = wall - sum(v for k, v in fam.items() if k != "autograd and other")
    return dict(fam, step=wall)


class Attention(nn.Module):
    def __init__(self, C, H, Hkv, bias, rope_theta=None, causal=False):
        super().__init__()
        D = C // H
        self.H, self.Hkv, self.D, self.causal, self.theta = H, Hkv, D, causal, rope_theta
        self.q, self.k = nn.Linear(C, H * D, bias), nn.Linear(C, Hkv * D, bias)
        self.v, self.o = nn.Linear(C, Hkv * D, bias), nn.Linear(H * D, C, bias if rope_theta is None else False)

    def rope(self, x):
        T, D = x.shape[2], self.D
        inv = 1.0 / (self.theta ** (torch.arange(0, D, 2).float() / D))
        f = torch.outer(torch.arange(T).float(), inv)
        emb = torch.cat((f, f), -1)
        rot = torch.cat((-x[..., D // 2:], x[..., :D // 2]), -1)
        return x * emb.cos() + rot * emb.sin()

    def forward(self, x):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k(x).view(B, T, self.Hkv, self.D).transpose(1, 2)
        v = self.v(x).view(B, T, self.Hkv, self.D).transpose(1, 2)
        if self.theta is not None:
            q, k = self.rope(q), self.rope(k)
        g = self.H // self.Hkv
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        if ATTENTION == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            s = q @ k.transpose(-1, -2) / math.sqrt(self.D)
            if self.causal:
                s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
            y = F.softmax(s, -1) @ v
        return self.o(y.transpose(1, 2).reshape(B, T, -1))


def config(path, defaults):
    """The Hugging Face config.json at `path` over the embedded model's values."""
    c = dict(defaults)
    if path:
        with open(path) as f:
            c.update(json.load(f))
    return c


VIT_DEFAULTS = dict(image_size=28, patch_size=4, num_channels=1, hidden_size=128, num_hidden_layers=4,
                    num_attention_heads=4, intermediate_size=512, num_labels=10, layer_norm_eps=1e-12)
LLAMA_DEFAULTS = dict(vocab_size=256, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=384, rms_norm_eps=1e-5, rope_theta=10000.0)


class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.w, self.eps = nn.Parameter(torch.ones(C)), eps

    def forward(self, x):
        return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class ViT(nn.Module):
    def __init__(self, c):
        super().__init__()
        img, P, Cin, C = c["image_size"], c["patch_size"], c["num_channels"], c["hidden_size"]
        L, H, M, labels, eps = (c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"],
                                c["num_labels"], c["layer_norm_eps"])
        N = (img // P) ** 2
        self.proj = nn.Conv2d(Cin, C, P, P)
        self.cls = nn.Parameter(torch.randn(1, 1, C) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, N + 1, C) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(L):
            self.blocks.append(nn.ModuleDict(dict(ln1=nn.LayerNorm(C, eps=eps), attn=Attention(C, H, H, True),
                                                  ln2=nn.LayerNorm(C, eps=eps), fc1=nn.Linear(C, M),
                                                  fc2=nn.Linear(M, C))))
        self.ln = nn.LayerNorm(C, eps=eps)
        self.head = nn.Linear(C, labels)

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for b in self.blocks:
            x = x + b["attn"](b["ln1"](x))
            x = x + b["fc2"](F.gelu(b["fc1"](b["ln2"](x))))
        return self.head(self.ln(x)[:, 0])


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        V, C, L, H = c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]
        Hkv, M, eps, theta = c["num_key_value_heads"], c["intermediate_size"], c["rms_norm_eps"], c["rope_theta"]
        assert c.get("head_dim", C // H) == C // H, "this PyTorch Llama takes head_dim = hidden_size / heads"
        self.emb = nn.Embedding(V, C)
        self.blocks = nn.ModuleList()
        for _ in range(L):
            self.blocks.append(nn.ModuleDict(dict(n1=RMSNorm(C, eps), attn=Attention(C, H, Hkv, False, theta, True),
                                                  n2=RMSNorm(C, eps), gate=nn.Linear(C, M, False),
                                                  up=nn.Linear(C, M, False), down=nn.Linear(M, C, False))))
        self.norm = RMSNorm(C, eps)
        self.head = nn.Linear(C, V, False)

    def forward(self, ids):
        x = self.emb(ids)
        for b in self.blocks:
            x = x + b["attn"](b["n1"](x))
            h = b["n2"](x)
            x = x + b["down"](F.silu(b["gate"](h)) * b["up"](h))
        return self.head(self.norm(x))


def torch_steps(a, warmup, device="cpu", precision="f32", profiled=False, compiled=False):
    """Median step times; precision bf16 runs forward and loss under torch.autocast(bf16);
    compiled wraps both models in torch.compile (the warm-up steps compile them)."""
    cast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    torch.manual_seed(0)
    out = {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    steps, vc, lc = a.steps, config(a.vit_config, VIT_DEFAULTS), config(a.llama_config, LLAMA_DEFAULTS)
    vit = ViT(vc).to(device)
    opt = torch.optim.AdamW(vit.parameters(), lr=1e-3, weight_decay=0.05)
    vit_fwd = torch.compile(vit) if compiled else vit
    x = torch.randn(a.vit_batch, vc["num_channels"], vc["image_size"], vc["image_size"], device=device)
    y = torch.arange(a.vit_batch, device=device) % vc["num_labels"]

    def vstep():
        with optimizer_region():
            opt.zero_grad(set_to_none=True)
        with cast():
            loss = F.cross_entropy(vit_fwd(x), y)
        loss.backward()
        with optimizer_region():
            torch.nn.utils.clip_grad_norm_(vit.parameters(), 1.0)
            opt.step()
    llama, V = Llama(lc).to(device), lc["vocab_size"]
    lopt = torch.optim.AdamW(llama.parameters(), lr=1e-3, weight_decay=0.05)
    llama_fwd = torch.compile(llama) if compiled else llama
    w = torch.randint(0, V, (a.llama_batch, a.llama_seq + 1), device=device)

    def lstep():
        with optimizer_region():
            lopt.zero_grad(set_to_none=True)
        with cast():
            loss = F.cross_entropy(llama_fwd(w[:, :-1]).reshape(-1, V), w[:, 1:].reshape(-1))
        loss.backward()
        with optimizer_region():
            torch.nn.utils.clip_grad_norm_(llama.parameters(), 1.0)
            lopt.step()

    def leval():
        with torch.inference_mode(), cast():
            F.cross_entropy(llama_fwd(w[:, :-1]).reshape(-1, V), w[:, 1:].reshape(-1)).item()
    for name, fn in (("vit_ms", vstep), ("llama_ms", lstep), ("llama_eval_ms", leval)):
        for _ in range(warmup):
            fn()
        ms = []
        for _ in range(steps):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ms.append((time.perf_counter() - t0) * 1e3)
        out[name] = median(ms)
        if profiled:
            out[name.replace("_ms", "_profile")] = profile_steps(fn, steps)
    out["params"] = {"vit": sum(p.numel() for p in vit.parameters()),
                     "llama": sum(p.numel() for p in llama.parameters())}
    return out


def main():
    global ATTENTION
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/bench_train")
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per side; medians reported")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="run both sides on this device")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                    help="bf16: nmperm's mixed precision against PyTorch's bf16 autocast")
    ap.add_argument("--attention", choices=["sdpa", "eager"], default=ATTENTION,
                    help=f"PyTorch's attention (default here: {ATTENTION}; sdpa needs PyTorch >= 2.0)")
    ap.add_argument("--profile", action="store_true",
                    help="also print milliseconds per step in each op family on both sides (CPU only)")
    ap.add_argument("--compile", action="store_true",
                    help="run PyTorch's models under torch.compile (PyTorch >= 2.0; compiled in the warm-up)")
    ap.add_argument("--vit-config", help="a Hugging Face ViT config.json for both sides (default: the embedded model)")
    ap.add_argument("--vit-batch", type=int, default=128, help="images per ViT step")
    ap.add_argument("--llama-config", help="a Hugging Face Llama config.json for both sides (default: the embedded model)")
    ap.add_argument("--llama-batch", type=int, default=32, help="windows per Llama step")
    ap.add_argument("--llama-seq", type=int, default=128, help="tokens per window")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.attention == "sdpa" and not hasattr(F, "scaled_dot_product_attention"):
        ap.error(f"--attention sdpa: PyTorch {torch.__version__} has no scaled_dot_product_attention")
    ATTENTION = a.attention
    if a.compile and not hasattr(torch, "compile"):
        ap.error(f"--compile: PyTorch {torch.__version__} has no torch.compile")
    if a.profile and a.device != "cpu":
        ap.error("--profile times host-side work: CPU only")
    if a.worker:
        n = int(os.environ["OMP_NUM_THREADS"])
        torch.set_num_threads(n)
        set_blas_threads(n)
        r = torch_steps(a, 3, a.device, a.precision, a.profile, a.compile)
        r.update(threads=torch.get_num_threads(), blas=blas_in_use(), torch=torch.__version__, attention=ATTENTION,
                 device=torch.cuda.get_device_name() if a.device == "cuda" else "cpu")
        print(json.dumps(r))
        return 0
    for threads in a.threads:
        env = dict(os.environ, NMPERM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads))
        ours, theirs, ours_f32 = [], [], []
        prof = ["--profile"] if a.profile else []
        comp = ["--compile"] if a.compile else []
        shapes = ["--vit-batch", str(a.vit_batch), "--llama-batch", str(a.llama_batch), "--llama-seq", str(a.llama_seq)]
        shapes += ["--vit-config", a.vit_config] if a.vit_config else []
        shapes += ["--llama-config", a.llama_config] if a.llama_config else []

        def nmperm(precision):
            return json.loads(subprocess.run([a.bench, "--steps", str(a.steps), "--device", a.device,
                                              "--precision", precision] + prof + shapes, env=env,
                                             check=True, capture_output=True, text=True).stdout)
        for _ in range(a.rounds):
            ours.append(nmperm(a.precision))
            if a.precision != "f32":
                ours_f32.append(nmperm("f32"))
            theirs.append(json.loads(subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                                     "--steps", str(a.steps), "--device", a.device,
                                                     "--precision", a.precision, "--attention", a.attention]
                                                    + prof + comp + shapes,
                                                    env=env, check=True, capture_output=True, text=True).stdout))
        if a.device == "cuda":
            print(f"device: nmperm {ours[0]['device']}, PyTorch {theirs[0]['torch']} {theirs[0]['device']}")
        else:
            print(f"threads: nmperm {ours[0]['threads']} ({ours[0]['blas']}), "
                  f"PyTorch {theirs[0]['torch']} {theirs[0]['threads']} ({theirs[0]['blas']}, {theirs[0]['attention']} attention"
                  + (", torch.compile" if a.compile else "") + ")")
        print(f"parameters: ViT {theirs[0]['params']['vit']}, Llama {theirs[0]['params']['llama']} (PyTorch side); "
              f"precision {a.precision}" + (" (nmperm --precision bf16, PyTorch bf16 autocast)" if a.precision == "bf16" else ""))
        print(f"shapes: ViT {a.vit_config or 'embedded'}, batch {a.vit_batch}; "
              f"Llama {a.llama_config or 'embedded'}, {a.llama_batch} x {a.llama_seq} tokens")
        own = f" {'nmperm f32 ms':>14} {'bf16/f32':>9}" if ours_f32 else ""
        print(f"{'model':16} {'nmperm ms/step':>15} {'PyTorch ms/step':>16} {'ratio':>7}{own}   (medians of {a.rounds} rounds)")
        worst = 0.0
        for key, name in (("vit_ms", "ViT"), ("llama_ms", "Llama"), ("llama_eval_ms", "Llama evaluation")):
            o, t = median([r[key] for r in ours]), median([r[key] for r in theirs])
            worst = max(worst, o / t)
            tokens = a.llama_batch * a.llama_seq
            tps = f"   ({tokens / o * 1e3:,.0f} against {tokens / t * 1e3:,.0f} tokens/s)" if "eval" in key else ""
            if ours_f32:
                f = median([r[key] for r in ours_f32])
                tps = f" {f:14.1f} {o / f:9.2f}" + tps
            print(f"{name:16} {o:15.1f} {t:16.1f} {o / t:7.2f}{tps}")
        print(f"worst ratio against PyTorch: {worst:.2f}")
        if a.profile:
            print_profiles(ours, theirs, threads)
    return 0


def print_profiles(ours, theirs, threads):
    """Per family, the median over rounds of ms per step on each side."""
    for key, name in (("vit_profile", "ViT step"), ("llama_profile", "Llama step"),
                      ("llama_eval_profile", "Llama evaluation (32 x 128 tokens)")):
        fams = []
        for r in ours + theirs:
            fams += [f for f in r[key] if f not in fams and f not in ("autograd and other", "step")]
        fams += ["autograd and other", "step"]
        print(f"\n{name} by op family, {threads} thread(s), ms per step (profiled steps; "
              f"PyTorch's include torch.profiler's overhead)")
        print(f"{'family':20} {'nmperm':>9} {'PyTorch':>9}")
        for f in fams:
            o = median([r[key].get(f, 0.0) for r in ours])
            t = median([r[key].get(f, 0.0) for r in theirs])
            print(f"{f:20} {o:9.1f} {t:9.1f}")


if __name__ == "__main__":
    sys.exit(main())
