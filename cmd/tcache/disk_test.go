package main

// End-to-end tests of the disk tier (issue 5) with the real binary: data
// many times larger than memory, restarts (graceful and kill -9 at each
// durability), a PHP session across a crash, expiry and flush_all on disk,
// the disk limit in both modes, and the refusals at start. Each test bounds
// its own running time; together they take well under a minute on 2 cores.
// `make soak` repeats the kill -9 test (TCACHE_SOAK_ROUNDS, default 20).

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/tcache/tcache/internal/testserver"
)

// diskValue is the deterministic, incompressible value of key number n
// (size bytes, 1–4 KiB unless asked otherwise), so that a reader can check
// any item without keeping what was written.
func diskValue(seed, n uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, n))
	b := make([]byte, size)
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
	for i := range b { // printable: easy to read in a failure message
		b[i] = 'a' + b[i]%26
	}
	return b
}

func diskValueSize(seed, n uint64) int {
	return 1024 + int(rand.New(rand.NewPCG(seed, n^0x5a5a)).IntN(3*1024+1))
}

// pipeSet stores keys [from, to) in pipelined batches on one connection and
// returns the bytes written. Every reply must be STORED.
func pipeSet(t *testing.T, addr, prefix string, seed uint64, from, to int, size func(n uint64) int) int64 {
	t.Helper()
	c := dialText(t, addr)
	var total int64
	var buf []byte
	const batch = 64
	for i := from; i < to; i += batch {
		buf = buf[:0]
		end := min(i+batch, to)
		for n := i; n < end; n++ {
			v := diskValue(seed, uint64(n), size(uint64(n)))
			total += int64(len(v))
			buf = fmt.Appendf(buf, "set %s%d %d 0 %d noreply\r\n", prefix, n, n%1000, len(v))
			buf = append(buf, v...)
			buf = append(buf, "\r\n"...)
		}
		buf = append(buf, "mn\r\n"...)
		c.nc.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := c.nc.Write(buf); err != nil {
			t.Fatalf("pipelined sets: %v", err)
		}
		if l := c.line(); l != "MN" {
			t.Fatalf("pipelined sets %s%d..: got %q", prefix, i, l)
		}
	}
	c.nc.Close()
	return total
}

// checkAll reads keys [from, to) with multi-key gets and checks values and
// flags; it returns how many were missing (each reported unless quiet).
func checkAll(t *testing.T, addr, prefix string, seed uint64, from, to int, size func(n uint64) int) int {
	t.Helper()
	c := dialText(t, addr)
	missing := 0
	const batch = 50
	for i := from; i < to; i += batch {
		end := min(i+batch, to)
		var req strings.Builder
		req.WriteString("get")
		for n := i; n < end; n++ {
			fmt.Fprintf(&req, " %s%d", prefix, n)
		}
		req.WriteString("\r\n")
		c.nc.SetDeadline(time.Now().Add(60 * time.Second))
		c.send(req.String())
		got := map[int]bool{}
		for {
			l := c.line()
			if l == "END" {
				break
			}
			var key string
			var flags, size int
			if _, err := fmt.Sscanf(l, "VALUE %s %d %d", &key, &flags, &size); err != nil {
				t.Fatalf("bad line %q", l)
			}
			v := make([]byte, size+2)
			if _, err := io.ReadFull(c.r, v); err != nil {
				t.Fatal(err)
			}
			n, _ := strconv.Atoi(strings.TrimPrefix(key, prefix))
			if want := diskValue(seed, uint64(n), sizeFn(size, n, seed)(uint64(n))); string(v[:size]) != string(want) || flags != n%1000 {
				t.Fatalf("%s: wrong value or flags %d (len %d)", key, flags, size)
			}
			got[n] = true
		}
		for n := i; n < end; n++ {
			if !got[n] {
				missing++
			}
		}
	}
	return missing
}

