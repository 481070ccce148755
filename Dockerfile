# syntax=docker/dockerfile:1
#
# One image with every gridbatch binary (worker, scheduler, enqueuer, monitor)
# in /usr/local/bin; each service picks its binary with `command`
# (docker-compose.yml, deploy/k8s). Static binaries on distroless, run as the
# non-root user 65532. deploy/deploy_test.go runs this file's `go build`.
#
#   docker build -t gridbatch:local .

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# worker: /healthz, /readyz, /metrics (GRIDBATCH_HTTP_ADDR); monitor: UI (GRIDBATCH_MONITOR_ADDR)
EXPOSE 8081 8080
CMD ["/usr/local/bin/worker"]
