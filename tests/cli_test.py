#!/usr/bin/python3
"""The command line of every vapo program, table-driven: each program parses
its options with the same table module (common/opt.h), so each must answer
the same mistakes the same way: exit 2 with "<prog>: error: ...", the usage
line and "Try '<prog> --help'." for a usage error; exit 1 naming the device
when --device cuda:7 cannot be opened (no GPU, or fewer than 8); exit 0 and
a help text listing cuda:N and --config for --help.

    cli_test.py --model TINY.safetensors --work DIR PROGRAM=PATH...

PROGRAM is train, sample, interpolate, score or serve; the programs not
given are not tested (vapo-serve is not built without libmicrohttpd).
"""
import argparse
import json
import os
import subprocess
import sys

import pngio

FAILURES = []


def check(cond, msg):
    if not cond:
        FAILURES.append(msg)
        print("FAIL:", msg, file=sys.stderr)
    return cond


def programs(model, work):
    """name -> (the arguments a run needs besides options, an integer option,
    a double option, a flag or None). Every run gets --threads 1."""
    img = os.path.join(work, "ok.png")
    with open(img, "wb") as f:
        f.write(pngio.encode([bytes(range(8 * y, 8 * y + 8)) for y in range(8)], 8, 8, 1))
    return {
        "train": (["--preset", "tiny", "--steps", "1", "--out", os.path.join(work, "train")],
                  "--batch", "--lr", None),
        "sample": ([model, "-n", "1", "--out", os.path.join(work, "s.png")], "--num", "--t-end", "--quiet"),
        "interpolate": ([model, "--seed-a", "1", "--seed-b", "2", "--frames", "2",
                         "--out", os.path.join(work, "i.png")], "--frames", "--rtol", "--quiet"),
        "score": ([model, img], "--batch", None, "--summary"),
        "serve": (["--port", "0", model], "--max-batch", "--timeout-s", "--quiet"),
    }


def run(exe, args, timeout=120):
    p = subprocess.run([exe] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, VAPO_PROGRESS="off"))
    check(0 <= p.returncode < 128 and "Sanitizer" not in p.stderr and "runtime error:" not in p.stderr,
          f"{os.path.basename(exe)} {args}: crashed or sanitizer report ({p.returncode})\n{p.stderr}")
    return p


def usage_error(name, exe, args, *needles):
    """exit 2; the message, the usage line and the hint, in this order."""
    prog = os.path.basename(exe)
    p = run(exe, args)
    what = f"{name} {' '.join(map(str, args))}"
    if not check(p.returncode == 2, f"{what}: exit {p.returncode}, want 2\n{p.stderr}"):
        return
    lines = p.stderr.splitlines()
    errs = [i for i, line in enumerate(lines) if line.startswith(f"{prog}: error: ")]
    use = [i for i, line in enumerate(lines) if line.startswith(f"usage: {prog} ")]
    check(errs and use and errs[0] < use[0] and lines[-1] == f"Try '{prog} --help'.",
          f"{what}: want '{prog}: error: ...', 'usage: {prog} ...', 'Try ...':\n{p.stderr}")
    for n in needles:
        check(n in p.stderr, f"{what}: stderr lacks {n!r}:\n{p.stderr}")


