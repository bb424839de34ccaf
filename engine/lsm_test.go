package engine

import (
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

// Tests and benchmarks over the real disk tier (Pebble in a temp dir).

func openDisk(tb testing.TB, dir string, clk clock.Clock, dur lsm.Durability) *lsm.DB {
	tb.Helper()
	db, err := lsm.Open(lsm.Options{Dir: dir, Durability: dur, MaintenanceInterval: -1, Clock: clk, DiskLimit: 1 << 30,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return db
}

func newLSMEngine(tb testing.TB, clk clock.Clock, db *lsm.DB, memory int64) *Engine {
	tb.Helper()
	e, err := New(Options{MemoryLimit: memory, MaxItemSize: 64 << 10, Clock: clk, CrawlerInterval: -1, Disk: db})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func TestLSMRestart(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(testStart)
	db := openDisk(t, dir, clk, lsm.DurabilityNone)
	e := newLSMEngine(t, clk, db, 1<<20)
	var maxCAS uint64
	for i := range 500 {
		k := []byte("k" + strconv.Itoa(i))
		exp := int64(0)
		if i%2 == 1 {
			exp = 100
		}
		st, cas := e.Store(k, []byte("v"+strconv.Itoa(i)), &StoreArgs{Flags: uint32(i), Exptime: exp})
		if st != OK {
			t.Fatal(st)
		}
		maxCAS = max(maxCAS, cas)
	}
	e.Store([]byte("short"), []byte("x"), &StoreArgs{Exptime: 5})
	e.FlushAll(3600)
	e.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	clk.Advance(10 * time.Second)
	db = openDisk(t, dir, clk, lsm.DurabilityNone)
	defer db.Close()
	e = newLSMEngine(t, clk, db, 1<<20)
	defer e.Close()
	if _, _, ok := e.Get(nil, []byte("short"), &GetArgs{}); ok {
		t.Fatal("expired item returned after restart")
	}
	for i := range 500 {
		k := []byte("k" + strconv.Itoa(i))
		v, info, ok := e.Get(nil, k, &GetArgs{})
		wantExp := int64(0)
		if i%2 == 1 {
			wantExp = testStart.Unix() + 100
		}
		if !ok || string(v) != "v"+strconv.Itoa(i) || info.Flags != uint32(i) || info.Exptime != wantExp || info.CAS == 0 || info.CAS > maxCAS {
			t.Fatalf("%s: %q %+v %v", k, v, info, ok)
		}
	}
	if _, cas := e.Store([]byte("new"), []byte("n"), &StoreArgs{}); cas <= maxCAS {
		t.Fatalf("CAS %d after restart not above %d", cas, maxCAS)
	}
	clk.Advance(time.Hour)
	if _, _, ok := e.Get(nil, []byte("k2"), &GetArgs{}); ok {
		t.Fatal("k2 survived the delayed flush_all across the restart")
	}
}

func TestLSMOverflow(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	clk := clock.NewFake(testStart)
	db := openDisk(t, t.TempDir(), clk, lsm.DurabilityNone)
	defer db.Close()
	e := newLSMEngine(t, clk, db, 1<<20)
	defer e.Close()
	testOverflow(t, e, 1<<20)
}

func benchLSM(b *testing.B, dur lsm.Durability) (*Engine, [][]byte, []byte) {
	clk := clock.Real{}
	db := openDisk(b, b.TempDir(), clk, dur)
	e := newLSMEngine(b, clk, db, 256<<20)
	b.Cleanup(func() { e.Close(); db.Close() })
	keys := make([][]byte, benchKeys)
	value := make([]byte, 100)
	for i := range keys {
		keys[i] = []byte("key:" + strconv.Itoa(i))
	}
	return e, keys, value
}

func BenchmarkDiskGetHitRAM(b *testing.B) {
	e, keys, value := benchLSM(b, lsm.DurabilityNone)
	for _, k := range keys[:10000] {
		e.Store(k, value, &StoreArgs{})
	}
	dst := make([]byte, 0, 256)
	a := &GetArgs{}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst, _, _ = e.Get(dst[:0], keys[i%10000], a)
		i++
	}
}

func BenchmarkDiskGetMissDiskHit(b *testing.B) {
	clk := clock.Real{}
	dir := b.TempDir()
	db := openDisk(b, dir, clk, lsm.DurabilityNone)
	e := newLSMEngine(b, clk, db, 1<<20)
	value := make([]byte, 100)
	keys := make([][]byte, benchKeys)
	for i := range keys {
		keys[i] = []byte("key:" + strconv.Itoa(i))
		e.Store(keys[i], value, &StoreArgs{})
	}
	e.Close() // a fresh engine: RAM empty, every read goes to disk
	e2, err := New(Options{MemoryLimit: 256 << 10, MaxItemSize: 16 << 10, Clock: clk, CrawlerInterval: -1, Disk: db})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e2.Close(); db.Close() })
	dst := make([]byte, 0, 256)
	a := &GetArgs{NoBump: true}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst, _, _ = e2.Get(dst[:0], keys[(i*7919)%benchKeys], a)
		i++
	}
}

