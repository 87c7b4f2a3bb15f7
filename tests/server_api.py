"""vapo-serve over real HTTP: every endpoint's happy path, reproducibility
from seeds, a catalogue of bad requests (status and error shape), every
response checked against openapi/openapi.yaml, authentication and CORS."""

import base64
import json

from server_common import (OpenAPI, Server, b64png, check, finish, gray_png, max_pixel_diff, parse_args,
                           png_decode, png_encode, raw_request, stop_cleanly, tiny_model)

args = parse_args()
api = OpenAPI(args.openapi)
model = tiny_model(args.make_model)
srv = Server(args.serve, model, "--max-body-bytes", "65536", "--max-images", "16", "--max-steps", "500",
             "--max-nfe", "1000")


def call(method, path, body=None, headers=None, spec_path=None):
    """A request whose response is checked against the OpenAPI document."""
    status, h, data = srv.request(method, path, body, headers)
    for p in api.check_response(method, spec_path or path, status, h, data):
        check(False, f"openapi: {p}")
    return status, h, data


def error_of(data):
    try:
        return json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return {}


# ---- operability endpoints -------------------------------------------------------------------

status, h, data = call("GET", "/healthz")
check(status == 200 and json.loads(data) == {"status": "ok"}, f"healthz: {status} {data!r}")
status, h, data = call("GET", "/readyz")
check(status == 200 and json.loads(data)["status"] == "ready", f"readyz: {status} {data!r}")
status, h, data = srv.request("HEAD", "/healthz")
check(status == 200 and data == b"", f"HEAD /healthz: {status} {data!r}")

status, h, data = call("GET", "/v1/model")
info = json.loads(data) if status == 200 else {}
check(status == 200 and info.get("shape") == [1, 8, 8] and info.get("preset") == "tiny",
      f"/v1/model: {status} {data[:300]!r}")
check(info.get("sampling", {}).get("solver") == "rk45" and info.get("backend") == "cpu",
      f"/v1/model sampling/backend: {info}")
check(info.get("parameters", 0) > 1000 and info.get("ood", {}).get("calibrated") is True,
      f"/v1/model parameters/ood: {info}")

status, h, data = call("GET", "/openapi.yaml")
with open(args.openapi, "rb") as f:
    check(status == 200 and data == f.read(), "GET /openapi.yaml serves openapi/openapi.yaml byte for byte")

status, h, data = call("GET", "/")
check(status == 200 and h["content-type"].startswith("text/html") and b"<title>vapo</title>" in data,
      f"GET /: {status} {h.get('content-type')}")

status, h, data = call("GET", "/metrics")
text = data.decode()
for name in ("vapo_http_requests_total", "vapo_queue_images", "vapo_queue_wait_seconds_bucket",
             "vapo_batch_size_bucket", "vapo_nfe_total", "vapo_images_generated_total",
             "vapo_trajectories_cancelled_total", "vapo_device_busy_fraction"):
    check(name in text, f"/metrics has {name}")

# ---- /generate ---------------------------------------------------------------------------------

status, h, one = call("POST", "/generate", {"seed": 42})
check(status == 200 and h["content-type"] == "image/png", f"generate png: {status} {h.get('content-type')}")
c, hh, ww, _ = png_decode(one)
check((c, hh, ww) == (1, 8, 8), f"generate png is 1x8x8, got {c}x{hh}x{ww}")
check(h.get("x-vapo-seed") == "42" and int(h.get("x-vapo-nfe", "0")) > 0, f"generate headers: {h}")

status, h, again = call("POST", "/generate", {"seed": 42})
check(again == one, "same seed, same settings, idle server: the same bytes")

status, h, other = call("POST", "/generate", {"seed": 43})
check(other != one, "another seed gives another image")

status, h, data = call("POST", "/generate", {})
seed = h.get("x-vapo-seed", "")
check(status == 200 and seed.isdigit() and int(seed) < 2**53, f"random seed drawn and echoed: {seed!r}")
status, h, data2 = call("POST", "/generate", {"seed": int(seed)})
check(data2 == data, "the echoed random seed reproduces the image")

