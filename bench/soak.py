#!/usr/bin/python3
"""vapo-serve soak: mixed traffic at saturation for MINUTES (a benchmark, not a test).

    bench/soak.py --minutes M [--serve build/vapo-serve] [--model models/fmnist-small.safetensors]
                  [--clients C] [--threads N] [--warmup-s S] [--serve-args '...'] [--out DIR]

Starts vapo-serve on the CPU and keeps C clients busy, each sending its next
request as soon as the last one ended, drawn from a fixed mix:
  generate (n 1..2), interpolate (3..4 frames), both with cheap solver settings,
  energy (1..4 PNGs as base64 JSON, or one PNG body), bad requests (malformed
  JSON, unknown field, out-of-range value, wrong media type, unknown path,
  wrong method), an oversized body (600 KB of JSON values; a 4xx, or the
  connection closed while it is still being sent), disconnects (headers then half the body then
  close; the whole request then close before the reply), and GET /healthz.
Reports status counts per kind of request, latency p50/p99 of the answered
requests per kind, client-side errors by kind, and the server's RSS
(/proc/PID/status VmRSS) over time, and says PASS or FAIL for:
  - no 5xx other than 503 (overload) or 504 (deadline),
  - every bad request answered with a 4xx, every good one with 200, 503 or 504,
  - no client-side error on a request that was not cut on purpose,
  - RSS growth < 5% from the end of the warm-up to the end,
  - the server still alive and answering /healthz at the end.
Exit status 0 on PASS, 1 on FAIL. With --out, the RSS samples and the summary
are written there as CSV and JSON."""

import argparse
import base64
import collections
import http.client
import json
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests"))
import pngio  # noqa: E402
from serve_bench import percentile  # noqa: E402

OK_5XX = {503, 504}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_png(rng, w=28, h=28):
    return pngio.encode([[rng.randrange(256) for _ in range(w)] for _ in range(h)], w, h, 1)


# ---- the mix ------------------------------------------------------------------------------------
# Each kind returns (method, path, body bytes, headers, expect) where expect is
# "good" (200, or 503/504 under load) or "bad" (a 4xx).

# Solver settings are cheap (a few evaluations per image) so that on a small
# shared CPU most requests finish within the deadline and the soak measures
# the server, not the model; rk45 with loose tolerances keeps its code path in.
def solver(rng):
    if rng.random() < 0.1:
        return {"solver": "rk45", "rtol": 0.1, "atol": 0.1}
    return {"solver": rng.choice(["euler", "heun", "rk4"]), "steps": rng.randint(2, 4)}


def k_generate(rng, pngs):
    body = {"seed": rng.randrange(1 << 40), "n": rng.randint(1, 2), "format": rng.choice(["grid", "json"]),
            **solver(rng)}
    return "POST", "/generate", json.dumps(body).encode(), {"Content-Type": "application/json"}, "good"


def k_interpolate(rng, pngs):
    body = {"seed_a": rng.randrange(1000), "seed_b": rng.randrange(1000), "frames": rng.randint(3, 4),
            "format": rng.choice(["png", "json"]), **solver(rng)}
    return "POST", "/interpolate", json.dumps(body).encode(), {"Content-Type": "application/json"}, "good"


def k_energy(rng, pngs):
    if rng.random() < 0.3:
        return "POST", "/energy", rng.choice(pngs), {"Content-Type": "image/png"}, "good"
    imgs = [base64.b64encode(rng.choice(pngs)).decode() for _ in range(rng.randint(1, 4))]
    return "POST", "/energy", json.dumps({"images": imgs}).encode(), {"Content-Type": "application/json"}, "good"


BAD = [
    ("POST", "/generate", b'{"n": ', {"Content-Type": "application/json"}),
    ("POST", "/generate", b'{"n": 2, "colour": "red"}', {"Content-Type": "application/json"}),
    ("POST", "/generate", b'{"n": 0}', {"Content-Type": "application/json"}),
    ("POST", "/generate", b'{"rtol": NaN}', {"Content-Type": "application/json"}),
    ("POST", "/generate", b'{"n": 1}', {"Content-Type": "text/plain"}),
    ("POST", "/interpolate", b'{"seed_a": 1}', {"Content-Type": "application/json"}),
    ("POST", "/energy", b'{"images": ["not base64!"]}', {"Content-Type": "application/json"}),
    ("POST", "/energy", b"\x89PNG\r\n\x1a\ngarbage", {"Content-Type": "image/png"}),
    ("POST", "/energy", b'{"images": []}', {"Content-Type": "application/json"}),
    ("GET", "/generate", None, {}),
    ("GET", "/no-such-path", None, {}),
]


def k_bad(rng, pngs):
    m, p, b, h = rng.choice(BAD)
    return m, p, b, h, "bad"


