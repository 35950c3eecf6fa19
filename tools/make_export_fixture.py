#!/usr/bin/env python3
"""The Hugging Face round trip of an export: `nmperm prune --out` on tests/fixtures/llama3_tok
(RIA, 2:4, the field's protocol on wiki_small.txt; the default pipeline: block by block with
sequential calibration), then transformers loads the default
(original-layout) export unchanged, with its copied tokenizer, and records its logits on
fixed ids. tests/test_cli.cpp reruns the same prune and compares nmperm's logits on its
export with these.

    cmake --build build && /tmp/hfenv/bin/python tools/make_export_fixture.py
"""
import os
import subprocess
import tempfile

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "tests", "fixtures")
TEXT = os.path.join(FIX, "tokenizers", "wiki_small.txt")
ARGS = ["prune", "--checkpoint", os.path.join(FIX, "llama3_tok"), "--text", TEXT, "--calib", TEXT, "--seqlen", "64",
        "--nsamples", "8", "--permute", "ria"]

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, NMPERM_CACHE=os.path.join(out, "cache"), OMP_NUM_THREADS="1")
        subprocess.run([os.path.join(ROOT, "build", "nmperm")] + ARGS + ["--out", out], check=True, env=env)
        model, info = AutoModelForCausalLM.from_pretrained(os.path.join(out, "ria"), dtype=torch.float32,
                                                           output_loading_info=True)
        assert not any(info.values()), f"transformers did not load the export cleanly: {info}"
        model.eval()
        tok = AutoTokenizer.from_pretrained(os.path.join(out, "ria"))
        ids = tok("In the beginning God created the heaven and the earth.\n\n And the earth was without form",
                  return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()},
              os.path.join(FIX, "llama3_tok_ria_transformers.safetensors"),
              metadata={"made_by": "tools/make_export_fixture.py", "transformers": transformers.__version__,
                        "args": " ".join(ARGS)})
    print("ids", ids.shape, "logits", logits.shape)
