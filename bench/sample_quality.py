#!/usr/bin/python3
"""How recognisable are a Fashion-MNIST model's samples? An independent judge
(bench/judge.py: a small PyTorch CNN trained once on the training split, 87.6%
on the test split, weights committed as models/fmnist-judge.safetensors)
classifies vapo-sample's images.

    sample_quality.py MODEL [MODEL ...] [-n 256] [--seed 1000] [--threads 2]
    sample_quality.py --grid GRID.png [...]     (any grid of 28x28 tiles, 2-pixel gaps)

For each model it runs `build/vapo-sample MODEL` (the model's own solver
settings) and prints, over the samples: the classifier's mean confidence (max
softmax), the share it is more than 90% sure of, the Inception-style score
exp E[KL(p(y|x) || p(y))] (high when each image is clearly one class and the
classes are spread), and the class histogram. The same numbers for the test
images, and for the test images blurred or reduced to 7x7, come first as the
scale: a model whose samples score like the 7x7 images has the garments' shapes
but not their detail. A proxy for FID, which needs an ImageNet network."""
import argparse
import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import pngio  # noqa: E402  (the tests' PNG decoder, independent of the engine)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import judge as judge_net  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
NAMES = "top trouser pullover dress coat sandal shirt sneaker bag boot".split()
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def idx(name):
    with gzip.open(os.path.join(DATA, name)) as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=16 if "images" in name else 8)


def images(name):
    return torch.from_numpy(idx(name).reshape(-1, 1, 28, 28).copy()).float() / 127.5 - 1


def grid_tiles(path):
    """The 28x28 tiles of a grid PNG (2-pixel gaps, as vapo-sample and vapo-train write)."""
    with open(path, "rb") as f:
        channels, h, w, rows = pngio.decode(f.read())
    if channels != 1 or (h + 2) % 30 or (w + 2) % 30:
        raise SystemExit(f"{path}: not a grid of 28x28 gray tiles with 2-pixel gaps ({w}x{h}, {channels} channels)")
    g = np.frombuffer(b"".join(rows), np.uint8).reshape(h, w).astype(np.float32) / 127.5 - 1
    tiles = [g[r:r + 28, c:c + 28] for r in range(0, h, 30) for c in range(0, w, 30)]
    return torch.from_numpy(np.stack(tiles))[:, None]


def report(judge, name, x):
    with torch.no_grad():
        p = F.softmax(judge(x), 1)
    conf, marginal = p.max(1).values, p.mean(0)
    score = torch.exp((p * (p.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1).mean()).item()
    hist = np.bincount(p.argmax(1).numpy(), minlength=10)
    print(f"{name:<44} n {len(x):4d}  confidence {conf.mean():.3f}  >0.9 {(conf > 0.9).float().mean():.2f}  "
          f"IS {score:5.2f}  " + " ".join(f"{NAMES[k]}:{hist[k]}" for k in range(10)), flush=True)


def sample_grid(a, model, out):
    cmd = [a.vapo_sample, model, "-n", str(a.n), "--seed", str(a.seed), "--cols", "16", "--threads", str(a.threads),
           "--device", "cpu", "-q", "-o", out]
    subprocess.run(cmd, check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="vapo checkpoints to sample")
    p.add_argument("--grid", action="append", default=[], help="score an existing grid PNG instead")
    p.add_argument("-n", type=int, default=256, help="samples per model (default 256)")
    p.add_argument("--seed", type=int, default=1000, help="noise seed (default 1000: not the training grids' 0)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vapo-sample", default=os.path.join(ROOT, "build", "vapo-sample"))
    a = p.parse_args()
    judge = judge_net.load(a.threads)
    test = images("t10k-images-idx3-ubyte.gz")[:a.n]
    report(judge, "test images", test)
    report(judge, "test images, 3x3 box blur", F.avg_pool2d(test, 3, 1, 1))
    report(judge, "test images, reduced to 7x7", F.interpolate(F.avg_pool2d(test, 4), scale_factor=4, mode="bilinear"))
    for path in a.grid:
        report(judge, path, grid_tiles(path))
    with tempfile.TemporaryDirectory() as tmp:
        for k, model in enumerate(a.models):
            out = os.path.join(tmp, f"{k}.png")
            sample_grid(a, model, out)
            report(judge, model, grid_tiles(out))


if __name__ == "__main__":
    main()