// sizeFn returns the size function used for checkAll's value check; the
// read value's length is the one to compare against.
func sizeFn(size, _ int, _ uint64) func(uint64) int { return func(uint64) int { return size } }

// pebbleBytes is the size of the files under data_dir/pebble.
func pebbleBytes(t *testing.T, dataDir string) int64 {
	t.Helper()
	var total int64
	filepath.WalkDir(filepath.Join(dataDir, "pebble"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

func statU(t *testing.T, m map[string]string, k string) uint64 {
	t.Helper()
	v, ok := m[k]
	if !ok {
		t.Fatalf("stat %s missing", k)
	}
	n, _ := strconv.ParseUint(v, 10, 64)
	return n
}

// TestDiskOverflow: with -m 16, 10× that much data (unique keys, 1–4 KiB
// incompressible values) is stored and every item read back exactly; the
// reads come from disk and RAM copies were evicted.
func TestDiskOverflow(t *testing.T) {
	srv := testserver.Start(t, "-m", "16", "--durability", "none", "-t", "2")
	const n = 65536 // ≈ 160 MiB of values
	size := func(k uint64) int { return diskValueSize(1, k) }
	start := time.Now()
	var wg sync.WaitGroup
	var total atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			total.Add(pipeSet(t, srv.Addr, "ov:", 1, w*n/4, (w+1)*n/4, size))
		}()
	}
	wg.Wait()
	if total.Load() < 10*16<<20 {
		t.Fatalf("wrote %d bytes, want ≥ 10 × 16 MiB", total.Load())
	}
	wrote := time.Since(start)
	missing := checkAll(t, srv.Addr, "ov:", 1, 0, n, size)
	if missing != 0 {
		t.Fatalf("%d of %d items missing", missing, n)
	}
	st := dialText(t, srv.Addr).stats("")
	if statU(t, st, "get_extstore") == 0 || statU(t, st, "tcache_ram_evictions") == 0 || statU(t, st, "curr_items") != n {
		t.Fatalf("get_extstore %s tcache_ram_evictions %s curr_items %s", st["get_extstore"], st["tcache_ram_evictions"], st["curr_items"])
	}
	t.Logf("%d items, %d MiB: written in %v, read back in %v; get_extstore %s, tcache_ram_evictions %s, pebble %d MiB",
		n, total.Load()>>20, wrote.Round(time.Millisecond), (time.Since(start) - wrote).Round(time.Millisecond),
		st["get_extstore"], st["tcache_ram_evictions"], pebbleBytes(t, srv.DataDir)>>20)
}

// TestDiskRestartGraceful: values, flags, CAS and expiry survive SIGTERM
// and a start on the same data_dir.
func TestDiskRestartGraceful(t *testing.T) {
	srv := testserver.Start(t, "-m", "16")
	c := dialText(t, srv.Addr)
	type item struct {
		value, flags, cas string
		ttl               int
	}
	items := map[string]item{}
	for i := range 300 {
		k := fmt.Sprintf("g%d", i)
		ttl := 0
		if i%3 == 0 {
			ttl = 1000 + i
		}
		v := string(diskValue(2, uint64(i), 10+i*7))
		c.send(fmt.Sprintf("set %s %d %d %d\r\n%s\r\n", k, i*11, ttl, len(v), v))
		c.expect("STORED")
		items[k] = item{value: v, flags: strconv.Itoa(i * 11), ttl: ttl}
	}
	c.send("incr g0 1\r\n") // not numeric: leaves g0 alone
	c.line()
	for k, it := range items {
		c.send("gets " + k + "\r\n")
		f := strings.Fields(c.line())
		c.line()
		c.expect("END")
		it.cas = f[4]
		items[k] = it
	}
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	srv2 := testserver.Start(t, "-m", "16", "--data-dir", srv.DataDir)
	c = dialText(t, srv2.Addr)
	for k, it := range items {
		c.send("mg " + k + " v f c t\r\n")
		l := c.line()
		var size int
		var flags, cas, ttl string
		if _, err := fmt.Sscanf(l, "VA %d f%s c%s t%s", &size, &flags, &cas, &ttl); err != nil {
			t.Fatalf("%s after restart: %q", k, l)
		}
		v := c.line()
		if v != it.value || flags != it.flags || cas != it.cas {
			t.Fatalf("%s after restart: flags %s cas %s value ok %v; want flags %s cas %s", k, flags, cas, v == it.value, it.flags, it.cas)
		}
		n, _ := strconv.Atoi(ttl)
		if it.ttl == 0 && n != -1 || it.ttl > 0 && (n > it.ttl || n < it.ttl-30) {
			t.Fatalf("%s after restart: ttl %s, stored with %d", k, ttl, it.ttl)
		}
	}
	// New writes get new, larger CAS values.
	c.send("set fresh 0 0 1\r\nx\r\ngets fresh\r\n")
	c.expect("STORED")
	f := strings.Fields(c.line())
	cas, _ := strconv.ParseUint(f[4], 10, 64)
	for k, it := range items {
		if old, _ := strconv.ParseUint(it.cas, 10, 64); old >= cas {
			t.Fatalf("CAS after restart %d not above %s's %d", cas, k, old)
		}
	}
}

// ackLog records, per client, the writes acknowledged before a crash.
type ackLog struct {
	mu   sync.Mutex // protects acks
	acks []ack
}

type ack struct {
	key string
	n   uint64
	at  time.Time
}

// loadUntilKilled runs clients that each set unique keys one at a time,
// recording every STORED, until the server is killed after runFor.
func loadUntilKilled(t *testing.T, srv *testserver.Server, prefix string, clients int, runFor time.Duration) []ack {
	t.Helper()
	var log ackLog
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
			if err != nil {
				return
			}
			defer nc.Close()
			r := bufio.NewReader(nc)
			for i := 0; ; i++ {
				n := uint64(w)<<32 | uint64(i)
				key := fmt.Sprintf("%s%d-%d", prefix, w, i)
				v := diskValue(3, n, 100+int(n%400))
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := fmt.Fprintf(nc, "set %s 0 0 %d\r\n%s\r\n", key, len(v), v); err != nil {
					return
				}
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l != "STORED\r\n" {
					t.Errorf("%s: %q", key, l)
					return
				}
				log.mu.Lock()
				log.acks = append(log.acks, ack{key: key, n: n, at: time.Now()})
				log.mu.Unlock()
			}
		}()
	}
	time.Sleep(runFor)
	killed := time.Now()
	srv.Kill(t)
	wg.Wait()
	log.mu.Lock()
	defer log.mu.Unlock()
	t.Logf("%d writes acknowledged by %d clients in %v before SIGKILL", len(log.acks), clients, runFor)
	for i := range log.acks {
		if log.acks[i].at.After(killed) {
			log.acks = log.acks[:i] // cannot happen: the replies came before the kill
			break
		}
	}
	return log.acks
}