func benchDiskSet(b *testing.B, dur lsm.Durability) {
	e, keys, value := benchLSM(b, dur)
	a := &StoreArgs{}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if st, _ := e.Store(keys[i%benchKeys], value, a); st != OK {
			b.Fatal(st)
		}
		i++
	}
}

func BenchmarkDiskSetNone(b *testing.B)     { benchDiskSet(b, lsm.DurabilityNone) }
func BenchmarkDiskSetInterval(b *testing.B) { benchDiskSet(b, lsm.DurabilityInterval) }
func BenchmarkDiskSetSync(b *testing.B)     { benchDiskSet(b, lsm.DurabilitySync) }

// BenchmarkDiskStore is the engine's set path over a real lsm in a temp
// dir: every durability, 100-byte and 1 KiB incompressible values (random
// bytes, as tcache bench sends by default), overwrites of RAM-resident keys
// by one writer and by 16 goroutines per GOMAXPROCS (the server's
// connections). It reports the lsm commits per set: below 1 when commits
// are grouped.
func BenchmarkDiskStore(b *testing.B) {
	for _, dur := range []lsm.Durability{lsm.DurabilityNone, lsm.DurabilityInterval, lsm.DurabilitySync} {
		for _, size := range []int{100, 1024} {
			for _, par := range []bool{false, true} {
				name := dur.String() + "/" + strconv.Itoa(size)
				if par {
					name += "/parallel"
				} else {
					name += "/serial"
				}
				b.Run(name, func(b *testing.B) { benchDiskStore(b, dur, size, par) })
			}
		}
	}
}

func benchDiskStore(b *testing.B, dur lsm.Durability, size int, parallel bool) {
	e, keys, _ := benchLSM(b, dur)
	value := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(value)
	a := &StoreArgs{}
	for _, k := range keys[:10000] { // RAM-resident: overwrites know the location
		e.Store(k, value, a)
	}
	db := e.opts.Disk
	c0 := db.Stats().Commits
	cpu0 := processCPU()
	b.ReportAllocs()
	if !parallel {
		i := 0
		for b.Loop() {
			if st, _ := e.Store(keys[i%10000], value, a); st != OK {
				b.Fatal(st)
			}
			i++
		}
	} else {
		var next atomic.Uint64
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			a := &StoreArgs{}
			i := int(next.Add(7919))
			for pb.Next() {
				if st, _ := e.Store(keys[i%10000], value, a); st != OK {
					b.Error(st)
					return
				}
				i++
			}
		})
	}
	b.ReportMetric(float64(db.Stats().Commits-c0)/float64(b.N), "commits/op")
	// The whole process's CPU (the engine, Pebble's flushes and
	// compactions): on a loaded machine a steadier figure than ns/op.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the user+system CPU time of this process, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
