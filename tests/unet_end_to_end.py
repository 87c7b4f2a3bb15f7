#!/usr/bin/python3
"""The U-Net energy end to end through the real programs: vapo-train trains
tiny-unet on a folder of 8x8 images, the checkpoint records the architecture
(unet, kappa) and the decoder's tensors, training moved the output gain off
its zero start (the gradient reaches f), vapo-sample writes a grid and single
PNGs, and vapo-serve serves the model unchanged: /v1/model names the preset,
/generate returns vapo-sample's PNG bytes for the same seed, /energy scores them.
  unet_end_to_end.py VAPO_TRAIN VAPO_SAMPLE VAPO_SERVE"""
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pngio import decode, encode  # noqa: E402
from server_common import Server, check, finish, stop_cleanly  # noqa: E402

train, sample, serve = sys.argv[1:4]


def header(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    h = json.loads(raw[8:8 + n])
    return h, raw[8 + n:], json.loads(h["__metadata__"]["vapo"])


def tensor(h, data, name):
    b, e = h[name]["data_offsets"]
    return struct.unpack(f"<{(e - b) // 4}f", data[b:e])


with tempfile.TemporaryDirectory() as d:
    os.mkdir(f"{d}/imgs")
    for i in range(40):
        with open(f"{d}/imgs/{i:03d}.png", "wb") as f:
            f.write(encode([bytes((x * 29 + y * 13 + i * 7) % 256 for x in range(8)) for y in range(8)], 8, 8, 1))
    p = subprocess.run([train, "--data", f"folder:{d}/imgs", "--preset", "tiny-unet", "--steps", "30", "--batch", "8",
                        "--grid", "4", "--calib", "8", "--threads", "1", "--device", "cpu", "--out", f"{d}/run"],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"vapo-train --preset tiny-unet: exit {p.returncode}\n{p.stderr[-2000:]}")
    model = f"{d}/run/model.safetensors"
    h, data, meta = header(model)
    arch = meta["arch"]
    optimizer = meta["train"]["options"]["optimizer"]
    check(optimizer == "adam", f"--optimizer auto picked {optimizer!r} for a U-Net, want adam")
    check(arch.get("unet") is True and arch["quadratic"] > 0 and arch["preset"] == "tiny-unet",
          f"the checkpoint's architecture: {arch}")
    check("up.0.blocks.0.conv1.v" in h and h["up.0.blocks.0.conv1.v"]["shape"] == [8, 24, 3, 3],
          "the decoder's first block takes [skip 8; upsampled 16] = 24 channels")
    gain = tensor(h, data, "out.scale")
    check(any(g != 0.0 for g in gain), f"training left f's output gain at its zero start: {gain}")
    offset = tensor(h, data, "out.offset")
    check(len(offset) == 1 and 0.01 < offset[0] < 1, f"Phi's constant was not set to E|x_t|^2 / (10 d) at the start: {offset}")

    p = subprocess.run([sample, model, "-n", "4", "--seed", "3", "--out-dir", f"{d}/s", "--device", "cpu",
                        "--threads", "1", "--quiet"], capture_output=True, text=True)
    check(p.returncode == 0, f"vapo-sample: exit {p.returncode}\n{p.stderr[-2000:]}")
    p = subprocess.run([sample, model, "-n", "4", "--seed", "3", "-o", f"{d}/grid.png", "--device", "cpu",
                        "--threads", "1", "--quiet"], capture_output=True, text=True)
    check(p.returncode == 0 and os.path.getsize(f"{d}/grid.png") > 0, f"vapo-sample grid: exit {p.returncode}")
    singles = []
    for k in range(4):
        with open(f"{d}/s/seed3_{k:06d}.png", "rb") as f:
            singles.append(f.read())
    pixels = [b"".join(decode(png)[3]) for png in singles]
    check(len(set(pixels)) > 1, "four samples of a seed are not all the same image")

    srv = Server(serve, model)
    status, _, body = srv.request("GET", "/v1/model")
    check(status == 200 and json.loads(body).get("preset") == "tiny-unet", f"/v1/model: {status} {body[:300]}")
    status, _, body = srv.post_json("/generate", {"seed": 3, "n": 4, "format": "json"})
    got = [base64.b64decode(s) for s in json.loads(body).get("images", [])] if status == 200 else []
    check(got == singles, f"/generate seed 3: {status}; the PNGs equal vapo-sample's: {got == singles}")
    status, _, body = srv.post_json("/energy", {"images": [base64.b64encode(png).decode() for png in singles]})
    results = json.loads(body).get("results", []) if status == 200 else []
    check(len(results) == 4 and all(isinstance(r["energy"], float) for r in results), f"/energy: {status} {body[:300]}")
    stop_cleanly(srv)
    print("U-Net energy: trained (output gain moved), recorded, sampled, served with identical PNGs and scored")
finish("unet_end_to_end")