// missingAcks returns the acknowledged writes not present with their value.
func missingAcks(t *testing.T, addr string, acks []ack) []ack {
	t.Helper()
	c := dialText(t, addr)
	var missing []ack
	for _, a := range acks {
		c.send("get " + a.key + "\r\n")
		l := c.line()
		if l == "END" {
			missing = append(missing, a)
			continue
		}
		want := diskValue(3, a.n, 100+int(a.n%400))
		if v := c.line(); v != string(want) {
			t.Fatalf("%s: wrong value after the crash", a.key)
		}
		c.expect("END")
	}
	return missing
}

func soakRounds(def int) int {
	if n, err := strconv.Atoi(os.Getenv("TCACHE_SOAK_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return def
}

// TestDiskKill9: with durability sync every write acknowledged before a
// SIGKILL is present after the restart (repeated: 3 rounds, TCACHE_SOAK_ROUNDS
// in `make soak`); with interval, every write acknowledged more than one
// interval (plus a margin) before the kill; with none the server restarts
// cleanly and serves.
func TestDiskKill9(t *testing.T) {
	t.Run("sync", func(t *testing.T) {
		dataDir := t.TempDir()
		total := 0
		for round := range soakRounds(3) {
			srv := testserver.Start(t, "-m", "16", "--durability", "sync", "--data-dir", dataDir)
			acks := loadUntilKilled(t, srv, fmt.Sprintf("k9r%d-", round), 8, 700*time.Millisecond)
			if len(acks) == 0 {
				t.Fatal("no write acknowledged")
			}
			srv2 := testserver.Start(t, "-m", "16", "--durability", "sync", "--data-dir", dataDir)
			if m := missingAcks(t, srv2.Addr, acks); len(m) > 0 {
				t.Fatalf("round %d: %d of %d acknowledged writes lost, first %s", round, len(m), len(acks), m[0].key)
			}
			if strings.Contains(srv2.Stderr(), "corrupt") {
				t.Fatalf("corruption reported:\n%s", srv2.Stderr())
			}
			srv2.Stop(t)
			total += len(acks)
		}
		t.Logf("sync: %d acknowledged writes over %d kill -9 rounds, none lost", total, soakRounds(3))
	})
	t.Run("interval", func(t *testing.T) {
		const interval, margin = 100 * time.Millisecond, 200 * time.Millisecond
		srv := testserver.Start(t, "-m", "16", "--durability", "interval", "--durability-interval", interval.String())
		acks := loadUntilKilled(t, srv, "k9i-", 8, 700*time.Millisecond)
		cutoff := time.Now().Add(-time.Hour)
		if len(acks) > 0 {
			cutoff = acks[len(acks)-1].at.Add(-interval - margin)
		}
		var old []ack
		for _, a := range acks {
			if a.at.Before(cutoff) {
				old = append(old, a)
			}
		}
		srv2 := testserver.Start(t, "-m", "16", "--data-dir", srv.DataDir)
		if m := missingAcks(t, srv2.Addr, old); len(m) > 0 {
			t.Fatalf("%d of %d writes acknowledged more than %v before the kill lost", len(m), len(old), interval+margin)
		}
		lost := len(missingAcks(t, srv2.Addr, acks[len(old):]))
		t.Logf("interval: %d old writes all present; of the last %d, %d lost", len(old), len(acks)-len(old), lost)
	})
	t.Run("none", func(t *testing.T) {
		srv := testserver.Start(t, "-m", "16", "--durability", "none")
		acks := loadUntilKilled(t, srv, "k9n-", 4, 500*time.Millisecond)
		srv2 := testserver.Start(t, "-m", "16", "--durability", "none", "--data-dir", srv.DataDir)
		c := dialText(t, srv2.Addr)
		c.send("set after 0 0 2\r\nok\r\nget after\r\n")
		c.expect("STORED", "VALUE after 0 2", "ok", "END")
		st := c.stats("")
		if statU(t, st, "badcrc_from_extstore") != 0 || strings.Contains(srv2.Stderr(), "corrupt") {
			t.Fatalf("corruption after kill -9 with durability none:\n%s", srv2.Stderr())
		}
		lost := len(missingAcks(t, srv2.Addr, acks))
		t.Logf("none: restarted cleanly; %d of %d acknowledged writes lost", lost, len(acks))
	})
}

// TestDiskGroupCommit: with durability sync at -t 1 (one P, the compare's
// setting), concurrent clients' sets share WAL fsyncs. Pebble's WAL writer
// alone ran one fsync per set there (lsm/groupsync.go): the group commit
// the durable workload measures was gone.
func TestDiskGroupCommit(t *testing.T) {
	srv := testserver.Start(t, "-t", "1", "-m", "64", "--durability", "sync")
	c := dialText(t, srv.Addr)
	before := statU(t, c.stats(""), "tcache_disk_fsyncs")
	const clients, each = 16, 200
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			nc, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			r := bufio.NewReader(nc)
			for i := range each {
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := fmt.Fprintf(nc, "set gc%d-%d 0 0 3\r\nabc\r\n", w, i); err != nil {
					t.Error(err)
					return
				}
				if l, err := r.ReadString('\n'); err != nil || l != "STORED\r\n" {
					t.Errorf("set: %q %v", l, err)
					return
				}
			}
		})
	}
	wg.Wait()
	fsyncs := statU(t, c.stats(""), "tcache_disk_fsyncs") - before
	t.Logf("%d sync sets from %d clients, %d fsyncs", clients*each, clients, fsyncs)
	if fsyncs == 0 || fsyncs*2 > clients*each {
		t.Fatalf("%d fsyncs for %d sync sets from %d clients: no group commit", fsyncs, clients*each, clients)
	}
}

