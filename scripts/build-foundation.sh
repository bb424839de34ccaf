#!/usr/bin/env bash
# build-foundation.sh OUT — builds tcache as the foundation left it (commit
# bench.FoundationRev, the last before the disk tier) into the binary OUT,
# from this repository's history: the baseline of bench compare's
# -vs-foundation workloads (make bench-compare).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/build-foundation.sh OUT}
case $out in /*) ;; *) out=$PWD/$out ;; esac
rev=$(sed -n 's/^const FoundationRev = "\([0-9a-f]*\)"$/\1/p' bench/compare.go)
if ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
	echo "build-foundation: commit $rev is not in this clone (a shallow clone? git fetch --unshallow)" >&2
	exit 1
fi
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git archive "$rev" | tar -x -C "$src"
echo "building the foundation ($rev) into $out ..." >&2
(cd "$src" && go build -o "$out" ./cmd/tcache)