def k_oversize(rng, pngs):
    """600 KB of JSON values: refused (413 or 422) and maybe cut while still sending."""
    return "POST", "/generate", b"[" + b"{}," * 200000 + b"{}]", {"Content-Type": "application/json"}, "bad"


def k_health(rng, pngs):
    return "GET", "/healthz", None, {}, "good"


MIX = [("generate", k_generate, 30), ("interpolate", k_interpolate, 12), ("energy", k_energy, 25),
       ("bad", k_bad, 16), ("oversize", k_oversize, 2), ("disconnect", None, 10), ("healthz", k_health, 5)]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = collections.defaultdict(collections.Counter)  # kind -> status -> count
        self.latency = collections.defaultdict(list)                # kind -> seconds (answered)
        self.errors = collections.Counter()                         # "kind: exception" -> count
        self.violations = collections.Counter()                     # "kind status" -> count

    def answer(self, kind, expect, status, seconds):
        with self.lock:
            self.status[kind][status] += 1
            self.latency[kind].append(seconds)
            ok = (status == 200 or status in OK_5XX) if expect == "good" else 400 <= status < 500
            if status >= 500 and status not in OK_5XX:
                ok = False
            if not ok:
                self.violations[f"{kind} {status}"] += 1

    def error(self, kind, exc):
        with self.lock:
            self.errors[f"{kind}: {type(exc).__name__}"] += 1


