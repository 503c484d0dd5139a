"""PyTorch reference for the CNN bench (`cargo bench -p lena-benches --bench cnn`).

The same network as lena's `CnnArch::Small` (PyTorch's classic MNIST example): forward,
cross-entropy, backward, on random 28x28 inputs, for several batch sizes and thread counts.
Prints microseconds per sample (median of repeated timings).

    pip install torch
    python3 benches/python/cnn_torch.py
"""

import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.conv2_drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, 0.5, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def per_sample_us(model, batch, reps):
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    model.train()

    def step():
        model.zero_grad(set_to_none=False)
        loss = F.nll_loss(model(x), y)
        loss.backward()

    for _ in range(20):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(10):
            step()
        times.append((time.perf_counter() - t0) / 10)
    return statistics.median(times) / batch * 1e6


def main():
    torch.manual_seed(0)
    model = Small()
    print(f"torch {torch.__version__}, {sys.version.split()[0]}")
    print("threads  batch  us_per_sample")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (8, 32, 64, 256):
            us = per_sample_us(model, batch, reps=30)
            print(f"{threads:7d}  {batch:5d}  {us:13.2f}")


if __name__ == "__main__":
    main()