status, h, grid = call("POST", "/generate", {"seed": 7, "n": 4})
c, gh, gw, _ = png_decode(grid)
check(status == 200 and (gh, gw) == (18, 18), f"n=4 default grid 2x2 with 2px padding is 18x18, got {gh}x{gw}")
status, h, grid = call("POST", "/generate", {"seed": 7, "n": 4, "format": "grid", "cols": 4})
c, gh, gw, _ = png_decode(grid)
check((gh, gw) == (8, 38), f"grid cols=4 is 8x38, got {gh}x{gw}")
check(len(h.get("x-vapo-nfe", "").split(",")) == 4, f"grid X-Vapo-NFE lists 4 samples: {h.get('x-vapo-nfe')}")

status, h, data = call("POST", "/generate", {"seed": 11, "n": 8, "format": "json"})
batch = json.loads(data)
check(status == 200 and len(batch["images"]) == 8 and batch["seed"] == 11 and batch["first"] == 0,
      f"generate json: {status} {data[:200]!r}")
imgs = [base64.b64decode(s) for s in batch["images"]]
check(all(png_decode(i)[:3] == (1, 8, 8) for i in imgs), "json images decode to 1x8x8 PNGs")
check(all(isinstance(n, int) and n > 5 for n in batch["nfe"]), f"nfe per sample: {batch['nfe']}")
check(len(batch["energy"]) == 8 and all(isinstance(e, float) for e in batch["energy"]), "energies")
check(batch["solver"] == {"solver": "rk45", "t_end": 1.5, "rtol": 0.001, "atol": 0.001, "steps": 100},
      f"solver settings echoed: {batch['solver']}")

# Sample k depends on (seed, k) only: alone (first = k) or inside a batch of 8,
# to the byte (batch invariance; server_invariance.py checks every position).
status, h, alone0 = call("POST", "/generate", {"seed": 11, "n": 1})
check(alone0 == imgs[0], f"sample 0 alone vs in a batch of 8: max pixel difference {max_pixel_diff(alone0, imgs[0])}")
status, h, alone3 = call("POST", "/generate", {"seed": 11, "n": 1, "first": 3})
check(alone3 == imgs[3], f"sample 3 alone (first=3) vs in a batch of 8: max pixel difference "
      f"{max_pixel_diff(alone3, imgs[3])}")
status, h, data = call("POST", "/generate", {"seed": 11, "n": 2, "first": 6, "format": "json"})
part = json.loads(data)
check(part["first"] == 6 and base64.b64decode(part["images"][1]) == imgs[7],
      "samples 6..7 as their own request match the batch")

for solver, steps, per_step in (("euler", 10, 1), ("heun", 10, 2), ("rk4", 5, 4)):
    status, h, data = call("POST", "/generate", {"seed": 3, "n": 2, "format": "json", "solver": solver,
                                                 "steps": steps})
    body = json.loads(data) if status == 200 else {}
    check(status == 200 and body.get("nfe") == [steps * per_step] * 2,
          f"{solver} with {steps} steps takes {steps * per_step} evaluations: {status} {body.get('nfe')}")
status, h, data = call("POST", "/generate", {"seed": 3, "format": "json", "rtol": 1e-5, "atol": 1e-5, "t_end": 1.0})
body = json.loads(data) if status == 200 else {}
check(status == 200 and body["nfe"][0] > batch["nfe"][0] // 2 and body["solver"]["t_end"] == 1.0,
      f"rtol/atol/t_end are used: {status} {body.get('nfe')} {body.get('solver')}")

# ---- /interpolate --------------------------------------------------------------------------------

status, h, strip = call("POST", "/interpolate", {"seed_a": 1, "seed_b": 2, "frames": 5})
c, sh, sw, _ = png_decode(strip)
check(status == 200 and (sh, sw) == (8, 5 * 8 + 4 * 2), f"interpolate strip is 8x48, got {sh}x{sw}")
status, h, data = call("POST", "/interpolate", {"seed_a": 1, "seed_b": 2, "frames": 5, "format": "json"})
body = json.loads(data)
check(status == 200 and len(body["frames"]) == 5 and body["s"] == [0.0, 0.25, 0.5, 0.75, 1.0],
      f"interpolate json: {status} {data[:200]!r}")
