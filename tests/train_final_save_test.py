#!/usr/bin/python3
"""vapo-train saves its last steps before the final sample grid and the OOD
calibration, so a failure there (a diverged model at max NFE, a full disk)
loses nothing: with samples.png made unwritable, the run fails and still
leaves ckpt-<last step>, which resumes to a finished model.
  train_final_save_test.py VAPO_TRAIN"""
import json
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pngio import encode  # noqa: E402

train = sys.argv[1]
common = ["--device", "cpu", "--preset", "tiny", "--batch", "4", "--grid", "4", "--calib", "8", "--save-every", "1000",
          "--threads", "1"]


def step_of(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(json.loads(raw[8:8 + n])["__metadata__"]["vapo"])["train"]["step"]


with tempfile.TemporaryDirectory() as d:
    os.mkdir(f"{d}/imgs")
    for i in range(40):
        with open(f"{d}/imgs/{i:03d}.png", "wb") as f:
            f.write(encode([bytes((x * 29 + y * 13 + i * 7) % 256 for x in range(8)) for y in range(8)], 8, 8, 1))
    data = ["--data", f"folder:{d}/imgs"]
    os.makedirs(f"{d}/a/samples.png")  # the final grid cannot be written
    p = subprocess.run([train] + data + common + ["--steps", "3", "--out", f"{d}/a"], capture_output=True, text=True)
    ckpt = f"{d}/a/ckpt-00000003.safetensors"
    if p.returncode != 1 or "samples.png" not in p.stderr:
        sys.exit(f"the failing final grid should fail the run (exit 1), got {p.returncode}:\n{p.stderr[-2000:]}")
    if not os.path.exists(ckpt) or step_of(ckpt) != 3:
        sys.exit(f"the final steps were not saved before the grid: {sorted(os.listdir(f'{d}/a'))}")
    p = subprocess.run([train] + data + common + ["--steps", "3", "--out", f"{d}/b", "--resume", ckpt],
                       capture_output=True, text=True)
    if p.returncode or step_of(f"{d}/b/model.safetensors") != 3:
        sys.exit(f"resuming the saved steps should finish the model:\n{p.stderr[-2000:]}")
    print("final save: a failed final grid leaves ckpt-00000003, which resumes to the finished model")
