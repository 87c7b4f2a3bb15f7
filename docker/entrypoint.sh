#!/bin/sh
# Container entrypoint: starts vapo-serve on all interfaces, or runs another
# command (vapo-sample, vapo-score, a shell ...) when one is given.
#
#   (no arguments)           vapo-serve --host 0.0.0.0 --port $PORT --device $VAPO_DEVICE
#                              --grace-s $VAPO_GRACE_S $VAPO_MODEL
#   --flag ...               the same, with these extra vapo-serve flags
#   COMMAND [ARGS...]        exec COMMAND (e.g. vapo-sample MODEL -n 16 --out /work/s.png)
#
# Environment: PORT (8080), VAPO_DEVICE (auto: CUDA when usable, else CPU;
# cuda; cpu), VAPO_MODEL (/opt/vapo/models/fmnist-small.safetensors),
# VAPO_GRACE_S (5); VAPO_API_KEY, VAPO_METRICS_KEY, VAPO_METRICS_OPEN and
# VAPO_INSECURE_NO_AUTH are read by vapo-serve itself (vapo-serve --help).
# exec keeps vapo-serve as PID 1, so `docker stop` / Kubernetes' SIGTERM reaches it and it drains in-flight work.
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

PORT="${PORT:-8080}"
VAPO_DEVICE="${VAPO_DEVICE:-auto}"
VAPO_MODEL="${VAPO_MODEL:-/opt/vapo/models/fmnist-small.safetensors}"
# The drain budget on SIGTERM: in-flight work gets this long, then is cancelled
# and answered; vapo-serve then exits within ~2 s more (last replies out). 5 s
# fits `docker stop`'s default 10 s with margin; raise both together
# (docker stop -t, compose stop_grace_period, k8s terminationGracePeriodSeconds).
VAPO_GRACE_S="${VAPO_GRACE_S:-5}"

fail() {
    echo "vapo entrypoint: error: $*" >&2
    exit 2
}

case "$PORT" in
    '' | *[!0-9]*) fail "PORT must be a TCP port number, got '$PORT'" ;;
esac
if [ ${#PORT} -gt 5 ] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
    fail "PORT must be in 1..65535, got $PORT"
fi
case "$VAPO_DEVICE" in
    auto | cpu | cuda) ;;
    *) fail "VAPO_DEVICE must be auto, cpu or cuda, got '$VAPO_DEVICE'" ;;
esac
if [ ! -r "$VAPO_MODEL" ]; then
    fail "model '$VAPO_MODEL' does not exist or is not readable; set VAPO_MODEL or mount a model, e.g. docker run -v \$PWD/models:/models -e VAPO_MODEL=/models/my.safetensors ..."
fi

exec vapo-serve --host 0.0.0.0 --port "$PORT" --device "$VAPO_DEVICE" --grace-s "$VAPO_GRACE_S" \
    "$@" "$VAPO_MODEL"