check(all(png_decode(base64.b64decode(f))[:3] == (1, 8, 8) for f in body["frames"]), "frames decode")
status, h, data = call("POST", "/interpolate", {"seed_a": 2, "seed_b": 1, "frames": 5, "format": "json"})
rev = json.loads(data)
check(max_pixel_diff(base64.b64decode(rev["frames"][0]), base64.b64decode(body["frames"][4])) <= 1,
      "swapping the seeds reverses the frames")

# ---- /energy -------------------------------------------------------------------------------------

status, h, data = call("POST", "/energy", one, {"Content-Type": "image/png"})
res = json.loads(data)["results"] if status == 200 else []
check(status == 200 and len(res) == 1 and 0 <= res[0]["ood_score"] <= 1 and
      isinstance(res[0]["in_distribution"], bool), f"energy of one PNG: {status} {data!r}")
status, h, data = call("POST", "/energy", {"images": [b64png(i) for i in imgs[:3]]})
res3 = json.loads(data)["results"] if status == 200 else []
check(status == 200 and len(res3) == 3, f"energy of 3 JSON images: {status} {data[:200]!r}")
def same_result(a, b):
    """Energies of one image in batches of different sizes agree to float
    round-off (GEMM blocking depends on the batch), not bit for bit."""
    return (abs(a["energy"] - b["energy"]) <= 1e-5 * max(1.0, abs(b["energy"]))
            and a["in_distribution"] == b["in_distribution"] and abs(a["ood_score"] - b["ood_score"]) < 1e-3)


status, h, data = call("POST", "/energy", {"images": ["data:image/png;base64," + b64png(imgs[0])]})
check(status == 200 and same_result(json.loads(data)["results"][0], res3[0]), "a data: URL prefix is accepted")
rgb = png_encode([bytes(v for x in range(8) for v in (x * 30, y * 30, 100)) for y in range(8)], 8, 8, 3)
status, h, data = call("POST", "/energy", rgb, {"Content-Type": "image/png"})
check(status == 200, f"an RGB 8x8 image is converted to gray: {status} {data[:200]!r}")
status, h, data = call("POST", "/energy", imgs[0], {"Content-Type": "image/png"})
check(status == 200 and same_result(json.loads(data)["results"][0], res3[0]), "the same image as PNG body or in JSON")

# the OOD scores: the default is the checkpoint's (mahalanobis), each selectable; energy's value is the
# energy, and a value does not depend on the batch
SCORES = ["energy", "complexity", "multiscale", "mahalanobis"]
check(info["ood"].get("default_score") == "mahalanobis" and info["ood"].get("scores") == SCORES,
      f"/v1/model ood: {info.get('ood')}")
check(json.loads(data)["score"] == "mahalanobis", f"the default score: {data[:200]!r}")
by_score = {}
for score in SCORES:
    status, h, data = call("POST", "/energy", {"images": [b64png(i) for i in imgs[:3]], "score": score})
    body = json.loads(data) if status == 200 else {}
    by_score[score] = body.get("results", [])
    check(status == 200 and body.get("score") == score and len(by_score[score]) == 3,
          f"score {score}: {status} {data[:200]!r}")
    status, h, data = call("POST", "/energy", {"images": [b64png(imgs[1])], "score": score})
    alone = json.loads(data)["results"][0] if status == 200 else {}
    check(by_score[score] and alone.get("value") == by_score[score][1]["value"],
          f"{score}: image 1 alone {alone.get('value')} vs in a batch of 3")
check(all(r["value"] == r["energy"] for r in by_score["energy"]), "energy score: value == energy")
for score in ("multiscale", "mahalanobis"):
    check([r["energy"] for r in by_score[score]] == [r["energy"] for r in by_score["energy"]],
          f"the energy reported with the {score} score is the image's")
check([r["value"] for r in by_score["mahalanobis"]] == [r["value"] for r in res3], "no score given = mahalanobis")

# ---- bad requests: status, error shape, never 500 ---------------------------------------------------

