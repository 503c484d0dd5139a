"""PyTorch's DGD round at M = 200, minibatch 3 (issue 14, target 3): the reference lena's DGD
round must beat on the same machine.

The round setting of `examples/round_profile`: MNIST, one label per node (300 rows each),
d = 10 x 785 (one-versus-all logistic regression with biases, lambda = 1e-3), step 0.05.
Every node's work is batched as PyTorch does it best: all nodes' minibatch rows gathered at
once, their scores one batched product, every node's gradient message one batched product
into a preallocated (M, 10, 785) tensor (the per-node messages stay: they are what a node
uploads), and the server's mean over the M messages.

Run with two threads:
    OMP_NUM_THREADS=2 python3 benches/python/round_torch.py [data/mnist]
Prints the fastest and the median of ten slices of 200 rounds, in ms per round (as
`round_profile` does), after 20 warm-up rounds. Without MNIST's files it uses random pixels
of the same shape (a round's time does not depend on them).
"""

import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

M, B, C, P = 200, 3, 10, 784
ALPHA, LAM = 0.05, 1e-3


def load_mnist(root):
    images = os.path.join(root, "train-images-idx3-ubyte.gz")
    labels = os.path.join(root, "train-labels-idx1-ubyte.gz")
    if not (os.path.exists(images) and os.path.exists(labels)):
        rng = np.random.default_rng(1)
        return rng.random((60_000, P), dtype=np.float32), rng.integers(0, C, 60_000)
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, P)
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    x, y = load_mnist(sys.argv[1] if len(sys.argv) > 1 else "data/mnist")
    # One label per node: the rows sorted by label, M equal contiguous shards.
    order = np.argsort(y, kind="stable")
    per = len(y) // M
    x, y = x[order][: per * M], y[order][: per * M]
    X = torch.from_numpy(np.hstack([x, np.ones((len(x), 1), np.float32)]))  # bias column
    Y = torch.from_numpy(np.where(y[:, None] == np.arange(C)[None, :], 1.0, -1.0).astype(np.float32))
    offsets = (torch.arange(M) * per).unsqueeze(1)
    W = torch.zeros(C, P + 1)
    G = torch.empty(M, C, P + 1)  # every node's message
    mean = torch.empty(C, P + 1)
    gen = torch.Generator().manual_seed(1)

    def round_():
        idx = (offsets + torch.randint(0, per, (M, B), generator=gen)).view(-1)
        xb = X.index_select(0, idx).view(M, B, P + 1)
        yb = Y.index_select(0, idx).view(M, B, C)
        # PERF: of the forms tried (matmul with W.t(), F.linear, mm with a contiguous W^T,
        # baddbmm, einsum) these two products were the fastest here.
        z = torch.mm(W, xb.view(M * B, P + 1).t()).t().reshape(M, B, C)
        d = -yb * torch.sigmoid(-yb * z) / B  # d loss / d z of log(1 + exp(-y z)), over B
        # G_m = d_m^T x_m / B + lambda W, into the messages' tensor.
        torch.bmm(d.transpose(1, 2).contiguous(), xb, out=G).add_(LAM * W)
        torch.mean(G, 0, out=mean)
        W.sub_(mean, alpha=ALPHA)

    for _ in range(20):
        round_()
    slices = []
    for _ in range(10):
        start = time.perf_counter()
        for _ in range(200):
            round_()
        slices.append((time.perf_counter() - start) * 1e3 / 200)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, DGD round at M = {M}, "
        f"minibatch {B}: fastest {min(slices):.3f} ms, median {statistics.median(slices):.3f} ms"
    )
    # With LENA_REPORT naming a file, the figures are appended to it as one JSON line (as the
    # profiling examples do; `cargo xtask targets` reads them).
    if os.environ.get("LENA_REPORT"):
        with open(os.environ["LENA_REPORT"], "a") as f:
            line = {"example": "round_torch", "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "fastest_ms": min(slices),
                    "median_ms": statistics.median(slices)}
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    with torch.no_grad():
        main()
