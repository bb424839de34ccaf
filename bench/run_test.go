package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/testserver"
)

// TestMain removes the tcache binary internal/testserver builds.
func TestMain(m *testing.M) { os.Exit(testserver.Run(m)) }

// statsDelta runs fn and returns how the server's counters moved.
func statsDelta(t *testing.T, addr string, fn func()) map[string]int64 {
	t.Helper()
	read := func() map[string]int64 {
		st, err := ServerStats(addr)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, k := range []string{"cmd_get", "cmd_set", "get_hits", "get_misses"} {
			n, err := strconv.ParseInt(st[k], 10, 64)
			if err != nil {
				t.Fatalf("stat %s = %q", k, st[k])
			}
			out[k] = n
		}
		return out
	}
	before := read()
	fn()
	after := read()
	for k := range after {
		after[k] -= before[k]
	}
	return after
}

// checkHonest runs a bounded load and requires the server's counters to
// move by exactly what the report says.
func checkHonest(t *testing.T, addr string, o Options) {
	t.Helper()
	var rep *Report
	delta := statsDelta(t, addr, func() {
		var err error
		if rep, err = Run(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	})
	r := rep.Runs[0]
	conns := int64(o.Threads * o.Clients * len(o.Servers))
	if got, want := r.Totals.Count, conns*o.Requests; got != want {
		t.Errorf("%d requests reported, want %d", got, want)
	}
	keysPerGet := int64(max(o.MultiKeyGet, 1))
	if r.Gets.Hits+r.Gets.Misses != r.Gets.Count*keysPerGet {
		t.Errorf("hits %d + misses %d != %d gets × %d keys", r.Gets.Hits, r.Gets.Misses, r.Gets.Count, keysPerGet)
	}
	for _, c := range []struct {
		stat string
		tool int64
	}{
		{"cmd_set", r.Sets.Count},
		{"cmd_get", r.Gets.Hits + r.Gets.Misses}, // memcached counts keys
		{"get_hits", r.Gets.Hits},
		{"get_misses", r.Gets.Misses},
	} {
		if delta[c.stat] != c.tool {
			t.Errorf("server %s moved by %d, bench reports %d", c.stat, delta[c.stat], c.tool)
		}
	}
	if r.Gets.Hits == 0 || r.Gets.Misses == 0 {
		t.Errorf("hits %d, misses %d: the load should produce both", r.Gets.Hits, r.Gets.Misses)
	}
	if r.ServerErrors != 0 {
		t.Errorf("%d server errors", r.ServerErrors)
	}
	if n := r.Totals.Histogram.TotalCount(); n != r.Totals.Count {
		t.Errorf("histogram holds %d latencies, want %d", n, r.Totals.Count)
	}
}

func honestOptions(addr, protocol string, multi int) Options {
	return Options{
		Servers: []string{addr}, Protocol: protocol,
		Threads: 2, Clients: 3, Pipeline: 8, Requests: 400,
		SetRatio: 1, GetRatio: 3, DataSizeMin: 10, DataSizeMax: 200,
		KeyMinimum: 0, KeyMaximum: 1999, KeyPrefix: "honest-" + protocol + "-",
		MultiKeyGet: multi, DistinctClientSeed: true, Seed: 3,
	}
}

func TestHonestCountingAgainstTcache(t *testing.T) {
	srv := testserver.Start(t, "-m", "64", "-t", "2")
	for _, tc := range []struct {
		protocol string
		multi    int
	}{
		{ProtocolText, 0}, {ProtocolText, 7}, {ProtocolMeta, 0}, {ProtocolMeta, 7},
	} {
		t.Run(tc.protocol+"/multi-"+strconv.Itoa(tc.multi), func(t *testing.T) {
			checkHonest(t, srv.Addr, honestOptions(srv.Addr, tc.protocol, tc.multi))
		})
	}
}

// TestHonestCountingBinaryAgainstMemcached checks the binary client where a
// binary server exists today: Debian's memcached.
func TestHonestCountingBinaryAgainstMemcached(t *testing.T) {
	path, err := exec.LookPath("memcached")
	if err != nil {
		t.Skip("SKIP: memcached not installed (apt-get install memcached)")
	}
	args := []string{"-U", "0", "-m", "64", "-t", "1"}
	if os.Geteuid() == 0 {
		name := "root"
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		args = append(args, "-u", name)
	}
	p, err := startProcess(context.Background(), "memcached", path, args, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	for _, multi := range []int{0, 7} {
		t.Run("multi-"+strconv.Itoa(multi), func(t *testing.T) {
			checkHonest(t, p.addr, honestOptions(p.addr, ProtocolBinary, multi))
		})
	}
}

func TestSeveralServersSplitKeys(t *testing.T) {
	a := testserver.Start(t, "-m", "16", "-t", "1")
	b := testserver.Start(t, "-m", "16", "-t", "1")
	o := honestOptions("", ProtocolText, 0)
	o.Servers = []string{a.Addr, b.Addr}
	o.Threads, o.Clients, o.Requests = 1, 2, 300
	var rep *Report
	var db map[string]int64
	da := statsDelta(t, a.Addr, func() {
		db = statsDelta(t, b.Addr, func() {
			var err error
			if rep, err = Run(context.Background(), o); err != nil {
				t.Fatal(err)
			}
		})
	})
	r := rep.Runs[0]
	if r.Connections != 4 || r.Totals.Count != 4*300 {
		t.Fatalf("%d connections, %d requests; want 4 and 1200", r.Connections, r.Totals.Count)
	}
	if da["cmd_set"]+db["cmd_set"] != r.Sets.Count || da["get_hits"]+db["get_hits"] != r.Gets.Hits {
		t.Errorf("servers counted sets %d+%d hits %d+%d; bench %d and %d",
			da["cmd_set"], db["cmd_set"], da["get_hits"], db["get_hits"], r.Sets.Count, r.Gets.Hits)
	}
	// Every key a server holds is one ketama places there.
	ring := newKetama(o.Servers)
	for i, addr := range o.Servers {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		found := 0
		for k := range 2000 {
			key := o.KeyPrefix + strconv.Itoa(k)
			conn.Write([]byte("mg " + key + "\r\n"))
			line, _ := br.ReadString('\n')
			if !strings.HasPrefix(line, "HD") {
				continue
			}
			found++
			if ring.server([]byte(key)) != i {
				t.Errorf("%s stored on %s, ketama places it on %s", key, addr, o.Servers[ring.server([]byte(key))])
			}
		}
		if found == 0 {
			t.Errorf("no key stored on %s", addr)
		}
	}
}

func TestUnreachableServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nobody listens there now
	o := Options{Servers: []string{addr}, Threads: 1, Clients: 1, Requests: 1}
	_, err = Run(context.Background(), o)
	if !errors.Is(err, ErrUnreachable) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line wrapping ErrUnreachable", err)
	}
}

