package main

// End-to-end tests of the tcache binary: built once (internal/testserver),
// started on a free 127.0.0.1 port with a temporary data_dir, spoken to in
// the memcached text protocol.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/testserver"
)

// textConn is a memcached text-protocol client for tests.
type textConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dialText(t *testing.T, addr string) *textConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &textConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *textConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("send %q: %v", s, err)
	}
}

func (c *textConn) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read reply: %v (got %q)", err, l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// expect reads one line per want and compares.
func (c *textConn) expect(want ...string) {
	c.t.Helper()
	for _, w := range want {
		if got := c.line(); got != w {
			c.t.Fatalf("got %q, want %q", got, w)
		}
	}
}

// stats sends "stats <args>" and returns the STAT lines as a map.
func (c *textConn) stats(args string) map[string]string {
	c.t.Helper()
	c.send(strings.TrimSpace("stats "+args) + "\r\n")
	m := map[string]string{}
	for {
		l := c.line()
		if l == "END" {
			return m
		}
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 || f[0] != "STAT" {
			c.t.Fatalf("stats %s: unexpected line %q", args, l)
		}
		m[f[1]] = f[2]
	}
}

func TestServeTextProtocol(t *testing.T) {
	// Memory mode: -m is then the RAM tier, limit_maxbytes and maxbytes
	// exactly as memcached's. (With a disk tier they report the RAM tier's
	// share of -m: docs/configuration.md.)
	srv := testserver.Start(t, "-m", "16", "-c", "77", "-I", "2m", "-t", "2", "--mode", "memory")
	c := dialText(t, srv.Addr)

	c.send("set greeting 5 0 5\r\nhello\r\n")
	c.expect("STORED")
	c.send("get greeting\r\n")
	c.expect("VALUE greeting 5 5", "hello", "END")

	c.send("version\r\n")
	if v := c.line(); !strings.HasPrefix(v, "VERSION ") {
		t.Fatalf("version: %q", v)
	}

	settings := c.stats("settings")
	for key, want := range map[string]string{
		"maxconns":      "77",
		"item_size_max": strconv.Itoa(2 << 20),
		"maxbytes":      strconv.Itoa(16 << 20),
		"tcpport":       strconv.Itoa(srv.Port),
		"num_threads":   "2",
	} {
		if got := settings[key]; got != want {
			t.Errorf("stats settings %s = %q, want %q", key, got, want)
		}
	}
	general := c.stats("")
	if got := general["tcache_version"]; got != version {
		t.Errorf("stat tcache_version = %q, want %q", got, version)
	}
	if got := general["limit_maxbytes"]; got != strconv.Itoa(16<<20) {
		t.Errorf("stat limit_maxbytes = %q, want %d", got, 16<<20)
	}

	if code := srv.Stop(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if log := srv.Stderr(); !strings.Contains(log, "tcache started") || !strings.Contains(log, "tcache stopped") {
		t.Errorf("log lacks start/stop lines:\n%s", log)
	}
}

// SIGTERM while a pipelined batch is being answered: every reply of the
// batch is delivered, new connections are refused, and the process exits 0
// promptly.
func TestSIGTERMDrainsPipelinedBatch(t *testing.T) {
	srv := testserver.Start(t, "-m", "64", "-I", "1m")
	c := dialText(t, srv.Addr)

	value := bytes.Repeat([]byte("v"), 8<<10)
	c.send(fmt.Sprintf("set big 0 0 %d\r\n%s\r\n", len(value), value))
	c.expect("STORED")

	// 1000 gets: 9 kB of requests (one read buffer), 8 MB of replies, far
	// more than the socket buffers hold, so the server is still writing
	// when the signal arrives.
	const n = 1000
	c.send(strings.Repeat("get big\r\n", n))
	first := c.line()
	if first != "VALUE big 0 "+strconv.Itoa(len(value)) {
		t.Fatalf("first reply line %q", first)
	}
	start := time.Now()
	if err := srv.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the shutdown to begin", func() bool {
		return strings.Contains(srv.Stderr(), "shutting down")
	})
	// Draining: the listener closes while the batch is still unread.
	waitFor(t, 5*time.Second, "the listener to close", func() bool {
		nc, err := net.DialTimeout("tcp", srv.Addr, time.Second)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})

	// Read the rest of the batch, then the server closes the connection.
	values := 1
	if got := c.line(); got != string(value) {
		t.Fatalf("value 1: %q...", got[:min(len(got), 20)])
	}
	c.expect("END")
	for ; values < n; values++ {
		c.expect("VALUE big 0 "+strconv.Itoa(len(value)), string(value), "END")
	}
	if rest, err := io.ReadAll(c.r); err != nil || len(rest) != 0 {
		t.Fatalf("after the batch: %q, %v; want the connection closed", rest, err)
	}

	code, ok := srv.Wait(5 * time.Second)
	if !ok {
		t.Fatalf("still running 5s after the batch was answered")
	}
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	t.Logf("drained %d replies and exited in %v", n, time.Since(start).Round(time.Millisecond))
}

// A second tcache on the same data_dir is refused with a clear message and
// exit code 1; once the first has stopped, the directory is free again.
func TestDataDirLockedAgainstSecondInstance(t *testing.T) {
	first := testserver.Start(t)

	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(probe.Addr().(*net.TCPAddr).Port)
	probe.Close()
	cmd := exec.Command(testserver.Binary(t), "-l", "127.0.0.1", "-p", port, "--data-dir", first.DataDir)
	out, err := runWithTimeout(t, cmd, 10*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second instance: %v, want exit code 1; output:\n%s", err, out)
	}
	if !strings.Contains(out, "in use by another tcache") || !strings.Contains(out, "pid "+strconv.Itoa(first.PID())) {
		t.Fatalf("second instance output lacks the lock message naming pid %d:\n%s", first.PID(), out)
	}

	if code := first.Stop(t); code != 0 {
		t.Fatalf("first instance exit code %d", code)
	}
	testserver.Start(t, "--data-dir", first.DataDir) // the lock was released
}

// The binary refuses bad configuration with exit code 2 before touching
// anything.
func TestBinaryRefusesBadConfig(t *testing.T) {
	for args, want := range map[string]string{
		"-U 1":              "tcache: config: udp_port: UDP is not supported; -U must be 0",
		"--log-format xml":  `tcache: config: log_format: must be one of text, json, got "xml"`,
		"-d":                "-d (daemonize) is not supported",
		"--no-such-option":  "unknown flag: --no-such-option",
		"serve -I 2000m":    "config: max_item_size: must be a size from 1k to 1024m",
		"serve --memory -1": "config: memory: must be an integer number of megabytes ≥ 1",
	} {
		cmd := exec.Command(testserver.Binary(t), strings.Fields(args)...)
		cmd.Dir = t.TempDir()
		out, err := runWithTimeout(t, cmd, 10*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, want) {
			t.Errorf("tcache %s: %v, output %q; want exit 2 and %q", args, err, out, want)
		}
	}
}

func runWithTimeout(t *testing.T, cmd *exec.Cmd, timeout time.Duration) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v still running after %v; output:\n%s", cmd.Args, timeout, out.String())
		return "", nil
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
