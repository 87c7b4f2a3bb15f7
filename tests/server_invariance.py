"""Batch invariance through the API: image k of seed s is the same PNG bytes
alone, in a request of 64 at every position, while other requests (other
seeds, other solvers, /energy) share the batch, and from vapo-sample; an
/energy score does not depend on what else was in the batch. Two threads, so
thread partitions are exercised too. No tolerance: bytes and floats compare
equal (docs/DESIGN.md, "Batch invariance")."""

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading

from server_common import Server, b64png, check, finish, parse_args, stop_cleanly, tiny_model

sample_exe = None
if "--sample" in sys.argv:  # the tool to compare with; not a server flag
    i = sys.argv.index("--sample")
    sample_exe = sys.argv[i + 1]
    del sys.argv[i:i + 2]
args = parse_args()
model = tiny_model(args.make_model)
srv = Server(args.serve, model, "--threads", "2", "--max-batch", "64", "--max-images", "64")


def generate(body):
    status, _, data = srv.post_json("/generate", dict(body, format="json"))
    got = json.loads(data) if status == 200 else {}
    return status, [base64.b64decode(s) for s in got.get("images", [])], got.get("energy", [])


# ---- every position of a request of 64 vs alone ----------------------------------------------

SEED = 11
status, batch, batch_energy = generate({"seed": SEED, "n": 64})
check(status == 200 and len(batch) == 64, f"n=64: {status}")
alone = {}
for k in range(64):
    status, imgs, energy = generate({"seed": SEED, "n": 1, "first": k})
    alone[k] = imgs[0] if imgs else b""
    check(status == 200 and alone[k] == batch[k], f"sample {k} alone vs at position {k} of 64: PNG bytes differ")
    check(energy == batch_energy[k:k + 1], f"sample {k}: energy alone {energy} vs in the batch {batch_energy[k]}")
status, part, _ = generate({"seed": SEED, "n": 8, "first": 28})
check(part == batch[28:36], "samples 28..35 as their own request differ from the batch")

# ---- concurrent requests of other seeds and solvers in the same batches ---------------------

results, errors = {}, []
others = [{"seed": 500 + i, "n": 4, "solver": s, "steps": 12} for i, s in enumerate(("euler", "heun", "rk4"))]
others += [{"seed": 600, "n": 6, "rtol": 1e-4, "atol": 1e-4}, {"seed": 601, "n": 3, "t_end": 1.0}]
jobs = [("mine", k, {"seed": SEED, "n": 1, "first": k}) for k in range(0, 64, 3)]
jobs += [("other", i, o) for i, o in enumerate(others)]
barrier = threading.Barrier(len(jobs) + 1)


def client(kind, key, body):
    try:
        barrier.wait()
        results[(kind, key)] = generate(body)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


def energy_client():
    try:
        barrier.wait()
        status, _, data = srv.post_json("/energy", {"images": [b64png(p) for p in batch[:5]]})
        results[("energy", 0)] = (status, json.loads(data) if status == 200 else {})
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


threads = [threading.Thread(target=client, args=j) for j in jobs] + [threading.Thread(target=energy_client)]
before = srv.metrics()
for t in threads:
    t.start()
for t in threads:
    t.join()
after = srv.metrics()
check(not errors, f"client errors: {errors}")
for kind, key, body in jobs:
    status, imgs, _ = results.get((kind, key), (None, [], []))
    check(status == 200, f"concurrent {kind} {body}: {status}")
    if kind == "mine":
        check(imgs == [batch[key]], f"sample {key} with other seeds and solvers in the batch: PNG bytes differ")
calls = after["vapo_batch_size_count"] - before["vapo_batch_size_count"]
rows = after["vapo_batch_size_sum"] - before["vapo_batch_size_sum"]
check(rows / max(calls, 1) > 4, f"the concurrent requests shared batches ({rows / max(calls, 1):.1f} rows per call)")

# ---- /energy: a score does not depend on the rest of the batch --------------------------------

status, _, data = srv.post_json("/energy", {"images": [b64png(p) for p in batch]})
together = [r["energy"] for r in json.loads(data)["results"]] if status == 200 else []
solo = []
for p in batch[:8]:
    status, _, data = srv.post_json("/energy", {"images": [b64png(p)]})
    solo += [r["energy"] for r in json.loads(data)["results"]] if status == 200 else [None]
check(len(together) == 64 and together[:8] == solo, f"energies of 64 together vs alone: {together[:8]} {solo}")
status, conc = results.get(("energy", 0), (None, {}))
check([r["energy"] for r in conc.get("results", [])] == together[:5],
      "energies scored while generate requests shared the batch differ")

# ---- vapo-sample makes the same PNG files ------------------------------------------------------

if sample_exe:
    with tempfile.TemporaryDirectory() as d:
        for b, threads in ((64, "2"), (5, "1")):
            out = os.path.join(d, f"b{b}")
            subprocess.run([sample_exe, model, "-n", "64", "--seed", str(SEED), "--out-dir", out, "--batch", str(b),
                            "--device", "cpu", "--threads", threads, "--quiet"], check=True)
            for k in range(64):
                with open(os.path.join(out, f"seed{SEED}_{k:06d}.png"), "rb") as f:
                    check(f.read() == batch[k], f"vapo-sample --batch {b} --threads {threads}: sample {k} differs "
                          "from vapo-serve's")
print(f"batch invariance: 64 positions, {len(jobs)} concurrent requests ({rows / max(calls, 1):.1f} rows per "
      f"call), energies and vapo-sample compared bit for bit")
stop_cleanly(srv)
finish("server_invariance")
