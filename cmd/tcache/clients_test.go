package main

// Real clients against real server processes on 127.0.0.1: libmemcached's
// memccapable, pymemcache (testdata/pymemcache_test.py, run with Debian's
// /usr/bin/python3) and github.com/bradfitz/gomemcache. Every test runs the
// same client against Debian's memcached first, as the reference, and then
// against the tcache binary, with the same expectations. A missing tool skips
// the test with a visible SKIP line; `make test` installs the tools.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/tcache/tcache/internal/testserver"
)

// clientServer starts one kind of server for a client test and returns its
// host:port; the server is stopped when the test ends.
type clientServer struct {
	name  string
	start func(t *testing.T) string
}

// clientServers lists the servers every client test runs against: the
// reference first.
var clientServers = []clientServer{
	{"memcached", startReferenceMemcached},
	{"tcache", startClientTcache},
}

// forEachClientServer runs fn as a subtest per server, each on a fresh
// server process.
func forEachClientServer(t *testing.T, fn func(t *testing.T, addr string)) {
	for _, s := range clientServers {
		t.Run(s.name, func(t *testing.T) {
			fn(t, s.start(t))
		})
	}
}

// startReferenceMemcached starts Debian's memcached on a free loopback port
// (64 MB, 2 threads, no UDP).
func startReferenceMemcached(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("memcached")
	if err != nil {
		t.Skip("SKIP: memcached not installed (make test installs it)")
	}
	var lastErr error
	for range 3 { // a free port can be taken between probing and binding
		port := loopbackPort(t)
		args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-t", "2", "-m", "64"}
		if os.Geteuid() == 0 { // memcached refuses to run as root without -u
			args = append(args, "-u", currentUser())
		}
		cmd := exec.Command(path, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start memcached: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = waitListening(addr, exited, 5*time.Second); lastErr == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})
			return addr
		}
		_ = cmd.Process.Kill()
		<-exited
		lastErr = fmt.Errorf("%w; stderr: %s", lastErr, stderr.Bytes())
	}
	t.Fatalf("memcached did not start: %v", lastErr)
	return ""
}

// startClientTcache starts the tcache binary (built once by testserver) on a
// free loopback port, with memcached's settings of startReferenceMemcached.
func startClientTcache(t *testing.T) string {
	t.Helper()
	return testserver.Start(t, "-U", "0", "-t", "2", "-m", "64").Addr
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

// loopbackPort returns a TCP port that was free on 127.0.0.1 a moment ago.
func loopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("probe free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening polls addr until it accepts a connection, the process
// exits, or the timeout passes.
func waitListening(addr string, exited <-chan error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("server exited before listening on %s: %v", addr, werr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, timeout, err)
		}
	}
}

// runTool runs a client program with a time limit and returns its combined
// output and its error (an *exec.ExitError for a non-zero exit).
func runTool(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", name, timeout, ctx.Err())
	}
	return string(out), err
}

// memccapableLine matches one result line: "ascii set      [pass]".
var memccapableLine = regexp.MustCompile(`(?m)^((?:ascii|binary) [a-z ]+?)\s+\[(\w+)\]\s*$`)

// memccapableModes are the runs of TestMemccapable: the ascii tests (-a), the
// binary tests (-b), and all of them on one server (no flag).
var memccapableModes = []struct{ name, flag string }{
	{"ascii", "-a"},
	{"binary", "-b"},
	{"all", ""},
}

// memccapableArgs is the memccapable command line for mode flag (""= all).
func memccapableArgs(flag string, args ...string) []string {
	if flag != "" {
		args = append([]string{flag}, args...)
	}
	return args
}

// runMemccapable runs memccapable's tests selected by flag ("-a", "-b" or
// "" for all) against addr and returns each test's result ("pass", "fail",
// ...) and the raw output.
func runMemccapable(t *testing.T, addr, flag string) (map[string]string, string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, err := runTool(t, 60*time.Second, "memccapable", memccapableArgs(flag, "-t", "5", "-h", host, "-p", port)...)
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("memccapable: %v\n%s", err, out)
	}
	results := map[string]string{}
	for _, m := range memccapableLine.FindAllStringSubmatch(out, -1) {
		results[m[1]] = m[2]
	}
	if len(results) == 0 {
		t.Fatalf("memccapable printed no test results (%v):\n%s", err, out)
	}
	return results, out
}

