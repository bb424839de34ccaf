# tcache make targets. `make test` runs scripts/test.sh, which is what CI (.ci/run) runs.

GO       ?= go
FUZZTIME ?= 5m
# Fuzz time per target inside `make test`.
TEST_FUZZTIME ?= 10s

.PHONY: all build run test test-deps vet unit fuzz-short fuzz bench bench-memory bench-compare bench-repl test-repl soak clean

all: build

## build: the binary at bin/tcache (set the version with VERSION=x.y.z)
build:
	$(GO) build $(if $(VERSION),-ldflags "-X main.version=$(VERSION)") -o bin/tcache ./cmd/tcache

## run: serve on 127.0.0.1:11211 with data under ./tcache-data (ARGS="-m 128 -vv")
run:
	$(GO) run ./cmd/tcache $(ARGS)

## test: the whole suite, as README and CI run it (scripts/test.sh): test
## packages if missing, vet, all tests, race tests, a short run of every fuzz target
test:
	TEST_FUZZTIME=$(TEST_FUZZTIME) ./scripts/test.sh

test-deps:
	./scripts/install-test-deps.sh

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

fuzz-short:
	./scripts/fuzz.sh $(TEST_FUZZTIME)

## fuzz: every fuzz target for FUZZTIME each (default 5m)
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

## bench: every Go benchmark, with allocations
bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

## bench-memory: RAM bytes per item, tcache vs memcached (rewrites docs/benchmarks.md)
bench-memory:
	$(GO) run ./bench/memreport -out docs/benchmarks.md

## bench-compare: throughput and latency, tcache vs memcached, on named workloads, including
## overflow (memcached+extstore), durable (sync vs none), restart time and the hot workloads
## against memory mode and against the foundation's own build (FOUNDATION_BIN, built from git)
## (rewrites its section of docs/benchmarks.md; COMPARE_ARGS="--rounds 5 --duration 20s")
FOUNDATION_BIN ?= $(or $(TMPDIR),/tmp)/tcache-foundation
bench-compare:
	./scripts/build-foundation.sh $(FOUNDATION_BIN)
	$(GO) run ./cmd/tcache bench compare --foundation $(FOUNDATION_BIN) --out docs/benchmarks.md $(COMPARE_ARGS)

## bench-repl: replication lag, catch-up after a REPL_OUTAGE outage under load (default 60s)
## and the throughput cost of a live peer (rewrites its section of docs/benchmarks.md)
REPL_OUTAGE ?= 60s
REPL_RUN ?= 10s
bench-repl:
	TCACHE_BENCH_REPL=1 TCACHE_BENCH_REPL_OUTAGE=$(REPL_OUTAGE) TCACHE_BENCH_REPL_RUN=$(REPL_RUN) \
		$(GO) test -count=1 -timeout 15m -run '^TestBenchReplication$$' -v ./cmd/tcache

## test-repl: the real-process replication tests (issue 6) alone
test-repl:
	$(GO) test -count=1 -timeout 10m -run '^TestRepl' -v ./cmd/tcache

## soak: the kill -9 test (durability sync) for SOAK_ROUNDS rounds (default 20), and the
## other disk-tier crash tests once
SOAK_ROUNDS ?= 20
soak:
	TCACHE_SOAK_ROUNDS=$(SOAK_ROUNDS) $(GO) test -count=1 -timeout 30m -run 'TestDiskKill9|TestDiskPHPSessionSurvivesKill' -v ./cmd/tcache

clean:
	rm -rf bin
