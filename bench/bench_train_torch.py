#!/usr/bin/python3
"""A VAPO training step in PyTorch, for comparison with vapo-train and
bench_train_step: the same network (float32), the same loss (VAPO-MATH.md
3.6, double backward), Lamb with clipping and EMA (vapo_torch.py).

    bench_train_torch.py [steps] [batch] [threads]     the CPU run of run_train_bench.sh
    bench_train_torch.py --device cuda --preset cifar10 --batch 256 --steps 5 --estimator pathwise

Modes (--mode):
  eager    autograd.grad(create_graph=True) for grad_x Phi, then autograd.grad of the loss
  func     the same gradient through nested torch.func.grad (functorch on torch 1.x), not compiled:
           a check of the path that `compile` uses
  compile  torch.compile, trying --compile-variants in order until one works:
             func          the whole loss gradient (both differentiations) as one graph, fullgraph=True
             forward       only the network's forward compiled; the double backward runs through it
             func-partial  func without fullgraph (graph breaks allowed)
           each compiled gradient is checked against eager autograd before timing; a variant that
           fails prints "compile: failed (variant: reason)" and the next is tried
Data: Fashion-MNIST for 1x28x28 presets when the file exists, else uniform noise in [-1, 1] (the
step's cost does not depend on the data). The optimizer update is eager in every mode.
Prints ms/step (median over --steps, after --warmup), steps/s, peak memory, and a RESULT line."""
import argparse
import functools
import gzip
import os
import statistics

import torch

from vapo_torch import (PRESETS, Lamb, energy, env_line, first_line, make_params, peak_mib, preset_arch, result,
                        setup, sync, timed, training_batch, vapo_loss)

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("legacy", nargs="*", type=int, help="[steps] [batch] [threads]: the positional form")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--preset", default="fmnist-small", choices=sorted(PRESETS))
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocation, autotuning)")
    p.add_argument("--threads", type=int)
    p.add_argument("--mode", default="eager", choices=["eager", "func", "compile"])
    p.add_argument("--compile-variants", default="func,forward,func-partial")
    p.add_argument("--estimator", default="score", choices=["score", "pathwise"])
    p.add_argument("--data", default="auto", choices=["auto", "fashion-mnist", "random"])
    p.add_argument("--tf32", action="store_true", help="allow TF32 convolutions and matmuls (CUDA)")
    a = p.parse_args()
    legacy = a.legacy + [None] * 3
    a.steps = a.steps or legacy[0] or 20
    a.batch = a.batch or legacy[1] or 64
    a.threads = a.threads or legacy[2] or os.cpu_count()
    return a


def data_source(kind, shape, device):
    """A function batch -> xbar on `device` (images in [-1, 1]), and its name."""
    if kind == "auto":
        kind = "fashion-mnist" if shape == [1, 28, 28] and os.path.exists(FASHION) else "random"
    if kind == "fashion-mnist":
        import numpy as np  # only here: a GPU machine's torch may come without numpy

        with gzip.open(FASHION) as f:
            raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28).copy()
        data = torch.from_numpy(raw).to(device)  # uint8: converted per batch, as a loader would
    else:
        data = torch.randint(0, 256, (1024, *shape), dtype=torch.uint8, device=device)
    return lambda b: data[torch.randint(0, len(data), (b,), device=device)].float() / 127.5 - 1, kind


# ---- the loss gradient, three ways ------------------------------------------------


def autograd_grads(energy_fn, params, x, v, wgc):
    x = x.requires_grad_(True)
    phi = energy_fn(params, x)[:, 0]
    (g,) = torch.autograd.grad(phi.sum(), x, create_graph=True)
    loss = vapo_loss(phi, g, v, wgc)
    return loss, list(torch.autograd.grad(loss, list(params.values())))


def functorch():
    try:
        import torch.func as f
    except ImportError:  # torch 1.x
        import functorch as f
    return f


def func_grads(arch, params, x, v, wgc):
    """The loss gradient with both differentiations as functional transforms,
    so that one traced graph holds the forward, grad_x and the parameter
    gradient (autograd's double backward cannot be captured by torch.compile)."""
    f = functorch()

    def loss_of(p):
        def phi_sum(y):
            phi = energy(p, arch, y)[:, 0]
            return phi.sum(), phi

        g, phi = f.grad(phi_sum, has_aux=True)(x)
        return vapo_loss(phi, g, v, wgc)

    grads, loss = f.grad_and_value(loss_of)(params)
    return loss, [grads[k] for k in params]


def eager_fn(arch):
    return functools.partial(autograd_grads, lambda p, x: energy(p, arch, x))


