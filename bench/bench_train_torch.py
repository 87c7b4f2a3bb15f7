#!/usr/bin/python3
"""A VAPO training step in PyTorch for comparison with vapo-train: the same
network (float32), the same loss (VAPO-MATH.md 3.6, double backward through
autograd.grad(create_graph=True)), Lamb, gradient clipping and EMA, on
Fashion-MNIST batches. Prints steps/s and peak RSS.
    bench_train_torch.py [steps] [batch] [threads]"""
import gzip
import math
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from bench_torch import make_params  # noqa: E402
from oracle_torch import energy  # noqa: E402


def lamb_step(params, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    for name, p in params.items():
        g = p.grad
        m, v = state.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p)))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = m / (v.sqrt() + eps)
        wn, an = p.detach().norm().clamp(0, 10), step.norm()
        trust = 1.0 if wn == 0 or an == 0 else (wn / an).item()
        p.data.add_(step, alpha=-lr * trust)


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else os.cpu_count())
    with gzip.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") as f:
        data = torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28).copy())
    arch = {"act": "gelu", "head_act": "relu", "kernel": 3, "widths": [32, 64, 64], "blocks": 1}
    params = make_params(1, [32, 64, 64], 1)
    ema = {k: v.detach().clone() for k, v in params.items()}
    state = {}
    omega, nu, eps, lam = 1.0, 0.01, 1e-4, 1e-4
    leps = math.log((1 + eps) / eps)
    d = 784
    t0 = None
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()  # the first step allocates
        xbar = data[torch.randint(0, len(data), (batch,))].float() / 127.5 - 1
        t = torch.rand(batch)
        z = torch.randn(batch, 1, 28, 28)
        tau = eps * torch.expm1(t * leps)
        den = nu**2 + tau * omega**2
        m, sig = tau * omega**2 / den, omega * nu / den.sqrt()
        x = (m.view(-1, 1, 1, 1) * xbar + sig.view(-1, 1, 1, 1) * z).requires_grad_(True)
        zz, xz = z.flatten(1).pow(2).sum(1), (xbar * z).flatten(1).sum(1)
        gc = (sig**2 * (zz - d) - 2 * (1 - m) * sig * xz) / nu**2
        w = 0.5 * (tau + eps) * leps
        phi = energy(params, arch, x)[:, 0]
        (g,) = torch.autograd.grad(phi.sum(), x, create_graph=True)
        loss = (0.5 * g.pow(2).flatten(1).sum(1) + w * gc * phi + lam * phi**2).mean() / d
        for p in params.values():
            p.grad = None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        lamb_step(params, state, 1e-3)
        with torch.no_grad():
            for k in ema:
                ema[k].mul_(0.999).add_(params[k], alpha=0.001)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch training: {steps / dt:.3f} steps/s (fmnist-small, batch {batch}), peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