// TestDiskPHPSessionSurvivesKill: a PHP session (php-memcached, binary
// protocol) written to tcache with durability sync is read back by a new
// PHP process after tcache was SIGKILLed and restarted.
func TestDiskPHPSessionSurvivesKill(t *testing.T) {
	php := requirePHPMemcached(t)
	srv := testserver.Start(t, "-m", "16", "--durability", "sync")
	session := func(addr string, args ...string) string {
		t.Helper()
		out, err := runTool(t, 60*time.Second, php, append(phpSessionArgs(addr), append([]string{"testdata/php_session.php"}, args...)...)...)
		if err != nil {
			t.Fatalf("php %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(out)
	}
	const sid = "tcachecrash0123456789abcdef"
	if out := session(srv.Addr, "write", sid, "survives"); out != "written" {
		t.Fatalf("write: %q", out)
	}
	srv.Kill(t)
	srv2 := testserver.Start(t, "-m", "16", "--durability", "sync", "--data-dir", srv.DataDir)
	if out := session(srv2.Addr, "read", sid); out != "value=survives" {
		t.Fatalf("read after kill -9 and restart: %q, want value=survives", out)
	}
}

// TestDiskExpiry: expired items disappear from reads at once and from disk
// after the sweeper; flush_all with and without a delay, across restarts.
func TestDiskExpiry(t *testing.T) {
	args := []string{"-m", "16", "--durability", "none", "--disk-maintenance-interval", "100ms"}
	srv := testserver.Start(t, args...)
	c := dialText(t, srv.Addr)
	for i := range 200 {
		c.send(fmt.Sprintf("set short%d 0 1 5 noreply\r\nshort\r\nset long%d 0 0 4 noreply\r\nlong\r\n", i, i))
	}
	c.send("mn\r\n")
	c.expect("MN")
	time.Sleep(2100 * time.Millisecond)
	c.send("get short0 short199 long0\r\n")
	c.expect("VALUE long0 0 4", "long", "END")
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := c.stats("")
		if statU(t, st, "tcache_disk_swept") >= 200 && statU(t, st, "curr_items") == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweeper: tcache_disk_swept %s curr_items %s after 10s", st["tcache_disk_swept"], st["curr_items"])
		}
		time.Sleep(100 * time.Millisecond)
	}

	// flush_all now: older items are gone, newer ones survive a restart.
	c.send("flush_all\r\n")
	c.expect("OK")
	c.send("get long0\r\n")
	c.expect("END")
	time.Sleep(1100 * time.Millisecond) // flush_all is per second, as memcached's
	c.send("set after 0 0 5\r\nafter\r\n")
	c.expect("STORED")
	// A delayed flush scheduled before a restart still happens after it.
	const delay = 4
	c.send("set victim 0 0 6\r\nvictim\r\n")
	c.expect("STORED")
	c.send(fmt.Sprintf("flush_all %d\r\n", delay))
	flushAt := time.Now().Add(delay * time.Second)
	c.expect("OK")
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	srv2 := testserver.Start(t, append(args, "--data-dir", srv.DataDir)...)
	c = dialText(t, srv2.Addr)
	c.send("get long0 after\r\n")
	c.expect("VALUE after 0 5", "after", "END")
	if time.Until(flushAt) > time.Second {
		c.send("get victim\r\n")
		c.expect("VALUE victim 0 6", "victim", "END")
	}
	time.Sleep(time.Until(flushAt) + 1100*time.Millisecond)
	c.send("get victim after\r\n")
	c.expect("END")
	c.send("set later 0 0 5\r\nlater\r\n")
	c.expect("STORED")
	if code := srv2.Stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	srv3 := testserver.Start(t, append(args, "--data-dir", srv.DataDir)...)
	c = dialText(t, srv3.Addr)
	c.send("get victim after later\r\n")
	c.expect("VALUE later 0 5", "later", "END")
}

