#!/usr/bin/python3
"""A batched Dormand-Prince RK45 in torch with per-sample step control: every
row of the batch is its own trajectory with its own time and step size, all
state stays on the device, and only the running rows go through the field.
The step logic is SciPy's solve_ivp(method='RK45') row by row (as
engine/ode.c: FSAL, RMS error norm, safety 0.9, factors in [0.2, 10],
select_initial_step, last step clipped to t_end), so a batch of one takes
SciPy's steps. The state is float64 (as vapo's and SciPy's); the field sees
float32.

    rk45_torch.py      checks itself against SciPy on a small stiff-ish field"""
import torch

# Dormand-Prince 5(4) tableau (scipy.integrate._ivp.rk.RK45)
C = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1]
A = [[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
     [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
     [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]]
B = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]
E = [-71 / 57600, 0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40]
SAFETY, MIN_FACTOR, MAX_FACTOR, ERR_EXP = 0.9, 0.2, 10.0, -1 / 5


def rms(x):
    return x.pow(2).mean(1).sqrt()


def initial_step(field, y, f, rtol, atol, t_end):
    """SciPy's select_initial_step (order 4) for every row; costs one evaluation."""
    scale = atol + y.abs() * rtol
    d0, d1 = rms(y / scale), rms(f / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1).clamp(max=t_end)
    f1 = field(y + h0[:, None] * f)
    d2 = rms((f1 - f) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, (h0 * 1e-3).clamp(min=1e-6), (0.01 / dmax) ** (1 / 5))
    return torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h1, t_end))


def attempt(field, y, f, h):
    """One Dormand-Prince step of size h (per row) from (y, f): y_new, f_new
    and the error estimate h * K^T E (6 evaluations)."""
    K = [f]
    for s in range(1, 6):
        K.append(field(y + h * sum(a * k for a, k in zip(A[s], K))))
    y_new = y + h * sum(b * k for b, k in zip(B, K))
    K.append(field(y_new))
    return y_new, K[6], h * sum(e * k for e, k in zip(E, K))


def new_step_size(h, err, retried):
    """SciPy's step factor: grow after success (at most 1 after a rejection in
    the same step), shrink after failure; a non-finite error shrinks by 5."""
    finite = torch.isfinite(err)
    grow = torch.where(err == 0, torch.full_like(err, MAX_FACTOR), (SAFETY * err.pow(ERR_EXP)).clamp(max=MAX_FACTOR))
    grow = torch.where(retried, grow.clamp(max=1.0), grow)
    shrink = torch.where(finite, (SAFETY * err.pow(ERR_EXP)).clamp(min=MIN_FACTOR), torch.full_like(err, MIN_FACTOR))
    return torch.where(finite & (err < 1), h * grow, h * shrink)


def solve(field, y0, t_end, rtol, atol, max_nfe=10000):
    """Integrates dy/dt = field(y) for each row of y0 (n x d) on [0, t_end].
    field maps a float64 (m x d) batch of running rows to their derivative.
    Returns (final rows, NFE per row, failed mask)."""
    y = y0.double().clone()
    n, dev = y.shape[0], y.device
    f = field(y)
    h = initial_step(field, y, f, rtol, atol, t_end)
    t = torch.zeros(n, dtype=torch.float64, device=dev)
    nfe = torch.full((n,), 2, dtype=torch.long, device=dev)
    retried = torch.zeros(n, dtype=torch.bool, device=dev)
    done, failed = torch.zeros_like(retried), torch.zeros_like(retried)
    while True:
        idx = (~done).nonzero().squeeze(1)
        if idx.numel() == 0:
            return y, nfe, failed
        ti, hi, ri = t[idx], h[idx], retried[idx]
        min_step = 10 * (torch.nextafter(ti, torch.full_like(ti, float("inf"))) - ti)
        too_small = ri & (hi < min_step)  # SciPy clamps up at a step's start, fails on a retry
        hi = torch.where(ri, hi, torch.maximum(hi, min_step))
        t_new = torch.minimum(ti + hi, torch.full_like(ti, t_end))
        hi = t_new - ti
        y_new, f_new, err_vec = attempt(field, y[idx], f[idx], hi[:, None])
        scale = atol + torch.maximum(y[idx].abs(), y_new.abs()) * rtol
        err = rms(err_vec / scale)
        ok = (err < 1) & ~too_small  # NaN fails the comparison: rejected, as in SciPy
        h[idx] = new_step_size(hi, err, ri)
        nfe[idx] += 6
        y[idx] = torch.where(ok[:, None], y_new, y[idx])
        f[idx] = torch.where(ok[:, None], f_new, f[idx])
        t[idx] = torch.where(ok, t_new, ti)
        retried[idx] = ~ok
        stop = too_small | (nfe[idx] >= max_nfe)
        failed[idx] |= stop & ~(ok & (t_new >= t_end))
        done[idx] |= (ok & (t_new >= t_end)) | stop


def _selfcheck():
    """One row against SciPy: the same steps, so the same NFE and endpoint."""
    import numpy as np
    from scipy.integrate import solve_ivp

    rng = np.random.default_rng(0)
    M = rng.standard_normal((16, 16)) / 4 - 2 * np.eye(16)

    def field(y):
        return torch.tanh(y @ torch.from_numpy(M).T) * 3

    for tol in (1e-3, 1e-6):
        y0 = rng.standard_normal(16)
        ref = solve_ivp(lambda _t, y: field(torch.from_numpy(y)[None])[0].numpy(), (0, 1.5), y0, method="RK45",
                        rtol=tol, atol=tol)
        y, nfe, failed = solve(field, torch.from_numpy(y0)[None], 1.5, tol, tol)
        dev = np.abs(y[0].numpy() - ref.y[:, -1]).max()
        print(f"rtol {tol:g}: SciPy NFE {ref.nfev}, ours {nfe.item()}, max |y - y_scipy| {dev:.1e}, failed {bool(failed)}")
        assert nfe.item() == ref.nfev and dev < 1e-9, "differs from SciPy"
    ys = torch.from_numpy(rng.standard_normal((5, 16)))
    batch, nfe_b, _ = solve(field, ys, 1.5, 1e-4, 1e-4)
    for i in range(5):
        one, nfe_1, _ = solve(field, ys[i : i + 1], 1.5, 1e-4, 1e-4)
        same = nfe_1.item() == nfe_b[i].item() and (one[0] - batch[i]).abs().max() < 1e-12  # BLAS round-off
        assert same, f"row {i}: batch != alone"
    print(f"batch of 5 = each alone: NFE {nfe_b.tolist()}")


if __name__ == "__main__":
    _selfcheck()
