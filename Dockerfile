# syntax=docker/dockerfile:1
#
# vapo: the HTTP server (vapo-serve) and the offline tools in one image.
#
#   GPU (default): build on the CUDA devel image, run on the matching runtime image
#     docker build -t vapo .
#     docker run --gpus all -p 8080:8080 vapo
#
#   CPU only: plain Debian 12 for both stages, no CUDA toolkit in the image
#     docker build -t vapo:cpu --build-arg VARIANT=cpu \
#       --build-arg BUILD_IMAGE=debian:bookworm-slim --build-arg RUNTIME_IMAGE=debian:bookworm-slim .
#     docker run -p 8080:8080 vapo:cpu
#   (scripts/container-test.sh builds this variant with podman and runs its checks;
#   the two variants differ only in the base images and VARIANT.)
#
#   The offline tools: any command that does not start with '-' runs instead of the server
#     docker run --rm --gpus all -v "$PWD:/work" -w /work -u "$(id -u)" vapo \
#       vapo-sample /opt/vapo/models/fmnist-small.safetensors -n 64 --out samples.png
#
# Settings (environment): PORT (8080), VAPO_DEVICE (auto | cuda | cpu), VAPO_MODEL
# (/opt/vapo/models/fmnist-small.safetensors), VAPO_GRACE_S (5: the drain on
# docker stop, inside its default 10 s), VAPO_API_KEY (without it vapo-serve
# generates a key and prints it once in the log; VAPO_INSECURE_NO_AUTH=1 serves
# without one), VAPO_METRICS_KEY / VAPO_METRICS_OPEN=1 for /metrics.
# Arguments that start with '-' are passed on to vapo-serve (see vapo-serve --help).
# Podman: build with --format docker, or the OCI format drops SHELL and HEALTHCHECK.

ARG CUDA_VERSION=13.0.2
ARG BUILD_IMAGE=nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu24.04
ARG RUNTIME_IMAGE=nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu24.04

# ---- build ----------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build
# cuda: build the CUDA backend (needs nvcc, cuBLAS and cuDNN from the devel image);
# cpu: CPU backend only.
ARG VARIANT=cuda
# GPUs to compile for: A100 (sm_80 also runs on sm_86/89), H100/H200 (sm_90), and
# compute_90 PTX that newer GPUs compile at load time.
ARG CUDA_ARCHITECTURES="80-real;90-real;90-virtual"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# The Debian/Ubuntu equivalents of scripts/setup.sh's build dependencies. Not
# pinned: the base image tag fixes the Ubuntu release, and its security updates
# should come in on a rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libblis-openmp-dev libmicrohttpd-dev libjansson-dev libpng-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN set -eu; \
    case "$VARIANT" in \
      cuda) cuda=ON ;; \
      cpu)  cuda=OFF ;; \
      *) echo "VARIANT must be cuda or cpu, got '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    if ! cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DVAPO_CUDA="$cuda" \
           -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHITECTURES" >/tmp/configure.log 2>&1; then \
      cat /tmp/configure.log; exit 1; \
    fi; \
    cat /tmp/configure.log; \
    if [ "$cuda" = ON ] && grep -q 'CUDA backend not built' /tmp/configure.log; then \
      echo "VARIANT=cuda, but CMake did not find nvcc, cuBLAS and cuDNN (see above)" >&2; exit 1; \
    fi; \
    cmake --build build -j"$(nproc)" \
      --target vapo-serve vapo-train vapo-sample vapo-interpolate vapo-score; \
    mkdir -p /out/bin /out/models; \
    for t in vapo-serve vapo-train vapo-sample vapo-interpolate vapo-score; do \
      install -m 0755 "build/$t" /out/bin/; \
    done; \
    strip --strip-unneeded /out/bin/*; \
    if [ -d models ]; then cp -r models/. /out/models/; fi

# ---- run ------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
ARG VARIANT=cuda
LABEL org.opencontainers.image.title="vapo" \
      org.opencontainers.image.description="VAPO energy-based generative models: HTTP server and offline tools" \
      org.opencontainers.image.source="https://github.com/vapo/vapo"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# Runtime libraries only (the CUDA runtime, cuBLAS and cuDNN come with the base
# image in the cuda variant). Not pinned, as above. Ubuntu 24.04 and Debian 13
# renamed two of them in the 64-bit time_t transition (libpng16-16t64); Debian
# 12 has the old names: take the renamed one where the release has it.
# hadolint ignore=DL3008
RUN apt-get update \
 && pkgs=(libblis4-openmp libgomp1 libjansson4 zlib1g) \
 && for p in libmicrohttpd12 libpng16-16; do \
      if apt-cache show "${p}t64" >/dev/null 2>&1; then pkgs+=("${p}t64"); else pkgs+=("$p"); fi; \
    done \
 && apt-get install -y --no-install-recommends "${pkgs[@]}" \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric user so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 vapo \
 && useradd --system --uid 10001 --gid vapo --home-dir /opt/vapo --no-create-home \
      --shell /usr/sbin/nologin vapo

COPY --from=build /out/bin/ /opt/vapo/bin/
COPY --from=build /out/models/ /opt/vapo/models/
COPY docker/entrypoint.sh docker/healthcheck.sh /opt/vapo/docker/
# Fail the build here, not at start-up, if a shared library is missing.
RUN chmod 0755 /opt/vapo/docker/*.sh \
 && for b in /opt/vapo/bin/*; do \
      if ldd "$b" | grep 'not found'; then echo "$b: missing libraries" >&2; exit 1; fi; \
    done

ENV PATH=/opt/vapo/bin:${PATH} \
    PORT=8080 \
    VAPO_DEVICE=auto \
    VAPO_MODEL=/opt/vapo/models/fmnist-small.safetensors \
    VAPO_VARIANT=${VARIANT} \
    OMP_WAIT_POLICY=passive

USER 10001:10001
WORKDIR /opt/vapo
EXPOSE 8080
# /healthz answers as soon as the server listens (also while the model loads);
# readiness (/readyz) is for load balancers and Kubernetes, see docker/k8s/.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/opt/vapo/docker/healthcheck.sh"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/vapo/docker/entrypoint.sh"]
CMD []
