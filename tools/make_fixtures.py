#!/usr/bin/env python3
"""Writes tests/fixtures/ops_reference.safetensors: inputs and PyTorch outputs (float64)
for the non-trivial kernels, so the C++ tests can check forward values without Python.

Run with Debian's PyTorch:  /usr/bin/python3 tools/make_fixtures.py
The safetensors file is written by hand (json header + raw bytes) so no extra package
is needed, and so our reader is also checked against an independent writer.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import save  # noqa: E402

torch.manual_seed(0)
out = {}


def put(name, t):
    out[name] = t.detach().to(torch.float64).contiguous() if t.is_floating_point() else t.detach().to(torch.int64).contiguous()


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float64)


# softmax / log_softmax
x = randn(7, 33)
put("softmax.x", x)
put("softmax.y_last", F.softmax(x, dim=-1))
put("softmax.y_dim0", F.softmax(x, dim=0))
put("log_softmax.y_last", F.log_softmax(x, dim=-1))

# gelu (erf and tanh forms), silu
put("gelu.x", x)
put("gelu.y_erf", F.gelu(x))
put("gelu.y_tanh", F.gelu(x, approximate="tanh"))
put("silu.y", F.silu(x))

# layer_norm
x = randn(2, 5, 33) * 3 + 1
w, b = randn(33), randn(33)
put("layer_norm.x", x)
put("layer_norm.w", w)
put("layer_norm.b", b)
put("layer_norm.y", F.layer_norm(x, (33,), w, b, eps=1e-5))

# rms_norm, as Hugging Face's LlamaRMSNorm computes it
x = randn(2, 5, 33)
w = randn(33)
put("rms_norm.x", x)
put("rms_norm.w", w)
put("rms_norm.y", w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)))

# RoPE: Hugging Face rotate-half and Meta's interleaved (complex) form
B, H, T, D, theta, offset = 2, 3, 7, 8, 10000.0, 3
x = randn(B, H, T, D)
put("rope.x", x)
inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
pos = torch.arange(offset, offset + T, dtype=torch.float64)
freqs = torch.outer(pos, inv_freq)  # (T, D/2)
emb = torch.cat((freqs, freqs), dim=-1)


def rotate_half(v):
    return torch.cat((-v[..., D // 2:], v[..., : D // 2]), dim=-1)


put("rope.y_rotate_half", x * emb.cos() + rotate_half(x) * emb.sin())
xc = torch.view_as_complex(x.reshape(B, H, T, D // 2, 2).contiguous())
put("rope.y_interleaved", torch.view_as_real(xc * torch.polar(torch.ones_like(freqs), freqs)).reshape(B, H, T, D))


# attention: plain softmax(q k^T * scale) v, GQA by repeating kv heads, causal mask
# aligned bottom-right (query t sees keys s <= t + S - T), as with a KV cache.
def attention(q, k, v, causal, scale):
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = q @ k.transpose(-1, -2) * scale
    if causal:
        T, S = q.shape[2], k.shape[2]
        mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
        s = s.masked_fill(~mask, float("-inf"))
    return F.softmax(s, dim=-1) @ v


q, k, v = randn(2, 4, 7, 8), randn(2, 4, 7, 8), randn(2, 4, 7, 8)
put("attn.q", q)
put("attn.k", k)
put("attn.v", v)
put("attn.y_full", attention(q, k, v, False, 1 / math.sqrt(8)))
put("attn.y_causal", attention(q, k, v, True, 1 / math.sqrt(8)))
q, k, v = randn(2, 4, 5, 8), randn(2, 2, 9, 8), randn(2, 2, 9, 8)
put("attn_gqa.q", q)
put("attn_gqa.k", k)
put("attn_gqa.v", v)
put("attn_gqa.y_causal", attention(q, k, v, True, 0.25))
put("attn_gqa.y_full", attention(q, k, v, False, 0.25))

# cross-entropy with ignore_index and label smoothing
logits = randn(9, 11)
target = torch.tensor([0, 3, -100, 10, 5, -100, 7, 1, 2])
put("ce.logits", logits)
put("ce.target", target)
put("ce.loss_plain", F.cross_entropy(logits, target, ignore_index=-100))
put("ce.loss_smooth", F.cross_entropy(logits, target, ignore_index=-100, label_smoothing=0.1))
put("ce.loss_none", F.cross_entropy(logits, target, ignore_index=-100, label_smoothing=0.1, reduction="none"))
put("ce.loss_sum", F.cross_entropy(logits, target, ignore_index=-100, reduction="sum"))


path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "ops_reference.safetensors")
save(path, {k: v.numpy() for k, v in out.items()}, {"made_by": "tools/make_fixtures.py", "torch": torch.__version__})
print(f"wrote {len(out)} tensors to {os.path.normpath(path)} (torch {torch.__version__})", file=sys.stderr)
