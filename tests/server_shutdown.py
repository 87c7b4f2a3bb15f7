"""vapo-serve start-up and shutdown: /readyz says 503 until the model is
loaded; a missing or broken model is a clear error and exit code 1; SIGTERM
stops accepting, lets in-flight work finish within --grace-s, cancels what is
left (503 shutting_down), and exits 0; SIGINT does the same."""

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

from server_common import Server, check, finish, parse_args, tiny_model, wait_for

args = parse_args()
model = tiny_model(args.make_model)


def in_background(srv, body, out):
    def run():
        try:
            out["reply"] = srv.post_json("/generate", body, timeout=30)
        except Exception as e:  # noqa: BLE001
            out["error"] = repr(e)
    t = threading.Thread(target=run)
    t.start()
    return t


# ---- start-up ------------------------------------------------------------------------------------

srv = Server(args.serve, model, env={"VAPO_SERVE_TEST_LOAD_DELAY_MS": "800"}, wait_ready=False)
status, _, data = srv.request("GET", "/healthz")
check(status == 200, f"healthz answers while the model loads: {status}")
status, _, data = srv.request("GET", "/readyz")
check(status == 503 and json.loads(data)["error"]["type"] == "not_ready", f"readyz before load: {status} {data!r}")
status, h, data = srv.post_json("/generate", {"seed": 1})
check(status == 503 and json.loads(data)["error"]["type"] == "not_ready", f"generate before load: {status} {data!r}")
status, _, _ = srv.request("GET", "/v1/model")
check(status == 503, f"/v1/model before load: {status}")
srv.wait_ready()
status, _, _ = srv.post_json("/generate", {"seed": 1})
check(status == 200, f"generate once loaded: {status}")
check(srv.stop() == 0, "exit 0")

srv = Server(args.serve, model, env={"VAPO_SERVE_TEST_LOAD_DELAY_MS": "800"}, wait_ready=False)
t0 = time.time()
rc = srv.stop()
check(rc == 0, f"SIGTERM while the model loads: exit {rc} after {time.time() - t0:.2f} s")

srv = Server(args.serve, None, env={"VAPO_MODEL": model})
check(wait_for(lambda: any(ln.get("model") == model for ln in srv.log_lines()), 3),
      "the model comes from $VAPO_MODEL and is logged")
check(srv.stop() == 0, "exit 0")

r = subprocess.run([args.serve, "--port", "0", "/nonexistent/model.safetensors"], capture_output=True, text=True,
                   timeout=20)
check(r.returncode == 1 and "model file not found" in r.stderr, f"missing model: {r.returncode} {r.stderr[-300:]}")
with tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False) as f:
    f.write(b"this is not a checkpoint at all")
r = subprocess.run([args.serve, "--port", "0", f.name], capture_output=True, text=True, timeout=20)
os.unlink(f.name)
check(r.returncode == 1 and "cannot load the model" in r.stderr, f"broken model: {r.returncode} {r.stderr[-300:]}")
r = subprocess.run([args.serve, "--help"], capture_output=True, text=True, timeout=20)
check(r.returncode == 0 and all(flag in r.stdout for flag in ("--host", "--port", "--device", "--threads",
                                                               "--max-batch", "--max-queue", "--max-wait-ms",
                                                               "--timeout-s", "--api-key", "--cors")),
      "--help lists the flags")
r = subprocess.run([args.serve, "--max-batch", "zero"], capture_output=True, text=True, timeout=20)
check(r.returncode == 2 and "--max-batch" in r.stderr, f"a bad flag value is a usage error: {r.stderr!r}")

# ---- in-flight work finishes within the grace period -------------------------------------------------

# the request must outlast the probes below by a wide margin, whatever the CPU's speed
srv = Server(args.serve, model, "--grace-s", "20", "--max-batch", "4", "--max-steps", "5000", "--max-nfe", "20000")
keep = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
keep.request("GET", "/healthz")
keep.getresponse().read()
out = {}
t = in_background(srv, {"seed": 9, "n": 4, "format": "json", "solver": "rk4", "steps": 1000}, out)
check(wait_for(lambda: srv.metrics()["vapo_queue_images"] == 4, 5), "the request is running")
t0 = time.time()
srv.proc.send_signal(signal.SIGTERM)
time.sleep(0.1)
try:
    socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    accepting = True
except OSError:
    accepting = False
check(not accepting, "after SIGTERM no new connections are accepted")
try:
    keep.request("GET", "/readyz")
    r = keep.getresponse()
    body = r.read()
    check(r.status == 503 and json.loads(body)["error"]["type"] == "shutting_down" and
          r.getheader("Connection", "").lower() == "close",
          f"readyz on an open connection while draining: {r.status} {body!r}")
except OSError as e:
    check(False, f"an open keep-alive connection still gets answers while draining ({e!r})")
t.join()
status, _, data = out.get("reply", (None, None, b""))
check(status == 200 and len(json.loads(data)["images"]) == 4, f"in-flight request finished: {status} {out}")
rc = srv.proc.wait(20)
took = time.time() - t0
check(rc == 0, f"exit code 0 after draining (got {rc})")
lines = srv.log_lines()
msgs = [ln.get("msg", "") for ln in lines]
check(any(m.startswith("draining") for m in msgs) and msgs[-1] == "stopped", f"drain logged: {msgs[-4:]}")
print(f"drain with work in flight: exited {took:.2f} s after SIGTERM")

# ---- work past the grace period is cancelled ----------------------------------------------------------

srv = Server(args.serve, model, "--grace-s", "0.3", "--max-batch", "4", "--max-steps", "5000", "--max-nfe", "20000")
out = {}
t = in_background(srv, {"seed": 9, "n": 4, "format": "json", "solver": "rk4", "steps": 5000}, out)  # seconds, far past 0.3 s
check(wait_for(lambda: srv.metrics()["vapo_queue_images"] == 4, 5), "the long request is running")
t0 = time.time()
srv.proc.send_signal(signal.SIGTERM)
t.join()
status, h, data = out.get("reply", (None, {}, b"{}"))
check(status == 503 and json.loads(data)["error"]["type"] == "shutting_down",
      f"work past the grace period gets 503 shutting_down: {status} {data[:200]!r} {out.get('error')}")
rc = srv.proc.wait(20)
took = time.time() - t0
check(rc == 0 and took < 3, f"exit 0 soon after the grace period (rc {rc}, {took:.2f} s)")
check(any(ln.get("msg", "").startswith("grace period over") for ln in srv.log_lines()), "cancellation logged")

# ---- SIGINT, and an idle server ----------------------------------------------------------------------

srv = Server(args.serve, model)
t0 = time.time()
rc = srv.stop(signal.SIGINT)
check(rc == 0 and time.time() - t0 < 2,
      f"SIGINT on an idle server: exit {rc} in {time.time() - t0:.2f} s; log:\n{srv.text()[-2000:]}")

finish("server_shutdown")
