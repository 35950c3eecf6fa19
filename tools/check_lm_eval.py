#!/usr/bin/env python3
"""EleutherAI's lm-evaluation-harness runs nmperm's default export unchanged (`lm_eval --model hf`),
and scores what nmperm scores.

`nmperm prune --out` on tests/fixtures/llama3_tok (RIA, 2:4, the field's protocol on
wiki_small.txt) writes a Hugging Face folder; this script runs the `lm_eval` command line on it
and on the dense source with two local tasks (no download: the tasks read files this script
writes, through the `datasets` library's json loader):

  nmperm_window  one document of exactly seqlen - 1 tokens. lm_eval's loglikelihood_rolling
                 predicts every token after the BOS prefix in one window of the model's context,
                 which is exactly the one window of `nmperm eval --text FILE --seqlen seqlen` on
                 the same text: the two perplexities must agree to float32 rounding. lm_eval 0.4
                 prefixes BOS and, by default, lets the tokenizer add its own BOS as well (so a
                 Llama-3 tokenizer scores "BOS BOS text"); `add_bos_token=False` in --model_args
                 gives the single BOS that nmperm and Wanda's protocol use.
  nmperm_wiki    wiki_small.txt as one document, the shape of lm_eval's wikitext task (word and
                 byte perplexity, bits per byte) on the dense source and the pruned export.

    python3 -m venv V && V/bin/pip install "lm-eval[hf]" transformers torch
    cmake --build build && V/bin/python tools/check_lm_eval.py
"""
import json
import math
import os
import re
import subprocess
import sys
import tempfile

from transformers import AutoTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
NMPERM = os.path.join(ROOT, "build", "nmperm")
FIX = os.path.join(ROOT, "tests", "fixtures")
SOURCE = os.path.join(FIX, "llama3_tok")
TEXT = os.path.join(FIX, "tokenizers", "wiki_small.txt")
SEQLEN = 128  # the fixture's max_position_embeddings: lm_eval's rolling window is the model's context

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


def run(cmd, env):
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def lm_eval(model_dir, tasks, work, env):
    out = os.path.join(work, "lm_eval-" + os.path.basename(model_dir))
    run(["lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32,add_bos_token=False",
         "--tasks", ",".join(tasks), "--include_path", os.path.join(work, "tasks"), "--device", "cpu",
         "--batch_size", "1", "--output_path", out], env)
    found = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.startswith("results")]
    with open(found[0]) as f:
        return json.load(f)["results"]


def nmperm_perplexity(model_dir, text, work, env):
    printed = run([NMPERM, "eval", "--checkpoint", model_dir, "--text", text, "--seqlen", str(SEQLEN)], env)
    found = re.search(r"perplexity ([0-9.]+), .*; (\d+) windows? of \d+ tokens, (\d+) tokens predicted", printed)
    assert found, f"unexpected output of nmperm eval:\n{printed}"
    assert (found.group(2), found.group(3)) == ("1", str(SEQLEN - 1)), f"expected one window:\n{printed}"
    return float(found.group(1))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ, NMPERM_CACHE=os.path.join(work, "cache"), OMP_NUM_THREADS="1",
                   HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_DATASETS_CACHE=os.path.join(work, "datasets"))
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
        run([NMPERM, "prune", "--checkpoint", SOURCE, "--text", TEXT, "--calib", TEXT, "--seqlen", "64",
             "--nsamples", "8", "--permute", "ria", "--out", os.path.join(work, "out")], env)
        pruned = os.path.join(work, "out", "ria")

        # One document of exactly SEQLEN - 1 tokens, chosen so that it re-tokenizes to itself.
        tok = AutoTokenizer.from_pretrained(SOURCE)
        with open(TEXT) as f:
            words = f.read().split()
        n = SEQLEN - 1
        doc = " ".join(words[:n])
        while len(tok(doc, add_special_tokens=False).input_ids) > n:
            doc = doc[:doc.rfind(" ")]
        count = len(tok(doc, add_special_tokens=False).input_ids)
        words_used = len(doc.split())
        while count < n:  # pad with single-token words until the count is exact
            doc += " a"
            count = len(tok(doc, add_special_tokens=False).input_ids)
        assert count == n, f"could not build a document of {n} tokens (got {count})"
        window_txt = os.path.join(work, "window.txt")
        with open(window_txt, "w") as f:
            f.write(doc + "\n")

        tasks_dir = os.path.join(work, "tasks")
        os.makedirs(tasks_dir)
        for name, text in (("nmperm_window", doc), ("nmperm_wiki", open(TEXT).read())):
            data = os.path.join(work, name + ".jsonl")
            with open(data, "w") as f:
                f.write(json.dumps({"text": text}) + "\n")
            with open(os.path.join(tasks_dir, name + ".yaml"), "w") as f:
                f.write(TASK.format(name=name, data=data))

        failures = []
        figures = {}
        for label, model_dir in (("dense", SOURCE), ("ria", pruned)):
            results = lm_eval(model_dir, ["nmperm_window", "nmperm_wiki"], work, env)
            window = results["nmperm_window"]
            loglik = -math.log(window["byte_perplexity,none"]) * len(doc.encode())
            theirs = math.exp(-loglik / n)
            ours = nmperm_perplexity(model_dir, window_txt, work, env)
            wiki = results["nmperm_wiki"]
            figures[label] = wiki
            rel = abs(theirs - ours) / ours
            print(f"{label}: one window of {n} predicted tokens: lm_eval perplexity {theirs:.6f}, "
                  f"nmperm {ours:.6f} (relative {rel:.1e}); wiki_small: word perplexity "
                  f"{wiki['word_perplexity,none']:.4f}, byte perplexity {wiki['byte_perplexity,none']:.6f}, "
                  f"bits per byte {wiki['bits_per_byte,none']:.6f}")
            if rel > 1e-4:
                failures.append(f"{label}: lm_eval {theirs} vs nmperm {ours}")
        if figures["ria"]["word_perplexity,none"] == figures["dense"]["word_perplexity,none"]:
            failures.append("the pruned export scores exactly like dense: was it pruned?")
        import lm_eval as harness
        import torch
        import transformers
        print(f"lm_eval {harness.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
        if failures:
            sys.exit("FAILED: " + "; ".join(failures))
        print("OK")
