"""vapo-serve as an attacker or a careless deployment meets it (issue 16), over
real HTTP: bodies on routes that take none, per-route body limits, the
Content-Type and Host checks (no-cors fetches, DNS rebinding), the key drawn
when binding beyond loopback, the metrics key, what /v1/model tells, models
the server cannot serve, the README's curl examples pasted as they are, and
the NFE in the request log. Slow clients and disconnects: server_slow.py."""

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time

from server_common import (Server, b64png, check, finish, gray_png, parse_args, png_decode, raw_request,
                           stop_cleanly, tiny_model)

args = parse_args()
model = tiny_model(args.make_model)


def error_message(data):
    try:
        return json.loads(data)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""


def status_of(reply):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(m.group(1)) if m else None


srv = Server(args.serve, model, "--max-images", "4")
port = srv.port

# ---- 1. a body on a route that takes none: 413 from the headers, nothing read ------------------

for what, head in (("a declared body", b"Content-Length: 8388608\r\n"),
                   ("a chunked body", b"Transfer-Encoding: chunked\r\n")):
    t = time.time()
    reply = raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n", timeout=3)
    took = time.time() - t
    check(status_of(reply) == 413 and took < 2,
          f"GET /healthz with {what} gets 413 before the body is sent ({took:.2f} s): {reply[:120]!r}")
