#!/usr/bin/python3
"""vapo-serve throughput and latency (a benchmark, not a test).

    bench/serve_bench.py MODEL.safetensors [--serve build/vapo-serve] [--threads N] [--device cpu|cuda]

Starts vapo-serve (on the CPU unless --device says otherwise) with MODEL and measures:
  - throughput (images/s) of C concurrent clients (C = 32, 64) that each ask
    for one image per request (n=1, distinct seeds), with latency p50/p99;
  - the ceiling: the same C images as ONE request (n=C), which the server
    runs as one batch from start to end; ratio = clients / ceiling, in
    wall-clock throughput and in the server's CPU seconds per image (the
    one to trust on a busy shared machine);
  - the per-request HTTP overhead of /energy with one image: request latency
    minus the device time the server spent on it (from /metrics);
  - /energy latency while a saturating generate load runs;
  - the server's peak RSS (VmHWM).
With --overload CLIENTSxN (e.g. 48x64) it measures only overload instead:
CLIENTS clients each send requests of N images back to back for --duration
seconds against the server's --timeout-s deadline (--deadline), and it
reports goodput (images delivered within the deadline per second), the share
of 503 and 504 answers, and latency p50/p99 of the delivered requests.
With --mixed CLIENTSxN (e.g. 4x16) it measures latency classes instead: CLIENTS
clients keep /generate busy with requests of N images while one client sends
single-image /energy requests at --score-rate per second, for --duration
seconds; it reports /energy p50/p99, the generate throughput (ODE evaluations
and images per second) and the server's chunking (steps cut short for scores,
their mean time). Run it with --score-chunk-ms 0 (full batches: before) and
with the default (after) to compare.
Use a Release build of vapo-serve: Debug numbers say little."""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import pngio  # noqa: E402


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Client:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def post(self, path, body, ctype="application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {data[:200]!r}")
        return data

    def get(self, path):
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.read()


def metrics(port):
    text = Client(port).get("/metrics").decode()
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
            if ln and not ln.startswith("#")}


