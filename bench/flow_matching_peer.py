#!/usr/bin/python3
"""The flow-matching peer of the U-Net energy (issue 24): a time-conditioned
U-Net v(x, t) in PyTorch, the same shape as vapo's fmnist-unet (widths 32, 64,
64, one ResBlock per level, average-pool down, nearest up with skip
concatenation; plus what a time-conditioned net needs: a sinusoidal time
embedding added in every block, and GroupNorm), trained by conditional flow
matching on Fashion-MNIST (x_t = (1 - t) z + t x, target x - z; Adam, batch 64,
flips, EMA) for a budget of PROCESS CPU seconds (not wall-clock: the
machine is shared), then sampled with RK4 from t = 0 to 1 (4 NFE a step) with
the EMA weights into a grid PNG that bench/sample_quality.py --grid scores.

    flow_matching_peer.py --cpu-seconds 900 --out DIR [--threads 1] [--steps N]
        [--ema 0.999] [-n 256] [--seed 1000] [--rk4-steps 20] [--widths 32,64,64]

Writes DIR/samples.png (16 columns, 2-pixel gaps), DIR/peer.pt (EMA weights) and
DIR/peer.json (parameters, steps, CPU seconds of training and of sampling)."""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import pngio  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def train_images():
    with gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)
    return torch.from_numpy(raw.reshape(-1, 1, 28, 28).copy()).float() / 127.5 - 1


def norm(c):
    return nn.GroupNorm(8 if c % 8 == 0 else 1, c)


class Block(nn.Module):
    """norm -> SiLU -> conv (+ time) -> norm -> SiLU -> conv, + shortcut."""

    def __init__(self, cin, cout, tdim):
        super().__init__()
        self.n1, self.c1, self.t = norm(cin), nn.Conv2d(cin, cout, 3, padding=1), nn.Linear(tdim, cout)
        self.n2, self.c2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.sc = nn.Conv2d(cin, cout, 3, padding=1) if cin != cout else nn.Identity()

    def forward(self, h, temb):
        r = self.c1(F.silu(self.n1(h))) + self.t(temb)[:, :, None, None]
        return self.sc(h) + self.c2(F.silu(self.n2(r)))


class UNet(nn.Module):
    def __init__(self, widths, tdim=64):
        super().__init__()
        self.tdim = tdim
        self.temb = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(1, widths[0], 3, padding=1)
        cin, self.down = widths[0], nn.ModuleList()
        for w in widths:
            self.down.append(Block(cin, w, tdim))
            cin = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(Block(w + cin, w, tdim))
            cin = w
        self.out = nn.Sequential(norm(cin), nn.SiLU(), nn.Conv2d(cin, 1, 3, padding=1))

    def forward(self, x, t):
        half = self.tdim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        angles = 1000.0 * t[:, None] * freqs[None]
        temb = self.temb(torch.cat([angles.sin(), angles.cos()], 1))
        h, skips = self.conv_in(x), []
        for level, block in enumerate(self.down):
            if level:
                h = F.avg_pool2d(h, 2)
            h = block(h, temb)
            skips.append(h)
        skips.pop()  # the last level's output is h itself
        for block in self.up:
            h = torch.cat([skips.pop(), F.interpolate(h, scale_factor=2, mode="nearest")], 1)
            h = block(h, temb)
        return self.out(h)


def sample(model, n, seed, steps):
    """RK4 on dx/dt = v(x, t) from noise at t = 0 to data at t = 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    h = 1.0 / steps
    with torch.no_grad():
        for i in range(steps):
            t = torch.full((n,), i * h)
            k1 = model(x, t)
            k2 = model(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = model(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = model(x + h * k3, t + h)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def write_grid(path, x, cols=16, pad=2):
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    rows_n = (len(img) + cols - 1) // cols
    h, w = rows_n * 30 - pad, cols * 30 - pad
    canvas = np.zeros((h, w), np.uint8)
    for k, tile in enumerate(img):
        r, c = divmod(k, cols)
        canvas[r * 30:r * 30 + 28, c * 30:c * 30 + 28] = tile
    with open(path, "wb") as f:
        f.write(pngio.encode([canvas[i].tobytes() for i in range(h)], w, h, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-seconds", type=float, default=900.0, help="training budget in process CPU seconds")
    p.add_argument("--steps", type=int, default=0, help="stop after N steps instead (0: the CPU budget only)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the sampled weights")
    p.add_argument("--widths", default="32,64,64")
    p.add_argument("-n", type=int, default=256)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--rk4-steps", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    data = train_images()
    model = UNet([int(w) for w in a.widths.split(",")])
    ema = UNet([int(w) for w in a.widths.split(",")])
    ema.load_state_dict(model.state_dict())
    params = sum(q.numel() for q in model.parameters())
    print(f"flow-matching U-Net: {params} parameters, budget {a.cpu_seconds:.0f} CPU s", flush=True)
    opt = torch.optim.Adam(model.parameters(), a.lr)
    start, step, perm = time.process_time(), 0, torch.randperm(len(data))
    while time.process_time() - start < a.cpu_seconds and (not a.steps or step < a.steps):
        idx = perm[(step * a.batch) % (len(data) - a.batch):][:a.batch]
        xb = data[idx].clone()
        flip = torch.rand(a.batch) < 0.5
        xb[flip] = xb[flip].flip(3)
        z, t = torch.randn_like(xb), torch.rand(a.batch)
        xt = (1 - t)[:, None, None, None] * z + t[:, None, None, None] * xb
        loss = F.mse_loss(model(xt, t), xb - z)
        for group in opt.param_groups:  # 200-step warm-up, as vapo-train's (scaled to the short budget)
            group["lr"] = a.lr * min(1.0, (step + 1) / 200)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, q in zip(ema.parameters(), model.parameters()):
                e.mul_(a.ema).add_(q, alpha=1 - a.ema)
        step += 1
        if step % 200 == 0:
            print(f"step {step}  loss {loss.item():.4f}  CPU {time.process_time() - start:.0f} s", flush=True)
    train_cpu = time.process_time() - start
    torch.save(ema.state_dict(), os.path.join(a.out, "peer.pt"))
    start = time.process_time()
    x = sample(ema, a.n, a.seed, a.rk4_steps)
    sample_cpu = time.process_time() - start
    write_grid(os.path.join(a.out, "samples.png"), x)
    info = {"parameters": params, "steps": step, "train_cpu_s": round(train_cpu, 1), "batch": a.batch,
            "sample_cpu_s": round(sample_cpu, 1), "nfe": 4 * a.rk4_steps, "n": a.n, "seed": a.seed}
    json.dump(info, open(os.path.join(a.out, "peer.json"), "w"), indent=1)
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