// TestMemccapable runs libmemcached's conformance tool against memcached and
// then tcache: the ascii tests (-a), the binary tests (-b) and all of them.
// Every test must pass on tcache; a test that fails on memcached itself is
// reported and only held to memcached's result.
func TestMemccapable(t *testing.T) {
	if _, err := exec.LookPath("memccapable"); err != nil {
		t.Skip("SKIP: memccapable not installed (make test installs libmemcached-tools)")
	}
	for _, mode := range memccapableModes {
		t.Run(mode.name, func(t *testing.T) { testMemccapable(t, mode.flag) })
	}
}

func testMemccapable(t *testing.T, flag string) {
	label := "memccapable " + flag
	if flag == "" {
		label = "memccapable (all tests)"
	}
	var reference map[string]string
	t.Run("memcached", func(t *testing.T) {
		var out string
		reference, out = runMemccapable(t, startReferenceMemcached(t), flag)
		for name, r := range reference {
			if r != "pass" {
				t.Logf("memcached itself: %s [%s]; tcache is held to memcached's result for it", name, r)
			}
		}
		if !strings.Contains(out, "All tests passed") {
			t.Logf("%s against memcached:\n%s", label, out)
		}
		t.Logf("%s against memcached: %d tests run", label, len(reference))
	})
	t.Run("tcache", func(t *testing.T) {
		addr := startClientTcache(t)
		got, out := runMemccapable(t, addr, flag)
		var failed []string
		for name, r := range got {
			if r == "pass" || (reference != nil && reference[name] == r) {
				continue
			}
			failed = append(failed, name+" ["+r+"]")
		}
		for name := range reference {
			if _, ok := got[name]; !ok {
				failed = append(failed, name+" [not run]")
			}
		}
		if len(failed) > 0 {
			slices.Sort(failed)
			host, port, _ := net.SplitHostPort(addr)
			var detail strings.Builder
			for _, f := range failed { // -v prints the failed assertion of each
				name := strings.TrimSuffix(f[:strings.LastIndex(f, " [")], " ")
				v, _ := runTool(t, 30*time.Second, "memccapable",
					memccapableArgs(flag, "-v", "-t", "5", "-h", host, "-p", port, "-T", name)...)
				fmt.Fprintf(&detail, "--- memccapable -v -T %q:\n%s\n", name, v)
			}
			t.Fatalf("%s against tcache: %d of %d tests failed: %s\n%s\nfull output:\n%s",
				label, len(failed), len(got), strings.Join(failed, ", "), detail.String(), out)
		}
		t.Logf("%s against tcache: all %d tests passed", label, len(got))
	})
}

// pythonWithPymemcache is Debian's interpreter, which has python3-pymemcache;
// the python3 first on PATH may be another one.
const pythonWithPymemcache = "/usr/bin/python3"

// TestPymemcache runs testdata/pymemcache_test.py with pymemcache against
// memcached and then tcache; the script checks every reply and exits
// non-zero on any mismatch.
func TestPymemcache(t *testing.T) {
	if _, err := os.Stat(pythonWithPymemcache); err != nil {
		t.Skip("SKIP: " + pythonWithPymemcache + " not installed (make test installs python3-pymemcache)")
	}
	if out, err := exec.Command(pythonWithPymemcache, "-c", "import pymemcache").CombinedOutput(); err != nil {
		t.Skipf("SKIP: python3-pymemcache not installed (make test installs it): %s", out)
	}
	forEachClientServer(t, func(t *testing.T, addr string) {
		host, port, _ := net.SplitHostPort(addr)
		out, err := runTool(t, 60*time.Second, pythonWithPymemcache, "testdata/pymemcache_test.py", host, port)
		if err != nil {
			t.Fatalf("pymemcache_test.py: %v\n%s", err, out)
		}
		if !strings.Contains(out, " 0 failed") {
			t.Fatalf("pymemcache_test.py exited 0 without a clean summary:\n%s", out)
		}
		t.Log(strings.TrimSpace(out))
	})
}

