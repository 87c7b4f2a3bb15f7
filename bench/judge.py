#!/usr/bin/python3
"""The independent judge of Fashion-MNIST samples: a small PyTorch CNN trained
on the training split (4 epochs with left-right flips, as the models see the
data), used by bench/eval.py (FD in its 64-wide feature space) and
bench/sample_quality.py (confidence, Inception-style score).

    judge.py [--train] [--threads 2]

Its weights are committed as models/fmnist-judge.safetensors (61,000
parameters, 240 KB); --train makes them again (seed 0; a few minutes of CPU)
and prints the test accuracy. Layers: three 3x3 convolutions (16, 32, 64
channels, ReLU, 2x2 max-pool after the first two), a 3x3 average pool, a
dense layer to 64 (ReLU: the features), a linear layer to the 10 classes."""
import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
WEIGHTS = os.path.join(ROOT, "models", "fmnist-judge.safetensors")
DATA = "/usr/share/datasets/fashion-mnist"
EPOCHS = 4


class Judge(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(
            32, 64, 3, padding=1)
        self.f1 = nn.Linear(64 * 9, 64)
        self.fc = nn.Linear(64, 10)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.c3(x)), 3)
        return F.relu(self.f1(x.flatten(1)))

    def forward(self, x):
        return self.fc(self.features(x))


def idx(name):
    with gzip.open(os.path.join(DATA, name)) as f:
        raw = f.read()
    return np.frombuffer(raw, np.uint8, offset=16 if "images" in name else 8)


def to_input(u8):
    """uint8 (n, 28, 28) -> float (n, 1, 28, 28) in [-1, 1], as the models see images."""
    return torch.from_numpy(np.array(u8, np.uint8).reshape(-1, 1, 28, 28)).float() / 127.5 - 1


def save(net, path):
    header, data = {}, b""
    for name, t in net.state_dict().items():
        raw = t.detach().float().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {"what": "bench/judge.py: the Fashion-MNIST judge (train split, 4 epochs, seed 0)"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def load(threads=1, path=WEIGHTS):
    torch.set_num_threads(threads)
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    net, state = Judge(), {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        state[name] = torch.from_numpy(np.frombuffer(raw[8 + n + a:8 + n + b], "<f4").reshape(h["shape"]).copy())
    net.load_state_dict(state)
    return net.eval()


def features(net, u8):
    """(features (n, 64), class probabilities (n, 10)) of uint8 images."""
    with torch.no_grad():
        x = to_input(u8)
        f = torch.cat([net.features(b) for b in x.split(500)])
        return f.numpy().astype(np.float64), F.softmax(net.fc(f), 1).numpy().astype(np.float64)


def inception_score(p):
    marginal = p.mean(0)
    kl = (p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(marginal, 1e-12, None)))).sum(1)
    return float(np.exp(kl.mean()))


def train(threads):
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    net = Judge()
    x, y = to_input(idx("train-images-idx3-ubyte.gz")), torch.from_numpy(idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for epoch in range(EPOCHS):
        for b in torch.randperm(len(x)).split(128):
            xb = x[b].clone()
            flip = torch.rand(len(b)) < 0.5
            xb[flip] = xb[flip].flip(3)
            loss = F.cross_entropy(net(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"judge: epoch {epoch + 1} loss {loss.item():.3f}", file=sys.stderr, flush=True)
    return net.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true", help=f"train and write {WEIGHTS}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fixture", help="write the features and probabilities of test images 0..3 (tests/train_quality.c)")
    a = p.parse_args()
    net = train(a.threads) if a.train else load(a.threads)
    if a.train:
        save(net, WEIGHTS)
    if a.fixture:
        f, prob = features(net, idx("t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28)[:4])
        with open(a.fixture, "w") as out:
            json.dump({"images": os.path.join(DATA, "t10k-images-idx3-ubyte.gz"), "indices": [0, 1, 2, 3],
                       "features": f.round(7).tolist(), "probabilities": prob.round(9).tolist()}, out)
    _, prob = features(net, idx("t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28))
    acc = (prob.argmax(1) == idx("t10k-labels-idx1-ubyte.gz")).mean()
    print(f"judge: test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
