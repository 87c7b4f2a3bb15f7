#!/usr/bin/python3
"""vapo-train --resume continues bit for bit: 4 steps in one run must equal
2 steps, stop, resume, 2 more steps (weights, EMA and optimizer moments), on
the CPU with the same thread count, with the non-default --head-act and
--time-tilt restored from the checkpoint. Also checks --help, bad options, and
that a checkpoint from before the pathwise estimator (option
'control-variate'), the fixed quadratic, the heads and the anchor still
resumes, as the paper's network (quadratic 0, one head, no anchor)."""
import json
import os
import struct
import subprocess
import sys
import tempfile

train = sys.argv[1]
common = ["--device", "cpu", "--preset", "fmnist-small", "--batch", "8", "--grid", "4", "--calib", "16", "--sample-tol", "1e-2",
          "--save-every", "1000", "--log-every", "1", "--threads", "2", "--warmup", "3", "--lr", "3e-3"]


def tensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    data = raw[8 + n:]
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items()}, meta


def run(args):
    p = subprocess.run([train] + common + args, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"vapo-train {' '.join(args)} failed:\n{p.stderr}")
    return p


with tempfile.TemporaryDirectory() as d:
    variant = ["--head-act", "gelu", "--time-tilt", "3"]
    run(["--steps", "4", "--out", f"{d}/a"] + variant)
    run(["--steps", "2", "--out", f"{d}/b"] + variant)
    run(["--steps", "4", "--out", f"{d}/b", "--resume", f"{d}/b/model.safetensors"])
    a, meta_a = tensors(f"{d}/a/model.safetensors")
    b, meta_b = tensors(f"{d}/b/model.safetensors")
    assert json.loads(meta_a["vapo"])["train"]["step"] == 4, meta_a
    assert json.loads(meta_b["vapo"])["train"]["step"] == 4, meta_b
    vapo_b = json.loads(meta_b["vapo"])
    assert vapo_b["arch"]["head_act"] == "gelu" and vapo_b["loss"]["time_tilt"] == 3, vapo_b
    assert abs(vapo_b["arch"]["quadratic"] - 4.60522) < 1e-4, vapo_b["arch"]  # auto: 1/2 ln(1 + 1e4)
    assert vapo_b["arch"]["multiscale_head"] and vapo_b["arch"]["anchor"], vapo_b["arch"]  # the defaults
    assert "anchor" in a and "levels.0.head.v" in a and vapo_b["arch"]["global_head"] == 128
    assert "global.hidden.v" in a
    sampling = vapo_b["sampling"]  # --sample-tol is what the model serves with
    assert sampling["rtol"] == sampling["atol"] == 1e-2 and sampling["t_end"] == 1.5, sampling
    assert sorted(a) == sorted(b)
    diff = [k for k in a if a[k] != b[k]]
    if diff:
        sys.exit(f"resumed run differs from the uninterrupted one in: {', '.join(diff)}")
    records = [json.loads(l) for l in open(f"{d}/b/metrics.jsonl")]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4], steps
    # each sample grid logs the field diagnostic: at the end of both parts
    field = [r for r in records if "field_cos" in r]
    assert [r["step"] for r in field] == [2, 4], field
    assert all(len(r["field_cos"]) == 5 and len(r["field_contraction"]) == 5 for r in field), field
    print(f"resume: {len(a)} tensors bit-identical after 2 + 2 steps vs 4 steps")

    # an older checkpoint: its saved options carry 'control-variate', which is gone, and
    # lack the quadratic, heads and anchor (a network of those days: one head, no anchor)
    run(["--steps", "1", "--out", f"{d}/o", "--heads", "last", "--anchor", "off", "--global-head", "0"])
    raw = open(f"{d}/o/model.safetensors", "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    vapo = json.loads(header["__metadata__"]["vapo"])
    vapo["train"]["options"]["control-variate"] = 1
    for key in ("quadratic", "heads", "anchor", "global-head"):
        del vapo["train"]["options"][key]
    for key in ("quadratic", "multiscale_head", "anchor", "global_head"):
        del vapo["arch"][key]
    header["__metadata__"]["vapo"] = json.dumps(vapo)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(f"{d}/old.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
    p = run(["--steps", "5", "--out", f"{d}/c", "--resume", f"{d}/old.safetensors"])
    assert "'control-variate' is gone" in p.stderr, p.stderr
    _, meta_c = tensors(f"{d}/c/model.safetensors")
    arch_c = json.loads(meta_c["vapo"])["arch"]
    assert arch_c["quadratic"] == 0 and not arch_c["multiscale_head"] and not arch_c["anchor"], arch_c
    assert arch_c["global_head"] == 0, arch_c

    # a network other than the preset's: --widths sets the levels, --blocks the depth
    run(["--steps", "1", "--out", f"{d}/w", "--widths", "8,16", "--blocks", "2"])
    w, meta_w = tensors(f"{d}/w/model.safetensors")
    arch_w = json.loads(meta_w["vapo"])["arch"]
    assert arch_w["widths"] == [8, 16] and arch_w["blocks"] == 2, arch_w
    assert "levels.1.blocks.1.conv2.v" in w and "levels.2.blocks.0.conv1.v" not in w, sorted(w)

    h = subprocess.run([train, "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "--innovation-weight" in h.stdout and "--resume" in h.stdout
    bad = subprocess.run([train, "--lr", "fast"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--lr: 'fast' is not a number" in bad.stderr, bad.stderr
    for args, want in [(["--head-act", "tanh"], "unknown activation 'tanh'"),
                       (["--quadratic", "-1"], "--quadratic (auto or a number): -1 is out of range"),
                       (["--heads", "some"], "--heads takes all or last"),
                       (["--quadratic", "0", "--anchor", "on"], "--anchor on centres the quadratic"),
                       (["--anchor", "maybe"], "--anchor takes on, off or auto"),
                       (["--global-head", "5000"], "--global-head: 5000 is out of range (0..4096)"),
                       (["--time-tilt", "nan"], "--time-tilt: 'nan' is not a finite number"),
                       (["--widths", "8,,16"], "--widths: needs 1..6 comma-separated"),
                       (["--widths", "0,8"], "--widths: needs"),
                       (["--widths", "8,16,"], "--widths: ends with a comma"),
                       (["--widths", "8,8,8,8,8,8"], "6 levels are too many for 28x28"),
                       (["--blocks", "65"], "--blocks: 65 is out of range (0..64)")]:
        bad = subprocess.run([train] + args, capture_output=True, text=True)
        assert bad.returncode != 0 and want in bad.stderr, (args, bad.stderr)
    bad = subprocess.run([train, "--resume", f"{d}/missing.safetensors"], capture_output=True, text=True)
    assert bad.returncode != 0 and "missing.safetensors" in bad.stderr, bad.stderr
print("train_resume: all checks passed")
