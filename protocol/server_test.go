package protocol

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/internal/clock"
)

// client is a line-oriented test client.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *client) send(s string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// line reads one reply line without its "\r\n".
func (c *client) line() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// stats sends a stats command and returns the STAT lines as ordered pairs.
func (c *client) stats(cmd string) (keys []string, vals map[string]string) {
	c.t.Helper()
	c.send(cmd + "\r\n")
	vals = map[string]string{}
	for {
		l := c.line()
		if l == "END" {
			return keys, vals
		}
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 || f[0] != "STAT" {
			c.t.Fatalf("%s: bad line %q", cmd, l)
		}
		keys = append(keys, f[1])
		vals[f[1]] = f[2]
	}
}

// expectClosed asserts that the server closes the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c.r)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("want EOF, got %v after %q", err, rest)
	}
}

// generalStatKeys is memcached 1.6.18's `stats` order (without libevent,
// which tcache does not use), then tcache's own keys.
var generalStatKeys = strings.Fields(`pid uptime time version pointer_size rusage_user rusage_system
max_connections curr_connections total_connections rejected_connections connection_structures
response_obj_oom response_obj_count response_obj_bytes read_buf_count read_buf_bytes read_buf_bytes_free
read_buf_oom reserved_fds cmd_get cmd_set cmd_flush cmd_touch cmd_meta get_hits get_misses get_expired
get_flushed delete_misses delete_hits incr_misses incr_hits decr_misses decr_hits cas_misses cas_hits
cas_badval touch_hits touch_misses store_too_large store_no_memory auth_cmds auth_errors bytes_read
bytes_written limit_maxbytes accepting_conns listen_disabled_num time_in_listen_disabled_us threads
conn_yields hash_power_level hash_bytes hash_is_expanding slab_reassign_rescues slab_reassign_chunk_rescues
slab_reassign_evictions_nomem slab_reassign_inline_reclaim slab_reassign_busy_items
slab_reassign_busy_deletes slab_reassign_running slabs_moved lru_crawler_running lru_crawler_starts
lru_maintainer_juggles malloc_fails log_worker_dropped log_worker_written log_watcher_skipped
log_watcher_sent log_watchers unexpected_napi_ids round_robin_fallback bytes curr_items total_items
slab_global_page_pool expired_unfetched evicted_unfetched evicted_active evictions reclaimed
crawler_reclaimed crawler_items_checked lrutail_reflocked moves_to_cold moves_to_warm moves_within_lru
direct_reclaims lru_bumps_dropped tcache_version tcache_go_heap_inuse tcache_go_heap_objects tcache_go_gc_cycles
tcache_go_goroutines`)

