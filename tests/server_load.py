"""vapo-serve under load: many clients at once get correct, independent
results and share batches; a big request does not starve a small one; a full
queue answers 503 at once; a client that hangs up has its trajectories
cancelled; deadlines give 504; connection limits and idle timeouts hold."""

import base64
import json
import socket
import threading
import time

from server_common import (Server, wait_for, b64png, check, finish, max_pixel_diff, parse_args, raw_request,
                           stop_cleanly, tiny_model)

args = parse_args()
model = tiny_model(args.make_model)


# ---- many clients at once ------------------------------------------------------------------------

srv = Server(args.serve, model, "--max-batch", "32", "--max-wait-ms", "5")
seeds = list(range(100, 124))
baseline = {}
for s in seeds:
    status, _, data = srv.post_json("/generate", {"seed": s, "n": 2, "format": "json"})
    baseline[s] = json.loads(data)
probe = base64.b64decode(baseline[100]["images"][0])
_, _, data = srv.post_json("/energy", {"images": [b64png(probe)]})
probe_energy = json.loads(data)["results"][0]["energy"]

before = srv.metrics()
results, errors = {}, []
barrier = threading.Barrier(len(seeds) + 8)


def gen_client(s):
    try:
        barrier.wait()
        results[s] = srv.post_json("/generate", {"seed": s, "n": 2, "format": "json"})
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


def energy_client(i):
    try:
        barrier.wait()
        results[f"e{i}"] = srv.post_json("/energy", {"images": [b64png(probe)] * 3})
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


threads = [threading.Thread(target=gen_client, args=(s,)) for s in seeds]
threads += [threading.Thread(target=energy_client, args=(i,)) for i in range(8)]
t0 = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.time() - t0
after = srv.metrics()
check(not errors, f"no client errors: {errors}")
worst = 0
for s in seeds:
    status, _, data = results.get(s, (None, None, b"{}"))
    got = json.loads(data) if status == 200 else {}
    check(status == 200 and len(got.get("images", [])) == 2, f"concurrent seed {s}: {status}")
    for k in range(len(got.get("images", []))):
        d = max_pixel_diff(base64.b64decode(got["images"][k]), base64.b64decode(baseline[s]["images"][k]))
        worst = max(worst, d)
        check(got["images"][k] == baseline[s]["images"][k],
              f"concurrent seed {s} sample {k} matches the sequential run to the byte (max diff {d})")
for i in range(8):
    status, _, data = results.get(f"e{i}", (None, None, b"{}"))
    es = [r["energy"] for r in json.loads(data).get("results", [])] if status == 200 else []
    check(len(es) == 3 and all(e == probe_energy for e in es),
          f"concurrent energy client {i}: {status} {es} vs {probe_energy}")
calls = after["vapo_batch_size_count"] - before["vapo_batch_size_count"]
rows = after["vapo_batch_size_sum"] - before["vapo_batch_size_sum"]
print(f"{len(threads)} concurrent clients in {elapsed:.2f} s: {calls:.0f} batched calls, "
      f"{rows / max(calls, 1):.1f} rows per call, worst pixel difference {worst}")
check(rows / max(calls, 1) > 4, f"concurrent requests share batches ({rows / max(calls, 1):.1f} rows per call)")
check(after["vapo_images_generated_total"] - before["vapo_images_generated_total"] == 2 * len(seeds),
      "images generated are counted")

# ---- fairness: a small request is not stuck behind a big one ----------------------------------------

done_at = {}


def timed(name, body):
    t = time.time()
    status, _, _ = srv.post_json("/generate", body)
    done_at[name] = (status, time.time() - t, time.time())


big = threading.Thread(target=timed, args=("big", {"seed": 1, "n": 32, "format": "json", "solver": "rk4",
                                                   "steps": 40}))
