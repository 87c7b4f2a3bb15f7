#!/usr/bin/python3
"""The PyTorch way of the same computation, for side-by-side ratios.

Builds the fmnist-small energy network (tests/oracle_torch.py's definition, float32)
and times forward, forward + grad_x (one ODE evaluation) and the full second-order
training gradient (autograd.grad(create_graph=True) then backward) of the VAPO loss
at the same batch and thread count. Prints milliseconds (median).
    bench_torch.py [preset] [batch] [repeats] [threads]
"""
import os
import statistics
import sys
import time

import torch

from vapo_torch import PRESETS, energy, make_params


def main():
    preset = sys.argv[1] if len(sys.argv) > 1 else "fmnist-small"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else os.cpu_count()
    torch.set_num_threads(threads)
    c, hw, widths, blocks = PRESETS[preset]
    arch = {"act": "gelu", "head_act": "relu", "kernel": 3, "widths": widths, "blocks": blocks}
    params = make_params(c, widths, blocks)
    x0 = torch.randn(batch, c, hw, hw)
    w_gc = torch.randn(batch)
    times = {"forward": [], "forward+backward": [], "second-order step": []}
    for r in range(reps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            energy(params, arch, x0)
        t1 = time.perf_counter()
        x = x0.clone().requires_grad_(True)
        phi = energy(params, arch, x)[:, 0]
        torch.autograd.grad(phi.sum(), x)
        t2 = time.perf_counter()
        x = x0.clone().requires_grad_(True)
        phi = energy(params, arch, x)[:, 0]
        (g,) = torch.autograd.grad(phi.sum(), x, create_graph=True)
        d = x[0].numel()
        loss = (0.5 * g.pow(2).flatten(1).sum(1) + w_gc * phi + 1e-4 * phi.pow(2)).mean() / d
        loss.backward()
        t3 = time.perf_counter()
        if r > 0:
            times["forward"].append(t1 - t0)
            times["forward+backward"].append(t2 - t1)
            times["second-order step"].append(t3 - t2)
    for name, ts in times.items():
        print(f"torch {name:<18} {preset:<12} batch {batch:3d}: {1e3 * statistics.median(ts):8.2f} ms")


if __name__ == "__main__":
    main()
