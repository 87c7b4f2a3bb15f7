#!/usr/bin/python3
"""Compares vapo's RK45 with SciPy's solve_ivp(method='RK45').

test_ode writes one line per trajectory to <build>/ode_rk45_results.txt:
    field rtol atol t_end h0 nfe dim x0[dim] x[dim]
This script re-solves each one with SciPy (same field in float32 arithmetic,
same rtol/atol, first_step = h0 when given) and checks that the final states
agree within the tolerance and NFE within a factor 1.5. vapo follows SciPy's
controller step for step, so NFE usually match exactly; the script says so.

Run by ctest with Debian's /usr/bin/python3 (python3-scipy from scripts/setup.sh).
"""
import sys

try:
    import numpy as np
    from scipy.integrate import solve_ivp
    import scipy
except ImportError as e:
    sys.exit(f"ode_scipy_ref: FAIL: {sys.executable} cannot import numpy/scipy ({e}); "
             "install Debian's python3-scipy (scripts/setup.sh)")

F32 = np.float32
DECAY_K = np.array([0.5, 1.0, 2.0, 4.0], dtype=F32)


# The fields of tests/test_ode.c, with the same float32 arithmetic.
def decay(x):
    return -np.resize(DECAY_K, x.size) * x


def rotdecay(x):
    a, w = F32(0.3), F32(3.0)
    return np.array([-a * x[0] - w * x[1], w * x[0] - a * x[1]], dtype=F32)


def logistic(x):
    return x * (F32(1) - x)


def osc(x):
    return np.array([-x[2] * x[1], x[2] * x[0], 0], dtype=F32)


FIELDS = {"decay": decay, "rotdecay": rotdecay, "logistic": logistic, "osc": osc}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: ode_scipy_ref.py <build>/ode_rk45_results.txt")
    try:
        lines = open(sys.argv[1]).read().split("\n")
    except OSError as e:
        sys.exit(f"ode_scipy_ref: FAIL: {e} (test_ode writes this file; run it first)")
    lines = [l for l in lines if l.strip()]
    if not lines:
        sys.exit("ode_scipy_ref: FAIL: no cases in " + sys.argv[1])

    print(f"SciPy {scipy.__version__}, numpy {np.__version__}")
    failures, same_nfe = 0, 0
    for line in lines:
        tok = line.split()
        name = tok[0]
        rtol, atol, t_end, h0 = map(float, tok[1:5])
        nfe_c, dim = int(tok[5]), int(tok[6])
        vals = np.array(tok[7:], dtype=np.float64)
        x0, x_c = vals[:dim], vals[dim:2 * dim]
        field = FIELDS[name]

        def fun(t, y):
            return field(y.astype(F32)).astype(np.float64)

        sol = solve_ivp(fun, (0.0, t_end), x0, method="RK45", rtol=rtol, atol=atol,
                        first_step=h0 if h0 > 0 else None)
        x_s, nfe_s = sol.y[:, -1], sol.nfev
        # difference in units of the tolerance scale
        diff = np.max(np.abs(x_c - x_s) / (atol + rtol * np.abs(x_s)))
        ratio = max(nfe_c, nfe_s) / min(nfe_c, nfe_s)
        ok = sol.success and diff <= 2.0 and ratio <= 1.5
        same_nfe += nfe_c == nfe_s
        print(f"{'ok  ' if ok else 'FAIL'} {name:9s} x0={np.array2string(x0, precision=3)} "
              f"rtol={rtol:g} atol={atol:g} h0={h0:g}: NFE vapo {nfe_c} scipy {nfe_s}, "
              f"max |diff|/tol {diff:.2e}")
        failures += not ok
    print(f"{len(lines)} cases, {same_nfe} with identical NFE, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
