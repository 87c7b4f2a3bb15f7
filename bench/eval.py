#!/usr/bin/python3
"""Evaluation of a Fashion-MNIST vapo model: sample quality and OOD detection.

    eval.py MODEL [-n 1000] [--fd-n 1000] [--out DIR] [--threads 1] [--skip-fd] [--skip-ood] [--write-quality]

Drives the C tools (vapo-score, vapo-sample, vapo-interpolate from build/)
and writes DIR/report.md, DIR/report.json and PNG figures:
  - FD: the Frechet distance between --fd-n samples (seed 1000, the model's
    solver settings) and as many test images, in the feature space of the
    independent judge (bench/judge.py, weights committed beside the model),
    with the floor at the same N (test images vs as many training images), the
    judge's mean confidence and its Inception-style score;
  - OOD: for every score (energy, complexity, multiscale, mahalanobis) and every set of
    bench/ood_sets.py, AUROC, AUPR (OOD as the positive class) and the FPR at
    95% TPR against -n in-distribution test images (test 2000.., none of them
    a calibration image);
  - figures: value histograms (train, test, each OOD set) per score, the
    nearest training images of 16 samples (a memorisation check), the
    interpolation grid.
--write-quality stores what was measured (the FD, the AUROC table) in MODEL's
metadata (vapo.quality, shown by vapo-serve's /v1/model and page; a part not
measured this time is kept); weights and the rest of the header stay byte for
byte.
Cost on the shared 2-core development machine (one thread, loaded): the four
score passes over the 13 x 1,000 images about 12 minutes (multiscale: four
gradient evaluations per image, the others one without), 1,000 samples for the
FD about 13 minutes."""
import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import ood_sets  # noqa: E402
import pngio  # noqa: E402

SCORES = ["energy", "complexity", "multiscale", "mahalanobis"]


# ---- metrics (OOD is the positive class for AUPR, as in the literature) ----------

def auroc(pos, neg):
    """P(pos > neg) + P(pos == neg) / 2 for in-distribution values pos."""
    v = np.r_[pos, neg]
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v))
    sv = v[order]
    i = 0
    while i < len(v):
        j = i
        while j < len(v) and sv[j] == sv[i]:
            j += 1
        ranks[order[i:j]] = 0.5 * (i + 1 + j)
        i = j
    return (ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def aupr_out(pos, neg):
    """Average precision with the OOD images (neg) as positives, ranked by -value."""
    s = np.r_[-np.asarray(neg), -np.asarray(pos)]
    y = np.r_[np.ones(len(neg)), np.zeros(len(pos))]
    order = np.argsort(-s, kind="mergesort")
    y = y[order]
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(y) + 1)
    return float((precision * y).sum() / y.sum())


def fpr_at_95(pos, neg):
    """Share of OOD images kept by the threshold that keeps 95% of in-distribution ones."""
    t = np.quantile(pos, 0.05)
    return float(np.mean(np.asarray(neg) >= t))


# ---- running the tools ------------------------------------------------------------

def tool(a, name):
    return os.path.join(a.build, name)


def score_sets(a, paths, score):
    """{set name: values} for every idx file, one vapo-score run."""
    cmd = [tool(a, "vapo-score"), a.model, *paths.values(), "--score", score, "--format", "json", "-q",
           "--device", "cpu", "--threads", str(a.threads)]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    by_path = {}
    for row in out["images"]:
        v = row["value"]
        by_path.setdefault(row["source"], []).append(-np.inf if v is None else v)
    return {name: np.array(by_path[p]) for name, p in paths.items()}


def ood_report(a, tmp):
    sets = ood_sets.build(a.n)
    train = ood_sets.read_idx(os.path.join(ood_sets.DATA, "train-images-idx3-ubyte.gz"))[:a.n]
    paths = {}
    for name, images in {"train": train, **sets}.items():
        paths[name] = os.path.join(tmp, name + ".idx")
        ood_sets.write_idx(paths[name], images)
    table, values = {}, {}
    for score in SCORES:
        print(f"eval: scoring {len(paths)} sets x {a.n} images with {score}", file=sys.stderr, flush=True)
        v = score_sets(a, paths, score)
        values[score] = v
        table[score] = {name: {"auroc": auroc(v["test"], v[name]), "aupr": aupr_out(v["test"], v[name]),
                               "fpr95": fpr_at_95(v["test"], v[name])}
                        for name in sets if name != "test"}
    return table, values


