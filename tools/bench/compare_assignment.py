#!/usr/bin/env python3
"""Exact linear assignment: nmperm's solver against SciPy's linear_sum_assignment on the
same random cost matrices (uniform [0, 1), seeded), printing both times, the ratio, and
whether the two optimal costs agree.

    /usr/bin/python3 tools/bench/compare_assignment.py --bench build/bench_assignment [--sizes 256 1024 4096]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from safetensors_np import save  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/bench_assignment")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    mats = {f"uniform_{n}": rng.random((n, n)) for n in a.sizes}
    with tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False) as f:
        path = f.name
    save(path, mats)
    ours = {}
    out = subprocess.run([a.bench, path], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        r = json.loads(line)
        ours[r["name"]] = r
    os.unlink(path)
    print(f"SciPy {scipy.__version__} (single-threaded C), nmperm single-threaded")
    print(f"{'n':>6} {'nmperm s':>10} {'SciPy s':>10} {'ratio':>7}  same optimum")
    for name, c in mats.items():
        t0 = time.perf_counter()
        r, col = linear_sum_assignment(c)
        t = time.perf_counter() - t0
        best = c[r, col].sum()
        o = ours[name]
        print(f"{c.shape[0]:6d} {o['seconds']:10.3f} {t:10.3f} {o['seconds'] / t:7.2f}  "
              f"{abs(o['cost'] - best) <= 1e-9 * max(1, abs(best))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