def compiled_fn(variant, arch):
    """The loss gradient with `variant` compiled; plain functions (not partials)
    are what torch.compile is documented to take."""

    def whole(params, x, v, wgc):
        return func_grads(arch, params, x, v, wgc)

    if variant == "func":
        return torch.compile(whole, fullgraph=True)
    if variant == "func-partial":
        return torch.compile(whole)
    if variant == "forward":
        return functools.partial(autograd_grads, torch.compile(lambda p, x: energy(p, arch, x)))
    raise ValueError(f"unknown compile variant '{variant}'")


def max_rel_diff(fn, ref, params, batch):
    """Largest |a - b| / |b| over parameter tensors between fn's gradient and ref's."""
    x, v, wgc = batch
    _, a = fn(params, x.clone(), v, wgc)
    _, b = ref(params, x.clone(), v, wgc)
    return max(((p - q).norm() / q.norm().clamp_min(1e-30)).item() for p, q in zip(a, b))


# ---- timing ----------------------------------------------------------------------------


def train_step(grads_fn, params, opt, draw, batch, pathwise, step):
    x, v, wgc = training_batch(draw(batch), pathwise)
    loss, grads = grads_fn(params, x, v, wgc)
    opt.step(grads, step)
    return loss


def time_steps(a, device, grads_fn, params, draw):
    """Per-step seconds of the --steps timed steps; the peak memory counts them only."""
    opt, times, loss = Lamb(params), [], None
    for step in range(a.warmup + a.steps):
        if step == a.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        dt, loss = timed(device, train_step, grads_fn, params, opt, draw, a.batch, a.estimator == "pathwise", step)
        if step >= a.warmup:
            times.append(dt)
    if not torch.isfinite(loss):
        raise RuntimeError(f"the loss is not finite ({loss.item()})")
    return times


def report(a, device, name, times, data, **extra):
    ms, mean = 1e3 * statistics.median(times), statistics.mean(times)
    mib = peak_mib(device)
    what = "GPU tensors" if device.type == "cuda" else "RSS"
    print(f"torch training ({name}): {1 / mean:.3f} steps/s, {ms:.2f} ms/step median ({a.preset}, batch {a.batch}, "
          f"{device.type}, {a.estimator}, data {data}), peak {what} {mib:.0f} MiB", flush=True)
    result(f"torch-train-{a.mode}", device=device.type, preset=a.preset, batch=a.batch, estimator=a.estimator,
           tf32=int(a.tf32), steps=a.steps, ms_per_step=ms, steps_per_s=1 / mean, peak_mib=mib, status="ok", **extra)


def run_compile(a, device, arch, params, draw):
    """Tries each variant in turn; the first that compiles, runs and agrees
    with eager autograd is timed."""
    reasons = []
    for variant in a.compile_variants.split(","):
        print(f"compile: trying {variant}", flush=True)
        try:
            fn = compiled_fn(variant, arch)
            batch = training_batch(draw(a.batch), a.estimator == "pathwise")
            compile_s, diff = timed(device, max_rel_diff, fn, eager_fn(arch), params, batch)
            print(f"compile: {variant} compiled and ran in {compile_s:.1f} s; gradient max rel diff vs eager "
                  f"{diff:.2e}", flush=True)
            if not diff < 1e-2:
                raise RuntimeError(f"compiled gradient differs from eager autograd (max rel diff {diff:.2e})")
            times = time_steps(a, device, fn, params, draw)
            return times, dict(compiled=variant, compile_s=compile_s, grad_rel_diff=diff)
        except Exception as e:  # noqa: BLE001 (any failure of torch.compile is a result to report)
            reasons.append(f"{variant}: {first_line(e)}")
            print(f"compile: failed ({reasons[-1]})", flush=True)
            torch._dynamo.reset()
    return None, "; ".join(reasons)


def main():
    a = parse()
    device = setup(a.device, a.threads, a.tf32)
    env_line(device)
    arch = preset_arch(a.preset)
    c, _, widths, blocks = PRESETS[a.preset]
    params = make_params(c, widths, blocks, device=device)
    draw, data = data_source(a.data, arch["input"], device)
    if a.mode == "compile":
        if not hasattr(torch, "compile"):
            result("torch-train-compile", device=device.type, preset=a.preset, batch=a.batch, status="failed",
                   reason=f"torch {torch.__version__} has no torch.compile")
            return
        times, info = run_compile(a, device, arch, params, draw)
        if times is None:
            result("torch-train-compile", device=device.type, preset=a.preset, batch=a.batch, status="failed",
                   reason=info)
            return
        report(a, device, f"compile, {info['compiled']}", times, data, **info)
        return
    fn = eager_fn(arch) if a.mode == "eager" else functools.partial(func_grads, arch)
    if a.mode == "func":
        diff = max_rel_diff(fn, eager_fn(arch), params, training_batch(draw(a.batch), a.estimator == "pathwise"))
        print(f"func: gradient max rel diff vs eager {diff:.2e}")
    sync(device)
    report(a, device, a.mode, time_steps(a, device, fn, params, draw), data)


if __name__ == "__main__":
    main()