# ---- FD in the judge's feature space ------------------------------------------------

def sqrtm_psd(m):
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet(f1, f2):
    m1, m2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    s1 = sqrtm_psd(c1)
    cross = sqrtm_psd(s1 @ c2 @ s1)  # Tr sqrt(c1 c2) = Tr sqrt(s1 c2 s1)
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross))


def samples(a, tmp, n):
    out = os.path.join(tmp, "fd_samples")
    subprocess.run([tool(a, "vapo-sample"), a.model, "-n", str(n), "--seed", "1000", "--out-dir", out, "-q",
                    "--device", "cpu", "--threads", str(a.threads)], check=True)
    imgs = []
    for f in sorted(os.listdir(out), key=lambda s: int(s.rsplit("_", 1)[1].split(".")[0])):
        with open(os.path.join(out, f), "rb") as fh:
            _, h, w, rows = pngio.decode(fh.read())
        imgs.append(np.frombuffer(b"".join(rows), np.uint8).reshape(h, w))
    return np.stack(imgs)


def fd_report(a, tmp):
    import judge
    net = judge.load(a.threads)
    test = ood_sets.read_idx(os.path.join(ood_sets.DATA, "t10k-images-idx3-ubyte.gz"))
    train = ood_sets.read_idx(os.path.join(ood_sets.DATA, "train-images-idx3-ubyte.gz"))
    n = a.fd_n
    print(f"eval: sampling {n} images for the FD", file=sys.stderr, flush=True)
    s = samples(a, tmp, n)
    fs, ps = judge.features(net, s)
    ft, pt = judge.features(net, test[:n])
    fr, _ = judge.features(net, train[:n])
    return {"n": n, "fd": frechet(fs, ft), "fd_floor": frechet(fr, ft), "confidence": float(ps.max(1).mean()),
            "confidence_test": float(pt.max(1).mean()), "is": judge.inception_score(ps),
            "is_test": judge.inception_score(pt)}, s


# ---- figures (plain PNGs through tests/pngio.py: no plotting library needed) ----

def write_png(path, img):
    img = np.clip(img, 0, 255).astype(np.uint8)
    channels = 1 if img.ndim == 2 else img.shape[2]
    h, w = img.shape[:2]
    with open(path, "wb") as f:
        f.write(pngio.encode([bytes(img[y].reshape(-1)) for y in range(h)], w, h, channels))


COLOURS = [(230, 230, 230), (80, 160, 255), (255, 80, 80), (255, 170, 0), (0, 200, 120), (200, 100, 255),
           (255, 255, 0), (0, 220, 220), (255, 120, 200), (150, 150, 60), (120, 80, 40), (60, 120, 60),
           (200, 200, 120)]


def histograms(path, values):
    """One row of histograms per set on a shared axis (clipped to the 1..99%
    range of train + test), train first (gray), then test (blue), then OOD sets."""
    allv = np.concatenate([values["train"], values["test"]])
    lo, hi = np.quantile(allv[np.isfinite(allv)], [0.01, 0.99])
    pad = 0.5 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    bins, rowh = 120, 28
    img = np.zeros((rowh * len(values), bins * 3, 3))
    for r, (name, v) in enumerate(values.items()):
        v = np.clip(v[np.isfinite(v)], lo, hi)
        h, _ = np.histogram(v, bins=bins, range=(lo, hi))
        h = h / max(h.max(), 1)
        for b in range(bins):
            top = int(round(h[b] * (rowh - 4)))
            img[(r + 1) * rowh - 2 - top:(r + 1) * rowh - 2, b * 3:b * 3 + 3] = COLOURS[r % len(COLOURS)]
    write_png(path, img)


def neighbours(path, s, train):
    """16 samples (left column) and their 5 nearest training images (L2)."""
    t = train.reshape(len(train), -1).astype(np.float32)
    tn = (t ** 2).sum(1)
    tiles = []
    for x in s[:16].reshape(16, -1).astype(np.float32):
        d = tn - 2 * t @ x
        near = np.argsort(d)[:5]
        tiles.append([x.reshape(28, 28)] + [train[k] for k in near])
    img = np.zeros((16 * 30, 6 * 30 + 4))
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            x0 = c * 30 + (4 if c else 0)
            img[r * 30:r * 30 + 28, x0:x0 + 28] = tile
    write_png(path, img)


