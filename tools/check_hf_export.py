#!/usr/bin/env python3
"""Checks that a checkpoint saved by nmperm loads in Hugging Face transformers and gives
the same evaluation there as in `nmperm eval`: ViT test accuracy and loss on Fashion-MNIST,
or Llama validation loss on the KJV bytes. Exits 1 when they disagree.

    .venv/bin/python tools/check_hf_export.py --checkpoint DIR [--nmperm build/nmperm]

(.venv: see tools/make_model_fixtures.py; transformers on Debian's PyTorch.)
"""
import argparse
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F


def idx(path):
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data[4 + 4 * nd:], dtype=np.uint8).reshape(dims)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--nmperm", default="build/nmperm")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--kjv", default=os.path.expanduser("~/.cache/nmperm/kjv.txt"))
    ap.add_argument("--windows", type=int, default=200)
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.checkpoint, "config.json")))
    torch.set_grad_enabled(False)
    if cfg["model_type"] == "vit":
        from transformers import ViTForImageClassification
        model = ViTForImageClassification.from_pretrained(a.checkpoint).eval()
        pre = json.load(open(os.path.join(a.checkpoint, "preprocessor_config.json")))
        x = torch.tensor(idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz")), dtype=torch.float32)[:, None]
        y = torch.tensor(idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")), dtype=torch.int64)
        if pre.get("do_rescale", True):
            x = x * pre.get("rescale_factor", 1 / 255)
        if pre.get("do_normalize", True):
            m = torch.tensor(pre["image_mean"]).view(1, -1, 1, 1)
            s = torch.tensor(pre["image_std"]).view(1, -1, 1, 1)
            x = (x - m) / s
        logits = torch.cat([model(pixel_values=x[i:i + 500]).logits for i in range(0, len(x), 500)])
        hf = {"accuracy": (logits.argmax(1) == y).float().mean().item(), "loss": F.cross_entropy(logits, y).item()}
        cmd = [a.nmperm, "eval", "--checkpoint", a.checkpoint, "--data", a.data, "--json"]
    else:
        from transformers import LlamaForCausalLM
        model = LlamaForCausalLM.from_pretrained(a.checkpoint).eval()
        raw = np.frombuffer(open(a.kjv, "rb").read(), dtype=np.uint8)
        val = np.concatenate([raw[i:i + 8192] for k, i in enumerate(range(0, len(raw), 8192)) if k % 10 == 9])
        T = cfg["max_position_embeddings"]
        n = min(a.windows, (len(val) - 1) // T)
        total = 0.0
        for w0 in range(0, n, 16):
            rows = [val[(w0 + b) * T:(w0 + b) * T + T + 1] for b in range(min(16, n - w0))]
            w = torch.tensor(np.stack(rows).astype(np.int64))
            logits = model(input_ids=w[:, :-1]).logits
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1)).item() * w[:, 1:].numel()
        hf = {"loss": total / (n * T)}
        cmd = [a.nmperm, "eval", "--checkpoint", a.checkpoint, "--windows", str(a.windows), "--json"]
    ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    ok = all(abs(ours[k] - v) <= 1e-4 * max(1.0, abs(v)) for k, v in hf.items())
    for k, v in hf.items():
        print(f"{k:9} transformers {v:.6f}   nmperm {ours[k]:.6f}")
    print("agree" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
