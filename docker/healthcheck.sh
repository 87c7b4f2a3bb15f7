#!/bin/bash
# Docker HEALTHCHECK: GET /healthz on the local server must answer 200.
# Plain bash (/dev/tcp), so the runtime image needs no curl or wget.
set -u
port="${PORT:-8080}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
status=""
IFS= read -r -t 4 status <&3 || true
exec 3<&-
case "$status" in
    "HTTP/1."?" 200"*) exit 0 ;;
    *) echo "healthz: ${status:-no answer}" >&2; exit 1 ;;
esac