func TestGeneralStats(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	_, addr := startServer(t, clk, Options{MaxConns: 77, Threads: 3, Version: "9.9.9-test"})
	c := dial(t, addr)
	keys, v := c.stats("stats")
	if strings.Join(keys, " ") != strings.Join(generalStatKeys, " ") {
		t.Fatalf("stats keys\n got %v\nwant %v", keys, generalStatKeys)
	}
	for _, k := range keys {
		switch k {
		case "version", "tcache_version":
		case "rusage_user", "rusage_system":
			if _, err := strconv.ParseFloat(v[k], 64); err != nil || !strings.Contains(v[k], ".") || len(v[k][strings.Index(v[k], ".")+1:]) != 6 {
				t.Errorf("%s = %q, want sec.usec", k, v[k])
			}
		default:
			if _, err := strconv.ParseUint(v[k], 10, 64); err != nil {
				t.Errorf("%s = %q, want a number", k, v[k])
			}
		}
	}
	check := func(k, want string) {
		t.Helper()
		if v[k] != want {
			t.Errorf("%s = %q, want %q", k, v[k], want)
		}
	}
	check("version", "1.6.18")
	check("tcache_version", "9.9.9-test")
	check("time", "1700000000")
	check("uptime", "0")
	check("max_connections", "77")
	check("threads", "3")
	check("curr_connections", "1")
	check("pointer_size", "64")
	check("limit_maxbytes", strconv.Itoa(64<<20))

	c.send("set a 0 0 1\r\nx\r\nget a\r\nget b\r\nget a b\r\nincr a 1\r\ndelete nosuch\r\ntouch a 0\r\n")
	for _, want := range []string{"STORED", "VALUE a 0 1", "x", "END", "END", "VALUE a 0 1", "x", "END",
		"CLIENT_ERROR cannot increment or decrement non-numeric value", "NOT_FOUND", "TOUCHED"} {
		if got := c.line(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	clk.Advance(5 * time.Second)
	_, v2 := c.stats("stats")
	for k, want := range map[string]string{"cmd_get": "4", "get_hits": "2", "get_misses": "2", "cmd_set": "1",
		"curr_items": "1", "total_items": "1", "delete_misses": "1", "touch_hits": "1", "cmd_touch": "1",
		"uptime": "5", "total_connections": "1"} {
		if v2[k] != want {
			t.Errorf("after commands: %s = %q, want %q", k, v2[k], want)
		}
	}
	for _, k := range []string{"bytes_read", "bytes_written"} {
		a, _ := strconv.Atoi(v[k])
		b, _ := strconv.Atoi(v2[k])
		if b <= a {
			t.Errorf("%s did not grow: %d -> %d", k, a, b)
		}
	}

	// stats reset zeroes the counters, not the gauges.
	c.send("stats reset\r\n")
	if got := c.line(); got != "RESET" {
		t.Fatalf("stats reset: %q", got)
	}
	_, v3 := c.stats("stats")
	for k, want := range map[string]string{"cmd_get": "0", "get_hits": "0", "cmd_set": "0", "curr_items": "1", "curr_connections": "1"} {
		if v3[k] != want {
			t.Errorf("after reset: %s = %q, want %q", k, v3[k], want)
		}
	}
}

// TestGeneralStatsOrderMatchesMemcached compares the key order with a live
// memcached, when one is installed; tcache's own tcache_* keys come last.
func TestGeneralStatsOrderMatchesMemcached(t *testing.T) {
	bin, err := exec.LookPath("memcached")
	if err != nil {
		t.Skip("memcached not installed")
	}
	mc := dial(t, startMemcached(t, bin))
	keys, _ := mc.stats("stats")
	var want []string
	for _, k := range keys {
		if k != "libevent" {
			want = append(want, k)
		}
	}
	var general []string
	for _, k := range generalStatKeys {
		if !strings.HasPrefix(k, "tcache_") {
			general = append(general, k)
		}
	}
	if strings.Join(want, " ") != strings.Join(general, " ") {
		t.Fatalf("memcached's keys (minus libevent) differ from ours (minus tcache_*):\n%v\nours:\n%v", want, general)
	}
	sk, _ := mc.stats("stats settings")
	c := dial(t, startTcache(t, clock.NewFake(time.Now())))
	ours, _ := c.stats("stats settings")
	// Ours is memcached's list without the extstore and TLS details, in order.
	j := 0
	for _, k := range ours {
		if strings.HasPrefix(k, "tcache_") {
			continue
		}
		for j < len(sk) && sk[j] != k {
			j++
		}
		if j == len(sk) {
			t.Errorf("stats settings key %q missing from memcached or out of its order", k)
			j = 0
		}
	}
}

func TestStatsSettings(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	_, addr := startServer(t, clk, Options{MaxConns: 55, Threads: 6, TCPPort: 11311, ListenAddrs: []string{"127.0.0.1", "::1"}, IdleTimeout: 30 * time.Second})
	c := dial(t, addr)
	_, v := c.stats("stats settings")
	for k, want := range map[string]string{"maxbytes": strconv.Itoa(64 << 20), "maxconns": "55", "tcpport": "11311",
		"udpport": "0", "inter": "127.0.0.1,::1", "verbosity": "0", "evictions": "on", "num_threads": "6",
		"cas_enabled": "yes", "item_size_max": strconv.Itoa(1 << 20), "idle_timeout": "30", "flush_enabled": "yes"} {
		if v[k] != want {
			t.Errorf("stats settings %s = %q, want %q", k, v[k], want)
		}
	}
	c.send("verbosity 2\r\n")
	if got := c.line(); got != "OK" {
		t.Fatalf("verbosity: %q", got)
	}
	if _, v := c.stats("stats settings"); v["verbosity"] != "2" {
		t.Errorf("verbosity after command = %q", v["verbosity"])
	}
}

func TestStatsItemsSlabsConns(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	_, addr := startServer(t, clk, Options{})
	a, b := dial(t, addr), dial(t, addr)
	b.send("version\r\n")
	b.line()
	a.send("set a 0 0 5\r\nhello\r\nset b 0 0 1\r\nx\r\n")
	a.line()
	a.line()
	clk.Advance(3 * time.Second)
	keys, v := a.stats("stats items")
	if len(keys) == 0 || keys[0] != "items:1:number" || v["items:1:number"] != "2" {
		t.Errorf("stats items: %v %v", keys, v)
	}
	keys, v = a.stats("stats slabs")
	if v["active_slabs"] != "1" || v["1:used_chunks"] != "2" || keys[len(keys)-1] != "total_malloced" {
		t.Errorf("stats slabs: %v %v", keys, v)
	}
	keys, v = a.stats("stats conns")
	var listeners, clients int
	for _, k := range keys {
		switch {
		case strings.HasSuffix(k, ":state") && v[k] == "conn_listening":
			listeners++
		case strings.HasSuffix(k, ":listen_addr"):
			clients++
			if v[k] != "tcp:"+addr {
				t.Errorf("%s = %q, want tcp:%s", k, v[k], addr)
			}
		case strings.HasSuffix(k, ":secs_since_last_cmd"):
			if _, err := strconv.Atoi(v[k]); err != nil {
				t.Errorf("%s = %q", k, v[k])
			}
		}
	}
	if listeners != 1 || clients != 2 {
		t.Errorf("stats conns: %d listeners, %d clients: %v", listeners, clients, keys)
	}
}

func TestMaxConns(t *testing.T) {
	srv, addr := startServer(t, clock.Real{}, Options{MaxConns: 2})
	a, b := dial(t, addr), dial(t, addr)
	for _, c := range []*client{a, b} {
		c.send("version\r\n")
		if got := c.line(); got != "VERSION 1.6.18" {
			t.Fatalf("version: %q", got)
		}
	}
	c := dial(t, addr)
	if got := c.line(); got != "ERROR Too many open connections" {
		t.Fatalf("third connection got %q", got)
	}
	c.expectClosed()
	if n := srv.rejectedConns.Load(); n != 1 {
		t.Errorf("rejected_connections = %d, want 1", n)
	}
	// Closing one makes room again.
	a.nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for srv.currConns.Load() > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	d := dial(t, addr)
	d.send("version\r\n")
	if got := d.line(); got != "VERSION 1.6.18" {
		t.Fatalf("after a close: %q", got)
	}
	_, v := b.stats("stats")
	if v["rejected_connections"] != "1" || v["curr_connections"] != "2" {
		t.Errorf("stats: rejected %s curr %s", v["rejected_connections"], v["curr_connections"])
	}
}

func TestIdleTimeout(t *testing.T) {
	_, addr := startServer(t, clock.Real{}, Options{IdleTimeout: 300 * time.Millisecond})
	idle, busy := dial(t, addr), dial(t, addr)
	start := time.Now()
	stop := time.After(time.Second)
	for loop := true; loop; {
		select {
		case <-stop:
			loop = false
		case <-time.After(100 * time.Millisecond):
			busy.send("version\r\n")
			busy.line()
		}
	}
	idle.expectClosed()
	if time.Since(start) > 3*time.Second {
		t.Errorf("idle connection closed late")
	}
	busy.send("version\r\n")
	if got := busy.line(); got != "VERSION 1.6.18" {
		t.Fatalf("busy connection: %q", got)
	}
}

func TestShutdownDrains(t *testing.T) {
	clk := clock.NewFake(time.Now())
	eng := newTestEngine(t, clk)
	srv, err := NewServer(Options{Clock: clk}, eng)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	idle, busy := dial(t, ln.Addr().String()), dial(t, ln.Addr().String())
	idle.send("version\r\n")
	idle.line()
	busy.send("set a 0 0 1\r\nx\r\n")
	busy.line()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	idle.expectClosed()
	busy.expectClosed()
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Errorf("still accepting after Shutdown")
	}
	if err := srv.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

// TestSlowReader: a client that sends requests without reading replies is
// throttled by TCP (the server stops reading while its writes block) instead
// of making the server buffer without bound; once it reads, every reply
// arrives, in order.
func TestSlowReader(t *testing.T) {
	_, addr := startServer(t, clock.Real{}, Options{})
	c := dial(t, addr)
	value := bytes.Repeat([]byte("v"), 256<<10)
	c.send("set big 0 0 " + strconv.Itoa(len(value)) + "\r\n" + string(value) + "\r\n")
	if got := c.line(); got != "STORED" {
		t.Fatalf("set: %q", got)
	}
	req := bytes.Repeat([]byte("get big\r\n"), 1000)
	sent := 0
	blocked := false
	for sent < 8000 { // up to 72 MB of requests, 2 TB of replies
		c.nc.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.nc.Write(req); err != nil {
			blocked = true
			break
		}
		sent++
	}
	if !blocked {
		t.Fatalf("server accepted %d MB of requests (%d GB of replies) from a client that reads nothing", sent*9, sent*256/1024)
	}
	// The reply stream is intact: read until the last full reply we can
	// account for, in order.
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	header := "VALUE big 0 " + strconv.Itoa(len(value))
	for i := range 50 {
		if got := c.line(); got != header {
			t.Fatalf("reply %d: %q", i, got)
		}
		buf := make([]byte, len(value)+2)
		if _, err := io.ReadFull(c.r, buf); err != nil || !bytes.Equal(buf[:len(value)], value) {
			t.Fatalf("reply %d: value corrupted (%v)", i, err)
		}
		if got := c.line(); got != "END" {
			t.Fatalf("reply %d: %q", i, got)
		}
	}
}

// TestLargeValues runs the item size limit cases (values too big for a
// script) against tcache and, when installed, memcached, and compares.
func TestLargeValues(t *testing.T) {
	big := func(n int) string { return strings.Repeat("y", n) }
	cases := []struct{ name, req, want string }{
		{"limit", "set a 0 0 1048576\r\n" + big(1048576) + "\r\nget a\r\n", "SERVER_ERROR object too large for cache\r\nEND\r\n"},
		{"over", "set a 0 0 1\r\nx\r\nset a 0 0 2000000\r\n" + big(2000000) + "\r\nget a\r\n",
			"STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n"},
		{"swallowed-bad-chunk", "set a 0 0 2000000\r\n" + big(2000000) + "XXget b\r\nget a\r\n",
			"SERVER_ERROR object too large for cache\r\nEND\r\nEND\r\n"},
		{"noreply", "set a 0 0 2000000 noreply\r\n" + big(2000000) + "\r\nversion\r\n", "VERSION 1.6.18\r\n"},
		{"add-keeps-old", "set a 0 0 1\r\nx\r\nadd a 0 0 2000000\r\n" + big(2000000) + "\r\nget a\r\n",
			"STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE a 0 1\r\nx\r\nEND\r\n"},
		{"half-mb", "set h 0 0 524288\r\n" + big(524288) + "\r\nget h\r\n", "STORED\r\nVALUE h 0 524288\r\n" + big(524288) + "\r\nEND\r\n"},
	}
	servers := map[string]string{"tcache": startTcache(t, clock.NewFake(time.Now()))}
	if bin, err := exec.LookPath("memcached"); err == nil {
		servers["memcached"] = startMemcached(t, bin)
	}
	for name, addr := range servers {
		for _, tc := range cases {
			c := dial(t, addr)
			go c.nc.Write([]byte(tc.req))
			got := make([]byte, len(tc.want))
			c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c.r, got); err != nil || string(got) != tc.want {
				if len(got) > 200 {
					got = got[:200]
				}
				t.Errorf("%s %s: got %q (%v), want %.200q", name, tc.name, got, err, tc.want)
			}
			c.nc.Close()
		}
	}
}

// panickyEngine panics on the key "boom".
type panickyEngine struct{ Engine }

func (e panickyEngine) Get(dst, key []byte, a *engine.GetArgs) ([]byte, engine.ItemInfo, bool) {
	if string(key) == "boom" {
		panic("boom")
	}
	return e.Engine.Get(dst, key, a)
}

func TestPanicClosesOnlyItsConnection(t *testing.T) {
	clk := clock.NewFake(time.Now())
	logs := &syncWriter{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	srv, err := NewServer(Options{Clock: clk, Logger: logger}, panickyEngine{newTestEngine(t, clk)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	a, b := dial(t, ln.Addr().String()), dial(t, ln.Addr().String())
	a.send("get boom\r\n")
	a.expectClosed()
	b.send("version\r\n")
	if got := b.line(); got != "VERSION 1.6.18" {
		t.Fatalf("other connection: %q", got)
	}
	logs.mu.Lock()
	out := logs.buf.String()
	logs.mu.Unlock()
	if !strings.Contains(out, "panic") || !strings.Contains(out, "goroutine") {
		t.Errorf("panic not logged with a stack: %s", out)
	}
}

type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// flakyListener fails its first Accepts with a temporary error.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

type tempErr struct{}

func (tempErr) Error() string   { return "temporary accept failure" }
func (tempErr) Timeout() bool   { return false }
func (tempErr) Temporary() bool { return true }

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, tempErr{}
	}
	return l.Listener.Accept()
}

func TestAcceptRetries(t *testing.T) {
	clk := clock.NewFake(time.Now())
	srv, err := NewServer(Options{Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, newTestEngine(t, clk))
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner}
	ln.fails.Store(3)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	c := dial(t, inner.Addr().String())
	c.send("version\r\n")
	if got := c.line(); got != "VERSION 1.6.18" {
		t.Fatalf("after accept errors: %q", got)
	}
	srv.Shutdown(context.Background())
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}
