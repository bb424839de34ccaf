package protocol

import (
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

// extstoreGeneralKeys are the memcached extstore stats tcache prints with a
// disk tier, each where memcached 1.6.18 prints it when extstore is on.
var extstoreGeneralKeys = strings.Fields(`get_extstore recache_from_extstore miss_from_extstore
badcrc_from_extstore extstore_objects_evicted extstore_objects_read extstore_objects_written
extstore_objects_used extstore_bytes_evicted extstore_bytes_written extstore_bytes_read
extstore_bytes_used extstore_limit_maxbytes`)

// TestDiskStatsKeys: with a disk tier, `stats` is memcached's list plus the
// extstore keys, in the order memcached with extstore prints them, plus
// tcache_disk_* figures; in memory mode (TestGeneralStats) not one of them.
func TestDiskStatsKeys(t *testing.T) {
	c := dial(t, startTcacheDisk(t, clock.NewFake(time.Now())))
	c.send("set a 0 0 1\r\nx\r\n")
	if l := c.line(); l != "STORED" {
		t.Fatalf("set: %q", l)
	}
	keys, vals := c.stats("stats")
	var general []string
	for _, k := range keys {
		if !strings.HasPrefix(k, "tcache_") {
			general = append(general, k)
		}
	}
	var want []string
	for _, k := range generalStatKeys {
		if !strings.HasPrefix(k, "tcache_") {
			want = append(want, k)
		}
	}
	var plain []string
	for _, k := range general {
		if !slices.Contains(extstoreGeneralKeys, k) {
			plain = append(plain, k)
		}
	}
	if strings.Join(plain, " ") != strings.Join(want, " ") {
		t.Fatalf("disk mode: keys without extstore differ from memory mode:\n%v\nwant\n%v", plain, want)
	}
	for _, k := range append(slices.Clone(extstoreGeneralKeys), "tcache_disk_items", "tcache_log_first_seq",
		"tcache_log_last_seq", "tcache_ram_evictions", "tcache_disk_swept", "tcache_disk_fsyncs") {
		if _, ok := vals[k]; !ok {
			t.Errorf("stat %s missing", k)
		}
	}
	if vals["extstore_limit_maxbytes"] != "1073741824" || vals["extstore_objects_used"] != "1" ||
		vals["tcache_log_last_seq"] != "1" || vals["curr_items"] != "1" {
		t.Errorf("extstore_limit_maxbytes %s extstore_objects_used %s tcache_log_last_seq %s curr_items %s",
			vals["extstore_limit_maxbytes"], vals["extstore_objects_used"], vals["tcache_log_last_seq"], vals["curr_items"])
	}

	bin, err := exec.LookPath("memcached")
	if err != nil {
		t.Skip("memcached not installed: order against extstore not checked")
	}
	mc := dial(t, startMemcached(t, bin, "-o", "ext_path="+filepath.Join(t.TempDir(), "ext")+":64m"))
	mkeys, _ := mc.stats("stats")
	j := 0
	for _, k := range general {
		for j < len(mkeys) && mkeys[j] != k {
			j++
		}
		if j == len(mkeys) {
			t.Fatalf("stat %q missing from memcached+extstore or out of its order:\nours %v\nmemcached %v", k, general, mkeys)
		}
	}
}

// TestDiskStatsSettings: the storage settings are tcache_* keys of
// `stats settings`.
func TestDiskStatsSettings(t *testing.T) {
	_, addr := startServerDisk(t, clock.NewFake(time.Now()), Options{Storage: StorageSettings{
		Mode: "cache", Durability: "sync", DiskLimit: 1 << 30}}, true)
	_, v := dial(t, addr).stats("stats settings")
	if v["tcache_mode"] != "cache" || v["tcache_durability"] != "sync" || v["tcache_disk_limit"] != "1073741824" {
		t.Errorf("tcache_mode %q tcache_durability %q tcache_disk_limit %q", v["tcache_mode"], v["tcache_durability"], v["tcache_disk_limit"])
	}
}

// TestZeroAllocsMultiGetDisk: with the disk tier, a multi-key get whose
// keys are in RAM (served by GetMulti) allocates nothing.
func TestZeroAllocsMultiGetDisk(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	srv, err := NewServer(Options{Clock: clk}, newTestEngineDisk(t, clk, true))
	if err != nil {
		t.Fatal(err)
	}
	c, l := newLoopConn(srv)
	if got, _ := l.exchange(c, []byte("set a 1 0 1\r\nA\r\nset b 2 0 1\r\nB\r\n")); string(got) != "STORED\r\nSTORED\r\n" {
		t.Fatalf("sets: %q", got)
	}
	req := []byte("gets a b a b\r\n")
	if got, _ := l.exchange(c, req); string(got) != "VALUE a 1 1 1\r\nA\r\nVALUE b 2 1 2\r\nB\r\nVALUE a 1 1 1\r\nA\r\nVALUE b 2 1 2\r\nB\r\nEND\r\n" {
		t.Fatalf("gets: %q", got)
	}
	if allocs := testing.AllocsPerRun(200, func() { l.exchange(c, req) }); allocs != 0 {
		t.Errorf("multi-get: %v allocations per request, want 0", allocs)
	}
}

// TestDiskErrorReplies: when the disk tier cannot commit (here: it was
// closed under the engine), every write answers a SERVER_ERROR in each
// protocol and the connection stays usable.
func TestDiskErrorReplies(t *testing.T) {
	clk := clock.NewFake(time.Now())
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := lsm.Open(lsm.Options{Dir: filepath.Join(t.TempDir(), "pebble"), Durability: lsm.DurabilityNone,
		Clock: clk, Logger: logger, MaintenanceInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.Options{MemoryLimit: 8 << 20, CrawlerInterval: -1, Clock: clk, Logger: logger, Disk: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	srv, err := NewServer(Options{Clock: clk, Logger: logger}, eng)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	c := dial(t, ln.Addr().String())
	c.send("set k 0 0 1\r\n5\r\n")
	if l := c.line(); l != "STORED" {
		t.Fatalf("set before close: %q", l)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ req, want string }{
		{"set k 0 0 1\r\n6\r\n", "SERVER_ERROR disk write failed"},
		{"add n 0 0 1\r\n6\r\n", "SERVER_ERROR disk write failed"},
		{"incr k 1\r\n", "SERVER_ERROR disk write failed"},
		{"delete k\r\n", "SERVER_ERROR disk write failed"},
		{"touch k 10\r\n", "SERVER_ERROR disk write failed"},
		{"flush_all\r\n", "SERVER_ERROR disk write failed"},
		{"ms k 1\r\n7\r\n", "SERVER_ERROR disk write failed"},
		{"md k\r\n", "SERVER_ERROR disk write failed"},
		{"ma k\r\n", "SERVER_ERROR disk write failed"},
		{"get k\r\n", "VALUE k 0 1"}, // the RAM copy is untouched
	} {
		c.send(tc.req)
		if l := c.line(); l != tc.want {
			t.Errorf("%q: got %q, want %q", tc.req, l, tc.want)
		}
	}
	// Binary: internal error (0x84) for a set and a flush.
	bc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	for _, req := range []string{"req op=set key=k value=v", "req op=flush"} {
		frames := binaryExchange(t, bc, req)
		if len(frames) != 1 {
			t.Fatalf("%s: %d frames", req, len(frames))
		}
		if h := parseBinHeader(frames[0]); h.status != statusInternal {
			t.Errorf("%s: status %#x, want %#x", req, h.status, statusInternal)
		}
	}
}
