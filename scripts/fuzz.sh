#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 10s).
#
# Targets are discovered, not listed: packages whose tests declare a
# func FuzzXxx, then `go test -list` in each, so a new target is picked up
# without editing anything. Usage: scripts/fuzz.sh [fuzztime]
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${1:-${FUZZTIME:-10s}}
mapfile -t dirs < <(grep -rlE --include='*_test.go' '^func Fuzz[A-Z0-9_]' . | xargs -r -n1 dirname | sort -u)
if [ ${#dirs[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found"
	exit 0
fi
for dir in "${dirs[@]}"; do
	# A package whose tests do not compile fails here, not silently.
	list=$(go test -list '^Fuzz' "$dir")
	mapfile -t targets < <(grep -E '^Fuzz' <<<"$list" || true)
	for target in "${targets[@]}"; do
		echo "fuzz: $dir $target for $fuzztime"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$dir"
	done
done
