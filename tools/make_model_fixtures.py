#!/usr/bin/env python3
"""Builds a tiny ViTForImageClassification and a tiny LlamaForCausalLM with Hugging Face
transformers (on Debian's PyTorch), saves them with save_pretrained, and writes reference
values for the C++ tests: inputs, logits, loss, every parameter gradient and the losses
of 5 AdamW steps. Also a bf16 copy of the Llama (to test widening on load) and a Llama
with tied embeddings.

One-time set-up, then one command (from the repository root):
    /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/pip install transformers==4.38.2 safetensors
    .venv/bin/python tools/make_model_fixtures.py
"""
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTForImageClassification

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def reference(model, batch, loss_fn, path):
    """logits, loss, grads and 5 AdamW step losses for `batch` (a dict of model inputs)."""
    model.train()  # no dropout configured; train() only matters for completeness
    out = {k: v.clone() for k, v in batch.items()}
    logits = model(**batch).logits
    loss = loss_fn(logits)
    loss.backward()
    out["logits"] = logits.detach().clone()
    out["loss"] = loss.detach().reshape(1).clone()
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad.detach().clone()
    model.zero_grad()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        step_loss = loss_fn(model(**batch).logits)
        step_loss.backward()
        opt.step()
        losses.append(step_loss.item())
    out["adamw_losses"] = torch.tensor(losses, dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in out.items()}, path,
              metadata={"made_by": "tools/make_model_fixtures.py", "torch": torch.__version__})


def save_model(model, name, dtype=None):
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    m = model if dtype is None else model.to(dtype)
    m.save_pretrained(d, safe_serialization=True)
    return d


def vit():
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=2, hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=24, num_labels=3, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    model = ViTForImageClassification(cfg)
    with torch.no_grad():  # make biases and norms non-trivial so every path is checked
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    save_model(model, "vit_tiny")
    batch = {"pixel_values": torch.randn(3, 2, 8, 8)}
    labels = torch.tensor([0, 2, 1])
    reference(model, batch, lambda lg: torch.nn.functional.cross_entropy(lg, labels),
              os.path.join(ROOT, "vit_tiny_reference.safetensors"))


def llama_loss(ids):
    def f(logits):  # next-token prediction: logits[:, :-1] against ids[:, 1:]
        V = logits.shape[-1]
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    return f


def llama(tied, name):
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    save_model(model, name)
    ids = torch.randint(0, 64, (2, 11))
    reference(model, {"input_ids": ids}, llama_loss(ids), os.path.join(ROOT, name + "_reference.safetensors"))
    return model


if __name__ == "__main__":
    vit()
    model = llama(False, "llama_tiny")
    llama(True, "llama_tiny_tied")
    # The trained (post-AdamW) weights in bf16: loading must widen them to f32 exactly.
    save_model(model, "llama_tiny_bf16", torch.bfloat16)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(ROOT) for f in fs)
    print(f"fixtures written under {os.path.normpath(ROOT)} ({total / 1024:.0f} KiB in all)")
