#!/usr/bin/python3
"""The paper's way of sampling, for comparison with bench_sample: the same
checkpoint in PyTorch, the whole batch flattened into one state, SciPy's
solve_ivp(method='RK45') calling torch for grad Phi. Prints images/s and NFE.
    bench_sample_torch.py MODEL [n] [rtol] [threads]"""
import json
import os
import sys
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from oracle_torch import energy, load  # noqa: E402


def main():
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else os.cpu_count())
    tensors, meta = load(path)
    vapo = json.loads(meta["vapo"])
    arch, t_end = vapo["arch"], vapo["sampling"]["t_end"]
    params = {k: v.float() for k, v in tensors.items() if not k.startswith("train/")}
    c, h, w = arch["input"]
    x0 = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(1))

    def grad(x):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(params, arch, x)[:, 0].sum(), x)
        return g

    def rhs(_t, y):
        return grad(torch.from_numpy(y.astype(np.float32)).view(n, c, h, w)).numpy().reshape(-1).astype(np.float64)

    x = x0.clone()
    grad(x)
    t0, evals = time.perf_counter(), 0
    while time.perf_counter() - t0 < 3.0 or evals < 3:
        grad(x)
        evals += 1
    print(f"torch grad-Phi evaluations: {evals * n / (time.perf_counter() - t0):.1f} images/s (batch {n})")
    t0 = time.perf_counter()
    sol = solve_ivp(rhs, (0, t_end), x0.numpy().reshape(-1).astype(np.float64), method="RK45", rtol=tol, atol=tol)
    dt = time.perf_counter() - t0
    print(f"torch+scipy RK45 flattened batch: {n / dt:.3f} images/s, NFE {sol.nfev} (rtol=atol={tol}, T={t_end})")


if __name__ == "__main__":
    main()
