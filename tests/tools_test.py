#!/usr/bin/python3
"""End-to-end tests of vapo-sample, vapo-interpolate and vapo-score on the
random `tiny` model written by make-test-model (1x8x8 images).

    tools_test.py GROUP --model M --sample S --interpolate I --score SC --make-model MK --work DIR

GROUP is one of: sample, interpolate, score, errors (each a ctest entry).
PNG files are checked with tests/pngio.py (plain Python), so the check does
not share code with the engine's libpng wrapper.
"""
import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys

import pngio

FAILURES = []
H = W = 8  # the tiny preset
PAD = 2


def check(cond, msg):
    if not cond:
        FAILURES.append(msg)
        print("FAIL:", msg, file=sys.stderr)
    return cond


# ---- PNG encode/decode (independent of the engine) ---------------------------------

def png_decode(path):
    """-> (width, height, channels, rows of bytes); the tools write gray or RGB only."""
    with open(path, "rb") as f:
        channels, h, w, rows = pngio.decode(f.read())
    if channels not in (1, 3):
        raise ValueError("unexpected PNG with %d channels (the tools write gray or RGB)" % channels)
    return w, h, channels, rows


def png_encode(path, w, h, pixels, channels=1):
    """pixels: bytes of h rows of w*channels values."""
    stride = w * channels
    with open(path, "wb") as f:
        f.write(pngio.encode([pixels[y * stride:(y + 1) * stride] for y in range(h)], w, h, channels))


def tile(rows, r, c, h=H, w=W, pad=PAD):
    """The gray tile at grid cell (r, c) as bytes."""
    y0, x0 = r * (h + pad), c * (w + pad)
    return b"".join(rows[y0 + y][x0:x0 + w] for y in range(h))


def write_idx(path, images, compress):
    n = len(images)
    data = struct.pack(">IIII", 0x00000803, n, H, W) + b"".join(images)
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(data)


# ---- running the tools -------------------------------------------------------------

class Tools:
    def __init__(self, a):
        self.a = a
        self.env = dict(os.environ, VAPO_PROGRESS="off")
        self.env.pop("VAPO_PROGRESS_INTERVAL", None)

    def run(self, tool, *args, env=None, dev=True):
        exe = getattr(self.a, tool)
        cmd = [exe] + [str(x) for x in args] + (["--device", "cpu", "--threads", "1"] if dev else [])
        p = subprocess.run(cmd, capture_output=True, text=True, env=env or self.env, timeout=300)
        sane(p, cmd)
        return p

    def ok(self, tool, *args, **kw):
        p = self.run(tool, *args, **kw)
        check(p.returncode == 0, "%s %s: exit %d\n%s" % (tool, " ".join(map(str, args)), p.returncode, p.stderr))
        return p


def sane(p, cmd):
    """No crash and no sanitizer report, whatever the exit status."""
    check(p.returncode >= 0 and p.returncode < 128,
          "%s: killed by a signal or crashed (status %d)\n%s" % (" ".join(cmd), p.returncode, p.stderr))
    for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation"):
        check(bad not in p.stderr, "%s: stderr mentions %s\n%s" % (" ".join(cmd), bad, p.stderr))


def fails(t, tool, args, status, *needles, dev=True):
    """The tool must exit with `status` and name the problem on stderr."""
    p = t.run(tool, *args, dev=dev)
    what = "%s %s" % (tool, " ".join(map(str, args)))
    check(p.returncode == status, "%s: exit %d, want %d\n%s" % (what, p.returncode, status, p.stderr))
    check("error:" in p.stderr, "%s: no 'error:' message\n%s" % (what, p.stderr))
    for n in needles:
        check(n in p.stderr, "%s: message does not mention %r:\n%s" % (what, n, p.stderr))
    check("Usage" not in p.stdout, "%s: printed the usage instead of an error" % what)
    return p


def read(path):
    with open(path, "rb") as f:
        return f.read()


def help_lists(t, tool, flags):
    p = t.ok(tool, "--help", dev=False)
    for f in flags:
        check(f in p.stdout, "%s --help does not list %s" % (tool, f))


SOLVER_FLAGS = ["--solver", "--t-end", "--rtol", "--atol", "--steps", "--max-nfe", "--device", "--threads"]


# ---- groups -----------------------------------------------------------------------------