// fakeServer accepts connections and answers every read with reply (or
// never answers when reply is empty).
func fakeServer(t *testing.T, reply string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if reply != "" {
						c.Write([]byte(reply))
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func TestGarbageReplyIsAnError(t *testing.T) {
	addr := fakeServer(t, "HELLO THERE\r\n")
	o := Options{Servers: []string{addr}, Threads: 1, Clients: 2, Requests: 10}
	_, err := Run(context.Background(), o)
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want ErrProtocol naming %s", err, addr)
	}
}

func TestBinaryAgainstTextOnlyServer(t *testing.T) {
	addr := fakeServer(t, "") // a text server waits for a line that never comes
	o := Options{Servers: []string{addr}, Protocol: ProtocolBinary, Threads: 1, Clients: 1, Requests: 1,
		DialTimeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := Run(context.Background(), o)
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v to notice", time.Since(start))
	}
}

func TestValidateRefusesImpossibleOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Options)
	}{
		{"ratio 0:0", nil},
		{"negative ratio", func(o *Options) { o.SetRatio = -1 }},
		{"pipeline", func(o *Options) { o.Pipeline = -1 }},
		{"size min > max", func(o *Options) { o.DataSizeMin, o.DataSizeMax = 10, 5 }},
		{"key max < min", func(o *Options) { o.KeyMinimum, o.KeyMaximum = 10, 5 }},
		{"median outside", func(o *Options) { o.KeyMedian = float64(o.KeyMaximum) + 1 }},
		{"zipf exponent", func(o *Options) { o.KeyZipfExp = -1 }},
		{"protocol", func(o *Options) { o.Protocol = "redis" }},
		{"pattern", func(o *Options) { o.SetPattern = 'X' }},
		{"server", func(o *Options) { o.Servers = []string{"localhost"} }},
		{"expiry", func(o *Options) { o.ExpiryMin, o.ExpiryMax = 5, 1 }},
		{"percentile", func(o *Options) { o.Percentiles = []float64{101} }},
		{"multi-get larger than the range", func(o *Options) { o.KeyMinimum, o.KeyMaximum, o.MultiKeyGet = 1, 3, 4 }},
	} {
		o := DefaultOptions()
		if tc.mod != nil {
			tc.mod(&o)
		} else {
			o.SetRatio, o.GetRatio = 0, 0 // after defaults: Validate must refuse
		}
		if err := o.Validate(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidOptions", tc.name, err)
		}
	}
	o := DefaultOptions()
	if err := o.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, s := range []string{"", "5", "5-", "-5", "a-b", "9-3", "1-2-3"} {
		if _, _, err := ParseRange(s); err == nil {
			t.Errorf("ParseRange(%q) accepted", s)
		}
	}
	for _, s := range []string{"0:0", "1", "a:b", "-1:2"} {
		if _, _, err := ParseRatio(s); err == nil {
			t.Errorf("ParseRatio(%q) accepted", s)
		}
	}
	for _, s := range []string{"R", "R:X", "RR:G", ":"} {
		if _, _, err := ParsePatterns(s); err == nil {
			t.Errorf("ParsePatterns(%q) accepted", s)
		}
	}
}

