#!/usr/bin/env bash
# Installs the Debian packages tcache's tests use, when they are missing:
#   memcached            the reference server of the differential tests
#   libmemcached-tools   memccapable, libmemcached's conformance tool
#   python3-pymemcache   pymemcache for Debian's /usr/bin/python3
#   php-cli php-memcached  php-memcached's Memcached class and PHP sessions
#
# Runs apt-get update first, then apt-get install -y. Uses sudo (never
# prompting) only when not root. If the packages cannot be installed (not
# Debian, no root, no network), it prints a "SKIPPING real-client tests"
# line and exits 0: the tests that need them then skip with a visible SKIP.
set -euo pipefail

packages=(memcached libmemcached-tools python3-pymemcache php-cli php-memcached)

skip() {
	echo "SKIPPING real-client tests: $*" >&2
	echo "  (install ${packages[*]} to run them)" >&2
	exit 0
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	skip "not a Debian system (no dpkg-query/apt-get)"
fi

missing=()
for p in "${packages[@]}"; do
	if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "install-test-deps: installing ${missing[*]}" >&2

if [ "$(id -u)" -eq 0 ]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	as_root=(sudo -n)
else
	skip "${missing[*]} missing, and installing needs root (run as root, or allow passwordless sudo)"
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get update -q </dev/null >&2; then
	skip "apt-get update failed"
fi
if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2; then
	skip "apt-get install ${missing[*]} failed"
fi
