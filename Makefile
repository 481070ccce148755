# gridbatch — run `make help` for the targets.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
.DEFAULT_GOAL := help

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN         := bin
REDIS_PORT  ?= 6390
PG_PORT     ?= 5440
# The tests' own services: never the demo's, so a running demo (or its
# workers) and the tests cannot take each other's tasks or flush each other's data.
TEST_REDIS_PORT   ?= 6392
TEST_PG_PORT      ?= 5442
TEST_SERVICES_DIR ?= $(CURDIR)/.services/test

# The local services of scripts/services.sh; the binaries and the demo use them.
export GRIDBATCH_REDIS_PORT := $(REDIS_PORT)
export GRIDBATCH_PG_PORT    := $(PG_PORT)
export GRIDBATCH_REDIS_URL    ?= redis://127.0.0.1:$(REDIS_PORT)/0
export GRIDBATCH_DATABASE_URL ?= postgres://gridbatch:gridbatch@127.0.0.1:$(PG_PORT)/gridbatch?sslmode=disable
export GRIDBATCH_TEST_REDIS_URL    ?= redis://127.0.0.1:$(TEST_REDIS_PORT)/0
export GRIDBATCH_TEST_DATABASE_URL ?= postgres://gridbatch:gridbatch@127.0.0.1:$(TEST_PG_PORT)/gridbatch?sslmode=disable

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: services-up
services-up: ## install (if missing) and start Redis (:6390) and PostgreSQL 15 (:5440) on loopback
	@scripts/services.sh up

.PHONY: services-down
services-down: ## stop the local Redis and PostgreSQL, the demo's and the tests' (data is kept in .services/)
	@scripts/services.sh down
	@GRIDBATCH_SERVICES_DIR=$(TEST_SERVICES_DIR) GRIDBATCH_REDIS_PORT=$(TEST_REDIS_PORT) GRIDBATCH_PG_PORT=$(TEST_PG_PORT) scripts/services.sh down

.PHONY: test-services-up
test-services-up: ## start the tests' own Redis (:6392) and PostgreSQL (:5442), data in .services/test/
	@GRIDBATCH_SERVICES_DIR=$(TEST_SERVICES_DIR) GRIDBATCH_REDIS_PORT=$(TEST_REDIS_PORT) GRIDBATCH_PG_PORT=$(TEST_PG_PORT) scripts/services.sh up

.PHONY: build
build: ## build every binary into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

.PHONY: migrate
migrate: services-up build ## apply the schema to the local PostgreSQL
	$(BIN)/enqueuer migrate

.PHONY: demo
demo: services-up build ## services up, migrate, seed the 0.05° Korea grid, run a ph batch with 2 workers, print the summary and the lines to paste
	@scripts/demo.sh

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet -tags integration,bench ./...
	$(STATICCHECK) -tags integration,bench ./...

.PHONY: test
test: test-services-up test-deps lint ## the whole suite: lint, the Python SDK's tests, go test -race ./..., then the integration and chaos tests (real binaries)
	/usr/bin/python3 -m unittest discover -s sdk/python
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -p 1 -count=1 -timeout 40m -tags integration -v ./tests/... 2>&1 | scripts/testlines.sh

.PHONY: test-deps
test-deps: ## install what only the tests need (Debian's chromium for the monitor's browser test)
	@scripts/services.sh browser

.PHONY: compose-test
compose-test: ## docker-compose.yml and deploy/k8s/base really run (root; podman, no Docker needed): README's compose steps, faults, kube play
	scripts/compose-test.sh

.PHONY: chaos
chaos: test-services-up ## only the chaos scenarios (real binaries, kill -9, DB and Redis restarts)
	$(GO) test -count=1 -timeout 40m -tags integration -v -run 'Chaos' ./tests/... 2>&1 | scripts/testlines.sh

# EXPORT_BASELINE is the revision (or an enqueuer binary) whose NetCDF export
# make bench compares this tree's with: d0ce846 wrote it uncompressed.
EXPORT_BASELINE ?= d0ce846

.PHONY: bench
bench: test-services-up build ## the figures of BENCHMARKS.md (kernel, seeding, fan-out, lower bound vs pipeline, scaling, memory, latency, Python model processes vs Go, this tree vs fae24c9 built from git, results latency; then import and export rates, NetCDF export vs d0ce846's, import's peak RSS on hostile files, what checks, provenance and diff cost): prints the tables, rewrites BENCHMARKS.md
	GRIDBATCH_BENCH_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -tags bench -run '^TestBench$$' -count=1 -timeout 45m -v ./tests/bench/
	@echo "== import: rows/s of a 480,000-row CSV (new cells, new inputs on seeded cells, updates)"
	$(GO) test -count=1 -run '^$$' -bench 'ImportInputs' -benchtime 3x ./internal/store/
	@echo "== export: values/s, peak RSS and file size per format of a 480,000-cell ph batch; NetCDF beside $(EXPORT_BASELINE)'s (uncompressed), alternately"
	GRIDBATCH_BENCH_EXPORT_BASELINE=$(EXPORT_BASELINE) $(GO) test -count=1 -tags integration -run '^$$' -bench 'BenchmarkExport' -benchtime 1x -timeout 30m ./tests/integration/
	@echo "== import: peak RSS of enqueuer import on hostile files (refused) and on a 480,000-row file (target: 256 MiB on any input)"
	$(GO) test -count=1 -tags integration -run '^$$' -bench 'BenchmarkImportPeakRSS' -benchtime 1x -timeout 15m ./tests/integration/
	@echo "== results you can trust, 480,000 cells: the inputs digest (target: 1 s), the checks of a batch's chunks, a batch with checks and provenance vs without in 5 pairs of alternating order (target: 1.05 ×), enqueuer diff of two batches (targets: 10 s, 200 MiB)"
	$(GO) test -count=1 -run '^$$' -bench 'BenchmarkTrust' -benchtime 5x -timeout 40m ./internal/batch/

.PHONY: clean
clean: ## remove bin/ (not the service data)
	rm -rf $(BIN)
