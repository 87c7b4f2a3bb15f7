#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<target>/):
valid requests of every route, small valid PNGs of each colour type, base64
and JSON texts, and small safetensors checkpoints. Run once; the files are
committed, and libFuzzer mutates copies of them (scripts/fuzz.sh).

    make_corpus.py [TINY_MODEL.safetensors]

TINY_MODEL is a model from make-test-model (the preset tiny), kept as the
one whole vapo checkpoint of the ckpt corpus."""
import base64
import json
import os
import shutil
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import pngio  # noqa: E402


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png(w, h, depth, ctype, raw, interlace=0, extra=b""):
    return (pngio.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)) + extra +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def gray28(v=0):
    return pngio.encode([[(x * 9 + y * 5 + v) % 256 for x in range(28)] for y in range(28)], 28, 28, 1)


def pngs():
    rows = lambda w, h, ch: [[(x * 37 + y * 11 + c * 50) % 256 for x in range(w) for c in range(ch)] for y in range(h)]
    palette = chunk(b"PLTE", bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255])) + chunk(b"tRNS", bytes([255, 128]))
    return {
        "gray28.png": gray28(),
        "gray_alpha.png": pngio.encode(rows(4, 3, 2), 4, 3, 2),
        "rgb.png": pngio.encode(rows(5, 4, 3), 5, 4, 3),
        "rgba.png": pngio.encode(rows(3, 3, 4), 3, 3, 4),
        # 2-bit palette with transparency, 4x2: four pixels per byte
        "palette.png": png(4, 2, 2, 3, b"\x00\x1b\x00\xe4", extra=palette),
        # 16-bit gray, 2x2, with a Sub filter on the second row
        "gray16.png": png(2, 2, 16, 0, b"\x00\x12\x34\xff\xff\x01\x00\x10\x00\x10"),
        # Adam7-interlaced 1x1 RGB: only the first pass has a pixel
        "interlaced.png": png(1, 1, 8, 2, b"\x00\x10\x20\x30", interlace=1),
    }


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] packed in order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def write(target, files):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, body in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(body.encode() if isinstance(body, str) else body)


def main():
    b64png = base64.b64encode(gray28()).decode()
    write("generate", {
        "empty.json": "{}",
        "seed.json": '{"seed": 42}',
        "grid.json": '{"seed": 7, "n": 4, "format": "grid", "cols": 4}',
        "json.json": '{"seed": 11, "n": 2, "first": 6, "format": "json"}',
        "solver.json": '{"seed": 3, "n": 2, "format": "json", "solver": "rk4", "steps": 20}',
        "tol.json": '{"seed": 3, "format": "png", "rtol": 1e-5, "atol": 1e-5, "t_end": 1.0, "solver": "rk45"}',
        "nan.json": '{"rtol": NaN, "n": null}',
    })
    write("interpolate", {
        "strip.json": '{"seed_a": 1, "seed_b": 2, "frames": 5}',
        "json.json": '{"seed_a": 2, "seed_b": 1, "frames": 3, "format": "json", "solver": "heun", "steps": 10}',
        "tol.json": '{"seed_a": 0, "seed_b": 9, "rtol": 0.01, "atol": 0.001, "t_end": 2}',
    })
    write("energy", {
        "one.json": json.dumps({"images": [b64png]}),
        "dataurl.json": json.dumps({"images": ["data:image/png;base64," + b64png, b64png]}),
        "body.png": gray28(3),
        "rgb.json": json.dumps({"images": [base64.b64encode(pngs()["rgb.png"]).decode()]}),
        "score.json": json.dumps({"images": [b64png, b64png], "score": "multiscale"}),
        "complexity.json": json.dumps({"images": [b64png], "score": "complexity"}),
        "energy.json": json.dumps({"images": [b64png], "score": "energy"}),
        "mahalanobis.json": json.dumps({"images": [b64png, b64png], "score": "mahalanobis"}),
    })
    write("png", pngs())
    write("b64", {
        "padded.txt": base64.b64encode(b"vapo fuzz").decode(),
        "unpadded.txt": base64.b64encode(b"vapo!").decode().rstrip("="),
        "dataurl.txt": "data:image/png;base64," + base64.b64encode(pngs()["rgba.png"]).decode(),
        "empty.txt": "",
    })
    write("json", {
        "object.json": '{"a": [1, 2.5, -3e10, true, false, null], "b": {"c": "d\\u00e9\\n"}}',
        "nonfinite.json": '[NaN, Infinity, -Infinity, "NaN", 1e309]',
        "scalar.json": '"text"',
        "nested.json": '[[[[{"x": []}]]]]',
    })
    # fuzz_opt: NUL-separated arguments; a first argument starting with { or [ is a --config document
    write("opt", {
        "args": "--int\0" "3\0-f\0x",
        "config": '{"int": 2, "double": 0.25, "flag": true, "choice": "bb", "device": "cuda:1"}\0--long=5',
        "bad": "--double=nan\0--size\0" "0",
        "dashes": "--\0--int\0--help",
    })
    ckpt = {
        "two_tensors.safetensors": safetensors(
            [("a", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), ("b", "I64", [1], struct.pack("<q", 7)),
             ("c", "U8", [3], b"\x01\x02\x03"), ("d", "F64", [], struct.pack("<d", 0.5))],
            {"note": "hello", "vapo": json.dumps({"format": 1, "train": {"step": 3}})}),
        "empty.safetensors": safetensors([]),
        "unaligned.safetensors": safetensors([("u", "U8", [1], b"\x00"), ("f", "F32", [1], struct.pack("<f", 1))]),
    }
    if len(sys.argv) > 1:
        ckpt["tiny_model.safetensors"] = open(sys.argv[1], "rb").read()
    write("ckpt", ckpt)


if __name__ == "__main__":
    main()