def cpu_seconds(pid):
    """The process's user + system CPU seconds (Linux): a cost that a busy
    shared machine does not inflate as much as wall-clock time."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gray_png(w, h):
    return pngio.encode([bytes((x * 37 + y * 11) % 256 for x in range(w)) for y in range(h)], w, h)


def concurrent_run(port, clients, per_client, seed0, body_extra):
    lat, errors = [], []
    barrier = threading.Barrier(clients + 1)

    def worker(i):
        c = Client(port)
        barrier.wait()
        for r in range(per_client):
            t = time.perf_counter()
            try:
                c.post("/generate", {"seed": seed0 + i * per_client + r, "n": 1, **body_extra})
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
                return
            lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(errors[0])
    return clients * per_client / wall, lat


def overload_run(port, clients, n, duration, extra):
    """CLIENTS closed-loop clients sending n-image requests for `duration` s;
    a 503 is retried after its Retry-After (capped at the time left)."""
    stats = {"ok": 0, "503": 0, "504": 0, "other": 0, "images": 0}
    lat, lock = [], threading.Lock()
    t_end = time.perf_counter() + duration

    def worker(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        seed = 1_000_000 * (i + 1)
        while time.perf_counter() < t_end:
            body = json.dumps({"seed": seed, "n": n, "format": "json", **extra}).encode()
            seed += n
            t = time.perf_counter()
            c.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            dt = time.perf_counter() - t
            key = "ok" if r.status == 200 else str(r.status) if r.status in (503, 504) else "other"
            with lock:
                stats[key] += 1
                if r.status == 200:
                    stats["images"] += n
                    lat.append(dt)
            if r.status == 503:
                wait = float(r.getheader("Retry-After") or 1)
                time.sleep(max(0.0, min(wait, t_end - time.perf_counter())))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats, lat, time.perf_counter() - t0


def mixed_run(port, proc, clients, n, duration, rate, png, extra):
    """Generate clients saturating the device plus a paced stream of scores."""
    stop, lock = threading.Event(), threading.Lock()
    done = {"images": 0}

    def loader(i):
        c = Client(port)
        seed = 2_000_000 * (i + 1)
        while not stop.is_set():
            try:
                c.post("/generate", {"seed": seed, "n": n, **extra})
                with lock:
                    done["images"] += n
            except RuntimeError:  # 503: back off a little
                time.sleep(0.5)
            seed += n

    loaders = [threading.Thread(target=loader, args=(i,)) for i in range(clients)]
    for t in loaders:
        t.start()
    time.sleep(3)  # the device fills up
    before, cpu0, images0 = metrics(port), cpu_seconds(proc.pid), done["images"]
    c, lat = Client(port), []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < duration:
        t = time.perf_counter()
        c.post("/energy", png, "image/png")
        lat.append(time.perf_counter() - t)
        time.sleep(max(0.0, t + 1 / rate - time.perf_counter()))
    wall = time.perf_counter() - t0
    after, cpu1, images1 = metrics(port), cpu_seconds(proc.pid), done["images"]
    stop.set()
    for t in loaders:
        t.join()
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    steps = d.get("vapo_chunked_steps_total", 0)
    chunk_ms = 1e3 * d.get("vapo_chunked_step_seconds_total", 0) / max(steps, 1)
    full_calls = d["vapo_model_calls_total"] - steps
    full_ms = 1e3 * (d["vapo_device_busy_seconds_total"] - d.get("vapo_chunked_step_seconds_total", 0)) / max(
        full_calls, 1)
    print(f"mixed {clients} clients x n={n} + /energy at {rate:g}/s, {wall:.0f} s: /energy p50 "
          f"{percentile(lat, 50) * 1e3:.1f} ms p99 {percentile(lat, 99) * 1e3:.1f} ms ({len(lat)} scores) | generate "
          f"{d['vapo_nfe_total'] / wall:.1f} NFE/s, {(images1 - images0) / wall:.2f} images/s, server CPU "
          f"{1e3 * (cpu1 - cpu0) / max(d['vapo_nfe_total'], 1):.2f} ms per NFE | {steps:.0f} chunked steps of "
          f"{chunk_ms:.1f} ms, {full_calls:.0f} full steps of {full_ms:.1f} ms")
    print(f"RESULT name=serve-mixed status=ok energy_p50_ms={percentile(lat, 50) * 1e3:.4g} "
          f"energy_p99_ms={percentile(lat, 99) * 1e3:.4g} nfe_per_s={d['vapo_nfe_total'] / wall:.4g} "
          f"images_per_s={(images1 - images0) / wall:.4g} chunked_steps={steps:.0f} chunk_ms={chunk_ms:.4g}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--serve", default=os.path.join(here, "..", "build", "vapo-serve"))
    ap.add_argument("--threads", type=int, default=0, help="CPU backend threads (0 = all cores)")
    ap.add_argument("--device", default="cpu", help="vapo-serve's --device: cpu or cuda")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--clients", default="32,64")
    ap.add_argument("--rounds", type=int, default=8, help="requests per client")
    ap.add_argument("--energy-requests", type=int, default=300)
    ap.add_argument("--solver", default=None, help="e.g. euler, with --steps, for a fixed NFE")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--overload", default=None, help="CLIENTSxN, e.g. 48x64: the overload measurement only")
    ap.add_argument("--deadline", type=float, default=60, help="the server's --timeout-s in overload mode")
    ap.add_argument("--duration", type=float, default=180, help="seconds of overload or mixed traffic")
    ap.add_argument("--mixed", default=None, help="CLIENTSxN, e.g. 4x16: generate load plus a stream of scores")
    ap.add_argument("--score-rate", type=float, default=10, help="scores per second in --mixed mode")
    ap.add_argument("--score-chunk-ms", type=int, default=None, help="vapo-serve's --score-chunk-ms (0: off)")
    a = ap.parse_args()
    extra = {}
    if a.solver:
        extra["solver"] = a.solver
    if a.steps:
        extra["steps"] = a.steps

    log = tempfile.NamedTemporaryFile("w+", prefix="serve-bench-", suffix=".log", delete=False)
    proc = subprocess.Popen([a.serve, "--port", "0", "--device", a.device, "--threads", str(a.threads), "--quiet",
                             "--max-batch", str(a.max_batch), "--max-queue", "4096", "--http-threads", "4",
                             "--max-connections", "512", "--timeout-s", str(a.deadline), a.model]
                            + ([] if a.score_chunk_ms is None else ["--score-chunk-ms", str(a.score_chunk_ms)]),
                            stdout=log, stderr=log)
    try:
        port = None
        deadline = time.time() + 60
        while time.time() < deadline and port is None:
            m = re.search(r'"port":(\d+)', open(log.name).read())
            port = int(m.group(1)) if m else None
            if proc.poll() is not None:
                sys.exit("vapo-serve exited:\n" + open(log.name).read())
            time.sleep(0.05)
        while time.time() < deadline:
            try:
                if json.loads(Client(port).get("/readyz")).get("status") == "ready":
                    break
            except OSError:
                pass
            time.sleep(0.05)
        info = json.loads(Client(port).get("/v1/model"))
        print(f"model {os.path.basename(a.model)}: {info['preset']} {info['shape']}, {info['parameters']} parameters, "
              f"backend {info['backend']}, threads {a.threads or 'all'}, max_batch {a.max_batch}, "
              f"solver {extra.get('solver', info['sampling']['solver'])}")
        # warm up
        Client(port).post("/generate", {"seed": 0, "n": 8, "format": "json", **extra})
        if a.mixed:
            clients, n = (int(v) for v in a.mixed.lower().split("x"))
            mixed_run(port, proc, clients, n, a.duration, a.score_rate, gray_png(info["shape"][2], info["shape"][1]),
                      extra)
            return
        if a.overload:
            clients, n = (int(v) for v in a.overload.lower().split("x"))
            st, lat, wall = overload_run(port, clients, n, a.duration, extra)
            total = st["ok"] + st["503"] + st["504"] + st["other"]
            print(f"overload {clients} clients x n={n}, deadline {a.deadline:g} s, {wall:.0f} s: goodput "
                  f"{st['images'] / wall:.2f} images/s ({st['ok']} requests delivered), "
                  f"503 {100 * st['503'] / max(total, 1):.0f}%, 504 {100 * st['504'] / max(total, 1):.0f}%, "
                  f"other {st['other']}; latency of delivered p50 {percentile(lat, 50):.1f} s "
                  f"p99 {percentile(lat, 99):.1f} s")
            return

        for clients in [int(c) for c in a.clients.split(",")]:
            rates = []
            cpu0 = cpu_seconds(proc.pid)
            for rep in range(5):  # the median of 5: shared machines are noisy
                c = Client(port)
                t = time.perf_counter()
                body = json.loads(c.post("/generate", {"seed": 1000 + rep, "n": clients, "format": "json",
                                                       **extra}))
                rates.append(clients / (time.perf_counter() - t))
            cpu_one = (cpu_seconds(proc.pid) - cpu0) / (5 * clients)
            best = statistics.median(rates)
            nfe = statistics.mean(body["nfe"])
            before = metrics(port)
            t = time.perf_counter()
            cpu0 = cpu_seconds(proc.pid)
            tput, lat = concurrent_run(port, clients, a.rounds, 10_000 * clients, extra)
            cpu_many = (cpu_seconds(proc.pid) - cpu0) / (clients * a.rounds)
            wall = time.perf_counter() - t
            after = metrics(port)
            d = {k: after[k] - before.get(k, 0) for k in ("vapo_device_busy_seconds_total", "vapo_batch_size_sum",
                                                       "vapo_batch_size_count")}
            print(f"{clients:3d} clients x n=1: {tput:8.1f} images/s  latency p50 {percentile(lat, 50) * 1e3:7.1f} ms"
                  f"  p99 {percentile(lat, 99) * 1e3:7.1f} ms | one request n={clients}: {best:8.1f} images/s"
                  f" | ratio {tput / best:.2f} | mean NFE {nfe:.1f}")
            print(f"RESULT name=serve-c{clients} status=ok images_per_s={tput:.4g} p50_ms={percentile(lat, 50) * 1e3:.4g} "
                  f"p99_ms={percentile(lat, 99) * 1e3:.4g} one_request_images_per_s={best:.4g} mean_nfe={nfe:.4g}")
            print(f"     server CPU per image: {cpu_many:.3f} s with {clients} clients, {cpu_one:.3f} s in one "
                  f"request | ratio in CPU time {cpu_one / cpu_many:.2f}")
            print(f"     device busy {100 * d['vapo_device_busy_seconds_total'] / wall:.0f}% of the run, "
                  f"{d['vapo_batch_size_sum'] / max(d['vapo_batch_size_count'], 1):.1f} rows per model call")

        png = gray_png(info["shape"][2], info["shape"][1])
        # /energy while 16 clients keep the device full with generate requests
        stop, lat = threading.Event(), []

        def loader(i):
            c = Client(port)
            k = 0
            while not stop.is_set():
                try:
                    c.post("/generate", {"seed": 50_000 + 1000 * i + k, "n": 4, **extra})
                except RuntimeError:  # 503 under the load it makes: back off a little
                    time.sleep(0.5)
                k += 1

        loaders = [threading.Thread(target=loader, args=(i,)) for i in range(16)]
        for t in loaders:
            t.start()
        time.sleep(2)
        c = Client(port)
        for _ in range(min(a.energy_requests, 100)):
            t = time.perf_counter()
            c.post("/energy", png, "image/png")
            lat.append(time.perf_counter() - t)
        stop.set()
        for t in loaders:
            t.join()
        print(f"/energy, one image, under a saturating generate load (16 clients x n=4): p50 "
              f"{percentile(lat, 50) * 1e3:.1f} ms, p99 {percentile(lat, 99) * 1e3:.1f} ms")
        c = Client(port)
        before = metrics(port)
        lat = []
        for _ in range(a.energy_requests):
            t = time.perf_counter()
            c.post("/energy", png, "image/png")
            lat.append(time.perf_counter() - t)
        after = metrics(port)
        busy = (after["vapo_device_busy_seconds_total"] - before["vapo_device_busy_seconds_total"]) / len(lat)
        p50 = percentile(lat, 50)
        print(f"/energy, one image, sequential keep-alive: p50 {p50 * 1e3:.3f} ms, p99 "
              f"{percentile(lat, 99) * 1e3:.3f} ms, device {busy * 1e3:.3f} ms/request, "
              f"HTTP + scheduling overhead ~{(p50 - busy) * 1e3:.3f} ms/request")
        with open(f"/proc/{proc.pid}/status") as f:
            hwm = next(ln for ln in f if ln.startswith("VmHWM")).split()[1]
        print(f"server peak RSS: {int(hwm) / 1024:.1f} MiB")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.unlink(log.name)


if __name__ == "__main__":
    main()