// newGomemcache returns a gomemcache client for addr with timeouts that
// bound a test even when the server hangs.
func newGomemcache(addr string, idle int) *memcache.Client {
	mc := memcache.New(addr)
	mc.Timeout = 5 * time.Second
	mc.MaxIdleConns = idle
	return mc
}

// TestGomemcache drives every operation of github.com/bradfitz/gomemcache
// against memcached and then tcache. Each step is one call and its expected
// outcome; the steps run in order on a single server.
func TestGomemcache(t *testing.T) {
	item := func(key, value string, flags uint32, exp int32) *memcache.Item {
		return &memcache.Item{Key: key, Value: []byte(value), Flags: flags, Expiration: exp}
	}
	// want checks a stored item's value and flags.
	want := func(mc *memcache.Client, key, value string, flags uint32) error {
		it, err := mc.Get(key)
		if err != nil {
			return fmt.Errorf("Get(%q): %w", key, err)
		}
		if string(it.Value) != value || it.Flags != flags {
			return fmt.Errorf("Get(%q) = %q flags %d, want %q flags %d", key, it.Value, it.Flags, value, flags)
		}
		return nil
	}
	// wantErr checks that err is target (nil for success).
	wantErr := func(err, target error) error {
		if !errors.Is(err, target) {
			return fmt.Errorf("error %v, want %v", err, target)
		}
		return nil
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 500*1024/16)

	steps := []struct {
		name string
		run  func(mc *memcache.Client) error
	}{
		{"Ping", func(mc *memcache.Client) error { return mc.Ping() }},
		{"FlushAll", func(mc *memcache.Client) error { return mc.FlushAll() }},
		{"Set", func(mc *memcache.Client) error { return mc.Set(item("k", "v", 42, 0)) }},
		{"Get", func(mc *memcache.Client) error { return want(mc, "k", "v", 42) }},
		{"Get miss", func(mc *memcache.Client) error {
			_, err := mc.Get("nope")
			return wantErr(err, memcache.ErrCacheMiss)
		}},
		{"Get CasID", func(mc *memcache.Client) error {
			it, err := mc.Get("k")
			if err == nil && it.CasID == 0 {
				err = errors.New("CasID is 0")
			}
			return err
		}},
		{"Set empty value", func(mc *memcache.Client) error { return mc.Set(item("empty", "", 0, 0)) }},
		{"Get empty value", func(mc *memcache.Client) error { return want(mc, "empty", "", 0) }},
		{"Set 500KB", func(mc *memcache.Client) error {
			return mc.Set(&memcache.Item{Key: "big", Value: big})
		}},
		{"Get 500KB", func(mc *memcache.Client) error {
			it, err := mc.Get("big")
			if err == nil && !bytes.Equal(it.Value, big) {
				err = fmt.Errorf("500KB value differs (len %d)", len(it.Value))
			}
			return err
		}},
		{"Set 2MB too large", func(mc *memcache.Client) error {
			err := mc.Set(&memcache.Item{Key: "huge", Value: make([]byte, 2<<20)})
			if err == nil {
				return errors.New("2 MB value stored, want a server error")
			}
			return nil
		}},
		{"Get after too large", func(mc *memcache.Client) error {
			_, err := mc.Get("huge")
			return wantErr(err, memcache.ErrCacheMiss)
		}},
		{"GetMulti", func(mc *memcache.Client) error {
			for i := range 3 {
				if err := mc.Set(item("m"+strconv.Itoa(i), "mv"+strconv.Itoa(i), uint32(i), 0)); err != nil {
					return err
				}
			}
			got, err := mc.GetMulti([]string{"m0", "m1", "nope", "m2"})
			if err != nil {
				return err
			}
			if len(got) != 3 {
				return fmt.Errorf("GetMulti returned %d items, want 3", len(got))
			}
			for i := range 3 {
				it := got["m"+strconv.Itoa(i)]
				if it == nil || string(it.Value) != "mv"+strconv.Itoa(i) || it.Flags != uint32(i) {
					return fmt.Errorf("GetMulti m%d = %+v", i, it)
				}
			}
			return nil
		}},
		{"Add new", func(mc *memcache.Client) error { return mc.Add(item("a", "1", 0, 0)) }},
		{"Add existing", func(mc *memcache.Client) error {
			return wantErr(mc.Add(item("a", "2", 0, 0)), memcache.ErrNotStored)
		}},
		{"Get after Add", func(mc *memcache.Client) error { return want(mc, "a", "1", 0) }},
		{"Replace existing", func(mc *memcache.Client) error { return mc.Replace(item("a", "3", 5, 0)) }},
		{"Get after Replace", func(mc *memcache.Client) error { return want(mc, "a", "3", 5) }},
		{"Replace missing", func(mc *memcache.Client) error {
			return wantErr(mc.Replace(item("r-missing", "x", 0, 0)), memcache.ErrNotStored)
		}},
		{"Append", func(mc *memcache.Client) error { return mc.Append(item("a", "-end", 0, 0)) }},
		{"Prepend", func(mc *memcache.Client) error { return mc.Prepend(item("a", "start-", 0, 0)) }},
		{"Get after Append/Prepend keeps flags", func(mc *memcache.Client) error { return want(mc, "a", "start-3-end", 5) }},
		{"Append missing", func(mc *memcache.Client) error {
			return wantErr(mc.Append(item("ap-missing", "x", 0, 0)), memcache.ErrNotStored)
		}},
		{"Prepend missing", func(mc *memcache.Client) error {
			return wantErr(mc.Prepend(item("ap-missing", "x", 0, 0)), memcache.ErrNotStored)
		}},
		{"CompareAndSwap", func(mc *memcache.Client) error {
			it, err := mc.Get("a")
			if err != nil {
				return err
			}
			stale := *it
			it.Value = []byte("swapped")
			if err := mc.CompareAndSwap(it); err != nil {
				return fmt.Errorf("first CompareAndSwap: %w", err)
			}
			if err := want(mc, "a", "swapped", 5); err != nil {
				return err
			}
			stale.Value = []byte("stale")
			return wantErr(mc.CompareAndSwap(&stale), memcache.ErrCASConflict)
		}},
		{"CompareAndSwap deleted", func(mc *memcache.Client) error {
			it, err := mc.Get("a")
			if err != nil {
				return err
			}
			if err := mc.Delete("a"); err != nil {
				return err
			}
			return wantErr(mc.CompareAndSwap(it), memcache.ErrCacheMiss)
		}},
		{"Increment", func(mc *memcache.Client) error {
			if err := mc.Set(item("n", "10", 0, 0)); err != nil {
				return err
			}
			return wantCount(mc.Increment("n", 5))(15)
		}},
		{"Decrement", func(mc *memcache.Client) error { return wantCount(mc.Decrement("n", 3))(12) }},
		{"Decrement clamps at 0", func(mc *memcache.Client) error { return wantCount(mc.Decrement("n", 100))(0) }},
		{"Increment wraps at 2^64", func(mc *memcache.Client) error {
			if err := mc.Set(item("n", "18446744073709551615", 0, 0)); err != nil {
				return err
			}
			return wantCount(mc.Increment("n", 2))(1)
		}},
		{"Increment missing", func(mc *memcache.Client) error {
			_, err := mc.Increment("n-missing", 1)
			return wantErr(err, memcache.ErrCacheMiss)
		}},
		{"Decrement missing", func(mc *memcache.Client) error {
			_, err := mc.Decrement("n-missing", 1)
			return wantErr(err, memcache.ErrCacheMiss)
		}},
		{"Increment non-numeric", func(mc *memcache.Client) error {
			if err := mc.Set(item("nn", "abc", 0, 0)); err != nil {
				return err
			}
			_, err := mc.Increment("nn", 1)
			if err == nil || !strings.Contains(err.Error(), "non-numeric") {
				return fmt.Errorf("error %v, want a client error about a non-numeric value", err)
			}
			return want(mc, "nn", "abc", 0)
		}},
		{"Touch", func(mc *memcache.Client) error {
			if err := mc.Set(item("t", "tv", 0, 1)); err != nil {
				return err
			}
			if err := mc.Set(item("e", "ev", 0, 1)); err != nil {
				return err
			}
			return mc.Touch("t", 3600)
		}},
		{"Touch missing", func(mc *memcache.Client) error {
			return wantErr(mc.Touch("t-missing", 10), memcache.ErrCacheMiss)
		}},
		{"GetAndTouch", func(mc *memcache.Client) error {
			if err := mc.Set(item("g", "gv", 0, 1)); err != nil {
				return err
			}
			it, err := mc.GetAndTouch("g", 3600)
			if err == nil && string(it.Value) != "gv" {
				err = fmt.Errorf("GetAndTouch = %q", it.Value)
			}
			return err
		}},
		{"expiry after 2s", func(mc *memcache.Client) error {
			time.Sleep(2200 * time.Millisecond)
			if _, err := mc.Get("e"); !errors.Is(err, memcache.ErrCacheMiss) {
				return fmt.Errorf("expired item: %v, want cache miss", err)
			}
			if err := want(mc, "t", "tv", 0); err != nil {
				return fmt.Errorf("touched item: %w", err)
			}
			return want(mc, "g", "gv", 0)
		}},
		{"Delete", func(mc *memcache.Client) error { return mc.Delete("t") }},
		{"Get after Delete", func(mc *memcache.Client) error {
			_, err := mc.Get("t")
			return wantErr(err, memcache.ErrCacheMiss)
		}},
		{"Delete missing", func(mc *memcache.Client) error {
			return wantErr(mc.Delete("t"), memcache.ErrCacheMiss)
		}},
		{"Malformed key refused by the client", func(mc *memcache.Client) error {
			return wantErr(mc.Set(item(strings.Repeat("k", 251), "x", 0, 0)), memcache.ErrMalformedKey)
		}},
		{"250-byte key", func(mc *memcache.Client) error {
			if err := mc.Set(item(strings.Repeat("k", 250), "long", 0, 0)); err != nil {
				return err
			}
			return want(mc, strings.Repeat("k", 250), "long", 0)
		}},
		{"DeleteAll", func(mc *memcache.Client) error {
			if err := mc.DeleteAll(); err != nil {
				return err
			}
			got, err := mc.GetMulti([]string{"m0", "m1", "m2", "g", "big", "n", "nn"})
			if err == nil && len(got) != 0 {
				err = fmt.Errorf("%d items survived DeleteAll", len(got))
			}
			return err
		}},
		{"FlushAll", func(mc *memcache.Client) error {
			if err := mc.Set(item("f", "1", 0, 0)); err != nil {
				return err
			}
			if err := mc.FlushAll(); err != nil {
				return err
			}
			_, err := mc.Get("f")
			return wantErr(err, memcache.ErrCacheMiss)
		}},
		{"Ping at end", func(mc *memcache.Client) error { return mc.Ping() }},
	}

	forEachClientServer(t, func(t *testing.T, addr string) {
		mc := newGomemcache(addr, 2)
		defer mc.Close()
		for _, s := range steps {
			if err := s.run(mc); err != nil {
				t.Errorf("%s: %v", s.name, err)
			}
		}
	})
}

