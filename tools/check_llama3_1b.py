#!/usr/bin/env python3
"""A Llama-3.2-1B-shaped checkpoint, as a user would bring it: transformers builds the model
from Llama-3.2-1B's config (random weights at the real shapes, bf16, tied embeddings,
rope_parameters llama3) and saves it; the tokenizer is the fixture byte-level BPE with
Llama-3's pre-tokenizer (its ids fit the embedding). transformers computes the perplexity of a
text under the field's protocol (join, tokenize once, non-overlapping --seqlen windows), and
`nmperm eval --text` must print the same, with its time and peak memory.

    /tmp/hfenv/bin/python tools/check_llama3_1b.py --out /tmp/llama3-1b --text FILE [--seqlen 2048] [--windows 2]
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

CONFIG = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
              num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
              rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
              rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--windows", type=int, default=2, help="truncate the text to this many windows")
    ap.add_argument("--nmperm", default=os.path.join(ROOT, "build", "nmperm"))
    ap.add_argument("--prune", action="store_true",
                    help="also prune (calibrating on the same text), export, and check the export in transformers: "
                         "dtype, shards, perplexity")
    ap.add_argument("--method", default="none", help="the permutation method of --prune")
    a = ap.parse_args()
    torch.manual_seed(0)
    if not os.path.exists(os.path.join(a.out, "config.json")):
        t0 = time.time()
        model = LlamaForCausalLM(LlamaConfig(**CONFIG, initializer_range=0.02)).to(torch.bfloat16)
        model.save_pretrained(a.out, max_shard_size="1GB")
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(ROOT, "tests", "fixtures", "tokenizers", "llama3", f), a.out)
        print(f"saved {a.out} in {time.time() - t0:.0f}s")
        del model
    tok = AutoTokenizer.from_pretrained(a.out)
    rows = [r if r.strip() else "" for r in open(a.text, encoding="utf-8")]
    enc = tok("\n\n".join(rows), return_tensors="pt").input_ids[:, : a.windows * a.seqlen]
    text = os.path.join(a.out, "eval.txt")  # the text whose tokens are exactly those windows
    ids = enc[0].tolist()
    open(text, "w", encoding="utf-8").write(tok.decode(ids[1:]))  # without the BOS, which nmperm adds
    enc2 = tok("\n\n".join([r if r.strip() else "" for r in open(text, encoding="utf-8")]), return_tensors="pt").input_ids
    n = enc2.numel() // a.seqlen
    def compare(folder):
        model, info = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
        assert not any(info.values()), f"transformers did not load {folder} cleanly: {info}"
        t0, nll = time.time(), 0.0
        with torch.no_grad():
            for i in range(n):
                w = enc2[:, i * a.seqlen:(i + 1) * a.seqlen]
                logits = model.eval()(w).logits
                nll += torch.nn.functional.cross_entropy(logits[0, :-1].double(), w[0, 1:]).item() * a.seqlen
        ppl = float(torch.exp(torch.tensor(nll / (n * a.seqlen))))
        print(f"{folder}: transformers {n} windows: perplexity {ppl:.4f} in {time.time() - t0:.0f}s (torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads)")
        del model
        t0 = time.time()
        r = subprocess.run(["/usr/bin/time", "-v", a.nmperm, "eval", "--checkpoint", folder, "--text", text, "--seqlen",
                            str(a.seqlen), "--json"], capture_output=True, text=True)
        print(r.stderr[-3000:] if r.returncode else "")
        j = json.loads(r.stdout.strip().splitlines()[-1])
        rss = [l for l in r.stderr.splitlines() if "Maximum resident" in l]
        print(f"{folder}: nmperm {j['windows']} windows: perplexity {j['perplexity']:.4f} in {time.time() - t0:.0f}s; "
              f"{rss[0].strip()}; relative difference {abs(j['perplexity'] - ppl) / ppl:.2e}")

    compare(a.out)
    if a.prune:
        pruned = a.out + "-pruned"
        t0 = time.time()
        subprocess.run(["/usr/bin/time", "-v", a.nmperm, "prune", "--checkpoint", a.out, "--text", text, "--calib", text,
                        "--seqlen", str(a.seqlen), "--nsamples", "4", "--permute", a.method, "--out", pruned], check=True)
        print(f"prune + export in {time.time() - t0:.0f}s")
        export = os.path.join(pruned, a.method)
        cfg = json.load(open(os.path.join(export, "config.json")))
        index = json.load(open(os.path.join(export, "model.safetensors.index.json")))
        print("export dtype", cfg.get("dtype", cfg.get("torch_dtype")), "shards", sorted(set(index["weight_map"].values())))
        compare(export)
