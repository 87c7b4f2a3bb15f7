#!/bin/bash
# The container's entrypoint and healthcheck (docker/), run here without Docker
# against the real vapo-serve: they start the server the way the image does,
# /healthz answers, bad settings fail with a message, other commands run, and
# SIGTERM stops the server (exec'd, so it is PID 1 in a container).
#   test_tools_docker.sh BUILD_DIR MODEL
set -u
build=$1
model=$2
here=$(cd "$(dirname "$0")/.." && pwd)
entry=$here/docker/entrypoint.sh
health=$here/docker/healthcheck.sh
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

export PATH="$build:$PATH"
log=$(mktemp)
trap 'rm -f "$log"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null' EXIT

# expect RC WANT_RC OUTPUT PATTERN WHAT
expect() {
    if [ "$1" -ne "$2" ] || [[ $3 != *"$4"* ]]; then
        fail "$5: exit $1 (want $2), output '$3' (want '$4')"
    fi
}

# bad settings: exit 2 with a message, before anything starts
out=$(PORT=http VAPO_MODEL="$model" "$entry" 2>&1)
expect $? 2 "$out" "PORT must be" "PORT=http"
out=$(PORT=70000 VAPO_MODEL="$model" "$entry" 2>&1)
expect $? 2 "$out" "1..65535" "PORT=70000"
out=$(VAPO_DEVICE=tpu VAPO_MODEL="$model" "$entry" 2>&1)
expect $? 2 "$out" "VAPO_DEVICE" "VAPO_DEVICE=tpu"
out=$(VAPO_MODEL=/nonexistent/m.safetensors "$entry" 2>&1)
expect $? 2 "$out" "/nonexistent/m.safetensors" "missing model"

# a command instead of the server
out=$("$entry" vapo-sample --help 2>&1)
expect $? 0 "$out" "usage: vapo-sample" "entrypoint vapo-sample --help"

if [ ! -x "$build/vapo-serve" ]; then
    echo "test_tools_docker: vapo-serve not built, server part skipped"
    [ $fails -eq 0 ] && exit 0 || exit 1
fi

# VAPO_GRACE_S reaches vapo-serve as --grace-s (which checks it)
out=$(VAPO_GRACE_S=soon VAPO_MODEL="$model" PORT=1 timeout 10 "$entry" 2>&1)
expect $? 2 "$out" "--grace-s" "VAPO_GRACE_S=soon"

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PORT=$port VAPO_DEVICE=cpu VAPO_MODEL="$model" "$entry" --threads 1 >"$log" 2>&1 &
pid=$!
ok=0
for _ in $(seq 1 100); do
    if PORT=$port "$health" 2>/dev/null; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
[ $ok -eq 1 ] || fail "healthcheck never passed; server log:
$(cat "$log")"
comm=$(ps -o comm= -p "$pid" 2>/dev/null)
[ "$comm" = "vapo-serve" ] || fail "the entrypoint did not exec vapo-serve (pid $pid is '$comm')"
PORT=$((port == 65535 ? 1 : port + 1)) "$health" 2>/dev/null && fail "healthcheck passed on a port nobody listens on"
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
    fail "vapo-serve still running 10 s after SIGTERM"
    kill -KILL "$pid"
fi
wait "$pid"; rc=$?
pid=
[ $rc -eq 0 ] || fail "vapo-serve exited with $rc after SIGTERM; log:
$(cat "$log")"

if [ $fails -ne 0 ]; then
    echo "test_tools_docker: $fails check(s) failed"
    exit 1
fi
echo "test_tools_docker: all checks passed"