def markdown(rep):
    lines = []
    if "fd" in rep:
        f = rep["fd"]
        lines += [f"FD in the judge's feature space, N = {f['n']}: **{f['fd']:.2f}** (floor: test vs training "
                  f"images at the same N, {f['fd_floor']:.2f}); judge confidence {f['confidence']:.3f} (test images "
                  f"{f['confidence_test']:.3f}), Inception-style score {f['is']:.2f} (test images "
                  f"{f['is_test']:.2f}).", ""]
    t = rep.get("ood", {})
    names = list(next(iter(t.values()))) if t else []
    metrics = (("auroc", "AUROC"), ("aupr", "AUPR (OOD positive)"), ("fpr95", "FPR at 95% TPR")) if t else ()
    for metric, label in metrics:
        lines += [f"{label}, {rep['n']} test images vs {rep['n']} of each set:", "",
                  "| score | " + " | ".join(names) + " | mean | min |" if metric != "fpr95" else
                  "| score | " + " | ".join(names) + " | mean | max |",
                  "| --- | " + " | ".join("---" for _ in names) + " | --- | --- |"]
        for score, row in t.items():
            v = [row[n][metric] for n in names]
            ext = max(v) if metric == "fpr95" else min(v)
            lines.append(f"| {score} | " + " | ".join(f"{x:.3f}" for x in v) + f" | {np.mean(v):.3f} | {ext:.3f} |")
        lines.append("")
    return "\n".join(lines)


def write_quality(model, rep):
    """vapo.quality in the safetensors header; the data section is copied as is."""
    with open(model, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["vapo"])
    q = meta.get("quality", {})
    q["measured_by"] = "bench/eval.py"
    if "ood" in rep:
        q["ood_n"] = rep["n"]
        q["ood_auroc"] = {s: {k: round(v["auroc"], 4) for k, v in row.items()} for s, row in rep["ood"].items()}
    if "fd" in rep:
        q.update({k: round(v, 4) if isinstance(v, float) else v for k, v in rep["fd"].items()})
        q["fd_n"] = q.pop("n")
    meta["quality"] = q
    header["__metadata__"]["vapo"] = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = model + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    os.replace(tmp, model)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("-n", type=int, default=1000, help="images per OOD set and in-distribution images (default 1000)")
    p.add_argument("--fd-n", type=int, default=1000, help="samples for the FD (default 1000)")
    p.add_argument("--out", default="eval-report", help="folder for report.md, report.json and figures")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--skip-fd", action="store_true", help="no sampling: the OOD report only")
    p.add_argument("--skip-ood", action="store_true", help="the FD and figures of samples only")
    p.add_argument("--write-quality", action="store_true", help="store the results in MODEL's metadata")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rep = {"model": a.model, "n": a.n}
    with tempfile.TemporaryDirectory() as tmp:
        if not a.skip_ood:
            rep["ood"], values = ood_report(a, tmp)
            for score in SCORES:
                histograms(os.path.join(a.out, f"hist-{score}.png"), values[score])
            rep["histogram_rows"] = list(values["energy"])
        if not a.skip_fd:
            rep["fd"], s = fd_report(a, tmp)
            train = ood_sets.read_idx(os.path.join(ood_sets.DATA, "train-images-idx3-ubyte.gz"))
            neighbours(os.path.join(a.out, "neighbours.png"), s, train)
            subprocess.run([tool(a, "vapo-interpolate"), a.model, "--seed-a", "1", "--seed-b", "2", "--rows", "4",
                            "--frames", "10", "--out", os.path.join(a.out, "interpolation.png"), "-q", "--device",
                            "cpu", "--threads", str(a.threads)], check=True)
    md = markdown(rep)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(f"# Evaluation of {a.model}\n\n{md}\nFigures: hist-<score>.png (rows: "
                f"{', '.join(rep.get('histogram_rows', []))}), neighbours.png, interpolation.png\n")
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(rep, f, indent=1)
    print(md)
    if a.write_quality:
        write_quality(a.model, rep)


if __name__ == "__main__":
    main()