def test_sample(t, work):
    m = t.a.model
    help_lists(t, "sample", ["-n", "--num", "--seed", "--first", "--out", "--out-dir", "--cols", "--pad",
                             "--batch", "--quiet", "--help"] + SOLVER_FLAGS)

    g1, g2 = os.path.join(work, "g1.png"), os.path.join(work, "g2.png")
    p = t.ok("sample", m, "-n", 10, "--seed", 3, "--cols", 4, "--out", g1)
    check("average NFE" in p.stdout, "vapo-sample prints no average NFE: %r" % p.stdout)
    w, h, c, rows = png_decode(g1)
    check((w, h, c) == (4 * W + 3 * PAD, 3 * H + 2 * PAD, 1), "grid is %dx%dx%d, want 38x28x1" % (w, h, c))
    t.ok("sample", m, "-n", 10, "--seed", 3, "--cols", 4, "--out", g2, "--batch", 3)
    check(read(g1) == read(g2), "same seed, different --batch: grids differ")
    # padding is white, the last row's empty cells too
    check(rows[H][0] == 255 and rows[0][W] == 255, "grid padding is not white")
    check(rows[2 * (H + PAD)][2 * (W + PAD): 2 * (W + PAD) + W] == b"\xff" * W, "empty grid cell is not white")

    # default layout: ceil(sqrt(n)) columns
    g3 = os.path.join(work, "g3.png")
    t.ok("sample", m, "-n", 5, "--seed", 3, "--out", g3, "--pad", 0)
    w, h, _, rows3 = png_decode(g3)
    check((w, h) == (3 * W, 2 * H), "5 samples, no pad: %dx%d, want 24x16" % (w, h))
    check(tile(rows3, 0, 1, pad=0) == tile(rows, 0, 1), "sample 1 differs between -n 5 and -n 10")

    # per-sample files: batch size and --first do not change sample k
    d1, d8, df = (os.path.join(work, x) for x in ("b1", "b8", "first"))
    t.ok("sample", m, "-n", 10, "--seed", 3, "--out-dir", d1, "--batch", 1)
    t.ok("sample", m, "-n", 10, "--seed", 3, "--out-dir", d8, "--batch", 8)
    t.ok("sample", m, "-n", 4, "--seed", 3, "--first", 6, "--out-dir", df)
    names = sorted(os.listdir(d1))
    check(names == ["seed3_%06d.png" % k for k in range(10)], "unexpected file names %s" % names)
    for n in names:
        check(read(os.path.join(d1, n)) == read(os.path.join(d8, n)), "%s differs between --batch 1 and 8" % n)
    check(sorted(os.listdir(df)) == ["seed3_%06d.png" % k for k in range(6, 10)],
          "--first 6 -n 4 wrote %s" % sorted(os.listdir(df)))
    for n in os.listdir(df):
        check(read(os.path.join(df, n)) == read(os.path.join(d1, n)), "%s differs with --first" % n)
    for k in range(10):
        fw, fh, fc, frows = png_decode(os.path.join(d1, names[k]))
        check((fw, fh, fc) == (W, H, 1), "%s is %dx%dx%d" % (names[k], fw, fh, fc))
        check(b"".join(frows) == tile(rows, k // 4, k % 4), "grid tile %d differs from %s" % (k, names[k]))

    # another seed gives other images
    g4 = os.path.join(work, "g4.png")
    t.ok("sample", m, "-n", 10, "--seed", 4, "--cols", 4, "--out", g4)
    check(read(g4) != read(g1), "seeds 3 and 4 give the same grid")

    # fixed-step solver: exactly steps * stages evaluations
    p = t.ok("sample", m, "-n", 3, "--solver", "rk4", "--steps", 5, "--out", os.path.join(work, "rk4.png"))
    check("average NFE 20.0" in p.stdout, "rk4 with 5 steps: %r, want 20 NFE" % p.stdout)
    p = t.ok("sample", m, "-n", 2, "--solver", "euler", "--steps", 7, "--max-nfe", 7,
             "--out", os.path.join(work, "euler.png"))
    check("average NFE 7.0" in p.stdout, "euler 7 steps: %r" % p.stdout)
    p = t.run("sample", m, "-n", 2, "--solver", "heun", "--steps", 10, "--max-nfe", 5, "--out",
              os.path.join(work, "x.png"))
    check(p.returncode == 2 and "max_nfe" in p.stderr, "heun 10 steps with --max-nfe 5 must fail: %s" % p.stderr)
    # a looser tolerance needs fewer evaluations
    p1 = t.ok("sample", m, "-n", 4, "--rtol", 1e-2, "--atol", 1e-2, "--out", os.path.join(work, "loose.png"))
    p2 = t.ok("sample", m, "-n", 4, "--rtol", 1e-5, "--atol", 1e-5, "--out", os.path.join(work, "tight.png"))
    nfe = [float(p.stdout.split("average NFE ")[1].split()[0]) for p in (p1, p2)]
    check(nfe[0] < nfe[1], "NFE at rtol 1e-2 (%g) not below rtol 1e-5 (%g)" % tuple(nfe))

    # progress: plain lines with rate when stderr is not a terminal
    env = dict(t.env, VAPO_PROGRESS="plain", VAPO_PROGRESS_INTERVAL="0")
    p = t.run("sample", m, "-n", 6, "--out", os.path.join(work, "p.png"), env=env)
    lines = [l for l in p.stderr.splitlines() if l.startswith("sampling ")]
    check(p.returncode == 0 and len(lines) >= 2, "no progress lines:\n%s" % p.stderr)
    check(any("samples/s" in l for l in lines) and "6/6 samples (100%)" in lines[-1] and "\r" not in p.stderr,
          "progress lines look wrong:\n%s" % "\n".join(lines))
    env = dict(t.env, VAPO_PROGRESS="tty", VAPO_PROGRESS_INTERVAL="0")
    p = t.run("sample", m, "-n", 2, "--out", os.path.join(work, "p.png"), env=env)
    check(p.returncode == 0, "tty progress run failed:\n%s" % p.stderr)
    p = t.ok("sample", m, "-n", 2, "-q", "--out", os.path.join(work, "q.png"),
             env=dict(t.env, VAPO_PROGRESS="plain", VAPO_PROGRESS_INTERVAL="0"))
    check(p.stderr == "", "--quiet still writes to stderr: %r" % p.stderr)


def test_interpolate(t, work):
    m = t.a.model
    help_lists(t, "interpolate", ["--seed-a", "--seed-b", "--rows", "--pair", "--frames", "--out", "--out-dir",
                                  "--pad", "--batch", "--quiet", "--help"] + SOLVER_FLAGS)
    s1, s2 = os.path.join(work, "s1.png"), os.path.join(work, "s2.png")
    fr = os.path.join(work, "frames")
    p = t.ok("interpolate", m, "--seed-a", 1, "--seed-b", 2, "--frames", 5, "--rows", 2, "--out", s1, "--out-dir", fr)
    check("average NFE" in p.stdout, "vapo-interpolate prints no NFE: %r" % p.stdout)
    w, h, c, rows = png_decode(s1)
    check((w, h, c) == (5 * W + 4 * PAD, 2 * H + PAD, 1), "strip is %dx%dx%d, want 48x18x1" % (w, h, c))
    t.ok("interpolate", m, "--seed-a", 1, "--seed-b", 2, "--frames", 5, "--rows", 2, "--out", s2, "--batch", 3)
    check(read(s1) == read(s2), "same seeds, different --batch: strips differ")
    names = sorted(os.listdir(fr))
    check(names == ["row%d_frame%03d.png" % (r, k) for r in range(2) for k in range(5)], "frames: %s" % names)
    for n in names:
        r, k = int(n[3]), int(n[10:13])
        fw, fh, _, frows = png_decode(os.path.join(fr, n))
        check((fw, fh) == (W, H) and b"".join(frows) == tile(rows, r, k), "%s differs from the strip" % n)
    check(tile(rows, 0, 0) != tile(rows, 0, 4), "the two ends of a row are the same image")
    check(tile(rows, 0, 0) != tile(rows, 1, 0), "rows 0 and 1 start at the same image")

    # one row: the same as row 0 above, and the same as --pair
    s3, s4 = os.path.join(work, "s3.png"), os.path.join(work, "s4.png")
    t.ok("interpolate", m, "--seed-a", 1, "--seed-b", 2, "--frames", 5, "--out", s3)
    t.ok("interpolate", m, "--pair", "1:2", "--frames", 5, "--out", s4)
    _, _, _, rows3 = png_decode(s3)
    check(read(s3) == read(s4), "--pair 1:2 differs from --seed-a 1 --seed-b 2")
    for k in range(5):
        check(tile(rows3, 0, k) == tile(rows, 0, k), "frame %d of row 0 differs between --rows 1 and 2" % k)
    # the end points of a row are the (rescaled) noises of sample 0 of each seed: swapping seeds mirrors the row
    s5 = os.path.join(work, "s5.png")
    t.ok("interpolate", m, "--pair", "2:1", "--frames", 5, "--out", s5)
    _, _, _, rows5 = png_decode(s5)
    for k in range(5):
        check(tile(rows5, 0, k) == tile(rows3, 0, 4 - k), "frame %d of 2:1 is not frame %d of 1:2" % (k, 4 - k))
    # several pairs, one frame
    s6 = os.path.join(work, "s6.png")
    t.ok("interpolate", m, "--pair", "5:6", "--pair", "7:8", "--pair", "9:10", "--frames", 1, "--out", s6)
    w, h, _, _ = png_decode(s6)
    check((w, h) == (W, 3 * H + 2 * PAD), "3 pairs x 1 frame: %dx%d, want 8x28" % (w, h))


def parse_csv(text):
    lines = text.strip().splitlines()
    check(lines and lines[0] == "source,index,energy,value,ood_score,in_distribution", "bad CSV header %r" % lines[:1])
    out = []
    for l in lines[1:]:
        src, idx, e, v, s, ind = l.rsplit(",", 5)
        out.append((src, int(idx), float(e), float(v), float(s) if s else None, int(ind) if ind else None))
    return out


def close(a, b):
    """Energies of one image computed in batches of different sizes and
    positions: bit-identical (batch invariance, docs/DESIGN.md)."""
    return len(a) == len(b) and all(x == y for x, y in zip(a, b))


def auroc(pos, neg):
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_score(t, work):
    m = t.a.model
    help_lists(t, "score", ["--format", "--summary", "--limit", "--resize", "--score", "--auroc-vs", "--auroc-n",
                            "--auroc-seed", "--batch", "--quiet", "--help", "--device", "--threads"])
    sd = os.path.join(work, "samples")
    t.ok("sample", m, "-n", 12, "--seed", 5, "--out-dir", sd)
    files = sorted(os.path.join(sd, f) for f in os.listdir(sd))

    p = t.ok("score", m, *files[:3])
    rows = parse_csv(p.stdout)
    check(len(rows) == 3 and [r[0] for r in rows] == files[:3], "CSV rows: %s" % rows)
    for r in rows:
        check(r[2] == r[2] and abs(r[2]) < 1e6, "energy not finite: %s" % (r,))
        check(r[4] is not None and 0 <= r[4] <= 1 and r[5] in (0, 1), "ood columns: %s" % (r,))

    # a folder gives the same energies as the files, in name order
    p = t.ok("score", m, sd, "--batch", 5)
    frows = parse_csv(p.stdout)
    check([r[0] for r in frows] == files, "folder order: %s" % [r[0] for r in frows])
    check(close([r[2] for r in frows[:3]], [r[2] for r in rows]), "folder energies differ from file energies")
    # its own samples are mostly in distribution (the calibration used samples of the model)
    check(sum(r[5] for r in frows) >= 9, "only %d of 12 samples in distribution" % sum(r[5] for r in frows))
    # the scores: energy's value is the energy; each score is the model's own, the default the mahalanobis one;
    # a value does not depend on the batch
    for score in ("energy", "complexity", "multiscale", "mahalanobis"):
        sr = parse_csv(t.ok("score", m, sd, "--score", score, "--batch", 5).stdout)
        sr3 = parse_csv(t.ok("score", m, sd, "--score", score, "--batch", 3).stdout)
        check(close([r[3] for r in sr], [r[3] for r in sr3]), "%s values depend on the batch" % score)
        check(close([r[2] for r in sr], [r[2] for r in frows]), "--score %s changed the energies" % score)
        if score == "energy":
            check(close([r[3] for r in sr], [r[2] for r in sr]), "energy score: value != energy")
        if score == "mahalanobis":
            check(close([r[3] for r in sr], [r[3] for r in frows]), "the default score is not mahalanobis")
        check(sum(r[5] for r in sr) >= 9, "%s: only %d of 12 samples in distribution" % (score, sum(r[5] for r in sr)))

    # idx input, gzip'd and plain, and the same pixels as PNG files
    imgs = [bytes((x * 37 + y * 11 + k * 53) % 256 for y in range(H) for x in range(W)) for k in range(20)]
    gz, plain = os.path.join(work, "imgs-idx3-ubyte.gz"), os.path.join(work, "imgs-idx3-ubyte")
    write_idx(gz, imgs, True)
    write_idx(plain, imgs, False)
    pngs = []
    for k in (0, 7, 19):
        pngs.append(os.path.join(work, "idx%d.png" % k))
        png_encode(pngs[-1], W, H, imgs[k])
    rgb = os.path.join(work, "rgb.png")  # RGB with R = G = B: gray after conversion
    png_encode(rgb, W, H, bytes(v for v in imgs[7] for _ in range(3)), channels=3)
    p = t.ok("score", m, gz, plain, *pngs, rgb)
    r = parse_csv(p.stdout)
    check(len(r) == 44, "idx x2 + 4 PNGs: %d rows, want 44" % len(r))
    check([x[1] for x in r[:20]] == list(range(20)) and r[0][0] == gz, "idx index column: %s" % r[:3])
    check(close([x[2] for x in r[:20]], [x[2] for x in r[20:40]]), "gzip'd and plain idx energies differ")
    check(close([r[40][2], r[41][2], r[42][2]], [r[0][2], r[7][2], r[19][2]]),
          "PNG and idx energies of one image differ")
    check(close([r[43][2]], [r[7][2]]), "gray RGB PNG energy %g != gray %g" % (r[43][2], r[7][2]))
    p = t.ok("score", m, gz, "--limit", 4)
    check(len(parse_csv(p.stdout)) == 4, "--limit 4 gave %d rows" % len(parse_csv(p.stdout)))

    # json, with the summary and AUROC against uniform noise
    p = t.ok("score", m, sd, "--format", "json", "--auroc-vs", "uniform", "--auroc-n", 50, "--batch", 5)
    j = json.loads(p.stdout)
    check(len(j["images"]) == 12 and j["summary"]["count"] == 12, "json counts")
    check([x["energy"] for x in j["images"]] == [r[2] for r in frows], "json and csv energies differ")
    check([x["source"] for x in j["images"]] == files, "json sources")
    a = j["summary"]["auroc"]
    check(a["count"] == 50 and 0 <= a["value"] <= 1 and "uniform" in a["vs"], "json auroc: %s" % a)
    check(isinstance(j["images"][0]["in_distribution"], bool), "in_distribution is not a JSON boolean")
    p2 = t.ok("score", m, sd, "--format", "json", "--auroc-vs", "uniform", "--auroc-n", 50, "--summary")
    j2 = json.loads(p2.stdout)
    check("images" not in j2 and j2["summary"]["auroc"]["value"] == a["value"], "--summary json")

    # AUROC against another set equals the rank statistic computed here
    other = os.path.join(work, "other")
    os.makedirs(other)
    for k in range(6):
        png_encode(os.path.join(other, "o%d.png" % k), W, H, imgs[k])
    p = t.ok("score", m, sd, "--auroc-vs", other, "--format", "json", "--summary", "--batch", 5)
    val = json.loads(p.stdout)["summary"]["auroc"]["value"]
    neg = [x[3] for x in parse_csv(t.ok("score", m, other, "--batch", 5).stdout)]
    want = auroc([x[3] for x in frows], neg)
    check(abs(val - want) < 1e-9, "AUROC vs folder %.6f, computed here %.6f" % (val, want))
    p = t.ok("score", m, sd, "--auroc-vs", other, "--auroc-n", 4, "--format", "json", "--summary", "--batch", 5)
    a4 = json.loads(p.stdout)["summary"]["auroc"]
    check(a4["count"] == 4 and abs(a4["value"] - auroc([x[3] for x in frows], neg[:4])) < 1e-9,
          "AUROC vs the first 4 images of a folder: %s" % a4)
    p = t.ok("score", m, sd, "--auroc-vs", "gaussian", "--auroc-n", 40, "--summary")
    check("AUROC" in p.stdout and "gaussian" in p.stdout, "csv --summary has no AUROC line: %r" % p.stdout)
    p = t.ok("score", m, sd, "--auroc-vs", "uniform", "--auroc-n", 40)
    check("AUROC" in p.stderr, "the AUROC summary is not on stderr: %r" % p.stderr)

    # resizing a 28x28 idx (Fashion-MNIST when installed)
    fm = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    if os.path.exists(fm):
        p = t.ok("score", m, fm, "--resize", "--limit", 30, "--summary")
        check("30 image(s)" in p.stdout, "fashion-mnist --resize: %r" % p.stdout)
        fails(t, "score", [m, fm, "--limit", 3], 1, "28x28", "8x8", "--resize")

    # a model without calibration: energies only
    nc = os.path.join(work, "nocalib.safetensors")
    subprocess.run([t.a.make_model, nc, "--no-calib"], check=True, capture_output=True)
    p = t.ok("score", nc, *files[:2])
    r = parse_csv(p.stdout)
    check(len(r) == 2 and r[0][4] is None and r[0][5] is None and r[0][3] == r[0][2], "uncalibrated: %s" % r)
    fails(t, "score", [nc, files[0], "--score", "multiscale"], 1, "no multiscale score")
    fails(t, "score", [nc, files[0], "--score", "mahalanobis"], 1, "no mahalanobis score")
    check("no OOD calibration" in p.stderr, "no warning about the missing calibration")
    j = json.loads(t.ok("score", nc, files[0], "--format", "json").stdout)
    check(j["images"][0]["ood_score"] is None and j["summary"]["in_distribution_fraction"] is None,
          "uncalibrated json: %s" % j)


def test_errors(t, work):
    m = t.a.model
    missing = os.path.join(work, "missing.safetensors")
    data = read(m)
    truncs = []
    for cut in (0, 4, 8, 100, len(data) // 2, len(data) - 1):
        path = os.path.join(work, "trunc%d.safetensors" % cut)
        with open(path, "wb") as f:
            f.write(data[:cut])
        truncs.append(path)
    garbage = os.path.join(work, "garbage.safetensors")
    with open(garbage, "wb") as f:
        f.write(b"this is not a checkpoint at all, not even close" * 3)
    flipped = os.path.join(work, "flipped.safetensors")  # header JSON damaged
    (hlen,) = struct.unpack("<Q", data[:8])
    with open(flipped, "wb") as f:
        f.write(data[:8] + data[8:8 + hlen].replace(b"{", b"[", 3) + data[8 + hlen:])
    nan = os.path.join(work, "nan.safetensors")  # valid structure, the weights overwritten with NaN
    with open(nan, "wb") as f:
        f.write(data[:8 + hlen] + b"\xff" * (len(data) - 8 - hlen))
    truncs.append(nan)
    out = os.path.join(work, "x.png")
    img = os.path.join(work, "ok.png")
    png_encode(img, W, H, bytes(range(64)))

    for tool, extra in (("sample", ["-n", 1, "--out", out]),
                        ("interpolate", ["--seed-a", 1, "--seed-b", 2, "--frames", 2, "--out", out]),
                        ("score", [img])):
        fails(t, tool, [missing] + extra, 1, "missing.safetensors", "No such file")
        # the loader is shared: every damaged file with one tool, two with the others
        for path in (truncs + [garbage, flipped] if tool == "sample" else [truncs[3], flipped]):
            fails(t, tool, [path] + extra, 1, "cannot load model", os.path.basename(path))
        fails(t, tool, extra, 2, "no input images" if tool == "score" else "no model")
        fails(t, tool, [], 2, "no model", dev=False)
        # the option parser's answers (unknown flags, bad numbers, --config, --device) are
        # cli_test.py's, for every program; here the tools' own ranges and rules
        if tool == "sample":  # the solver options are shared code (common/cli.c)
            fails(t, tool, [m, "--atol", "-1"] + extra, 2, "--atol")
            fails(t, tool, [m, "--steps", "0"] + extra, 2, "--steps")
            fails(t, tool, [m, "--t-end", "0"] + extra, 2, "--t-end")
        if tool != "score":
            fails(t, tool, [m, "--solver", "rk99"] + extra, 2, "--solver", "rk99")
            fails(t, tool, [m, "--batch", "0"] + extra, 2, "--batch")
            fails(t, tool, [m, "--pad", "x"] + extra, 2, "--pad")
            fails(t, tool, extra + [m, "--out", os.path.join(work, "no", "such", "dir", "x.png")], 1,
                  "no/such/dir/x.png")

    fails(t, "sample", [m, "-n", "0"], 2, "-n", "out of range")
    fails(t, "sample", [m, "-n", "5x"], 2, "-n", "'5x'")
    fails(t, "sample", [m, "--seed", "-1"], 2, "--seed", "negative")
    fails(t, "sample", [m, "--seed", "18446744073709551616"], 2, "--seed", "out of range")
    fails(t, "sample", [m, "--first", "-2"], 2, "--first")
    fails(t, "sample", [m, "--cols", "0"], 2, "--cols")
    fails(t, "sample", [m, "--out", out, "--out-dir", work], 2, "--out", "--out-dir")
    fails(t, "sample", [m, m], 2, "more than one model")
    blocker = os.path.join(work, "file-not-dir")
    open(blocker, "w").close()
    fails(t, "sample", [m, "-n", 1, "--out-dir", os.path.join(blocker, "sub")], 1, "file-not-dir")
    fails(t, "interpolate", [m, "--seed-a", 1], 2, "--seed-b")
    fails(t, "interpolate", [m, "--pair", "1-2"], 2, "--pair", "A:B")
    fails(t, "interpolate", [m, "--pair", "1:x"], 2, "--pair", "'x'")
    fails(t, "interpolate", [m, "--pair", "1:2", "--seed-a", 3], 2, "--pair")
    fails(t, "interpolate", [m, "--seed-a", 1, "--seed-b", 2, "--frames", 0], 2, "--frames")
    fails(t, "interpolate", [m, "--seed-a", 1, "--seed-b", 2, "--rows", 100000], 2, "--rows")

    # scoring: missing inputs, wrong sizes, corrupt images, bad options
    fails(t, "score", [m], 2, "no input images")
    fails(t, "score", [m, os.path.join(work, "nope.png")], 1, "nope.png", "No such file")
    big = os.path.join(work, "big.png")
    png_encode(big, 10, 6, bytes(60))
    fails(t, "score", [m, img, big], 1, "big.png", "10x6", "8x8", "--resize")
    p = t.ok("score", m, big, "--resize")
    check(len(parse_csv(p.stdout)) == 1, "--resize of a 10x6 PNG")
    bad = os.path.join(work, "bad.png")
    with open(bad, "wb") as f:
        f.write(read(img)[:40])
    fails(t, "score", [m, bad], 1, "bad.png")
    notimg = os.path.join(work, "notes.txt")
    with open(notimg, "w") as f:
        f.write("hello, this is text and not an image\n")
    fails(t, "score", [m, notimg], 1, "notes.txt", "not a PNG image or an idx")
    empty = os.path.join(work, "empty-dir")
    os.makedirs(empty, exist_ok=True)
    fails(t, "score", [m, empty], 1, "empty-dir", "no PNG files")
    idx28 = os.path.join(work, "i28-idx3-ubyte")
    with open(idx28, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(2 * 28 * 28))
    fails(t, "score", [m, idx28], 1, "i28-idx3-ubyte[0]", "28x28", "8x8")
    trunc_idx = os.path.join(work, "t-idx3-ubyte")
    with open(trunc_idx, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 5, 8, 8) + bytes(100))
    fails(t, "score", [m, trunc_idx], 1, "t-idx3-ubyte")
    fails(t, "score", [m, img, "--format", "xml"], 2, "--format", "'xml'")
    fails(t, "score", [m, img, "--limit", "0"], 2, "--limit")
    fails(t, "score", [m, img, "--auroc-n", "-5"], 2, "--auroc-n")
    fails(t, "score", [m, img, "--score", "likelihood"], 2, "--score", "energy,complexity,multiscale,mahalanobis")
    fails(t, "score", [m, img, "--auroc-vs", os.path.join(work, "nowhere")], 1, "--auroc-vs", "nowhere")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("group", choices=["sample", "interpolate", "score", "errors"])
    for k in ("model", "sample", "interpolate", "score", "make-model", "work"):
        ap.add_argument("--" + k, required=True)
    a = ap.parse_args()
    work = os.path.join(a.work, a.group)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t = Tools(a)
    {"sample": test_sample, "interpolate": test_interpolate, "score": test_score, "errors": test_errors}[a.group](
        t, work)
    if FAILURES:
        print("tools_test %s: %d check(s) failed" % (a.group, len(FAILURES)))
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("tools_test %s: all checks passed" % a.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
