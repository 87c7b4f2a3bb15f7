"""The PyTorch side of the benchmarks, shared by the bench_*_torch.py scripts:
vapo's energy network (tests/oracle_torch.py's definition) with vapo's
initialisation, the VAPO loss (VAPO-MATH.md 3.6, score or pathwise estimator
as engine/loss.c), a sync-free Lamb with clipping and EMA as
train/trainer/optim.c, checkpoints, device timing and the RESULT line that
bench/gpu_check.sh parses."""
import json
import math
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from oracle_torch import energy, load  # noqa: E402,F401  (re-exported)

PRESETS = {  # (channels, side, widths, blocks): the same table as engine/arch.c
    "tiny": (1, 8, [8, 16], 1),
    "fmnist-small": (1, 28, [32, 64, 64], 1),
    "fmnist": (1, 28, [128, 256, 256], 2),
    "cifar10": (3, 32, [128, 256, 256, 256], 8),
}


def preset_arch(preset):
    c, hw, widths, blocks = PRESETS[preset]
    return {"act": "gelu", "head_act": "relu", "kernel": 3, "widths": widths, "blocks": blocks, "input": [c, hw, hw]}


def make_params(c, widths, blocks, scale=0.1, device="cpu"):
    """vapo_net_init's law (v ~ N(0, 1/fan_in), gains 1, biases 0) with ReZero
    scales `scale` instead of 0, so that every block does real work, as
    bench_net.c does."""
    p = {}

    def conv(name, cin, cout, k=3):
        p[name + ".v"] = torch.randn(cout, cin, k, k, device=device) / (cin * k * k) ** 0.5
        p[name + ".g"] = torch.ones(cout, device=device)
        p[name + ".b"] = torch.zeros(cout, device=device)

    conv("conv_in", c, widths[0])
    cin = widths[0]
    for l, w in enumerate(widths):
        for j in range(blocks):
            pre = f"levels.{l}.blocks.{j}"
            conv(pre + ".conv1", cin, w)
            conv(pre + ".conv2", w, w)
            p[pre + ".scale"] = torch.full((w,), scale, device=device)
            if cin != w:
                conv(pre + ".shortcut", cin, w)
            cin = w
    conv("head", cin, 1, 1)
    return {k: v.requires_grad_(True) for k, v in p.items()}


def load_model(path, device):
    """A vapo checkpoint: (float32 parameters on `device`, arch, the "vapo" metadata)."""
    tensors, meta = load(path)
    vapo = json.loads(meta["vapo"])
    params = {k: v.float().to(device) for k, v in tensors.items() if not k.startswith("train/")}
    return params, vapo["arch"], vapo


# ---- device, precision, timing, reporting ------------------------------------


def setup(device, threads=None, tf32=False):
    """The torch.device; float32 math stays float32 unless tf32 (vapo's CUDA
    backend runs cuDNN with CUDNN_FMA_MATH and cuBLAS without TF32, so the
    like-for-like comparison has TF32 off; PyTorch's own default for
    convolutions is on)."""
    if threads:
        torch.set_num_threads(threads)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = True  # autotune, as vapo's cudnnFind
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return torch.device(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn, *args):
    """(seconds, fn's result), with the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn(*args)
    sync(device)
    return time.perf_counter() - t0, out


def peak_mib(device):
    """Peak tensor memory on a GPU (torch.cuda.max_memory_allocated), peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def env_line(device):
    """One ENV line with the versions that BENCHMARKS.md records."""
    parts = [f"torch={torch.__version__}"]
    try:
        import scipy

        parts.append(f"scipy={scipy.__version__}")
    except ImportError:
        parts.append("scipy=none")
    if device.type == "cuda":
        parts += [f"cuda={torch.version.cuda}", f"cudnn={torch.backends.cudnn.version()}",
                  f"tf32={int(torch.backends.cudnn.allow_tf32)}", f"gpu={torch.cuda.get_device_name(device)}"]
    print("ENV " + " ".join(parts), flush=True)