def config(work, name, obj):
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_program(name, exe, base, int_opt, dbl_opt, flag, work):
    args = base + ["--threads", "1"]
    key = int_opt.lstrip("-")

    h = run(exe, ["--help"])
    check(h.returncode == 0 and h.stdout.startswith(f"usage: {os.path.basename(exe)} "),
          f"{name} --help: exit {h.returncode}, starts {h.stdout[:40]!r}")
    for want in ("cuda:N", "--config", "--device", "--threads", int_opt, "(default auto)"):
        check(want in h.stdout, f"{name} --help does not list {want!r}")

    # the same mistakes, the same answers
    usage_error(name, exe, args + ["--bogus"], "unknown option '--bogus'")
    usage_error(name, exe, args + ["--bogus=1"], "unknown option '--bogus'")
    usage_error(name, exe, args + [int_opt], f"option '{int_opt}' needs a value")
    usage_error(name, exe, args + [int_opt, "x"], f"{int_opt}: 'x' is not an integer")
    usage_error(name, exe, args + [int_opt, ""], f"{int_opt}: expected an integer, got an empty value")
    usage_error(name, exe, args + [int_opt, "99999999999"], f"{int_opt}: 99999999999 is out of range")
    usage_error(name, exe, args + [f"{int_opt}=-1"], f"{int_opt}: -1 is out of range")
    usage_error(name, exe, args + ["--threads", "-3"], "--threads: -3 is out of range (0..4096)")
    usage_error(name, exe, args + ["--device", "tpu"], "--device: unknown device 'tpu'", "cuda:N")
    usage_error(name, exe, args + ["--device", "cuda:x"], "unknown device 'cuda:x'")
    if dbl_opt:
        usage_error(name, exe, args + [dbl_opt, "nan"], f"{dbl_opt}: 'nan' is not a finite number")
        usage_error(name, exe, args + [dbl_opt, "inf"], f"{dbl_opt}: 'inf' is not a finite number")
        usage_error(name, exe, args + [dbl_opt, "1e999"], f"{dbl_opt}: '1e999' is not a finite number")
        usage_error(name, exe, args + [dbl_opt, "-5"], f"{dbl_opt}: -5 is out of range")
    if flag:
        usage_error(name, exe, args + [f"{flag}=1"], f"option '{flag}' takes no value")

    # --config: the same table, typed JSON values
    usage_error(name, exe, args + ["--config", config(work, f"{name}-str", {key: "4"})],
                f"--{key}: expected an integer, got a string")
    usage_error(name, exe, args + ["--config", config(work, f"{name}-real", {key: 2.5})],
                f"--{key}: expected an integer, got a number")
    usage_error(name, exe, args + ["--config", config(work, f"{name}-range", {key: -1})],
                f"--{key}: -1 is out of range")
    usage_error(name, exe, args + ["--config", config(work, f"{name}-dev", {"device": 7})],
                "--device: expected a string, got an integer")
    usage_error(name, exe, args + ["--config", config(work, f"{name}-unknown", {"bogus": 1})],
                "unknown option 'bogus'")
    usage_error(name, exe, args + ["--config", config(work, f"{name}-array", [1, 2])], "expected a JSON object")
    usage_error(name, exe, args + ["--config", config(work, f"{name}-broken", '{"threads": ')], "--config")
    usage_error(name, exe, args + ["--config", os.path.join(work, "missing.json")], "missing.json")
    usage_error(name, exe, args + ["--config"], "option '--config' needs a value")
    if flag:
        usage_error(name, exe, args + ["--config", config(work, f"{name}-flag", {flag.lstrip("-"): 1})],
                    f"{flag}: expected true or false, got an integer")
    if dbl_opt:
        usage_error(name, exe, args + ["--config", config(work, f"{name}-nan", {dbl_opt.lstrip("-"): "nan"})],
                    f"{dbl_opt}: expected a number, got a string")

    # a device that is not there: a clear error naming it (exit 1: the command line was fine)
    p = run(exe, args + ["--device", "cuda:7"])
    check(p.returncode == 1 and "cannot open device 'cuda:7'" in p.stderr,
          f"{name} --device cuda:7: exit {p.returncode}, want 1 naming the device:\n{p.stderr}")


def test_config_applies(exe, model, work):
    """vapo-sample: --config sets options, the command line wins over it."""
    out = os.path.join(work, "cfg.png")
    cfg = config(work, "sample-ok", {"num": 3, "out": out, "device": "cpu", "threads": 1, "quiet": True,
                                     "solver": "heun", "steps": 2})
    p = run(exe, [model, "--config", cfg])
    check(p.returncode == 0 and p.stdout.startswith("3 samples -> ") and "average NFE 4.0" in p.stdout and
          os.path.exists(out) and p.stderr == "", f"--config applied: {p.returncode}\n{p.stdout}{p.stderr}")
    p = run(exe, [model, "--config", cfg, "-n", "2", "--steps=3"])
    check(p.returncode == 0 and p.stdout.startswith("2 samples -> ") and "average NFE 6.0" in p.stdout,
          f"the command line wins over --config: {p.returncode}\n{p.stdout}{p.stderr}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("programs", nargs="+", help="NAME=PATH")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    table = programs(a.model, a.work)
    given = dict(p.split("=", 1) for p in a.programs)
    for name, exe in given.items():
        test_program(name, exe, *table[name], a.work)
    if "sample" in given:
        test_config_applies(given["sample"], a.model, a.work)
    if FAILURES:
        print(f"cli_test: {len(FAILURES)} check(s) failed", file=sys.stderr)
        return 1
    print(f"cli_test: all checks passed ({', '.join(given)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
