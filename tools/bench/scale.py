#!/usr/bin/env python3
"""Time and peak memory of nmperm on billion-parameter shapes, as a user would run it.

Builds (once) checkpoints of real shapes with random bf16 weights from their transformers
configs -- Llama-3.2-1B (16 layers, hidden 2048, 32/8 heads, MLP 8192, vocab 128256, tied),
the same with 1, 2, 4 and 8 layers, and Llama-3-8B (32 layers, hidden 4096, 32/8 heads,
MLP 14336, untied; 8b-l1 is one block of it, for per-block times) -- tensor by tensor, so that making an 8B folder never holds it in
memory. The tokenizer is the fixture byte-level BPE with Llama-3's pre-tokenizer (its ids
fit the 128,256 embeddings). Then runs, each as its own process with its peak RSS taken
from wait4():

    nmperm prune --permute none | ria | channel-swap --nsamples 16 --seqlen 512 --eval-windows 16
    nmperm eval --seqlen 512 --windows 16 --pipeline block

and prints one line per run (and appends it as JSON to --results), with the machine, the
thread count and the nmperm build; each run's output, with elapsed seconds, goes to
ROOT/logs/MODEL-RUN-PRECISION.log as it comes.

    /tmp/hfenv/bin/python tools/bench/scale.py --root /tmp/nmperm-scale --text kjv.txt \\
        [--models 1b,1b-l1,1b-l2,1b-l4,1b-l8,8b] [--runs eval,none,ria,channel-swap] [--threads 2]
        [--precision f32|bf16|f16]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

LLAMA_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
                rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192})
LLAMA_8B = dict(LLAMA_1B, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, head_dim=128,
                tie_word_embeddings=False, rope_parameters=dict(LLAMA_1B["rope_parameters"], factor=8.0))
MODELS = {"1b": LLAMA_1B, "8b": LLAMA_8B}
for n in (1, 2, 4, 8):
    MODELS[f"1b-l{n}"] = dict(LLAMA_1B, num_hidden_layers=n)
MODELS["8b-l1"] = dict(LLAMA_8B, num_hidden_layers=1)  # one 8B block: per-block times at that width


def make(folder, config, shard_bytes=2 << 30):
    """A checkpoint folder as save_pretrained writes it, filled one tensor at a time."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.exists(os.path.join(folder, "config.json")):
        return
    t0 = time.time()
    os.makedirs(folder, exist_ok=True)
    cfg = LlamaConfig(**config, initializer_range=0.02, dtype="bfloat16")
    with torch.device("meta"):
        shapes = [(n, tuple(p.shape)) for n, p in LlamaForCausalLM(cfg).state_dict().items()]
    if cfg.tie_word_embeddings:
        shapes = [(n, s) for n, s in shapes if n != "lm_head.weight"]
    gen = torch.Generator().manual_seed(0)
    shards, cur, size = [], [], 0
    for n, s in shapes:
        nbytes = 2 * int(torch.tensor(s).prod()) if s else 2
        if cur and size + nbytes > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((n, s))
        size += nbytes
    shards.append(cur)
    weight_map, total = {}, 0
    for i, names in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for n, s in names:
            t = torch.ones(s) if n.endswith("norm.weight") else torch.randn(s, generator=gen) * 0.02
            tensors[n] = t.to(torch.bfloat16)
            weight_map[n] = file
            total += 2 * t.numel()
        save_file(tensors, os.path.join(folder, file), metadata={"format": "pt"})
        del tensors
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(folder, "model.safetensors.index.json"), "w"), indent=2)
    cfg.save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(ROOT, "tests", "fixtures", "tokenizers", "llama3", f), folder)
    print(f"made {folder} ({total / 2**30:.1f} GiB bf16) in {time.time() - t0:.0f}s", flush=True)


def run(cmd, log):
    """Wall seconds, peak RSS in GiB and the output of one process. The output also goes to
    the file log as it comes, each line after its elapsed seconds, so a run stopped from
    outside leaves its progress (per block, with the time) behind."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    with open(log, "a") as f:
        f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        for line in p.stdout:
            lines.append(line)
            f.write(f"{time.time() - t0:9.1f}  {line}")
            f.flush()
    _, status, usage = os.wait4(p.pid, 0)
    return time.time() - t0, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status), "".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/nmperm-scale", help="where the checkpoints are made")
    ap.add_argument("--text", required=True, help="calibration and evaluation text")
    ap.add_argument("--models", default="1b-l1,1b-l2,1b-l4,1b-l8,1b,8b")
    ap.add_argument("--runs", default="eval,ria,channel-swap")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--nmperm", default=os.path.join(ROOT, "build", "nmperm"))
    ap.add_argument("--results", default="scale_results.jsonl")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16"],
                    help="nmperm --precision of every run (linear layers in 16 bits, f32 accumulation)")
    ap.add_argument("--keep", action="store_true",
                    help="write the pruned checkpoints under ROOT/MODEL-pruned; a prune stopped before it ended "
                         "(its process killed) continues from its last saved block when run again (--resume)")
    a = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 2**20
    version = subprocess.run([a.nmperm, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{version}; {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB; {a.threads} threads; {platform.platform()}",
          flush=True)
    data = ["--text", a.text, "--seqlen", "512"]
    for name in a.models.split(","):
        folder = os.path.join(a.root, "llama-" + name)
        make(folder, MODELS[name])
        for what in filter(None, a.runs.split(",")):
            if what == "eval":
                cmd = [a.nmperm, "eval", "--checkpoint", folder, *data, "--windows", "16", "--pipeline", "block", "--json"]
            else:
                cmd = [a.nmperm, "prune", "--checkpoint", folder, *data, "--calib", a.text, "--nsamples", "16",
                       "--eval-windows", "16", "--permute", what]
                if a.keep:
                    cmd += ["--out", folder + "-pruned", "--resume"]
            cmd += ["--threads", str(a.threads), "--precision", a.precision]
            os.makedirs(os.path.join(a.root, "logs"), exist_ok=True)
            secs, rss, rc, out = run(cmd, os.path.join(a.root, "logs", f"{name}-{what}-{a.precision}.log"))
            tail = out.strip().splitlines()[-6:]
            rec = {"model": name, "run": what, "precision": a.precision, "layers": MODELS[name]["num_hidden_layers"], "seconds": round(secs, 1),
                   "peak_rss_gib": round(rss, 2), "rc": rc, "threads": a.threads, "cpu": cpu, "nmperm": version,
                   "tail": tail}
            print(f"{name:6s} {what:12s} {a.precision:5s} {secs:8.1f} s  peak RSS {rss:6.2f} GiB  rc {rc}", flush=True)
            if rc != 0:
                print("\n".join(tail), flush=True)
            with open(a.results, "a") as f:
                f.write(json.dumps(rec) + "\n")
