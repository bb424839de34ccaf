# tcache make targets. `make test` runs scripts/test.sh, which is what CI (.ci/run) runs.

GO       ?= go
FUZZTIME ?= 5m
# Fuzz time per target inside `make test`.
TEST_FUZZTIME ?= 10s

.PHONY: all build run test test-deps vet unit fuzz-short fuzz bench bench-memory bench-compare clean

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

## bench-compare: throughput and latency, tcache vs memcached, on named workloads
## (rewrites its section of docs/benchmarks.md; COMPARE_ARGS="--rounds 5 --duration 20s")
bench-compare:
	$(GO) run ./cmd/tcache bench compare --out docs/benchmarks.md $(COMPARE_ARGS)

clean:
	rm -rf bin
