"""Checks vapo's safetensors checkpoints against an independent implementation.

Usage: /usr/bin/python3 ckpt_python_check.py PATH/TO/test_ckpt

1. test_ckpt --write writes its fixture; this script parses it with struct,
   json and numpy only, and checks names, shapes, values and metadata.
2. This script writes a safetensors file by hand (odd JSON order, a misaligned
   F32, padding); test_ckpt --check loads it and checks its contents.
3. If the PyPI `safetensors` package is importable, both directions again
   through it; otherwise that part is skipped with a message.

The fixture values here mirror fixture() in test_ckpt.c. Exit 77 = skipped.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("skip: numpy is not importable by", sys.executable)
    sys.exit(77)

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U8": np.uint8}

EXPECTED = {
    "conv.w": ("F32", [2, 3, 1, 2], np.arange(12, dtype=np.float32) * np.float32(0.25) - np.float32(1.5)),
    "scale": ("F64", [], np.array(3.141592653589793)),
    "steps": ("I64", [1, 3], np.array([-2**63, -1, 2**63 - 1], dtype=np.int64)),
    "empty": ("U8", [2, 0, 3], np.zeros(0, dtype=np.uint8)),
    "mask": ("U8", [5], np.array([0, 1, 2, 254, 255], dtype=np.uint8)),
    "special": ("F32", [3], np.array([np.inf, -0.0, np.nan], dtype=np.float32)),
}
EXPECTED_META = {
    "format": "vapo-ckpt-1",
    "arch": {"widths": [32, 64], "depth": 2, "act": "gelu", "wn": True, "nested": {"none": None, "x": 0.1}},
    "calib": [1.5, -2.25],
    "step": 1200,
    "ema": False,
    "note": "plain text, not JSON",
    "looks": "[1, 2]",
}

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def same(a, b):
    """Bitwise equality, so NaN and -0.0 count."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def parse(path):
    """Reads a safetensors file with nothing but struct, json and numpy."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    return n, header, data


def check_c_file(path):
    n, header, data = parse(path)
    check(n % 8 == 0, f"header length {n} not a multiple of 8")
    meta = header.pop("__metadata__", {})
    check(list(header) == list(EXPECTED), f"tensor names/order {list(header)}")
    at = 0
    for name, (dt, shape, values) in EXPECTED.items():
        e = header.get(name)
        if e is None:
            continue
        check(e["dtype"] == dt and e["shape"] == shape, f"{name}: dtype/shape {e['dtype']} {e['shape']}")
        b, end = e["data_offsets"]
        check(b == at, f"{name}: begins at {b}, want {at} (packed in order)")
        at = end
        arr = np.frombuffer(data[b:end], dtype=np.dtype(DTYPES[dt]).newbyteorder("<")).reshape(shape)
        check(same(arr.ravel(), values.astype(DTYPES[dt]).ravel()), f"{name}: values {arr.ravel()}")
    check(at == len(data), f"data section {len(data)} bytes, tensors end at {at}")
    check(all(isinstance(v, str) for v in meta.values()), "metadata values must all be strings")
    check(set(meta) == set(EXPECTED_META), f"metadata keys {sorted(meta)}")
    for k, v in EXPECTED_META.items():
        if isinstance(v, str):
            check(meta.get(k) == v, f"metadata {k} = {meta.get(k)!r}")
        else:
            check(json.loads(meta.get(k, "null")) == v, f"metadata {k} = {meta.get(k)!r}")
    # Compact text with sorted keys at every level (reals may print with 17
    # digits, e.g. 0.10000000000000001: exact, if not the shortest form).
    def sorted_pairs(pairs):
        check([k for k, _ in pairs] == sorted(k for k, _ in pairs), f"keys not sorted: {[k for k, _ in pairs]}")
        return dict(pairs)
    json.loads(meta.get("arch", "{}"), object_pairs_hook=sorted_pairs)
    check(", " not in meta.get("arch", "") and ": " not in meta.get("arch", ""), "arch text not compact")


# What test_ckpt --check expects.
PY_TENSORS = {
    "u": np.array([7, 8, 9], dtype=np.uint8),
    "x": np.array([[1.5, -2.0], [0.25, 1e10]], dtype=np.float32),
    "d": np.array(-0.5, dtype=np.float64),
    "i": np.array([-3, 2**40], dtype=np.int64),
    "e": np.zeros([0], dtype=np.float32),
}
PY_META = {"format": "py-hand", "arch": json.dumps({"depth": 2, "widths": [8, 16]}), "step": "77"}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


def write_by_hand(path):
    """Data in the order u, x, d, i, e (x lands at offset 3: misaligned);
    JSON keys in another order; header padded with spaces to 8."""
    blobs, entries, at = [], {}, 0
    for name in ["u", "x", "d", "i", "e"]:
        a = PY_TENSORS[name]
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        entries[name] = {"dtype": CODES[a.dtype], "shape": list(a.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    header = {"__metadata__": PY_META}
    for name in ["x", "i", "e", "u", "d"]:
        header[name] = entries[name]
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def run_check(binary, path, what):
    r = subprocess.run([binary, "--check", path], capture_output=True, text=True)
    check(r.returncode == 0, f"C could not read {what}: {r.stdout}{r.stderr}")


def main():
    binary = sys.argv[1]
    if not os.access(binary, os.X_OK):
        check(False, f"{binary} is not an executable (is test_ckpt built?)")
        return
    with tempfile.TemporaryDirectory(prefix="vapo_ckpt_py_") as tmp:
        c_path = os.path.join(tmp, "c.safetensors")
        r = subprocess.run([binary, "--write", c_path], capture_output=True, text=True)
        check(r.returncode == 0, f"test_ckpt --write failed: {r.stderr}")
        if r.returncode == 0:
            check_c_file(c_path)
            print("C -> Python (struct + json + numpy): checked")

        py_path = os.path.join(tmp, "py.safetensors")
        write_by_hand(py_path)
        run_check(binary, py_path, "the hand-written file")
        print("Python (by hand) -> C: checked")

        try:
            from safetensors.numpy import load_file, save_file
            from safetensors import safe_open
        except ImportError:
            print("skip: the safetensors package is not importable; checked with the by-hand reader/writer only")
            return
        if r.returncode == 0:
            loaded = load_file(c_path)
            for name, (dt, shape, values) in EXPECTED.items():
                check(name in loaded and same(loaded[name].ravel(), values.astype(DTYPES[dt]).ravel())
                      and list(loaded[name].shape) == shape, f"safetensors.load_file: {name}")
            with safe_open(c_path, framework="numpy") as f:
                check(f.metadata().get("step") == "1200", "safetensors metadata")
            print("C -> safetensors.numpy.load_file: checked")
        st_path = os.path.join(tmp, "st.safetensors")
        save_file(PY_TENSORS, st_path, metadata=PY_META)
        run_check(binary, st_path, "a file from safetensors.numpy.save_file")
        print("safetensors.numpy.save_file -> C: checked")


main()
if failures:
    print(f"ckpt_python_check: {len(failures)} failures")
    sys.exit(1)
print("ckpt_python_check: all passed")
