#!/usr/bin/env bash
# Builds the CPU image from the repository's Dockerfile and runs it the way a
# user does (`docker run`), with rootful podman from Debian, over loopback:
# /healthz, /readyz, a /generate PNG, an /energy score, the HEALTHCHECK, the API
# key (generated when none is given; VAPO_API_KEY), the non-root user, a
# read-only root filesystem, `stop` with a request in flight, and vapo-sample
# writing into a mounted folder. Prints the image size and each step's time.
#
#   bash scripts/container-test.sh      (as root, or with sudo)
#   container-test.sh --ctest           the same when VAPO_CONTAINER_TEST=1, else
#                                       skipped (exit 77): ctest's `container` test
#
# No registry is needed: the Debian 12 base image is made from Debian's mirror
# with mmdebstrap (slimmed the way Debian's official images are) and kept in
# podman's store as vapo-debian:bookworm; `podman rmi vapo-debian:bookworm`
# makes it again. Environment: VAPO_DEBIAN_MIRROR (http://deb.debian.org).
#
# Exit status: 0 all checks passed; 1 a check failed, or the image did not build
# or serve; 77 containers cannot run here at all (no podman and no way to
# install it, or the plain Debian base does not start): said on stderr, and
# ctest reports the test as skipped, not passed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --ctest ] && [ "${VAPO_CONTAINER_TEST:-0}" != 1 ]; then
    echo "container-test: SKIPPED: builds and runs the image (minutes, as root); scripts/test.sh" \
        "and CI run it (VAPO_CONTAINER_TEST=1), or run bash scripts/container-test.sh" >&2
    exit 77
fi

# A name of its own per run (runs from two checkouts at once must not swap
# images); untagged at the end, its layers stay as the build cache
# (`podman image prune` frees them).
image=localhost/vapo:cpu-test-$$
base=localhost/vapo-debian:bookworm
mirror=${VAPO_DEBIAN_MIRROR:-http://deb.debian.org}
state=$(mktemp -d /tmp/vapo-container-test.XXXXXX)
containers=()
fails=0
t_start=$(date +%s.%N)
timings=()

cleanup() {
    for c in "${containers[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
    [ -n "${CONTAINERS_CONF:-}" ] && { podman untag "$image" >/dev/null 2>&1 || true; }
    rm -rf "$state"
}
trap cleanup EXIT

say() { echo "container-test: $*"; }
fail() { echo "container-test: FAIL: $*" >&2; fails=$((fails + 1)); }
# Environment problems: containers cannot run here; not a verdict on the image.
cannot_run() {
    echo "container-test: SKIPPED: containers cannot run on this machine: $*" >&2
    exit 77
}
# The image does not build or serve: stop here.
fatal() {
    echo "container-test: FAIL: $*" >&2
    exit 1
}

# step NAME COMMAND...: runs COMMAND, records its time.
step() {
    local name=$1 t0 t1 rc=0
    shift
    t0=$(date +%s.%N)
    say "== $name"
    "$@" || rc=$?
    t1=$(date +%s.%N)
    timings+=("$(printf '%-28s %7.1f s' "$name" "$(echo "$t1 - $t0" | bc)")")
    return $rc
}

# ---- the tools -------------------------------------------------------------------------

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }

install_tools() {
    local want=(podman runc mmdebstrap curl python3 bc) missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || cannot_run "no apt-get to install ${missing[*]}"
    if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
        cannot_run "rootful podman needs root or sudo, to install ${missing[*]} and to run"
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    sudo_ apt-get update -qq || true
    sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        cannot_run "apt-get could not install ${missing[*]}"
}

# Podman's defaults do not work on every host: crun cannot set rlimits or use
# hybrid cgroup v1 hierarchies, and without systemd as PID 1 neither the
# systemd cgroup manager nor journald events exist. This file is used for this
# script's podman calls only (CONTAINERS_CONF), the host's configuration is
# left alone.
configure_podman() {
    cat >"$state/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF=$state/containers.conf
}

