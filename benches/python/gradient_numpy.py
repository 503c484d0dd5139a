"""NumPy's two GEMMs of the full-batch linear gradient (issue 14, target 2): `Z = X W^T` and
`G = D^T X` on MNIST's shape (60 000 x 784, 10 classes, float32), on two threads.

Run with the thread count fixed before NumPy loads:
    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python3 benches/python/gradient_numpy.py
Prints the fastest of 20 timings of the two products (random values: a GEMM's time does not
depend on them), and of the whole gradient as the issue's reference computes it.
"""

import json
import os
import time

import numpy as np

n, p, c = 60_000, 784, 10
rng = np.random.default_rng(1)
X = rng.random((n, p), dtype=np.float32)
W = rng.standard_normal((c, p + 1), dtype=np.float32) * 0.01
Y = np.where(rng.integers(0, c, n)[:, None] == np.arange(c)[None, :], 1.0, -1.0).astype(np.float32)
lam = np.float32(1e-3)
G = np.empty_like(W)


def two_gemms():
    Z = X @ W[:, :p].T
    return Z.T @ X


def gradient():
    Z = X @ W[:, :p].T + W[:, p]
    T = -Y * Z
    loss = np.logaddexp(0, T).sum() / n + lam / 2 * (W * W).sum()
    D = -Y / (1 + np.exp(-T))
    G[:, :p] = D.T @ X / n
    G[:, p] = D.sum(0) / n
    G[...] += lam * W
    return loss


best_ms = {}
for name, f in [("two GEMMs", two_gemms), ("whole gradient", gradient)]:
    f()
    best = float("inf")
    for _ in range(20):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    print(f"numpy {np.__version__} {name}: {best * 1e3:.1f} ms")
    best_ms[name] = best * 1e3

# With LENA_REPORT naming a file, the figures are appended to it as one JSON line (as the
# profiling examples do; `cargo xtask targets` reads them).
if os.environ.get("LENA_REPORT"):
    with open(os.environ["LENA_REPORT"], "a") as f:
        line = {"example": "gradient_numpy", "numpy": np.__version__,
                "two_gemms_ms": best_ms["two GEMMs"], "whole_gradient_ms": best_ms["whole gradient"]}
        f.write(json.dumps(line) + "\n")
