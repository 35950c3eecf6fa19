#!/usr/bin/env python3
"""Writes tests/fixtures/assignment_reference.safetensors: cost matrices and the optimal
total cost SciPy's linear_sum_assignment finds for each (random, integer-tied with many
equal optima, and adversarial: huge dynamic range, constant rows, anti-diagonal optimum).
Run with Debian's SciPy:  /usr/bin/python3 tools/make_permute_fixtures.py
"""
import os
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import save  # noqa: E402

rng = np.random.default_rng(0)
cases = {}
for n in (1, 2, 5, 17, 64):
    cases[f"random_{n}"] = rng.standard_normal((n, n))
for n in (6, 40):
    cases[f"ties_{n}"] = rng.integers(0, 3, (n, n)).astype(np.float64)
for n in (9, 50):
    cases[f"range_{n}"] = np.exp(rng.uniform(-20, 20, (n, n)))
    c = np.full((n, n), 1.0)
    c[np.arange(n), n - 1 - np.arange(n)] = 0.0
    cases[f"antidiag_{n}"] = c
    cases[f"constant_rows_{n}"] = np.repeat(rng.standard_normal((n, 1)), n, axis=1)
    cases[f"negative_{n}"] = -np.abs(rng.standard_normal((n, n))) * 1e6

tensors = {}
for name, c in cases.items():
    r, col = linear_sum_assignment(c)
    tensors[f"{name}.cost"] = c
    tensors[f"{name}.min"] = np.array([c[r, col].sum()])
    r, col = linear_sum_assignment(c, maximize=True)
    tensors[f"{name}.max"] = np.array([c[r, col].sum()])

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "assignment_reference.safetensors")
save(path, {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()},
     {"made_by": "tools/make_permute_fixtures.py"})
print(f"wrote {len(tensors)} tensors to {os.path.normpath(path)}")
