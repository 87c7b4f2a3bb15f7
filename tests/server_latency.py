"""Latency classes (server/batcher.h): under a saturating generate load, an
/energy score waits for one short chunk of generate rows, not for a full
batch; and the images made meanwhile are the same PNG bytes as those made
without score traffic (the sampler pool is batch invariant, so cutting steps
into chunks changes no result). The bounds come from the server's own step
times in /metrics, measured during the run, and from idle score latency
measured first, so they hold on a slow or shared machine: no wall-clock
constant. The bundled model, so that a full batch takes many times a chunk."""

import base64
import json
import statistics
import threading
import time

from server_common import Server, check, finish, parse_args, stop_cleanly

args = parse_args()
MODEL = "../models/fmnist-small.safetensors"
srv = Server(args.serve, MODEL, "--threads", "2", "--max-batch", "64", "--max-images", "16",
             "--score-chunk-ms", "10")  # well under a full step, even on a fast machine
LOAD = {"n": 16, "solver": "euler", "steps": 30, "format": "json"}  # a fixed amount of work per request
REF_SEED = 77


def generate(seed):
    status, _, data = srv.post_json("/generate", dict(LOAD, seed=seed), timeout=600)
    return status, [base64.b64decode(s) for s in json.loads(data)["images"]] if status == 200 else []


def score(png):
    t = time.perf_counter()
    status, _, _ = srv.request("POST", "/energy", png, {"Content-Type": "image/png"})
    check(status == 200, f"/energy: {status}")
    return time.perf_counter() - t


def delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


status, ref = generate(REF_SEED)  # alone: no scores, full batches
check(status == 200 and len(ref) == 16, f"reference request: {status}")
png = ref[0]
idle = [score(png) for _ in range(12)][2:]

# ---- a saturating generate load: 4 clients x 16 images, back to back ----------------------

stop, lock, errors = threading.Event(), threading.Lock(), []
made = []  # (t_start, t_end, images) of the reference seed's requests under load


def loader(i):
    seed = 1000 * (i + 1)
    while not stop.is_set():
        mine = i == 0 and len(made) < 50
        t0 = time.perf_counter()
        status, imgs = generate(REF_SEED if mine else seed)
        if status != 200:
            errors.append(status)
            return
        if mine:
            with lock:
                made.append((t0, time.perf_counter(), imgs))
        seed += 16


loaders = [threading.Thread(target=loader, args=(i,)) for i in range(4)]
for t in loaders:
    t.start()
time.sleep(2.0)  # the batches fill up
m0 = srv.metrics()
time.sleep(3.0)
m1 = srv.metrics()
calls = delta(m0, m1, "vapo_model_calls_total")
full = delta(m0, m1, "vapo_device_busy_seconds_total") / max(calls, 1)
rows = delta(m0, m1, "vapo_model_rows_total") / max(calls, 1)
check(delta(m0, m1, "vapo_chunked_steps_total") == 0, "no chunking without scores")

# ---- a stream of single-image scores ------------------------------------------------------

t_scores = time.perf_counter()
lat = []
for _ in range(40):
    t = time.perf_counter()
    lat.append(score(png))
    time.sleep(max(0.0, t + 0.1 - time.perf_counter()))
t_scores_end = time.perf_counter()
m2 = srv.metrics()
stop.set()
for t in loaders:
    t.join()
check(not errors, f"generate requests under load failed: {errors}")

steps = delta(m1, m2, "vapo_chunked_steps_total")
chunk = delta(m1, m2, "vapo_chunked_step_seconds_total") / max(steps, 1)
waits = delta(m1, m2, 'vapo_queue_wait_seconds_count{class="score"}')
wait = delta(m1, m2, 'vapo_queue_wait_seconds_sum{class="score"}') / max(waits, 1)
med, p90 = statistics.median(lat), sorted(lat)[int(0.9 * len(lat))]
idle_med, idle_p90 = statistics.median(idle), sorted(idle)[int(0.9 * len(idle))]
print(f"full steps {full * 1e3:.1f} ms ({rows:.0f} rows); while scoring {steps:.0f} chunked steps of "
      f"{chunk * 1e3:.1f} ms; score wait mean {wait * 1e3:.1f} ms over {waits:.0f}; score latency median "
      f"{med * 1e3:.1f} ms p90 {p90 * 1e3:.1f} ms (idle {idle_med * 1e3:.1f} / {idle_p90 * 1e3:.1f} ms)")
check(steps > 0 and chunk < full / 2, f"steps are cut to chunks while scores flow ({steps:.0f} steps of "
      f"{chunk * 1e3:.1f} ms vs full ones of {full * 1e3:.1f} ms)")
check(waits >= 40 and wait <= 1.5 * chunk, f"a score waits for about one chunk in flight: mean {wait * 1e3:.1f} ms "
      f"vs a chunk of {chunk * 1e3:.1f} ms")
check(med <= idle_med + 2 * chunk, f"score latency median {med * 1e3:.1f} ms > idle {idle_med * 1e3:.1f} ms + 2 "
      f"chunks of {chunk * 1e3:.1f} ms")
check(p90 <= idle_p90 + 4 * chunk, f"score latency p90 {p90 * 1e3:.1f} ms > idle {idle_p90 * 1e3:.1f} ms + 4 "
      f"chunks of {chunk * 1e3:.1f} ms")

# ---- the images made under score traffic are the same bytes --------------------------------

during = [imgs for t0, t1, imgs in made if t0 < t_scores_end and t1 > t_scores]
check(during, "a reference request ran while scores flowed")
check(all(imgs == ref for imgs in during), "images made while scores cut the steps differ from those made alone")
print(f"{len(during)} requests of seed {REF_SEED} made during the scores: PNG bytes as alone")
stop_cleanly(srv)
finish("server_latency")
