package lsm

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

func benchDB(b *testing.B, d Durability) *DB {
	o := testOptions(vfs.Default, clock.Real{})
	o.Dir = b.TempDir()
	o.Durability = d
	o.MemTableSize = 4 << 20
	o.BlockCacheSize = 8 << 20
	db := mustOpen(b, o)
	b.Cleanup(func() { _ = db.Close() })
	return db
}

func BenchmarkPutCommit(b *testing.B) {
	for _, d := range []Durability{DurabilitySync, DurabilityInterval, DurabilityNone} {
		b.Run(d.String(), func(b *testing.B) {
			db := benchDB(b, d)
			batch := db.NewBatch()
			rec := Record{Value: randomValue("v", 100)}
			key := make([]byte, 0, 32)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				key = fmt.Appendf(key[:0], "key-%d", i%100000)
				i++
				batch.Put(key, &rec, Location{Known: true})
				if err := db.Commit(batch); err != nil {
					b.Fatal(err)
				}
				batch.Reset()
			}
		})
	}
}

// Parallel sync commits: group commit at work.
func BenchmarkPutCommitSyncParallel(b *testing.B) {
	db := benchDB(b, DurabilitySync)
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		batch := db.NewBatch()
		rec := Record{Value: randomValue("v", 100)}
		i := 0
		for pb.Next() {
			batch.Put(fmt.Appendf(nil, "k-%p-%d", batch, i), &rec, Location{Known: true})
			i++
			if err := db.Commit(batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	})
	b.ReportMetric(float64(db.Stats().Fsyncs)/float64(b.N), "fsyncs/op")
}

func BenchmarkGet(b *testing.B) {
	db := benchDB(b, DurabilityNone)
	batch := db.NewBatch()
	for i := range 10000 {
		rec := Record{Value: randomValue(fmt.Sprint(i), 100)}
		batch.Put(fmt.Appendf(nil, "key-%d", i), &rec, Location{Known: true})
		if err := db.Commit(batch); err != nil {
			b.Fatal(err)
		}
		batch.Reset()
	}
	b.Run("hit", func(b *testing.B) {
		key, dst := []byte("key-1234"), make([]byte, 0, 256)
		b.ReportAllocs()
		for b.Loop() {
			r, err := db.Get(dst[:0], key)
			if err != nil || !r.Found {
				b.Fatal("miss")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		key, dst := []byte("absent-1234"), make([]byte, 0, 256)
		b.ReportAllocs()
		for b.Loop() {
			if r, err := db.Get(dst[:0], key); err != nil || r.Found {
				b.Fatal("hit")
			}
		}
	})
}

func TestGetAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	db := mustOpen(t, testOptions(vfs.NewMem(), clock.NewFake(testStart)))
	defer db.Close()
	put(t, db, "key", "value", 0, 1)
	dst := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { _, _ = db.Get(dst[:0], []byte("key")) }); n != 0 {
		t.Errorf("Get hit: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = db.Get(dst[:0], []byte("nokey")) }); n != 0 {
		t.Errorf("Get miss: %v allocations", n)
	}
}

// BenchmarkPutUnknownPrev is the overflow prefill at the lsm: new keys
// with 1–4 KiB random values and no prev Location (the engine's plain set
// of a key that is not in RAM), so every Put looks the key up first; with
// the block cache and memtables of a -m 64 server.
func BenchmarkPutUnknownPrev(b *testing.B) {
	for _, cache := range []int64{8 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("cache=%dMiB", cache>>20), func(b *testing.B) { benchPutUnknownPrev(b, cache) })
	}
}

func benchPutUnknownPrev(b *testing.B, cache int64) {
	o := testOptions(vfs.Default, clock.Real{})
	o.Dir = b.TempDir()
	o.Durability = DurabilityInterval
	o.MemTableSize = 4 << 20
	o.BlockCacheSize = cache
	db := mustOpen(b, o)
	b.Cleanup(func() { _ = db.Close() })
	batch := db.NewBatch()
	pool := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range pool {
		pool[i] = byte(rng.Uint32())
	}
	key := make([]byte, 0, 32)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		key = fmt.Appendf(key[:0], "over:%d", i)
		i++
		n := 1024 + rng.IntN(3073)
		off := rng.IntN(len(pool) - n)
		rec := Record{Value: pool[off : off+n]}
		batch.Put(key, &rec, Location{})
		if err := db.Commit(batch); err != nil {
			b.Fatal(err)
		}
		batch.Reset()
	}
}