podman() { sudo_ env CONTAINERS_CONF="$CONTAINERS_CONF" podman "$@"; }

# A minimal Debian 12 root file system, slimmed as Debian's official images are
# (no man pages, docs or locales, apt keeps no package files or lists).

make_base() {
    if podman image exists "$base"; then
        say "base image $base cached"
        return 0
    fi
    local tar=$state/bookworm.tar
    # merged-usr hook: /usr merged as in Debian's images, without the usrmerge
    # package and the perl it pulls in (50 MB)
    sudo_ mmdebstrap --variant=minbase --format=tar \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --aptopt='APT::Install-Recommends "false"' \
        --aptopt='Acquire::Languages "none"' \
        --customize-hook='printf "%s\n" "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true\"; };" "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" > "$1/etc/apt/apt.conf.d/docker-clean"' \
        --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
        bookworm "$tar" \
        "deb $mirror/debian bookworm main" \
        "deb $mirror/debian bookworm-updates main" \
        "deb $mirror/debian-security bookworm-security main" >"$state/mmdebstrap.log" 2>&1 || {
        tail -n 20 "$state/mmdebstrap.log" >&2
        cannot_run "mmdebstrap could not make a Debian 12 root file system from $mirror"
    }
    podman import --quiet "$tar" "$base" >/dev/null || cannot_run "podman import failed"
    rm -f "$tar"
}

# The plain Debian base must start; when it does not, no image can run here.
probe_runtime() {
    local out
    out=$(podman run --rm --network none "$base" /bin/true 2>&1) ||
        cannot_run "podman cannot start even the plain Debian base: $out"
}

build_image() {
    podman build --format docker --layers \
        --build-arg VARIANT=cpu --build-arg BUILD_IMAGE="$base" --build-arg RUNTIME_IMAGE="$base" \
        -t "$image" . >"$state/build.log" 2>&1 || {
        tail -n 60 "$state/build.log" >&2
        fatal "the image does not build (podman build; the log's last lines above)"
    }
}


# ---- running it ------------------------------------------------------------------------

# One CPU thread: with two OpenMP threads on a busy 2-core machine (ctest -j2,
# other builds) a sample costs up to 100 times more, as barriers wait for
# descheduled threads; one thread keeps the timings below meaningful. Arguments
# after the image go to vapo-serve: this also checks that the entrypoint passes them.
server_args=(--threads 1)

# start NAME [PODMAN RUN OPTIONS...]: starts the server image in the background,
# published on a free loopback port (recorded in $state/NAME.port), as
# `docker run -d -p 127.0.0.1::8080 ... IMAGE --threads 1` would.
start() {
    local name=$1
    shift
    # (podman says on stderr that it cannot schedule health checks without
    # systemd; `podman healthcheck run` below runs them)
    podman run -d --name "$name" -p 127.0.0.1::8080 "$@" "$image" "${server_args[@]}" \
        >/dev/null 2>"$state/$name.run" || fatal "podman run $* $image failed: $(cat "$state/$name.run")"
    containers+=("$name")
    local port
    port=$(podman port "$name" 8080/tcp | sed -n 's/.*:\([0-9]*\)$/\1/p')
    [ -n "$port" ] || fatal "$name does not serve: it stopped at once; its log: $(logs "$name" | tail -n 20)"
    echo "$port" >"$state/$name.port"
}
port_of() { cat "$state/$1.port"; }
logs() { podman logs "$1" 2>&1; }

# get NAME PATH OUT [CURL ARGS...]: prints the HTTP status (000: no answer)
get() {
    local name=$1 path=$2 out=$3
    shift 3
    curl -s -o "$out" -w '%{http_code}' --max-time 60 "$@" "http://127.0.0.1:$(port_of "$name")$path" || true
}
post_json() {
    local name=$1 path=$2 out=$3 body=$4
    shift 4
    get "$name" "$path" "$out" -X POST -H 'Content-Type: application/json' -d "$body" "$@"
}