t = time.time()
reply = raw_request(port, b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8388608\r\n\r\n", timeout=3)
check(status_of(reply) == 404 and time.time() - t < 2, f"a 404 with a declared body goes out unread: {reply[:60]!r}")
status, _, _ = srv.request("GET", "/healthz")
check(status == 200, "healthz still answers")

# ---- 2. each route its own body limit -----------------------------------------------------------

status, _, data = srv.post_json("/generate", {"seed": 1, "pad": "x" * 20000})
check(status == 413 and "/generate" in error_message(data),
      f"/generate refuses 20 kB of JSON with 413 naming the route: {status} {data[:160]!r}")
status, _, data = srv.post_json("/interpolate", {"seed_a": 1, "seed_b": 2, "pad": "x" * 20000})
check(status == 413, f"/interpolate refuses 20 kB of JSON: {status}")
status, _, data = srv.request("POST", "/generate", "[" + ",".join(["{}"] * 2000) + "]",
                              {"Content-Type": "application/json"})
check(status == 422 and "JSON values" in error_message(data),
      f"a body of 2000 objects is refused before it is parsed: {status} {data[:160]!r}")
status, _, data = srv.post_json("/energy", {"images": [1] * 3000})
check(status == 422 and "JSON values" in error_message(data),
      f"/energy with 3000 list items is refused before it is parsed: {status} {data[:160]!r}")
# an 8x8 model: a PNG of it needs well under 20 kB even stored uncompressed
status, _, data = srv.request("POST", "/energy", b"\x89PNG" + b"\0" * 40000, {"Content-Type": "image/png"})
check(status == 413, f"/energy refuses a 40 kB PNG for an 8x8 model: {status} {data[:160]!r}")
status, _, data = srv.post_json("/energy", {"images": ["A" * 30000] * 4})
check(status == 413, f"/energy refuses 120 kB of JSON for 4 images of 8x8: {status} {data[:160]!r}")
png = gray_png(8, 8)
status, _, data = srv.post_json("/energy", {"images": [b64png(png)] * 4})
check(status == 200, f"/energy still takes 4 real images as JSON: {status} {data[:160]!r}")
status, _, data = srv.request("POST", "/energy", png, {"Content-Type": "image/png"})
check(status == 200, f"/energy still takes a PNG body: {status}")

# ---- 6. Content-Type required; Host checked without a key ---------------------------------------

status, _, data = srv.request("POST", "/generate", '{"seed": 1}')
check(status == 415 and "Content-Type: application/json" in error_message(data),
      f"a body without Content-Type (a no-cors fetch) gets 415 naming the header: {status} {data[:200]!r}")
status, _, data = srv.request("POST", "/generate", '{"seed": 1}',
                              {"Content-Type": "application/x-www-form-urlencoded"})
check(status == 415 and "Content-Type: application/json" in error_message(data),
      f"a form body gets 415 naming the header: {status} {data[:200]!r}")
status, _, data = srv.request("POST", "/energy", png)
check(status == 415 and "image/png" in error_message(data), f"/energy without Content-Type: {status} {data!r}")

for path in ("/v1/model", "/metrics", "/openapi.yaml"):
    status, _, data = srv.request("GET", path, headers={"Host": f"evil.example:{port}"})
    check(status == 403 and "--allowed-hosts" in error_message(data),
          f"{path} named as evil.example (DNS rebinding) gets 403: {status} {data[:160]!r}")
status, _, _ = srv.post_json("/generate", {"seed": 1}, headers={"Host": "evil.example"})
check(status == 403, f"POST /generate named as evil.example gets 403: {status}")
for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST", f"[::1]:{port}"):
    status, _, _ = srv.request("GET", "/v1/model", headers={"Host": host})
    check(status == 200, f"Host {host} is allowed: {status}")
status, _, _ = srv.request("GET", "/healthz", headers={"Host": "evil.example"})
check(status == 200, f"/healthz answers any Host: {status}")

# ---- 8. /v1/model names the dataset, not where it was ---------------------------------------------


def with_dataset(src, dataset):
    """A copy of the model whose metadata records another --data argument."""
    with open(src, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    vapo = json.loads(header["__metadata__"]["vapo"])
    vapo["data"]["dataset"] = dataset
    header["__metadata__"]["vapo"] = json.dumps(vapo)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out = os.path.join(tempfile.mkdtemp(prefix="vapo-sec-"), "renamed.safetensors")
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return out


stop_cleanly(srv)
for data_arg, want in (("folder:/home/alice/private/faces", "folder"), ("cifar10:/srv/data/cifar", "cifar10"),
                       ("/home/alice/datasets/shirts", "shirts"), ("fashion-mnist", "fashion-mnist")):
    s = Server(args.serve, with_dataset(model, data_arg))
    status, _, data = s.request("GET", "/v1/model")
    got = json.loads(data).get("dataset") if status == 200 else None
    check(got == want and b"/home" not in data and b"/srv" not in data,
          f"/v1/model reports dataset {got!r} for --data {data_arg!r} (want {want!r}, no path)")
    stop_cleanly(s)

# ---- 9. a model with 2 channels is refused at load ----------------------------------------------

two = os.path.join(tempfile.mkdtemp(prefix="vapo-sec-"), "tiny2d.safetensors")
subprocess.run([args.make_model, two, "--preset", "tiny2d", "--no-calib"], check=True, stdout=subprocess.DEVNULL)
try:
    proc = subprocess.run([args.serve, "--port", "0", "--device", "cpu", "--threads", "1", two],
                          capture_output=True, text=True, timeout=15)
    rc, err = proc.returncode, proc.stderr
except subprocess.TimeoutExpired as e:
    rc, err = "still serving after 15 s", (e.stderr or b"").decode(errors="replace")
check(rc == 1 and "2 input channels" in err, f"a 2-channel model: exit {rc} with a message at load: {err[-400:]!r}")

# ---- 4. beyond loopback: a generated key, or an explicit --insecure-no-auth ---------------------

gen = Server(args.serve, model, "--host", "0.0.0.0")
text = gen.text()
lines = [ln for ln in gen.log_lines() if "api_key_generated" in ln]
key = lines[0]["api_key_generated"] if lines else ""
check(re.fullmatch(r"[0-9a-f]{32}", key or "") is not None, f"a 128-bit key is generated and logged: {lines}")
check(f"generated one: {key}" in text and f"Authorization: Bearer {key}" in text and "--insecure-no-auth" in text,
      "a human line says the key, how to send it and how to opt out")
status, _, _ = gen.request("GET", "/v1/model")
check(status == 401, f"beyond loopback without a given key, /v1/model needs the generated key: {status}")
status, _, _ = gen.post_json("/generate", {"seed": 1})
check(status == 401, f"... and so does /generate: {status}")
status, _, _ = gen.request("GET", "/v1/model", headers={"Authorization": f"Bearer {key}"})
check(status == 200, f"the generated key works: {status}")
check(gen.request("GET", "/healthz")[0] == 200, "/healthz stays open")
check(len([ln for ln in text.splitlines() if key in ln]) == 2,
      "the key is printed on two lines (the log's and the one for people), nowhere else")
stop_cleanly(gen)

other = Server(args.serve, model, "--host", "0.0.0.0")
key2 = [ln for ln in other.log_lines() if "api_key_generated" in ln][0]["api_key_generated"]
check(key2 != key, "each start draws another key")
stop_cleanly(other)

for flags, env in ((["--insecure-no-auth"], None), ([], {"VAPO_INSECURE_NO_AUTH": "1"})):
    s = Server(args.serve, model, "--host", "0.0.0.0", *flags, env=env)
    status, _, _ = s.request("GET", "/v1/model")
    check(status == 200 and "api_key_generated" not in s.text() and "--insecure-no-auth" in s.text(),
          f"{flags or env}: served without a key, with a warning: {status}")
    stop_cleanly(s)

given = Server(args.serve, model, "--host", "0.0.0.0", env={"VAPO_API_KEY": "given-key"})
check("api_key_generated" not in given.text(), "a given key is not replaced")
check(given.request("GET", "/v1/model", headers={"Authorization": "Bearer given-key"})[0] == 200, "the given key works")
stop_cleanly(given)

# ---- 7. a separate key (or none) for /metrics -----------------------------------------------------

mk = Server(args.serve, model, "--metrics-key", "scrape", env={"VAPO_API_KEY": "main"})
for auth, path, want in ((None, "/metrics", 401), ("scrape", "/metrics", 200), ("main", "/metrics", 200),
                         ("scrape", "/v1/model", 401), ("scrape", "/generate", 401), ("wrong", "/metrics", 401)):
    h = {"Authorization": f"Bearer {auth}"} if auth else {}
    status, _, _ = (mk.post_json(path, {"seed": 1}, headers=h) if path == "/generate"
                    else mk.request("GET", path, headers=h))
    check(status == want, f"metrics key: {path} with {auth!r} gets {status}, want {want}")
t = time.time()
reply = raw_request(mk.port, b"GET /v1/model HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8388608\r\n\r\n", timeout=3)
check(status_of(reply) == 401 and time.time() - t < 2, f"a 401 with a declared body goes out unread: {reply[:60]!r}")
stop_cleanly(mk)
for flags, env in ((["--metrics-open"], {"VAPO_API_KEY": "main"}),
                   ([], {"VAPO_API_KEY": "main", "VAPO_METRICS_OPEN": "1"})):
    s = Server(args.serve, model, *flags, env=env)
    check(s.request("GET", "/metrics")[0] == 200, f"{flags or env}: /metrics needs no key")
    check(s.request("GET", "/v1/model")[0] == 401, f"{flags or env}: the rest still does")
    stop_cleanly(s)

# ---- the README's examples, pasted as they are; the NFE in the log -----------------------------------

srv = Server(args.serve, model, "--allowed-hosts", "vapo.example, other.example")
for host in ("vapo.example", f"other.example:{srv.port}"):
    check(srv.request("GET", "/v1/model", headers={"Host": host})[0] == 200, f"--allowed-hosts admits {host}")
readme = os.path.join(os.path.dirname(os.path.abspath(args.openapi)), "..", "README.md")
with open(readme) as f:
    curls = [ln.strip() for ln in f if ln.startswith("curl ") and "localhost:8080" in ln]
check(len(curls) >= 2, f"the README has its curl examples: {curls}")
if shutil.which("curl"):
    work = tempfile.mkdtemp(prefix="vapo-readme-")
    with open(os.path.join(work, "shirt.png"), "wb") as f:
        f.write(png)
    for line in curls:
        cmd = line.replace("localhost:8080", f"localhost:{srv.port}")
        cmd = cmd.replace("curl -s", "curl -s -w '\\n%{http_code}'", 1)
        out = subprocess.run(cmd, shell=True, cwd=work, capture_output=True, timeout=60)
        code = out.stdout.decode(errors="replace").rsplit("\n", 1)[-1]
        check(out.returncode == 0 and code == "200", f"README example works as pasted: {line}\n -> {code} "
                                                        f"{out.stdout[:200]!r}")
    if os.path.exists(os.path.join(work, "grid.png")):
        with open(os.path.join(work, "grid.png"), "rb") as f:
            check(png_decode(f.read())[:1] == (1,), "the README's grid.png is a PNG")
else:
    print("curl not installed: README examples not run")

status, h, _ = srv.post_json("/generate", {"seed": 5, "n": 3, "format": "grid"})
want_nfe = sum(int(x) for x in h.get("x-vapo-nfe", "0").split(","))
time.sleep(0.1)
reqs = [ln for ln in srv.log_lines() if ln.get("msg") == "request" and ln.get("route") == "/generate"]
check(status == 200 and reqs and reqs[-1].get("nfe") == want_nfe and reqs[-1].get("images") == 3,
      f"the request's log line has its images and NFE ({want_nfe}): {reqs[-1:] if reqs else None}")
stop_cleanly(srv)

finish("server_security")