// TestDiskLimit: in cache mode, writing several times the disk limit keeps
// Pebble's files near it (the oldest data dropped, counted); in persistent
// mode writes at the limit are refused and reads keep working.
func TestDiskLimit(t *testing.T) {
	const limit = 64 << 20
	size := func(k uint64) int { return diskValueSize(4, k) }
	t.Run("cache", func(t *testing.T) {
		srv := testserver.Start(t, "-m", "16", "--durability", "none", "--disk-limit", "64m", "--disk-maintenance-interval", "100ms")
		const n = 80000 // ≈ 3 × the limit
		var peak int64
		for i := 0; i < n; i += 8000 {
			pipeSet(t, srv.Addr, "cap:", 4, i, i+8000, size)
			peak = max(peak, pebbleBytes(t, srv.DataDir))
		}
		time.Sleep(500 * time.Millisecond) // let a maintenance pass finish
		final := pebbleBytes(t, srv.DataDir)
		st := dialText(t, srv.Addr).stats("")
		t.Logf("cache mode, disk_limit 64m, ~%d MiB written: pebble %d MiB at the end, peak %d MiB; tcache_disk_drops %s evictions %s extstore_bytes_used %s",
			n*2560>>20, final>>20, peak>>20, st["tcache_disk_drops"], st["evictions"], st["extstore_bytes_used"])
		if statU(t, st, "tcache_disk_drops") == 0 || statU(t, st, "evictions") == 0 {
			t.Fatalf("no drops counted")
		}
		// Slack: the memtables and WAL not yet flushed, and an epoch written
		// while the previous drop's compaction runs (docs/disk-tier.md).
		if final > limit*3/2 || peak > 2*limit {
			t.Fatalf("pebble uses %d bytes at the end (peak %d), limit %d", final, peak, limit)
		}
		// The newest items are all there.
		if m := checkAll(t, srv.Addr, "cap:", 4, n-2000, n, size); m != 0 {
			t.Fatalf("%d of the newest 2000 items missing", m)
		}
	})
	t.Run("persistent", func(t *testing.T) {
		srv := testserver.Start(t, "-m", "16", "--mode", "persistent", "--durability", "none", "--disk-limit", "64m")
		c := dialText(t, srv.Addr)
		v := string(diskValue(5, 0, 4000))
		stored, refused := 0, 0
		for i := 0; i < 40000 && refused == 0; i++ { // 40000 × 4 KB = 2.4 × the limit
			c.send(fmt.Sprintf("set p%d 0 0 %d\r\n%s\r\n", i, len(v), v))
			switch l := c.line(); l {
			case "STORED":
				stored++
			case "SERVER_ERROR out of memory storing object":
				refused++
			default:
				t.Fatalf("set p%d: %q", i, l)
			}
		}
		if refused == 0 {
			t.Fatalf("%d sets of 4 KB stored under a 64m disk limit, none refused", stored)
		}
		c.send(fmt.Sprintf("set again 0 0 %d\r\n%s\r\n", len(v), v))
		c.expect("SERVER_ERROR out of memory storing object")
		for _, i := range []int{0, stored / 2, stored - 1} {
			c.send(fmt.Sprintf("get p%d\r\n", i))
			c.expect(fmt.Sprintf("VALUE p%d 0 %d", i, len(v)), v, "END")
		}
		st := c.stats("")
		t.Logf("persistent mode, disk_limit 64m: %d items of 4 KB stored, then refused; pebble %d MiB; tcache_disk_full_errors %s",
			stored, pebbleBytes(t, srv.DataDir)>>20, st["tcache_disk_full_errors"])
		if statU(t, st, "curr_items") != uint64(stored) || statU(t, st, "evictions") != 0 {
			t.Fatalf("curr_items %s evictions %s, want %d and 0", st["curr_items"], st["evictions"], stored)
		}
	})
}