// warmUp sends a server its -m in passes of 4 KiB overwrites of keys of
// its own: the RAM tier's memory is then resident, all of it, the
// workload's keys are untouched, and the disk tier's RAM evicted nothing.
func TestWarmUpTouchesMemory(t *testing.T) {
	// The disk tier's RAM is 7/16 of -m: at -m 64 the thousand keys
	// are a seventh of it.
	for mode, mb := range map[string]int{"memory": 16, "cache": 64} {
		t.Run(mode, func(t *testing.T) {
			srv := testserver.Start(t, "-m", strconv.Itoa(mb), "-t", "1", "--mode", mode)
			before := rssBytes(t, srv.PID())
			o := Options{
				Protocol: ProtocolText, Threads: 1, Clients: 4,
				KeyPrefix: "load-", KeyMinimum: 0, KeyMaximum: 99, Seed: 1,
			}
			if err := warmUp(context.Background(), o, srv.Addr, mb); err != nil {
				t.Fatal(err)
			}
			st, err := ServerStats(srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			passes := (mb<<20 + warmUpKeys*warmUpValue - 1) / (warmUpKeys * warmUpValue)
			if want := strconv.Itoa(passes * warmUpKeys); st["cmd_set"] != want || st["curr_items"] != "1000" {
				t.Errorf("cmd_set = %q, curr_items = %q; want %s and 1000", st["cmd_set"], st["curr_items"], want)
			}
			if mode == "cache" && st["tcache_ram_evictions"] != "0" {
				t.Errorf("tcache_ram_evictions = %q, want 0", st["tcache_ram_evictions"])
			}
			if grew := rssBytes(t, srv.PID()) - before; mode == "memory" && grew < int64(mb-4)<<20 {
				t.Errorf("resident memory grew by %d bytes, want most of -m %d", grew, mb)
			}
			if hits, err := getEveryKey(context.Background(), o, srv.Addr); err != nil || hits != 0 {
				t.Errorf("the workload's keys: %d hits (%v), want none", hits, err)
			}
		})
	}
}

func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
