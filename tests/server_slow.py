"""vapo-serve against slow and vanishing clients (issue 16), over real HTTP:
one client holding hundreds of slow connections (slowloris) leaves /healthz
answerable for everyone else; a request dribbled in a byte at a time is cut
at --request-timeout-s; a client that sends one byte more and closes has its
work cancelled; a client that half-closes (FIN after its request) still gets
its reply.

The slow client connects from 127.0.0.2 (all of 127/8 is loopback on Linux),
the well-behaved one from 127.0.0.1, so that the per-address limit can tell
them apart."""

import json
import socket
import time

from server_common import Server, check, finish, parse_args, png_decode, stop_cleanly, tiny_model, wait_for

args = parse_args()
model = tiny_model(args.make_model)
SLOW = 250


def connect_from(source, port, timeout=5):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_by_server(s, timeout):
    """True if the server closes (or resets) s within timeout seconds."""
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def healthz_time(srv):
    t = time.time()
    try:
        status = srv.request("GET", "/healthz", timeout=3)[0]
    except OSError:
        status = None
    return status, time.time() - t


# ---- slowloris: many slow connections from one address -------------------------------------------

srv = Server(args.serve, model, "--max-connections", "200", "--max-connections-per-ip", "16",
             "--request-timeout-s", "3", "--http-threads", "2")
slow = []
for i in range(SLOW):
    try:
        s = connect_from("127.0.0.2", srv.port)
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")  # headers that never end
        slow.append(s)
    except OSError:
        pass  # refused at once: what the per-address limit is for
print(f"slowloris: {len(slow)} of {SLOW} slow connections opened from 127.0.0.2")
time.sleep(0.3)
status, took = healthz_time(srv)
check(status == 200 and took < 2.0,
      f"/healthz answers at once while one client holds {SLOW} slow connections: {status} in {took:.2f} s")
open_now = 0
for s in slow:
    try:
        s.sendall(b"a")
        open_now += 1
    except OSError:
        pass
check(open_now <= 16 + 4, f"the slow client keeps at most --max-connections-per-ip 16 connections ({open_now} left)")

# the request deadline: a client dribbling its headers is cut, though it is never idle
t = time.time()
drip = connect_from("127.0.0.3", srv.port)
drip.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
cut = False
drip.settimeout(0.25)
while time.time() - t < 10 and not cut:
    try:
        drip.sendall(b"X")
        cut = drip.recv(4096) == b""
    except socket.timeout:
        pass
    except OSError:
        cut = True
took = time.time() - t
check(cut and 2.5 < took < 7.0,  # the idle timeout is 30 s
      f"a request dribbled a byte every 0.25 s is cut at --request-timeout-s 3 ({took:.2f} s)")
drip.close()
check(wait_for(lambda: srv.metrics().get('vapo_requests_rejected_total{reason="request_timeout"}', 0) >= 1, 2),
      "connections cut at the deadline are counted in /metrics")
check(all(closed_by_server(s, 0.5) for s in slow[:16]), "the slow connections were cut at the deadline too")
for s in slow:
    s.close()

# a kept-alive connection still serves several requests in a row
conn = connect_from("127.0.0.1", srv.port)
ok = 0
for _ in range(3):
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    ok += conn.recv(4096).startswith(b"HTTP/1.1 200")
check(ok == 3, f"keep-alive still works: {ok} of 3")
conn.close()
stop_cleanly(srv, "slowloris server")

# ---- the disconnect watcher -----------------------------------------------------------------------

srv = Server(args.serve, model, "--max-nfe", "5000", "--max-batch", "8")
long_job = json.dumps({"seed": 5, "n": 16, "format": "json", "solver": "rk4", "steps": 1000}).encode()
request = (b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(long_job), long_job))

s = connect_from("127.0.0.1", srv.port)
s.sendall(request)
check(wait_for(lambda: srv.metrics()["vapo_queue_images"] == 16, 5), "the long job runs")
s.sendall(b"X")  # one byte more while it runs (it could be a pipelined request) ...
time.sleep(0.2)
t = time.time()
s.close()  # ... then gone
freed = wait_for(lambda: srv.metrics()["vapo_queue_images"] == 0, 3, 0.005)
took = time.time() - t
check(freed and took < 1.0, f"a client that sent one byte more and closed has its work cancelled ({took:.3f} s)")

short_job = json.dumps({"seed": 7, "n": 2, "solver": "rk4", "steps": 300, "format": "grid"}).encode()
s = connect_from("127.0.0.1", srv.port)
s.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(short_job), short_job))
s.shutdown(socket.SHUT_WR)  # a half-close: done sending, still listening
s.settimeout(30)
reply = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
s.close()
final = reply[reply.find(b"HTTP/1.1 2"):] if b"HTTP/1.1 2" in reply else reply
head, _, body = final.partition(b"\r\n\r\n")
check(final.startswith(b"HTTP/1.1 200"), f"a half-closed client still gets its reply: {reply[:120]!r}")
try:
    c, h, w, _ = png_decode(body)
    check((c, h, w) == (1, 8, 18), f"... a 1x8x18 grid: {c}x{h}x{w}")
except Exception as e:  # noqa: BLE001 - any decode problem is a failure
    check(False, f"... whose PNG decodes: {e}")
status, _, _ = srv.post_json("/generate", {"seed": 1})
check(status == 200, f"the server goes on: {status}")
stop_cleanly(srv, "watcher server")

finish("server_slow")