// BenchmarkReopenAfterCrash is the open of a store that died with
// unindexed journal frames: 100 000 indexed keys of 1 KiB, then 6 000
// overwrites of random keys whose pending index the crash lost (the shape
// of the restart workload's kill -9). An op is one Open of a crashed copy
// with a cold block cache, re-index included.
func BenchmarkReopenAfterCrash(b *testing.B) {
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.Real{})
	o.JournalMin = 1
	o.MemTableSize = 16 << 20
	o.BlockCacheSize = 8 << 20
	o.DiskLimit = 1 << 30
	if testing.Verbose() {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	db := mustOpen(b, o)
	r := rand.New(rand.NewPCG(1, 2))
	rec := Record{Value: randomValue("v", 1024)}
	batch := db.NewBatch()
	write := func(i int) {
		rec.Version = Version{HLC: uint64(i + 1), Node: db.NodeID()}
		batch.Put(fmt.Appendf(nil, "key-%d", i%100000), &rec, Location{})
		if err := db.Commit(batch); err != nil {
			b.Fatal(err)
		}
		batch.Reset()
	}
	for i := range 100000 {
		write(i)
	}
	settleIndex(b, db)
	for i := range 6000 {
		write(100000 + i + r.IntN(100000))
	}
	syncNow(db)
	// The crash happens here; the live store is closed so that its
	// compactions do not share the CPU with the opens measured.
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	_ = db.Close()
	var reindex time.Duration
	for b.Loop() {
		co := o
		co.FS = crashed.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
		cdb := mustOpen(b, co)
		b.StopTimer()
		if cdb.reindexTook == 0 {
			b.Fatal("nothing was re-indexed")
		}
		reindex += cdb.reindexTook
		_ = cdb.Close()
		runtime.GC()
		b.StartTimer()
	}
	b.ReportMetric(float64(reindex.Microseconds())/1000/float64(b.N), "reindex-ms/op")
}

// BenchmarkKeydirSweep sweeps a keydir of 4 Mi items that have all
// expired, with the sweeper walking a shard in chunks of sweepChunk slots
// ("chunked") and whole under one hold of the commit mutex
// ("whole-shard", as before the chunks). It reports the sweep's cost per
// item (sweep-ns/item) and the longest the sweeper held the commit mutex
// at once (max-hold-µs): every commit waits that long at worst. A whole
// shard's hold grows with the keys (a 256th of them); a chunk's does
// not. Run it with -benchtime 1x; it writes about 300 MB under the
// temporary directory.
func BenchmarkKeydirSweep(b *testing.B) {
	const keys = 4 << 20
	for _, tc := range []struct {
		name  string
		chunk int
	}{{"chunked", sweepChunk}, {"whole-shard", 1 << 30}} {
		b.Run(tc.name, func(b *testing.B) {
			defer func(n int) { sweepChunk = n }(sweepChunk)
			sweepChunk = tc.chunk
			clk := clock.NewFake(testStart)
			o := testOptions(vfs.Default, clk)
			o.Dir = b.TempDir()
			o.DiskLimit = 16 << 30
			o.IndexMemory = 1 << 30
			o.MemTableSize = 32 << 20
			db := mustOpen(b, o)
			defer db.Close()
			batch := db.NewBatch()
			val := randomValue("v", 20)
			exp := testStart.Unix() + 10
			for i := range keys {
				rec := Record{Value: val, Exptime: exp}
				batch.Put(fmt.Appendf(nil, "key-%d", i), &rec, Location{Known: true})
				if i%256 == 255 {
					mustCommit(b, db, batch)
					batch.Reset()
				}
			}
			clk.Advance(time.Minute)
			settleIndex(b, db)
			for b.Loop() {
				db.sweepHold = 0
				began := time.Now()
				db.sweepKeydir(clk.Now().Unix(), 0)
				b.ReportMetric(float64(time.Since(began).Nanoseconds())/keys, "sweep-ns/item")
				b.ReportMetric(float64(db.sweepHold.Microseconds()), "max-hold-µs")
			}
			if st := db.Stats(); st.Swept < keys {
				b.Fatalf("swept %d of %d expired items", st.Swept, keys)
			}
		})
	}
}