def request(port, method, path, body, headers, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def disconnect(port, rng):
    """A valid request cut short: half its body, or all of it and no wait for the reply."""
    body = json.dumps({"seed": rng.randrange(1 << 40), "n": 2, "format": "json"}).encode()
    head = (f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if rng.random() < 0.5:
            s.sendall(head + body[:len(body) // 2])
        else:
            s.sendall(head + body)
            time.sleep(rng.uniform(0, 0.2))  # the job is queued or running when the client leaves


def client(port, seed, stop, stats, pngs, timeout):
    rng = random.Random(seed)
    kinds = [k for k, _, w in MIX for _ in range(w)]
    fns = {k: f for k, f, _ in MIX}
    while not stop.is_set():
        kind = rng.choice(kinds)
        try:
            if kind == "disconnect":
                disconnect(port, rng)
                with stats.lock:
                    stats.status[kind]["cut"] += 1
                continue
            method, path, body, headers, expect = fns[kind](rng, pngs)
            t0 = time.monotonic()
            try:
                status = request(port, method, path, body, headers, timeout)
            except (BrokenPipeError, ConnectionResetError):
                if kind != "oversize":
                    raise
                # the server answered early and closed while the body was still going out
                with stats.lock:
                    stats.status[kind]["reset"] += 1
                continue
            stats.answer(kind, expect, status, time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001  (every client-side failure is counted by kind)
            stats.error(kind, e)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--serve", default=os.path.join(ROOT, "build", "vapo-serve"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "fmnist-small.safetensors"))
    ap.add_argument("--clients", type=int, default=6)
    # One backend thread: on a shared, oversubscribed machine every OpenMP
    # barrier of a multi-threaded pass waits for a time slice (one request of
    # the tiny model: 0.1 s with 1 thread, 1-15 s with 2 at load 25).
    ap.add_argument("--threads", type=int, default=1, help="vapo-serve --threads (default 1; 0: all cores)")
    ap.add_argument("--warmup-s", type=float, default=None, help="default: 20%% of the run, 60..300 s")
    ap.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period")
    ap.add_argument("--weights", default="", help="change the mix, e.g. 'disconnect=0,bad=30'")
    ap.add_argument("--serve-args", default="", help="more vapo-serve options, e.g. '--grace-s 1'")
    ap.add_argument("--out", default=None, help="folder for rss.csv, summary.json and serve.log")
    args = ap.parse_args()
    for item in filter(None, args.weights.split(",")):
        kind, weight = item.split("=")
        i = next(i for i, (k, _, _) in enumerate(MIX) if k == kind)
        MIX[i] = (kind, MIX[i][1], int(weight))
    duration = args.minutes * 60
    warmup = args.warmup_s if args.warmup_s is not None else min(300.0, max(60.0, duration * 0.2))

    port = free_port()
    cmd = [args.serve, args.model, "--device", "cpu", "--port", str(port), "--quiet",
           "--threads", str(args.threads)] + shlex.split(args.serve_args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "serve.log") if args.out else os.devnull, "w")
    srv = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        return run(args, port, srv, duration, warmup)
    finally:
        srv.terminate()
        try:
            srv.wait(120)
        except subprocess.TimeoutExpired:
            srv.kill()


def run(args, port, srv, duration, warmup):
    t_end = time.monotonic() + 60
    while True:
        try:
            if request(port, "GET", "/readyz", None, {}, 5) == 200:
                break
        except OSError:
            pass
        if srv.poll() is not None or time.monotonic() > t_end:
            print("soak: vapo-serve did not become ready", file=sys.stderr)
            return 1
        time.sleep(0.1)

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/model")
    _, h, w = json.loads(conn.getresponse().read())["shape"]  # gray PNGs of the model's size
    conn.close()
    rng = random.Random(1)
    pngs = [test_png(rng, w, h) for _ in range(16)]
    stats, stop = Stats(), threading.Event()
    threads = [threading.Thread(target=client, args=(port, 1000 + i, stop, stats, pngs, 120), daemon=True)
               for i in range(args.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    rss = []  # (seconds since start, KiB)
    print(f"soak: vapo-serve pid {srv.pid} on port {port}, {args.clients} clients, {duration / 60:g} min "
          f"(warm-up {warmup:g} s)", flush=True)
    while time.monotonic() - t0 < duration and srv.poll() is None:
        time.sleep(args.sample_s)
        try:
            rss.append((time.monotonic() - t0, rss_kib(srv.pid)))
        except OSError:
            break
        if len(rss) % max(1, int(60 / args.sample_s)) == 0:
            with stats.lock:
                done = sum(sum(c.values()) for c in stats.status.values())
            print(f"soak: {rss[-1][0] / 60:5.1f} min  RSS {rss[-1][1] / 1024:7.1f} MiB  {done} requests",
                  flush=True)
    stop.set()
    for t in threads:
        t.join(150)
    alive = srv.poll() is None
    try:
        healthy = alive and request(port, "GET", "/healthz", None, {}, 10) == 200
    except OSError:
        healthy = False
    return report(args, stats, rss, warmup, time.monotonic() - t0, healthy)


def report(args, stats, rss, warmup, elapsed, healthy):
    print(f"\nsoak: {elapsed / 60:.1f} min, {args.clients} clients\n")
    print(f"{'kind':12} {'requests':>9} {'p50 s':>8} {'p99 s':>8}  statuses")
    for kind, _, _ in MIX:
        c = stats.status.get(kind, {})
        lat = stats.latency.get(kind, [])
        codes = ", ".join(f"{s}: {n}" for s, n in sorted(c.items(), key=lambda kv: str(kv[0])))
        print(f"{kind:12} {sum(c.values()):9d} {percentile(lat, 50):8.3f} {percentile(lat, 99):8.3f}  {codes}")
    print("\nclient-side errors:", dict(stats.errors) or "none")

    base = [k for t, k in rss if warmup <= t < warmup + 60] or [k for _, k in rss[:1]]
    tail = [k for t, k in rss if t >= rss[-1][0] - 60] if rss else []
    r0 = statistics.median(base) if base else float("nan")
    r1 = statistics.median(tail) if tail else float("nan")
    growth = (r1 - r0) / r0 * 100 if base and tail else float("nan")
    peak = max((k for _, k in rss), default=0)
    print(f"RSS: after warm-up {r0 / 1024:.1f} MiB, at the end {r1 / 1024:.1f} MiB ({growth:+.2f}%), "
          f"peak {peak / 1024:.1f} MiB")
    step = max(1, len(rss) // 12)
    print("RSS over time (min: MiB):", "  ".join(f"{t / 60:.1f}: {k / 1024:.0f}" for t, k in rss[::step]))

    five = {f"{k} {s}": n for k, c in stats.status.items() for s, n in c.items()
            if isinstance(s, int) and s >= 500 and s not in OK_5XX}
    unexpected_errors = {k: n for k, n in stats.errors.items() if not k.startswith("disconnect")}
    checks = [
        ("no 5xx other than 503/504", not five, five or ""),
        ("every request answered as its kind expects", not stats.violations, dict(stats.violations) or ""),
        ("no client-side errors on requests not cut on purpose", not unexpected_errors, unexpected_errors or ""),
        ("RSS growth < 5% after warm-up", growth == growth and growth < 5, f"{growth:+.2f}%"),
        ("server alive and answering /healthz at the end", healthy, ""),
    ]
    print()
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name} {detail}")
    passed = all(ok for _, ok, _ in checks)
    print(f"\nsoak: {'PASS' if passed else 'FAIL'}")
    if args.out:
        with open(os.path.join(args.out, "rss.csv"), "w") as f:
            f.write("seconds,rss_kib\n" + "".join(f"{t:.1f},{k}\n" for t, k in rss))
        summary = {"minutes": elapsed / 60, "clients": args.clients,
                   "status": {k: {str(s): n for s, n in c.items()} for k, c in stats.status.items()},
                   "latency_p50_p99": {k: [percentile(v, 50), percentile(v, 99)] for k, v in stats.latency.items()},
                   "errors": dict(stats.errors), "rss_growth_pct": growth, "pass": passed}
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