// dirDigest fingerprints every file under dir (names, sizes, contents,
// modes), to check that a refused start touched nothing.
func dirDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, _ := d.Info()
		fmt.Fprintf(h, "%s %v %d\n", p, info.Mode(), info.Size())
		if !d.IsDir() {
			if b, err := os.ReadFile(p); err == nil {
				h.Write(b)
			}
		}
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil))
}

// refusedStart runs the binary on dataDir and expects a start-up refusal:
// exit 1 with want in the log, and the pebble directory untouched.
func refusedStart(t *testing.T, dataDir, want string) {
	t.Helper()
	before := dirDigest(t, filepath.Join(dataDir, "pebble"))
	cmd := exec.Command(testserver.Binary(t), "-l", "127.0.0.1", "-p", strconv.Itoa(freeTCPPort(t)), "--data-dir", dataDir)
	out, err := runWithTimeout(t, cmd, 20*time.Second)
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 || !strings.Contains(out, want) {
		t.Fatalf("exit %d (%v), want 1 with %q; output:\n%s", code, err, want, out)
	}
	if after := dirDigest(t, filepath.Join(dataDir, "pebble")); after != before {
		t.Fatalf("the refused start modified %s", filepath.Join(dataDir, "pebble"))
	}
	t.Logf("refused: %s", lastLine(out))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func freeTCPPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestDiskRefusals: a data_dir whose store an incompatible format wrote, or
// that is not a store, or cannot be read, is refused at start with a clear
// message and exit 1, and nothing in it is modified. (A data_dir in use by
// another tcache: TestDataDirLockedAgainstSecondInstance.)
func TestDiskRefusals(t *testing.T) {
	t.Run("future format", func(t *testing.T) {
		srv := testserver.Start(t, "-m", "16")
		c := dialText(t, srv.Addr)
		c.send("set k 0 0 1\r\nv\r\n")
		c.expect("STORED")
		srv.Stop(t)
		// Rewrite the format marker as a later release would.
		db, err := pebble.Open(filepath.Join(srv.DataDir, "pebble"), &pebble.Options{Logger: quietPebble{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Set([]byte("mformat"), binary.BigEndian.AppendUint32([]byte("tcache-lsm"), 99), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		refusedStart(t, srv.DataDir, "has format tcache-lsm/99, expected tcache-lsm/")
	})
	t.Run("not a store", func(t *testing.T) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "pebble"), 0o755)
		os.WriteFile(filepath.Join(dir, "pebble", "notes.txt"), []byte("someone else's file"), 0o644)
		refusedStart(t, dir, "holds no store")
	})
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			// root reads a chmod 000 directory anyway: simulate an unreadable
			// store with a path that is not a directory.
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "pebble"), []byte("a file, not a directory"), 0o644)
			refusedStart(t, dir, "cannot open the disk tier")
			return
		}
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "pebble"), 0o755)
		os.WriteFile(filepath.Join(dir, "pebble", "x"), nil, 0o644)
		os.Chmod(filepath.Join(dir, "pebble"), 0)
		t.Cleanup(func() { os.Chmod(filepath.Join(dir, "pebble"), 0o755) })
		refusedStart(t, dir, "cannot open the disk tier")
	})
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
