#!/usr/bin/env python3
"""Tiny random decoders of every Llama-family architecture and config dialect nmperm reads,
saved by current transformers (5.x), with the same reference values as
make_model_fixtures.py (logits, loss, every gradient, 5 AdamW steps):

  llama3_tiny       Llama-3 style: rope_parameters {rope_type: llama3, rope_theta 500000},
                    head_dim given explicitly (16, not hidden_size / heads = 8), tied embeddings
  llama_linear_old  the older dialect: top-level rope_theta and rope_scaling {type: linear},
                    torch_dtype; the reference comes from transformers reading that file
  qwen2_tiny        Qwen2: q/k/v biases, no o_proj bias, tied embeddings
  mistral_tiny      Mistral: sliding_window (longer than the fixture's tokens)
  qwen2_old         Qwen2 in the older dialect, linear RoPE scaling
  mistral_old       Mistral in the older dialect, llama3 RoPE scaling, no sliding window

Sequences are 40 tokens against llama3's original context of 16, so every frequency band
of the llama3 scaling (kept, interpolated, divided) is exercised.

    python3 -m venv /tmp/hfenv && /tmp/hfenv/bin/pip install torch transformers safetensors
    /tmp/hfenv/bin/python tools/make_arch_fixtures.py
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_fixtures import ROOT, llama_loss, reference, save_model  # noqa: E402

SIZES = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def perturb_norms_and_biases(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))


def build(name, cls, cfg, seed, edit_config=None):
    torch.manual_seed(seed)
    model = cls(cfg).float()
    perturb_norms_and_biases(model)
    d = save_model(model, name)
    if edit_config:
        path = os.path.join(d, "config.json")
        with open(path) as f:
            c = json.load(f)
        edit_config(c)
        with open(path, "w") as f:
            json.dump(c, f, indent=2)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)  # what transformers reads from it
    ids = torch.randint(0, 64, (2, 40))
    reference(model, {"input_ids": ids}, llama_loss(ids), os.path.join(ROOT, name + "_reference.safetensors"))


def old_dialect(c):
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp.pop("rope_theta")
    c["rope_scaling"] = {"type": rp.pop("rope_type"), **rp}
    c["torch_dtype"] = c.pop("dtype", "float32")


if __name__ == "__main__":
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    build("llama3_tiny", LlamaForCausalLM,
          LlamaConfig(**SIZES, head_dim=16, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 16}), 2)
    build("llama_linear_old", LlamaForCausalLM,
          LlamaConfig(**SIZES, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}), 3,
          edit_config=old_dialect)
    build("qwen2_tiny", Qwen2ForCausalLM, Qwen2Config(**SIZES, tie_word_embeddings=True), 4)
    build("mistral_tiny", MistralForCausalLM, MistralConfig(**SIZES, head_dim=8, sliding_window=48), 5)
    # The other architectures in the older dialect too (with a scaled RoPE, so the dialect matters).
    build("qwen2_old", Qwen2ForCausalLM,
          Qwen2Config(**SIZES, rope_parameters={"rope_type": "linear", "rope_theta": 1000000.0, "factor": 4.0}), 7,
          edit_config=old_dialect)
    build("mistral_old", MistralForCausalLM,
          MistralConfig(**SIZES, head_dim=8, sliding_window=None,
                        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 16}), 8, edit_config=old_dialect)