# wait_ready NAME: /healthz and then /readyz answer 200 (60 s at most)
wait_ready() {
    local name=$1 what=healthz code
    for _ in $(seq 1 600); do
        code=$(get "$name" "/$what" /dev/null --max-time 2)
        if [ "$code" = 200 ]; then
            [ $what = readyz ] && return 0
            what=readyz
            continue
        fi
        [ "$(podman inspect --format '{{.State.Running}}' "$name")" = true ] || break
        sleep 0.1
    done
    logs "$name" | tail -n 30 >&2
    fatal "$name does not serve: /$what never answered 200 (last: $code; the container's log above)"
}

# png_size FILE: prints WIDTHxHEIGHT of a PNG, or nothing when it is not one
png_size() {
    python3 - "$1" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
if d[:8] == b"\x89PNG\r\n\x1a\n" and d[12:16] == b"IHDR":
    print("%dx%d" % struct.unpack(">II", d[16:24]))
PY
}

# json FILE EXPR: evaluates EXPR on the parsed JSON (as `j`), prints the result
json() {
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null
}

# The key vapo-serve generated and printed once at start, or nothing.
generated_key() {
    logs "$1" | sed -n 's/.*generated one: \([0-9A-Za-z_-]*\).*/\1/p'
}

serve_checks() {
    local c=vapo-ct-$$-a out=$state/out code key auth shape size
    # the one-command deployment, `docker run -p 8080:8080 vapo`: no key given
    start "$c" --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges
    wait_ready "$c"
    say "$c serves on 127.0.0.1:$(port_of "$c") (--read-only --tmpfs /tmp --cap-drop ALL)"

    # no open door: the server made a key, printed it once, and wants it
    code=$(post_json "$c" /generate "$out" '{"seed": 1}')
    [ "$code" = 401 ] || fail "/generate without a key: $code (want 401): $(head -c 200 "$out" | tr -cd '[:print:]')"
    key=$(generated_key "$c")
    if [ -z "$key" ]; then
        fail "no generated API key in the log: $(logs "$c" | head -n 5)"
    else
        [[ $(logs "$c") == *'"api_key_generated":"'$key'"'* ]] || fail "no JSON log line with api_key_generated"
        say "generated key found in the log"
    fi
    auth=(-H "Authorization: Bearer $key")
    code=$(post_json "$c" /generate "$out" '{"seed": 1}' -H 'Authorization: Bearer wrong')
    [ "$code" = 401 ] || fail "/generate with a wrong key: $code (want 401)"
    code=$(get "$c" /metrics "$out")
    [ "$code" = 401 ] || fail "/metrics without a key: $code (want 401)"
    code=$(get "$c" /metrics "$out" "${auth[@]}")
    [ "$code" = 200 ] || fail "/metrics with the key: $code (want 200)"

    code=$(get "$c" /v1/model "$out" "${auth[@]}")
    [ "$code" = 200 ] || fail "/v1/model with the generated key: $code"
    shape=$(json "$out" '"%dx%d" % (j["shape"][2], j["shape"][1])')
    code=$(post_json "$c" /generate "$state/one.png" '{"seed": 42, "format": "png"}' "${auth[@]}")
    size=$(png_size "$state/one.png")
    if [ "$code" != 200 ] || [ -z "$size" ] || [ "$size" != "$shape" ]; then
        fail "/generate: $code, PNG ${size:-none} (want 200, a PNG of the model's ${shape:-?})"
    else
        say "/generate: a ${size} PNG"
    fi
    code=$(post_json "$c" /generate "$state/grid.png" '{"seed": 42, "n": 4, "format": "grid"}' "${auth[@]}")
    size=$(png_size "$state/grid.png")
    [ "$code" = 200 ] && [ -n "$size" ] || fail "/generate grid of 4: $code, PNG ${size:-none}"

    code=$(get "$c" /energy "$out" -X POST -H 'Content-Type: image/png' --data-binary "@$state/one.png" "${auth[@]}")
    local energy
    energy=$(json "$out" 'float(j["results"][0]["energy"])')
    if [ "$code" != 200 ] || [ -z "$energy" ] || [ "$energy" = nan ]; then
        fail "/energy of the generated PNG: $code $(head -c 300 "$out")"
    else
        say "/energy: $energy"
    fi

    # the image's HEALTHCHECK is there (docker format) and passes
    local hc
    hc=$(podman image inspect --format '{{.HealthCheck}}' "$image" 2>/dev/null || true)
    [[ $hc == *healthcheck.sh* ]] || fail "the image has no HEALTHCHECK (got '$hc'): built without --format docker?"
    podman healthcheck run "$c" >/dev/null 2>&1 || fail "podman healthcheck run $c: not healthy"
    [ "$(podman inspect --format '{{.State.Health.Status}}' "$c" 2>/dev/null)" = healthy ] ||
        fail "health status is '$(podman inspect --format '{{.State.Health.Status}}' "$c" 2>/dev/null)', want healthy"

    # not root, vapo-serve is PID 1 (it gets the stop signal), the root file system is read-only
    local uid
    uid=$(podman exec "$c" sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' /proc/1/status)
    [ "$uid" = 10001 ] || fail "vapo-serve runs as uid '$uid', want 10001"
    [ "$(podman exec "$c" cat /proc/1/comm)" = vapo-serve ] ||
        fail "PID 1 is '$(podman exec "$c" cat /proc/1/comm)', want vapo-serve"
    podman exec "$c" touch /opt/vapo/x 2>/dev/null && fail "the root file system is writable under --read-only"
    podman exec "$c" touch /tmp/x || fail "/tmp (tmpfs) is not writable"
    return 0
}

# Seconds (float) one /generate request takes: BODY, with KEY.
time_request() {
    local c=$1 body=$2 key=$3 t0 t1 code
    t0=$(date +%s.%N)
    code=$(post_json "$c" /generate /dev/null "$body" -H "Authorization: Bearer $key")
    t1=$(date +%s.%N)
    [ "$code" = 200 ] || fatal "$c: calibration request $body: $code"
    echo "$t1 - $t0" | bc
}

# A chosen key (-e VAPO_API_KEY), /metrics open to a scraper (VAPO_METRICS_OPEN), then `podman stop` (as `docker stop`: SIGTERM,
# SIGKILL after 10 s) with two requests in flight: one that finishes inside the
# drain budget (200) and one that cannot (cancelled, 503). vapo-serve must exit
# 0 on its own, before the 10 s are up.
stop_checks() {
    local c=vapo-ct-$$-b key=test-key-$$ out=$state/out code
    # raised limits: the long request is sized below to outlast the drain on any machine
    local server_args=("${server_args[@]}" --max-steps 100000 --max-nfe 1000000)
    start "$c" -e VAPO_API_KEY="$key" -e VAPO_METRICS_OPEN=1 --read-only --tmpfs /tmp
    wait_ready "$c"
    code=$(get "$c" /metrics "$out")
    [ "$code" = 200 ] && grep -q '^vapo_ready 1' "$out" ||
        fail "/metrics without a key under VAPO_METRICS_OPEN=1: $code (want 200 and vapo_ready 1)"
    code=$(post_json "$c" /generate "$out" '{"seed": 1}')
    [ "$code" = 401 ] || fail "/generate without the chosen key: $code (want 401)"
    code=$(post_json "$c" /generate "$out" '{"seed": 1}' -H "Authorization: Bearer $key")
    [ "$code" = 200 ] || fail "/generate with VAPO_API_KEY's key: $code (want 200)"
    [ -z "$(generated_key "$c")" ] || fail "a key was generated although VAPO_API_KEY was given"

    # size the short request to ~1.5 s of work on this machine, now, and the
    # long one to ~20 s (4 evaluations a step), four times the 5 s drain
    local t20 steps long_steps
    t20=$(time_request "$c" '{"seed": 1, "solver": "euler", "steps": 20}' "$key")
    steps=$(echo "s = 1.5 * 20 / $t20; if (s < 20) s = 20; if (s > 1000) s = 1000; s / 1" | bc)
    long_steps=$(echo "s = 20 * 20 / (4 * $t20); if (s < 500) s = 500; if (s > 100000) s = 100000; s / 1" | bc)
    say "euler, 20 steps: ${t20} s; the short request takes $steps steps, the long one $long_steps rk4 steps"
    post_json "$c" /generate "$state/short.png" "{\"seed\": 2, \"solver\": \"euler\", \"steps\": $steps}" \
        -H "Authorization: Bearer $key" >"$state/short.code" &
    local short=$!
    post_json "$c" /generate "$state/long.out" "{\"seed\": 3, \"solver\": \"rk4\", \"steps\": $long_steps}" \
        -H "Authorization: Bearer $key" >"$state/long.code" &
    local long=$!
    sleep 0.5
    local t0 t1 elapsed rc
    t0=$(date +%s.%N)
    podman stop "$c" >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    elapsed=$(printf '%.1f' "$(echo "$t1 - $t0" | bc)")
    wait "$short" "$long" || true
    rc=$(podman inspect --format '{{.State.ExitCode}}' "$c")
    say "stop: exit $rc after $elapsed s; short request $(cat "$state/short.code"), long $(cat "$state/long.code")"
    local drain
    drain=$(logs "$c" | grep -m 1 '"draining' || true)
    [[ $drain == *'"in_flight": 2'* || $drain == *'"in_flight":2'* ]] ||
        fail "the stop did not find both requests in flight: '${drain:-no draining line}'"
    [ "$rc" = 0 ] || fail "exit status $rc after stop (137: killed when the 10 s were up)"
    [ "$(echo "$elapsed < 10" | bc)" = 1 ] || fail "stop took $elapsed s (docker's default timeout is 10 s)"
    [ "$(cat "$state/short.code")" = 200 ] && [ -n "$(png_size "$state/short.png")" ] ||
        fail "the short request in flight got $(cat "$state/short.code"), want 200 and a PNG"
    [ "$(cat "$state/long.code")" = 503 ] ||
        fail "the long request in flight got $(cat "$state/long.code"), want 503 (cancelled at the end of the drain)"
    timings+=("$(printf '%-28s %7.1f s' "  stop, 2 requests in flight" "$elapsed")")
}

# An offline tool instead of the server, writing into a mounted folder.
tool_checks() {
    local dir=$state/work size
    mkdir -p "$dir"
    chown 10001:10001 "$dir" 2>/dev/null || sudo_ chown 10001:10001 "$dir"
    containers+=(vapo-ct-$$-c)
    podman run --rm --name vapo-ct-$$-c -v "$dir:/work" -w /work -e OMP_NUM_THREADS=1 "$image" \
        vapo-sample /opt/vapo/models/fmnist-small.safetensors -n 4 --seed 7 --solver euler --steps 20 \
        --out /work/samples.png >"$state/sample.log" 2>&1 ||
        fail "vapo-sample in the image failed: $(grep -v 'level=error' "$state/sample.log" | tail -n 5)"
    size=$(png_size "$dir/samples.png" 2>/dev/null)
    [ -n "$size" ] || fail "vapo-sample wrote no PNG into the mounted folder"
    say "vapo-sample wrote a $size grid into the mounted folder"
}

install_tools
configure_podman
step "base image (mmdebstrap)" make_base
probe_runtime
step "image build (CPU)" build_image
size=$(podman image inspect --format '{{.Size}}' "$image")
step "serve: start .. checks" serve_checks
step "API key, stop with work" stop_checks
step "offline tool" tool_checks

echo
say "image $image: $((size / 1000000)) MB ($(podman image inspect --format '{{.Id}}' "$image" | head -c 12))"
for t in "${timings[@]}"; do say "  $t"; done
say "$(printf '%-30s %7.1f s' total "$(echo "$(date +%s.%N) - $t_start" | bc)")"
if [ $fails -ne 0 ]; then
    say "$fails check(s) failed"
    exit 1
fi
say "all checks passed"
