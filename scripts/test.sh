#!/usr/bin/env bash
# The whole test suite: what the README's test command and CI (.ci/run) run.
# Needs only bash and Go; installs the Debian packages the real-client and
# differential tests use when they are missing (scripts/install-test-deps.sh),
# or those tests skip with a visible SKIP line.
#
#   TEST_FUZZTIME  time per fuzz target (default 10s)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh

echo "== go vet"
go vet ./...

echo "== go test"
go test -count=1 ./...

echo "== go test -race (engine, protocol, lsm, repl)"
go test -count=1 -race -short ./engine/... ./protocol/... ./lsm/... ./repl/...

echo "== fuzz (${TEST_FUZZTIME:-10s} per target)"
./scripts/fuzz.sh "${TEST_FUZZTIME:-10s}"