def result(name, **fields):
    """The machine-readable summary line: `RESULT name=... key=value ...`;
    a field named `reason` (free text) always comes last."""
    reason = fields.pop("reason", None)
    items = [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()]
    if reason is not None:
        items.append(f"reason={reason}")
    print(f"RESULT name={name} " + " ".join(items), flush=True)


def first_line(exc):
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]


# ---- the VAPO loss --------------------------------------------------------------


class LossConfig:
    omega, nu, eps, lam = 1.0, 0.01, 1e-4, 1e-4  # vapo_loss_config_default


def schedule(t, c=LossConfig):
    """vapo_schedule_at for a batch of times (float64): m, sigma, w, vm, vs
    (jacobian innovation weight w = tau'/2)."""
    leps = math.log((1 + c.eps) / c.eps)
    w2, n2 = c.omega**2, c.nu**2
    tau = c.eps * torch.expm1(t * leps)
    den = n2 + tau * w2
    m, sigma = tau * w2 / den, c.omega * c.nu / den.sqrt()
    w = 0.5 * (tau + c.eps) * leps
    return m, sigma, w, 2 * w * w2 * n2 / den**2, -w * sigma * w2 / den


def perturb(xbar, t, z, pathwise, c=LossConfig):
    """vapo_loss_perturb: x = m xbar + sigma z and, for the pathwise estimator,
    the path velocity v; for the score estimator the weighted innovation w gc."""
    m, sigma, w, vm, vs = (s.view(-1, *[1] * (xbar.dim() - 1)) for s in schedule(t.double(), c))
    x = (m * xbar + sigma * z).float()
    if pathwise:
        return x, (vm * xbar + vs * z).float(), None
    d = xbar[0].numel()
    zz, xz = z.double().flatten(1).pow(2).sum(1), (xbar.double() * z).flatten(1).sum(1)
    m, sigma, w = m.flatten(), sigma.flatten(), w.flatten()
    gc = (sigma**2 * (zz - d) - 2 * (1 - m) * sigma * xz) / c.nu**2
    return x, None, (w * gc).float()


def vapo_loss(phi, g, v, wgc, c=LossConfig):
    """1/(B d) sum_i [1/2 |g_i|^2 + cov_i + lambda phi_i^2] with cov = -g.v
    (pathwise) or w gc phi (score)."""
    per = 0.5 * g.pow(2).flatten(1).sum(1) + c.lam * phi.pow(2)
    per = per - (g * v).flatten(1).sum(1) if v is not None else per + wgc * phi
    return per.mean() / g[0].numel()


def training_batch(xbar, pathwise):
    """One perturbed batch from data xbar (images in [-1, 1]): times
    t ~ U(0, 1) and noise z ~ N(0, I) drawn on xbar's device."""
    t = torch.rand(len(xbar), device=xbar.device)
    return perturb(xbar, t, torch.randn_like(xbar), pathwise)


# ---- optimizer ---------------------------------------------------------------------


class Lamb:
    """train/trainer/optim.c's Lamb: global-norm clipping, Adam direction
    without bias correction, per-tensor trust ratio |w| / |direction| with |w|
    clamped to [0, 10], then the EMA with its (1+t)/(10+t) warm-up. Written
    without .item(), so a GPU step never waits for the host."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, clip=1.0, ema_decay=0.999):
        self.params = list(params.values())
        self.lr, self.b1, self.b2, self.eps, self.clip, self.ema_decay = lr, beta1, beta2, eps, clip, ema_decay
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.ema = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def step(self, grads, step):
        gnorm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads))
        coef = (self.clip / gnorm).clamp(max=1.0).float() if self.clip > 0 else 1.0
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            g = g * coef
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            d = m / (v.sqrt() + self.eps)
            wn, an = p.norm().clamp(0, 10), d.norm()
            trust = torch.where((wn > 0) & (an > 0), wn / an, torch.ones_like(wn))
            p.sub_(self.lr * trust * d)
        decay = min(self.ema_decay, (1.0 + step) / (10.0 + step))
        for e, p in zip(self.ema, self.params):
            e.mul_(decay).add_(p, alpha=1 - decay)
        return gnorm
