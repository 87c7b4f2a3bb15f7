#!/usr/bin/python3
"""Independent autograd oracle for the energy network and the VAPO loss.

Reads a safetensors file written by test_oracle (parameters; data xbar, noise
z and times t of a batch; metadata: architecture and loss options),
rebuilds the network with torch.nn.functional and the loss from
VAPO-MATH.md's formulas, all in float64, and writes Phi, grad_x Phi at the
perturbed points, and for both estimators the loss and dL/dtheta for every
parameter (autograd.grad with create_graph=True) to a second safetensors
file:
    score     (1/Bd) sum_b 1/2|g_b|^2 + w_b gc_b (Phi_b - loo_b) + lambda Phi_b^2
    pathwise  (1/Bd) sum_b 1/2|g_b|^2 - g_b . v_b + lambda Phi_b^2
with g = grad_x Phi, loo_b the detached leave-one-out mean of Phi (it moves the
reported value, not the gradient), and v_b = (2 w_b / tau'_b) dx_b/dt_b, the
path velocity, taken by forward-mode autograd through x(t) = m xbar + sigma z.
Uses Debian's python3-torch.
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

    def head(name, h):  # act -> spatial sum -> linear
        v, g, b = p[name + ".v"], p[name + ".g"], p[name + ".b"]
        w = g.view(-1, 1) * v.flatten(1) / v.flatten(1).norm(dim=1).view(-1, 1)
        return head_act(h).sum(dim=(2, 3)) @ w.t() + b  # [B, 1]

    def block(pre, h):  # act -> conv -> act -> conv, ReZero scale, + shortcut
        r = conv(pre + ".conv2", act(conv(pre + ".conv1", act(h))))
        r = r * p[pre + ".scale"].view(1, -1, 1, 1)
        sc = conv(pre + ".shortcut", h) if pre + ".shortcut.v" in p else h
        return sc + r

    h, phi, last, skips = conv("conv_in", x), 0, len(arch["widths"]) - 1, []
    for l in range(last + 1):
        if l > 0:
            h = F.avg_pool2d(h, 2)
        for j in range(arch["blocks"]):
            h = block(f"levels.{l}.blocks.{j}", h)
        skips.append(h)
        if l < last and arch.get("multiscale_head"):
            phi = phi + head(f"levels.{l}.head", h)
    if arch.get("unet"):  # Phi = kappa/2 (d c - |x - f(x)|^2), f the decoder with skip concatenations
        for l in range(last - 1, -1, -1):
            h = torch.cat([skips[l], F.interpolate(h, scale_factor=2, mode="nearest")], dim=1)
            for j in range(arch["blocks"]):
                h = block(f"up.{l}.blocks.{j}", h)
        f = conv("out.conv", act(h)) * p["out.scale"].view(1, -1, 1, 1)
        d = 10.0 * x[0].numel()  # c is |x - f|^2 / d in units of VAPO_UNET_OFFSET_UNIT (net.h)
        return 0.5 * arch["quadratic"] * (d * p["out.offset"] - (x - f).flatten(1).pow(2).sum(1, keepdim=True))
    phi = phi + head("head", h)
    if arch.get("global_head"):  # dense -> act -> dense on the flattened gated last level
        def dense(name, f):
            v, g, b = p[name + ".v"], p[name + ".g"], p[name + ".b"]
            return f @ (g.view(-1, 1) * v.flatten(1) / v.flatten(1).norm(dim=1).view(-1, 1)).t() + b
        phi = phi + dense("global.out", act(dense("global.hidden", head_act(h).flatten(1))))
    kappa = arch.get("quadratic", 0.0)  # Phi = net(x) - kappa/2 |x - mu|^2 (mu = 0 without the anchor)
    centred = x - p["anchor"] if arch.get("anchor") else x
    return phi - 0.5 * kappa * centred.flatten(1).pow(2).sum(1, keepdim=True) if kappa else phi


def schedule(cfg, t):
    """tau, tau', m, sigma and the innovation weight w of VAPO-MATH.md 2.3/3.5."""
    eps, omega2, nu2 = cfg["eps"], cfg["omega"] ** 2, cfg["nu"] ** 2
    l_eps = torch.log(torch.tensor((1 + eps) / eps, dtype=torch.float64))
    tau = eps * torch.expm1(t * l_eps)
    dtau = (tau + eps) * l_eps
    m = tau * omega2 / (nu2 + tau * omega2)
    sigma = (omega2 * nu2 / (nu2 + tau * omega2)).sqrt()
    w = 0.5 * dtau if cfg["innovation_weight"] == "jacobian" else torch.full_like(t, 0.5)
    return dtau, m, sigma, w


def path(cfg, xbar, z, t):
    """x(t) = m xbar + sigma z, per sample."""
    _, m, sigma, _ = schedule(cfg, t)
    return m.view(-1, 1, 1, 1) * xbar + sigma.view(-1, 1, 1, 1) * z


def losses(cfg, phi, g, xbar, z, t):
    d = xbar[0].numel()
    dtau, m, sigma, w = schedule(cfg, t)
    zf, xf = z.flatten(1), xbar.flatten(1)
    gc = (sigma**2 * ((zf * zf).sum(1) - d) - 2 * (1 - m) * sigma * (xf * zf).sum(1)) / cfg["nu"] ** 2
    _, dxdt = torch.autograd.functional.jvp(lambda tt: path(cfg, xbar, z, tt), t, torch.ones_like(t))
    v = (2 * w / dtau).view(-1, 1, 1, 1) * dxdt
    B, lam, dir_ = phi.shape[0], cfg["lambda"], 0.5 * g.pow(2).flatten(1).sum(1)
    loo = ((phi.sum() - phi) / (B - 1)).detach()
    score = (dir_ + w * gc * (phi - loo) + lam * phi**2).sum() / (B * d)
    pathwise = (dir_ - (g * v).flatten(1).sum(1) + lam * phi**2).sum() / (B * d)
    return {"score": score, "pathwise": pathwise}


def main():
    tensors, meta = load(sys.argv[1])
    arch = json.loads(meta["arch"]) if isinstance(meta["arch"], str) else meta["arch"]
    cfg = json.loads(meta["loss"]) if isinstance(meta["loss"], str) else meta["loss"]
    xbar, z, t = tensors.pop("xbar"), tensors.pop("z"), tensors.pop("t")
    x = path(cfg, xbar, z, t).requires_grad_(True)
    params = {k: p.requires_grad_(True) for k, p in tensors.items()}
    phi = energy(params, arch, x)[:, 0]
    (g,) = torch.autograd.grad(phi.sum(), x, create_graph=True)
    out = {"phi": phi, "grad_x": g}
    names = list(params)
    for est, loss in losses(cfg, phi, g, xbar, z, t).items():
        grads = torch.autograd.grad(loss, [params[n] for n in names], retain_graph=True)
        out[est + ".loss"] = loss.reshape(1)
        out.update({est + ".grad." + n: gr for n, gr in zip(names, grads)})
    save(sys.argv[2], out)


if __name__ == "__main__":
    main()
