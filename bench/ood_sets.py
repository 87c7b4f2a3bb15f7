#!/usr/bin/python3
"""Out-of-distribution image sets for a Fashion-MNIST model, built from what a
Debian machine has: the Fashion-MNIST test split (transformed), synthetic
images and scikit-learn's 8x8 handwritten digits (python3-sklearn; the set is
skipped with a note when it is missing). Every set is deterministic (numpy
seed 0) and written as an idx3-ubyte file that vapo-score reads.

    ood_sets.py OUTDIR [-n 1000]

Test images 0..1999 are the model's calibration set (vapo-train --calib);
the in-distribution evaluation set is test images 2000..2000+n, and the
transformed sets start from test images 5000.. (so none is a calibration or
evaluation image). Sets, with what they probe:
  vflip      upside down (flips are on the training side only left-right)
  rot90      turned a quarter
  blur       3x3 box blur (less detail: a likelihood score likes it)
  lowres     reduced to 7x7 and blown up again (simpler than the data)
  interp     the pixel mean of two test images (ghosts of two garments)
  invert     255 - x (light background)
  constant   one random gray level per image (the simplest images)
  shapes     one filled random rectangle or ellipse on black (simple)
  digits     scikit-learn's 8x8 digits, blown up to 28x28
  uniform    uniform 8-bit noise
  gaussian   N(mid-gray, (0.25 * 255)^2) noise, clipped
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
ID_FIRST, OOD_FIRST = 2000, 5000


def read_idx(path):
    with gzip.open(path) as f:
        raw = f.read()
    n, h, w = struct.unpack(">III", raw[4:16])
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w)


def write_idx(path, images):
    images = np.ascontiguousarray(images, np.uint8)
    n, h, w = images.shape
    with open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x00000803, n, h, w) + images.tobytes())


def resize(images, side):
    """Bilinear resize of (n, h, w) float images to side x side (align corners)."""
    n, h, w = images.shape
    ys, xs = np.linspace(0, h - 1, side), np.linspace(0, w - 1, side)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    top = images[:, y0][:, :, x0] * (1 - fx) + images[:, y0][:, :, x1] * fx
    bot = images[:, y1][:, :, x0] * (1 - fx) + images[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bot * fy


def box_blur(images):
    p = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1)), mode="edge")
    return sum(p[:, dy:dy + 28, dx:dx + 28] for dy in range(3) for dx in range(3)) / 9


def shapes(rng, n):
    yy, xx = np.mgrid[0:28, 0:28]
    out = np.zeros((n, 28, 28))
    for i in range(n):
        cy, cx = rng.uniform(8, 20, 2)
        ry, rx = rng.uniform(3, 11, 2)
        level = rng.uniform(80, 255)
        if rng.random() < 0.5:
            mask = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        else:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        out[i][mask] = level
    return out


def digits(n):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    d = load_digits().images[:n] / 16.0 * 255  # 8x8, 0..16
    return resize(np.pad(d, ((0, 0), (1, 1), (1, 1))), 28)  # a margin like MNIST's


def build(n):
    """{name: (n, 28, 28) uint8} in a fixed order; the in-distribution set first."""
    rng = np.random.default_rng(0)
    test = read_idx(os.path.join(DATA, "t10k-images-idx3-ubyte.gz"))
    ind = test[ID_FIRST:ID_FIRST + n]
    src = test[OOD_FIRST:OOD_FIRST + n].astype(np.float64)
    other = test[OOD_FIRST + n:OOD_FIRST + 2 * n].astype(np.float64)
    sets = {
        "test": ind,
        "vflip": src[:, ::-1, :],
        "rot90": np.rot90(src, 1, axes=(1, 2)),
        "blur": box_blur(src),
        "lowres": resize(resize(src, 7), 28),
        "interp": 0.5 * (src + other),
        "invert": 255 - src,
        "constant": np.repeat(rng.integers(0, 256, n).astype(np.float64), 28 * 28).reshape(n, 28, 28),
        "shapes": shapes(rng, n),
        "digits": digits(n),
        "uniform": rng.integers(0, 256, (n, 28, 28)).astype(np.float64),
        "gaussian": 127.5 + 0.25 * 255 * rng.standard_normal((n, 28, 28)),
    }
    return {k: np.clip(np.rint(v), 0, 255).astype(np.uint8) for k, v in sets.items() if v is not None}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("-n", type=int, default=1000, help="images per set (default 1000)")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sets = build(a.n)
    if "digits" not in sets:
        print("ood_sets: no python3-sklearn: the digits set is skipped", file=sys.stderr)
    for name, images in sets.items():
        write_idx(os.path.join(a.out, name + ".idx"), images)
    print(" ".join(sets))


if __name__ == "__main__":
    main()
