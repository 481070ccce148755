# syntax=docker/dockerfile:1
#
# Every gridbatch binary (worker, scheduler, enqueuer, monitor) in
# /usr/local/bin; each service picks its binary with `command`
# (docker-compose.yml, deploy/k8s). Two runtime targets, both run as the
# non-root user 65532; deploy/dockerfile_test.go runs this file's `go build` and
# checks both:
#
#   docker build -t gridbatch:local .                                  # static (the default, last stage): distroless, no Python
#   docker build --target worker-python -t gridbatch-python:local .    # + Debian's python3, numpy and netCDF4, for models files and NetCDF exports
#
# `worker-python` is the one to run the workers in when a models file
# (GRIDBATCH_MODELS_FILE) declares Python models: the worker supervises each
# model process by re-executing its own binary, so the binaries and python3
# live in one image. It holds the Python SDK (on PYTHONPATH) and examples/.
# Put your own model code in an image FROM this target, or mount it.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ ./cmd/...

FROM debian:bookworm-slim AS worker-python
# Debian's numpy, built for Debian's /usr/bin/python3 (the command the models
# files name); no pip, no compiler. python3-netcdf4 (libnetcdf, HDF5) writes the
# files of `enqueuer export --format netcdf`, which the static image cannot.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-numpy python3-netcdf4 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
COPY sdk/python/gridbatch_model.py /opt/gridbatch/sdk/python/
COPY examples/ /opt/gridbatch/examples/
# The SDK importable by every model; no .pyc writes on the read-only root;
# print() lines reach the worker's log as they are printed.
ENV PYTHONPATH=/opt/gridbatch/sdk/python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# worker: /healthz, /readyz, /metrics (GRIDBATCH_HTTP_ADDR); monitor: UI (GRIDBATCH_MONITOR_ADDR)
EXPOSE 8081 8080
CMD ["/usr/local/bin/worker"]

# The default target: static binaries on distroless, no shell, no Python. It
# runs the built-in models, and every binary but a worker of Python models.
FROM gcr.io/distroless/static-debian12:nonroot AS static
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8081 8080
CMD ["/usr/local/bin/worker"]
