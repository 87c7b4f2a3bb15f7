#!/usr/bin/python3
"""Independent autograd oracle for the energy network and the loss.

Reads a safetensors file written by test_oracle (parameters, the input batch x,
and metadata: architecture, c, lambda), rebuilds the same network with
torch.nn.functional in float64, and writes Phi, grad_x Phi, the loss
    L = mean_b( 1/2 |grad_x Phi_b|^2 + c Phi_b + lambda Phi_b^2 )
and dL/dtheta for every parameter (through autograd.grad(create_graph=True))
to a second safetensors file. Uses Debian's python3-torch.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F64": np.float64}


def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
        tensors[name] = torch.from_numpy(arr.astype(np.float64))
    return tensors, meta


def save(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t.detach().numpy().astype(np.float32)).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


ACTS = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}


def energy(p, arch, x):
    act, head_act = ACTS[arch["act"]], ACTS[arch["head_act"]]
    k = arch["kernel"]

    def conv(name, h):
        v, g, b = p[name + ".v"], p[name + ".g"], p[name + ".b"]
        w = g.view(-1, 1, 1, 1) * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return F.conv2d(h, w, b, padding=k // 2)

    h = conv("conv_in", x)
    for l in range(len(arch["widths"])):
        if l > 0:
            h = F.avg_pool2d(h, 2)
        for j in range(arch["blocks"]):
            pre = f"levels.{l}.blocks.{j}"
            r = conv(pre + ".conv2", act(conv(pre + ".conv1", act(h))))
            r = r * p[pre + ".scale"].view(1, -1, 1, 1)
            sc = conv(pre + ".shortcut", h) if pre + ".shortcut.v" in p else h
            h = sc + r
    s = head_act(h).sum(dim=(2, 3))
    v, g, b = p["head.v"], p["head.g"], p["head.b"]
    w = g.view(-1, 1) * v.flatten(1) / v.flatten(1).norm(dim=1).view(-1, 1)
    return s @ w.t() + b  # [B, 1]


def main():
    tensors, meta = load(sys.argv[1])
    arch = json.loads(meta["arch"]) if isinstance(meta["arch"], str) else meta["arch"]
    c, lam = float(meta["c"]), float(meta["lambda"])
    x = tensors.pop("x").requires_grad_(True)
    params = {k: t.requires_grad_(True) for k, t in tensors.items()}
    phi = energy(params, arch, x)[:, 0]
    (g,) = torch.autograd.grad(phi.sum(), x, create_graph=True)
    loss = (0.5 * g.pow(2).flatten(1).sum(1) + c * phi + lam * phi.pow(2)).mean()
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    out = {"phi": phi, "grad_x": g, "loss": loss.reshape(1)}
    out.update({"grad." + n: gr for n, gr in zip(names, grads)})
    save(sys.argv[2], out)


if __name__ == "__main__":
    main()