big = gray_png(16, 16)
bad = [
    ("GET", "/nope", None, None, 404),
    ("GET", "/generate", None, None, 405),
    ("POST", "/healthz", {}, None, 405),
    ("DELETE", "/energy", None, None, 405),
    ("POST", "/generate", '{"n": ', {"Content-Type": "application/json"}, 400),
    ("POST", "/generate", '{"n": 1, "n": 2}', {"Content-Type": "application/json"}, 400),
    ("POST", "/generate", '{"n": 1}', {"Content-Type": "text/plain"}, 415),
    ("POST", "/energy", b"\x89PNG", {"Content-Type": "application/octet-stream"}, 415),
    ("POST", "/energy", b"", {}, 415),
    ("POST", "/generate", {"n": 0}, None, 422),
    ("POST", "/generate", {"n": -1}, None, 422),
    ("POST", "/generate", {"n": 17, "format": "json"}, None, 422),
    ("POST", "/generate", {"n": "3"}, None, 422),
    ("POST", "/generate", {"n": 2.5}, None, 422),
    ("POST", "/generate", {"n": True}, None, 422),
    ("POST", "/generate", {"seed": -1}, None, 422),
    ("POST", "/generate", {"seed": 2**64}, None, 422),
    ("POST", "/generate", '{"rtol": NaN}', {"Content-Type": "application/json"}, 422),
    ("POST", "/generate", '{"atol": Infinity}', {"Content-Type": "application/json"}, 422),
    ("POST", "/generate", '{"t_end": -Infinity}', {"Content-Type": "application/json"}, 422),
    ("POST", "/generate", {"rtol": "nan"}, None, 422),
    ("POST", "/generate", {"rtol": -1e-3}, None, 422),
    ("POST", "/generate", {"atol": 0}, None, 422),
    ("POST", "/generate", {"rtol": 1e-12}, None, 422),
    ("POST", "/generate", {"t_end": 0}, None, 422),
    ("POST", "/generate", {"t_end": 1e6}, None, 422),
    ("POST", "/generate", {"solver": "dopri853"}, None, 422),
    ("POST", "/generate", {"solver": 4}, None, 422),
    ("POST", "/generate", {"solver": "euler", "steps": 0}, None, 422),
    ("POST", "/generate", {"solver": "euler", "steps": 501}, None, 422),
    ("POST", "/generate", {"solver": "rk4", "steps": 300}, None, 422),  # 1200 evaluations > --max-nfe 1000
    ("POST", "/generate", {"format": "gif"}, None, 422),
    ("POST", "/generate", {"n": 2, "format": "png"}, None, 422),
    ("POST", "/generate", {"n": 2, "cols": 0}, None, 422),
    ("POST", "/generate", {"n": 2, "cols": 3}, None, 422),
    ("POST", "/generate", {"first": -2}, None, 422),
    ("POST", "/generate", {"stpes": 10}, None, 422),
    ("POST", "/generate", [1, 2], None, 422),
    ("POST", "/generate", "3", {"Content-Type": "application/json"}, 422),
    ("POST", "/interpolate", {"seed_a": 1}, None, 422),
    ("POST", "/interpolate", {"seed_a": 1, "seed_b": 2, "frames": 1}, None, 422),
    ("POST", "/interpolate", {"seed_a": 1, "seed_b": 2, "frames": 17}, None, 422),
    ("POST", "/interpolate", {"seed_a": 1, "seed_b": 2, "format": "grid"}, None, 422),
    ("POST", "/energy", {}, None, 422),
    ("POST", "/energy", {"images": []}, None, 422),
    ("POST", "/energy", {"images": "abc"}, None, 422),
    ("POST", "/energy", {"images": [5]}, None, 422),
    ("POST", "/energy", {"images": ["!!!notbase64"]}, None, 422),
    ("POST", "/energy", {"images": [base64.b64encode(b"hello, not a png").decode()]}, None, 422),
    ("POST", "/energy", {"images": [b64png(big)]}, None, 422),
    ("POST", "/energy", {"images": [b64png(one[:60])]}, None, 422),
    ("POST", "/energy", {"images": [b64png(one)] * 17}, None, 422),
    ("POST", "/energy", b"garbage", {"Content-Type": "image/png"}, 422),
    ("POST", "/energy", big, {"Content-Type": "image/png"}, 422),
    ("POST", "/generate", "x" * 70000, {"Content-Type": "application/json"}, 413),
]
for method, path, body, headers, want in bad:
    status, h, data = call(method, path, body, headers)
    err = error_of(data)
    desc = f"{method} {path} {str(body)[:60]!r}"
    check(status == want, f"{desc}: status {status}, expected {want}: {data[:200]!r}")
    check(isinstance(err.get("message"), str) and err.get("code") == status and isinstance(err.get("type"), str),
          f"{desc}: error shape {data[:200]!r}")
    if want == 405:
        check("allow" in h, f"{desc}: 405 has Allow ({h})")
