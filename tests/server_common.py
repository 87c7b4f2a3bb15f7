"""Helpers for the vapo-serve integration tests: start a server on a free
loopback port with the tiny test model, talk HTTP to it, read and write PNGs
(tests/pngio.py, no PIL), and check responses against openapi/openapi.yaml.

Every server started here is killed when the test exits, pass or fail."""

import argparse
import atexit
import base64
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml

from pngio import decode as png_decode, encode as png_encode  # noqa: F401  (re-exported to the tests)

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def finish(name):
    if FAILURES:
        print(f"{name}: {len(FAILURES)} check(s) failed", flush=True)
        sys.exit(1)
    print(f"{name}: all checks passed", flush=True)
    sys.exit(0)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--serve", required=True)
    p.add_argument("--make-model", required=True)
    p.add_argument("--openapi", required=True)
    p.add_argument("--artefacts", default=None)
    return p.parse_args()


# ---- the server ---------------------------------------------------------------------------

_servers = []
_tmp = tempfile.TemporaryDirectory(prefix="vapo-serve-test-")


def _kill_all():
    for s in _servers:
        s.kill()


atexit.register(_kill_all)
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda *_: sys.exit(1))


def _die_with_parent():
    """In the child: get SIGKILL when the test process dies, however it dies."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def wait_for(pred, timeout, step=0.01):
    """Polls pred until it holds or timeout seconds pass; returns its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def tiny_model(make_model, seed=1):
    path = os.path.join(_tmp.name, f"tiny-{seed}.safetensors")
    if not os.path.exists(path):
        subprocess.run([make_model, path, "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
    return path


class Server:
    """vapo-serve on 127.0.0.1 with --port 0; the port is read from its log.
    model None: the server finds it itself (pass VAPO_MODEL in env)."""

    def __init__(self, serve, model, *flags, env=None, wait_ready=True):
        self.log_path = os.path.join(_tmp.name, f"serve-{len(_servers)}.log")
        self.log = open(self.log_path, "w")
        cmd = [serve, "--port", "0", "--device", "cpu", "--threads", "1", *flags] + ([model] if model else [])
        full_env = dict(os.environ)
        full_env.pop("VAPO_API_KEY", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=full_env,
                                     preexec_fn=_die_with_parent)
        _servers.append(self)
        self.port = None
        deadline = time.time() + 20
        while time.time() < deadline and self.port is None:
            m = re.search(r'"port":(\d+)', self.text())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                raise RuntimeError(f"vapo-serve exited with {self.proc.returncode}:\n{self.text()}")
            else:
                time.sleep(0.02)
        if self.port is None:
            raise RuntimeError("vapo-serve did not say where it listens:\n" + self.text())
        if wait_ready:
            self.wait_ready()

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def log_lines(self):
        return [json.loads(line) for line in self.text().splitlines() if line.startswith("{")]

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("vapo-serve did not become ready:\n" + self.text())

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers dict with lower-case names, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            h = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                h.setdefault("Content-Type", "application/json")
            elif isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def post_json(self, path, obj, headers=None, timeout=60):
        return self.request("POST", path, obj, headers, timeout)

    def metrics(self):
        status, _, body = self.request("GET", "/metrics")
        assert status == 200, status
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signals the server and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self.log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stop_cleanly(server, what="server"):
    rc = server.stop()
    check(rc == 0, f"{what} exits 0 after SIGTERM (got {rc}); log tail:\n" + server.text()[-3000:])
    return rc


# ---- PNG ------------------------------------------------------------------------------------

def gray_png(w, h, value=lambda x, y: (x * 29 + y * 13) % 256):
    return png_encode([bytes(value(x, y) for x in range(w)) for y in range(h)], w, h, 1)


def pixels(png):
    _, _, _, rows = png_decode(png)
    return b"".join(rows)


def max_pixel_diff(a, b):
    pa, pb = pixels(a), pixels(b)
    if len(pa) != len(pb):
        return 999
    return max(abs(x - y) for x, y in zip(pa, pb)) if pa else 0


# ---- OpenAPI ------------------------------------------------------------------------------

class OpenAPI:
    def __init__(self, path):
        with open(path) as f:
            self.doc = yaml.safe_load(f)

    def resolve(self, schema):
        while isinstance(schema, dict) and "$ref" in schema:
            node = self.doc
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def validate(self, schema, value, where="body"):
        """A list of problems of value against the schema (the subset the
        contract uses: type, nullable, required, properties, items, enum, minimum, maximum)."""
        schema = self.resolve(schema)
        problems = []
        if value is None and schema.get("nullable"):
            return problems
        t = schema.get("type")
        types = {"object": dict, "array": list, "string": str, "boolean": bool}
        if t in types and not isinstance(value, types[t]):
            return [f"{where}: expected {t}, got {type(value).__name__}"]
        if t == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
            return [f"{where}: expected integer, got {value!r}"]
        if t == "number" and (not isinstance(value, (int, float)) or isinstance(value, bool) or
                              not math.isfinite(value)):
            return [f"{where}: expected a finite number, got {value!r}"]
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{where}: {value!r} not in {schema['enum']}")
        if t in ("integer", "number"):
            if "minimum" in schema and value < schema["minimum"]:
                problems.append(f"{where}: {value} < minimum {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                problems.append(f"{where}: {value} > maximum {schema['maximum']}")
        if t == "object":
            for key in schema.get("required", []):
                if key not in value:
                    problems.append(f"{where}: missing required field '{key}'")
            for key, sub in schema.get("properties", {}).items():
                if key in value:
                    problems += self.validate(sub, value[key], f"{where}.{key}")
        if t == "array" and "items" in schema:
            for i, item in enumerate(value):
                problems += self.validate(schema["items"], item, f"{where}[{i}]")
        return problems

    def check_response(self, method, path, status, headers, body):
        """Problems of a response against the document; errors not listed for
        the route must still have the Error shape."""
        op = self.doc["paths"].get(path, {}).get(method.lower())
        responses = op.get("responses", {}) if op else {}
        spec = self.resolve(responses.get(str(status))) if str(status) in responses else None
        ctype = headers.get("content-type", "").split(";")[0].strip()
        if spec is None:
            if status >= 400:
                if ctype != "application/json":
                    return [f"{method} {path} {status}: error with content type {ctype!r}"]
                return self.validate({"$ref": "#/components/schemas/Error"}, json.loads(body), "error")
            return [f"{method} {path}: status {status} is not documented"]
        content = spec.get("content", {})
        if not content:
            return []
        if ctype not in content:
            return [f"{method} {path} {status}: content type {ctype!r} not in {list(content)}"]
        if ctype == "application/json":
            try:
                value = json.loads(body)
            except ValueError as e:
                return [f"{method} {path} {status}: body is not JSON ({e})"]
            problems = self.validate(content[ctype]["schema"], value, f"{method} {path} {status}")
            if status >= 400:
                err = value.get("error", {})
                if err.get("code") != status:
                    problems.append(f"{method} {path}: error code {err.get('code')} != status {status}")
            return problems
        if ctype == "image/png":
            try:
                png_decode(body)
            except Exception as e:  # noqa: BLE001 - any decode problem is a failure
                return [f"{method} {path} {status}: PNG does not decode ({e})"]
        return []


def raw_request(port, data, read=True, timeout=10):
    """Sends raw bytes; returns the raw reply (b'' if the server closed at once)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return s
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        if read:
            s.close()


def b64png(data):
    return base64.b64encode(data).decode()
