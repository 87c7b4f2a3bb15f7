#!/usr/bin/python3
"""RK45 sampling of a vapo checkpoint in PyTorch, for comparison with
bench_sample: the same network and weights, the same tolerances and T.

    bench_sample_torch.py MODEL [n] [rtol] [threads] [--device cuda] [--solver scipy,batched] [--noise FILE]

Solvers (--solver, comma-separated; default scipy):
  scipy    the paper's way: the whole batch flattened into one state, SciPy's
           solve_ivp(method='RK45') on the host calling torch for grad Phi (each
           call copies the state host -> device -> host); one step size for all
  batched  rk45_torch.py: Dormand-Prince with per-sample step control, all state
           on the device, torch ops only
On CUDA the batched solve is timed after one untimed solve of the same noise
(rows finish at different steps, and each new batch size costs cuDNN an
autotuning pass once). NFE depends on the weights and on the noise (drawn by torch here, by vapo's RNG
in bench_sample: same law, other numbers); --noise FILE solves from bench_sample's noise instead
(its NOISE argument), so that both sides do the same work. Prints grad Phi evaluations per
second, images/s, NFE and the solve's process CPU seconds per image per solver, and a RESULT
line per solver."""
import argparse
import time

import torch

import rk45_torch
from vapo_torch import energy, env_line, load_model, result, setup, timed


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("n", nargs="?", type=int, default=64, help="images (default 64)")
    p.add_argument("rtol", nargs="?", type=float, default=1e-4, help="rtol = atol (default 1e-4)")
    p.add_argument("threads", nargs="?", type=int)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--solver", default="scipy", help="scipy, batched or both, comma-separated")
    p.add_argument("--eval-seconds", type=float, default=3.0, help="how long to time grad Phi alone")
    p.add_argument("--tf32", action="store_true", help="allow TF32 (CUDA)")
    p.add_argument("--noise", help="initial noise, n x d raw float32 (bench_sample's NOISE argument)")
    return p.parse_args()


def grad_fn(params, arch):
    """grad_x Phi of a float32 NCHW batch."""

    def grad(x):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(params, arch, x)[:, 0].sum(), x)
        return g

    return grad


def eval_rate(device, grad, x, seconds):
    """grad Phi evaluations of the whole batch per second, in images/s."""
    grad(x)
    timed(device, grad, x)  # allocation and autotuning
    t0, evals = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or evals < 3:
        timed(device, grad, x)
        evals += 1
    return evals * len(x) / (time.perf_counter() - t0)


def solve_scipy(device, grad, x0, t_end, tol):
    import numpy as np  # with SciPy only: the batched solver needs neither
    from scipy.integrate import solve_ivp

    shape = x0.shape

    def rhs(_t, y):
        x = torch.from_numpy(y.astype(np.float32)).to(device).view(shape)
        return grad(x).cpu().numpy().reshape(-1).astype(np.float64)

    sol = solve_ivp(rhs, (0, t_end), x0.cpu().numpy().reshape(-1).astype(np.float64), method="RK45", rtol=tol,
                    atol=tol)
    if sol.status != 0:
        raise RuntimeError(f"solve_ivp: {sol.message}")
    return float(sol.nfev), 0


def solve_batched(device, grad, x0, t_end, tol):
    shape = x0.shape[1:]

    def field(y):
        return grad(y.float().view(-1, *shape)).flatten(1).double()

    _, nfe, failed = rk45_torch.solve(field, x0.flatten(1), t_end, tol, tol)
    return nfe.double().mean().item(), int(failed.sum())


SOLVERS = {"scipy": ("torch+scipy RK45 flattened batch", solve_scipy),
           "batched": ("torch batched RK45 per-sample steps", solve_batched)}


def main():
    a = parse()
    device = setup(a.device, a.threads, a.tf32)
    env_line(device)
    params, arch, vapo = load_model(a.model, device)
    t_end, omega = vapo["sampling"]["t_end"], vapo.get("loss", {}).get("omega", 1.0)
    gen = torch.Generator().manual_seed(1)
    if a.noise:  # bench_sample's noise: omega is already in it
        import numpy as np

        x0 = torch.from_numpy(np.fromfile(a.noise, dtype=np.float32).reshape(a.n, *arch["input"])).to(device)
    else:
        x0 = (omega * torch.randn(a.n, *arch["input"], generator=gen)).to(device)
    grad = grad_fn(params, arch)
    rate = eval_rate(device, grad, x0, a.eval_seconds)
    print(f"torch grad-Phi evaluations: {rate:.1f} images/s (batch {a.n}, {device.type})", flush=True)
    for name in a.solver.split(","):
        label, solve = SOLVERS[name]
        if name == "batched" and device.type == "cuda":  # untimed: cudnn.benchmark meets each batch size
            solve(device, grad, x0, t_end, a.rtol)  # once, as bench_sample's warm-up solve does for cudnnFind
        cpu0 = time.process_time()
        dt, (nfe, failed) = timed(device, solve, device, grad, x0, t_end, a.rtol)
        cpu = (time.process_time() - cpu0) / a.n
        print(f"{label}: {a.n / dt:.3f} images/s, mean NFE {nfe:.1f}, {cpu:.4f} CPU s/image "
              f"(rtol=atol={a.rtol:g}, T={t_end:g}, "
              f"{a.n} images, {device.type}){f', {failed} FAILED' if failed else ''}", flush=True)
        result(f"torch-rk45-{name}", device=device.type, n=a.n, rtol=a.rtol, t_end=t_end, images_per_s=a.n / dt,
               mean_nfe=nfe, seconds=dt, cpu_s_per_image=cpu, cpu_ms_per_image_eval=1e3 * cpu / nfe, failed=failed, eval_images_per_s=rate, status="failed" if failed else "ok")


if __name__ == "__main__":
    main()