// wantCount turns an Increment/Decrement result into a check of the new value.
func wantCount(got uint64, err error) func(want uint64) error {
	return func(want uint64) error {
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("new value %d, want %d", got, want)
		}
		return nil
	}
}

// TestGomemcacheConcurrent is a smoke test of many clients at once: each
// goroutine mixes sets and gets over its own keys (checking it reads back
// what it wrote last) and over keys shared by all (checking that a value
// always belongs to the key it was read from).
func TestGomemcacheConcurrent(t *testing.T) {
	const (
		clients    = 16
		opsPerConn = 400
		ownKeys    = 20
		sharedKeys = 10
	)
	forEachClientServer(t, func(t *testing.T, addr string) {
		mc := newGomemcache(addr, clients)
		defer mc.Close()
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for c := range clients {
			wg.Go(func() {
				last := map[string]string{}
				for i := range opsPerConn {
					var key string
					if i%3 == 0 {
						key = fmt.Sprintf("shared:%d", i%sharedKeys)
					} else {
						key = fmt.Sprintf("own:%d:%d", c, i%ownKeys)
					}
					if i%2 == 0 {
						v := fmt.Sprintf("%s=%d/%d/%s", key, c, i, strings.Repeat("x", i%200))
						if err := mc.Set(&memcache.Item{Key: key, Value: []byte(v)}); err != nil {
							errs <- fmt.Errorf("client %d: Set(%q): %w", c, key, err)
							return
						}
						last[key] = v
						continue
					}
					it, err := mc.Get(key)
					if errors.Is(err, memcache.ErrCacheMiss) && last[key] == "" && strings.HasPrefix(key, "own:") {
						continue // not written yet
					}
					if errors.Is(err, memcache.ErrCacheMiss) && strings.HasPrefix(key, "shared:") {
						continue
					}
					if err != nil {
						errs <- fmt.Errorf("client %d: Get(%q): %w", c, key, err)
						return
					}
					v := string(it.Value)
					if !strings.HasPrefix(v, key+"=") {
						errs <- fmt.Errorf("client %d: Get(%q) = %q, a value of another key", c, key, v)
						return
					}
					if strings.HasPrefix(key, "own:") && v != last[key] {
						errs <- fmt.Errorf("client %d: Get(%q) = %q, want %q", c, key, v, last[key])
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// TestFillBelowMemoryLimit loads items filling about 40% of -m 64 through a
// pipelined text-protocol connection and checks that the server keeps every
// one: a cache must not evict while it has room (memcached does not). It is
// the small, CI-sized version of bench/memreport's precondition.
func TestFillBelowMemoryLimit(t *testing.T) {
	const (
		items     = 150_000
		valueSize = 100
		batch     = 200
	)
	val := func(i int) string { return fmt.Sprintf("%0*d", valueSize, i) }
	forEachClientServer(t, func(t *testing.T, addr string) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		var req bytes.Buffer
		reply := make([]byte, 4)
		for i := 0; i < items; {
			req.Reset()
			for end := min(i+batch, items); i < end; i++ {
				fmt.Fprintf(&req, "set fill:%d 0 0 %d noreply\r\n%s\r\n", i, valueSize, val(i))
			}
			req.WriteString("mn\r\n")
			if _, err := conn.Write(req.Bytes()); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(conn, reply); err != nil || string(reply) != "MN\r\n" {
				t.Fatalf("after a batch of sets ending at item %d: reply %q, %v; want \"MN\\r\\n\"", i, reply, err)
			}
		}
		mc := newGomemcache(addr, 1)
		defer mc.Close()
		var missing []string
		for i := 0; i < items; i += items / 100 {
			it, err := mc.Get(fmt.Sprintf("fill:%d", i))
			if err != nil || string(it.Value) != val(i) {
				missing = append(missing, strconv.Itoa(i))
			}
		}
		st := statsOf(t, addr)
		if st["evictions"] != "0" || st["curr_items"] != strconv.Itoa(items) || len(missing) > 0 {
			t.Fatalf("after storing %d items of %d bytes with -m 64: evictions %s, curr_items %s, bytes %s, "+
				"limit_maxbytes %s; %d of 100 sampled items missing or wrong (items %s)",
				items, valueSize, st["evictions"], st["curr_items"], st["bytes"], st["limit_maxbytes"],
				len(missing), strings.Join(missing, ","))
		}
	})
}

// statsOf returns the general `stats` of the server at addr.
func statsOf(t *testing.T, addr string) map[string]string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("stats\r\n")); err != nil {
		t.Fatal(err)
	}
	st := map[string]string{}
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "END" {
			return st
		}
		if f := strings.SplitN(line, " ", 3); len(f) == 3 && f[0] == "STAT" {
			st[f[1]] = f[2]
		}
	}
}