big.start()
wait_for(lambda: srv.metrics()["vapo_queue_images"] >= 32, 5)
timed("small", {"seed": 2, "n": 1, "solver": "euler", "steps": 10})
big.join()
(bs, blat, bend), (ss, slat, send) = done_at["big"], done_at["small"]
print(f"fairness: big request {blat:.2f} s, small request submitted during it {slat:.3f} s")
check(bs == 200 and ss == 200, f"big and small succeed: {bs} {ss}")
check(send < bend and slat < 0.5 * blat, f"the small request finishes first ({slat:.3f} s vs {blat:.3f} s)")
stop_cleanly(srv, "concurrency server")

# ---- limits: queue, disconnect, deadline, connections ----------------------------------------------

lim = Server(args.serve, model, "--max-queue", "16", "--max-images", "16", "--max-batch", "8",
             "--timeout-s", "2", "--max-nfe", "20000", "--max-steps", "5000", "--max-connections", "8", "--http-threads", "1", "--conn-timeout-s", "2")
slow = {"seed": 5, "n": 16, "format": "json", "solver": "rk4", "steps": 4000}  # ~3x the 2 s deadline on an idle machine (1,000 steps took 1.6 s with the direct kernels)
body = json.dumps(slow).encode()
sock = raw_request(lim.port, b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body), read=False)
check(wait_for(lambda: lim.metrics()["vapo_queue_images"] == 16, 5), "the slow request fills the queue")

t = time.time()
status, h, data = lim.post_json("/generate", {"seed": 6})
quick = time.time() - t
check(status == 503 and h.get("retry-after") == "1" and json.loads(data)["error"]["type"] == "overloaded",
      f"full queue: 503 with Retry-After: {status} {h} {data!r}")
check(quick < 0.5, f"the 503 comes at once ({quick:.3f} s)")

cancelled0 = lim.metrics()["vapo_trajectories_cancelled_total"]
t = time.time()
sock.close()
freed = wait_for(lambda: lim.metrics()["vapo_queue_images"] == 0, 3, 0.005)
took = time.time() - t
m = lim.metrics()
print(f"disconnect: queue empty {took * 1000:.0f} ms after the client hung up; "
      f"{m['vapo_trajectories_cancelled_total'] - cancelled0:.0f} trajectories cancelled")
check(freed and took < 1.0, f"a client that hangs up has its work cancelled at once ({took:.3f} s)")
check(m["vapo_trajectories_cancelled_total"] - cancelled0 == 16, "its 16 trajectories show as cancelled in /metrics")
check(wait_for(lambda: any(ln.get("status") == 499 and ln.get("route") == "/generate" for ln in lim.log_lines()), 2),
      "the abandoned request is logged with status 499")
status, _, _ = lim.post_json("/generate", {"seed": 6})
check(status == 200, f"the queue takes work again: {status}")

t = time.time()
status, _, data = lim.post_json("/generate", slow)
took = time.time() - t
check(status == 504 and json.loads(data)["error"]["type"] == "timeout", f"deadline: 504 ({status} {data[:120]!r})")
check(1.9 < took < 3.5, f"the 504 comes at the deadline of 2 s ({took:.2f} s)")
check(lim.metrics()["vapo_queue_images"] == 0, "the timed-out work left the queue")

idle = socket.create_connection(("127.0.0.1", lim.port))
idle.settimeout(5)
t = time.time()
try:
    closed = idle.recv(1) == b""
except ConnectionResetError:
    closed = True
check(closed and 1 < time.time() - t < 4,
      f"an idle connection is closed after --conn-timeout-s 2 ({time.time() - t:.2f} s)")
idle.close()

# Past --max-connections a connection is not accepted: it waits in the
# kernel's accept queue until a slot frees (here: until the client gives up).
conns = [socket.create_connection(("127.0.0.1", lim.port)) for _ in range(8)]
time.sleep(0.05)
try:
    status, _, _ = lim.request("GET", "/healthz", timeout=0.5)
    refused = False
except OSError:
    refused = True
check(refused, "a connection past --max-connections is not served")
for c in conns:
    c.close()
check(wait_for(lambda: lim.request("GET", "/healthz")[0] == 200, 3), "connections are accepted again")
stop_cleanly(lim, "limits server")

finish("server_load")