status, h, data = call("POST", "/energy", {"images": [b64png(big)]})
check("8x8" in error_of(data).get("message", ""), f"wrong size says what the model expects: {data!r}")
status, h, data = call("POST", "/energy", {"images": [b64png(one)], "score": "likelihood"})
check("energy, complexity, multiscale or mahalanobis" in error_of(data).get("message", ""),
      f"bad score names the choices: {data!r}")

# a declared body far over the limit with Expect: 100-continue is refused before it is sent
reply = raw_request(srv.port, b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n")
check(reply.startswith(b"HTTP/1.1 413"), f"Expect: 100-continue with a huge body gets 413 at once: {reply[:80]!r}")
# garbage on the wire does not hurt the server
raw_request(srv.port, b"\x00\x01\x02 NOT HTTP\r\n\r\n", timeout=0.3)
raw_request(srv.port, b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n{", timeout=0.3)
status, _, _ = srv.request("GET", "/healthz")
check(status == 200, "still healthy after garbage requests")

statuses = {}
for name, value in srv.metrics().items():
    if name.startswith("vapo_http_requests_total{"):
        statuses[name] = value
check(not any('status="500"' in k for k in statuses), f"no 500 in the metrics: {statuses}")
check(any('route="/generate",status="422"' in k for k in statuses), "422s are counted by route")

lines = srv.log_lines()
reqs = [ln for ln in lines if ln.get("msg") == "request"]
check(reqs and all({"method", "route", "status", "images", "latency_ms"} <= set(ln) for ln in reqs),
      "one structured log line per request")
check(any("queue_ms" in ln for ln in reqs), "queued requests log their queue wait")
stop_cleanly(srv)

# ---- authentication and CORS ----------------------------------------------------------------------

auth = Server(args.serve, model, "--cors", "https://example.org", env={"VAPO_API_KEY": "s3cret"})
for path in ("/healthz", "/readyz"):
    status, _, _ = auth.request("GET", path)
    check(status == 200, f"{path} needs no key: {status}")
for path in ("/v1/model", "/metrics", "/openapi.yaml", "/"):
    status, h, data = auth.request("GET", path)
    check(status == 401 and h.get("www-authenticate") == "Bearer" and error_of(data).get("code") == 401,
          f"{path} without a key: {status} {h}")
    status, _, _ = auth.request("GET", path, headers={"Authorization": "Bearer s3cre"})
    check(status == 401, f"{path} with a wrong key: {status}")
    status, _, _ = auth.request("GET", path, headers={"Authorization": "Bearer s3cret"})
    check(status == 200, f"{path} with the key: {status}")
status, h, _ = auth.request("POST", "/generate", {"seed": 1}, headers={"Authorization": "Bearer s3cret"})
check(status == 200 and h.get("access-control-allow-origin") == "https://example.org",
      f"CORS header on replies: {status} {h}")
status, h, _ = auth.request("OPTIONS", "/generate", headers={"Origin": "https://example.org",
                                                             "Access-Control-Request-Method": "POST"})
check(status == 204 and "POST" in h.get("access-control-allow-methods", "") and
      "Authorization" in h.get("access-control-allow-headers", ""), f"CORS preflight: {status} {h}")
check("s3cret" not in auth.text(), "the key never appears in the log")
stop_cleanly(auth, "server with an API key")

plain = Server(args.serve, model)
status, h, _ = plain.request("GET", "/v1/model")
check(status == 200 and "access-control-allow-origin" not in h, f"no key by default, CORS off by default: {h}")
stop_cleanly(plain, "plain server")

finish("server_api")
