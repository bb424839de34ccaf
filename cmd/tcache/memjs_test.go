package main

// memjs (npm, binary protocol only) against memcached and then the tcache
// binary, with testdata/memjs_test.js. memjs is installed with npm into the
// test's temporary directory; without node, npm or a reachable registry the
// test skips and says why.

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMemjs(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("SKIP: node not installed; memjs test not run")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("SKIP: npm not installed; memjs test not run")
	}
	dir := t.TempDir()
	out, err := runTool(t, 120*time.Second, npm, "install", "--prefix", dir, "--no-audit", "--no-fund",
		"--no-save", "--loglevel=error", "memjs@1")
	if err != nil {
		t.Skipf("SKIP: npm install memjs failed (registry unreachable?): %v\n%s", err, out)
	}
	modules := filepath.Join(dir, "node_modules")
	forEachClientServer(t, func(t *testing.T, addr string) {
		host, port, _ := net.SplitHostPort(addr)
		out, err := runTool(t, 60*time.Second, node, "testdata/memjs_test.js", modules, net.JoinHostPort(host, port))
		if err != nil || !strings.Contains(out, " 0 failed") {
			t.Fatalf("memjs_test.js: %v\n%s", err, out)
		}
		t.Log(strings.TrimSpace(out))
	})
}
