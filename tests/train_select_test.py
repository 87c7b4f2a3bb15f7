#!/usr/bin/python3
"""vapo-train --select fd on Fashion-MNIST (the real program, a few steps):
an FD is logged at every grid and at the end, and model.safetensors holds the
EMA weights of the step with the lowest one (equal, tensor by tensor, to that
step's checkpoint), with vapo.select saying which. A model of other-sized
images is refused with a message.
  train_select_test.py VAPO_TRAIN JUDGE"""
import json
import os
import struct
import subprocess
import sys
import tempfile

train, judge = sys.argv[1], sys.argv[2]


def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["vapo"])
    data = raw[8 + n:]
    return meta, {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()
                  if not k.startswith("train/")}


if not os.path.exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"):
    print("SKIP: no Fashion-MNIST (scripts/setup.sh installs dataset-fashion-mnist)")
    sys.exit(77)
with tempfile.TemporaryDirectory() as d:
    args = [train, "--preset", "fmnist-small", "--widths", "8,16", "--global-head", "16", "--batch", "8",
            "--steps", "3", "--sample-every", "1", "--save-every", "1", "--keep", "5", "--grid", "4",
            "--calib", "16", "--sample-tol", "1e-2", "--select", "fd", "--select-n", "24", "--judge", judge,
            "--threads", "1", "--lr", "3e-3", "--warmup", "1", "--out", f"{d}/r"]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"vapo-train --select fd failed:\n{p.stderr[-3000:]}")
    fds = [json.loads(l) for l in open(f"{d}/r/metrics.jsonl") if '"fd"' in l]
    steps = [x["step"] for x in fds]
    if steps != [1, 2, 3] or not all(x["fd"] > 0 and x["fd_n"] == 24 for x in fds):
        sys.exit(f"FD lines at steps 1, 2, 3 expected: {fds}")
    best = min(fds, key=lambda x: x["fd"])
    meta, weights = load(f"{d}/r/model.safetensors")
    sel = meta.get("select", {})
    if sel.get("by") != "fd" or sel.get("step") != best["step"] or abs(sel.get("fd", 0) - best["fd"]) > 1e-4 * best["fd"]:
        sys.exit(f"vapo.select {sel} does not name the best step {best}")
    _, at_best = load(f"{d}/r/ckpt-{best['step']:08d}.safetensors")
    if weights != at_best:
        diff = [k for k in weights if weights[k] != at_best.get(k)]
        sys.exit(f"model.safetensors is not the EMA weights of step {best['step']}: {diff[:5]}")
    if "model.safetensors holds the EMA weights of step" not in p.stderr:
        sys.exit("no line says which step model.safetensors holds")
    # other-sized images are refused before training
    os.mkdir(f"{d}/imgs")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pngio import encode
    for i in range(8):
        with open(f"{d}/imgs/{i}.png", "wb") as f:
            f.write(encode([bytes((x * 29 + y * 13 + i) % 256 for x in range(8)) for y in range(8)], 8, 8, 1))
    p = subprocess.run([train, "--preset", "tiny", "--data", f"folder:{d}/imgs", "--steps", "1", "--select", "fd",
                        "--judge", judge, "--out", f"{d}/t"], capture_output=True, text=True)
    if p.returncode == 0 or "--select fd needs 1x28x28 images" not in p.stderr:
        sys.exit(f"a 8x8 model with --select fd: exit {p.returncode}\n{p.stderr[-1000:]}")
    p = subprocess.run([train, "--select", "best"], capture_output=True, text=True)
    if p.returncode == 0 or "--select takes none or fd" not in p.stderr:
        sys.exit(f"--select best: exit {p.returncode}\n{p.stderr[-1000:]}")
print("train_select: ok")
