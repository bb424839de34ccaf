package lsm

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

// The benchmarks in this file measure the disk tier's data path against
// the least a log-structured store has to do for the same work, on the
// same machine in the same run: a set appended to a file, a disk read as
// one pread of the value and a checksum (memcached's extstore keeps each
// item's flash location in RAM, so its read is that). The ratios between
// the two, not the absolute figures, are what docs/disk-tier-next.md uses
// to plan the next data path. Every sub-benchmark reports cpu-ns/op: the
// process's CPU time (user + system, all threads, so Pebble's flushes and
// compactions count) per operation.
//
//	go test ./lsm -run '^$' -bench 'BenchmarkPath' -benchtime 1000000x

// pathValueSizes: the overflow workload's mean value (1–4 KiB) and
// mixed-1k's.
const (
	pathReadValue  = 2560
	pathWriteValue = 1024
)

// BenchmarkPathWrite: one set of a 1 KiB value, 100 000 keys overwritten
// as in mixed-1k. pebble is lsm's Commit (durability interval: the WAL is
// written, not synced, per commit); journal appends the same record to
// lsm's journal.
func BenchmarkPathWrite(b *testing.B) {
	value := randomValue("w", pathWriteValue)
	// pebble-pointer is the same commit with a 24-byte value: what Pebble
	// would still cost per set if it held only a value's location.
	for _, c := range []struct {
		name  string
		value []byte
	}{{"pebble", value}, {"pebble-pointer", value[:24]}} {
		b.Run(c.name, func(b *testing.B) { benchPathPebbleWrite(b, c.value) })
	}
	b.Run("pebble-ingest", benchPathIngest)
	// journal is lsm's journal (journal.go) writing whenever 256 KiB are
	// buffered; journal-write-each writes after every append, as a commit
	// with nobody else waiting does. The segment rolls every 256 MiB and
	// the one before is removed, so the files stay bounded.
	for _, each := range []bool{false, true} {
		name := "journal"
		if each {
			name = "journal-write-each"
		}
		b.Run(name, func(b *testing.B) { benchPathJournal(b, value, each) })
	}
	for _, x := range pathWriteExtra {
		b.Run(x.name, func(b *testing.B) { x.fn(b, value) })
	}
}

// pathWriteExtra are BenchmarkPathWrite's platform-specific variants.
var pathWriteExtra []struct {
	name string
	fn   func(*testing.B, []byte)
}

func benchPathJournal(b *testing.B, value []byte, writeEach bool) {
	j, err := openJournal(vfs.Default, b.TempDir(), 1, true, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	key := make([]byte, 0, 32)
	rec := (&recordCodec{min: -1}).appendRecord(nil, &Record{Value: value})
	var seq uint64
	cpu := startCPU(b)
	for b.Loop() {
		seq++
		key = fmt.Appendf(key[:0], "mixed:%d", seq%100000)
		loc, err := j.Append(seq, key, rec)
		if err == nil && writeEach {
			_, err = j.Write()
		}
		if err != nil {
			b.Fatal(err)
		}
		if loc.Off > 256<<20 {
			prev := j.Segment()
			if err := j.Roll(prev+1, 1); err != nil {
				b.Fatal(err)
			}
			if err := j.Remove(prev); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := j.Write(); err != nil {
		b.Fatal(err)
	}
	cpu.report()
}

func benchPathPebbleWrite(b *testing.B, value []byte) {
	o := testOptions(vfs.Default, clock.Real{})
	o.Dir = b.TempDir()
	o.Durability = DurabilityInterval
	o.MemTableSize = 64 << 20 // -m 1024's memtables
	o.BlockCacheSize = 256 << 20
	db := mustOpen(b, o)
	defer db.Close()
	batch := db.NewBatch()
	rec := Record{Value: value}
	key := make([]byte, 0, 32)
	i := 0
	cpu := startCPU(b)
	for b.Loop() {
		key = fmt.Appendf(key[:0], "mixed:%d", i%100000)
		i++
		batch.Put(key, &rec, Location{Known: true})
		if err := db.Commit(batch); err != nil {
			b.Fatal(err)
		}
		batch.Reset()
	}
	settle(b, db) // the flushes and compactions the loop caused count
	cpu.report()
}

// benchPathIngest: a location per set (a 24-byte value) given to Pebble
// not by a commit but in a sorted sstable of 100 000 keys that is
// ingested (no WAL, no memtable), as an index written once per sealed
// journal segment would be; rounds overwrite the same keys, so the
// compactions that merge them are counted.
func benchPathIngest(b *testing.B) {
	const keys = 100000
	o := testOptions(vfs.Default, clock.Real{})
	o.Dir = b.TempDir()
	o.Durability = DurabilityInterval
	o.MemTableSize = 64 << 20
	o.BlockCacheSize = 256 << 20
	db := mustOpen(b, o)
	defer db.Close()
	po := pebbleOptions(&o, vfs.Default, nil, nil, nil)
	wo := po.MakeWriterOptions(0, db.pdb.TableFormat())
	value := randomValue("i", 24)
	dir := b.TempDir()
	var w *sstable.Writer
	var path string
	n, files := 0, 0
	ingest := func() {
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		if err := db.pdb.Ingest(context.Background(), []string{path}); err != nil {
			b.Fatal(err)
		}
		w = nil
	}
	key := make([]byte, 0, 32)
	cpu := startCPU(b)
	for b.Loop() {
		if w == nil {
			files++
			path = filepath.Join(dir, fmt.Sprintf("%d.sst", files))
			f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
			if err != nil {
				b.Fatal(err)
			}
			w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), wo)
		}
		key = fmt.Appendf(key[:0], "zmixed:%08d", n%keys)
		if err := w.Set(key, value); err != nil {
			b.Fatal(err)
		}
		if n++; n%keys == 0 {
			ingest()
		}
	}
	if w != nil {
		ingest()
	}
	waitCompactions(db)
	cpu.report()
}

// BenchmarkPathRead: one read of a random item of 100 000 values of
// 2.5 KiB (250 MiB, in the page cache) through a 16 MiB block cache, as a
// -m 64 server reads its disk tier. pebble is lsm's Get (location hints
// on, as in the server); pread reads the value at a location held in RAM
// and verifies its CRC-32C, as extstore does.
func BenchmarkPathRead(b *testing.B) {
	const n = 100000
	pool := randomValue("r", 1<<20)
	valueOf := func(i int) []byte {
		off := (i * 7919) % (len(pool) - pathReadValue)
		return pool[off : off+pathReadValue]
	}
	b.Run("pebble", func(b *testing.B) {
		o := testOptions(vfs.Default, clock.Real{})
		o.Dir = b.TempDir()
		o.Durability = DurabilityNone
		o.MemTableSize = 4 << 20
		o.BlockCacheSize = 16 << 20
		o.IndexMemory = 2 << 20
		db := mustOpen(b, o)
		defer db.Close()
		batch := db.NewBatch()
		for i := range n {
			rec := Record{Value: valueOf(i)}
			batch.Put(fmt.Appendf(nil, "over:%d", i), &rec, Location{Known: true})
			if err := db.Commit(batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
		settle(b, db)
		rng := rand.New(rand.NewPCG(1, 2))
		key, dst := make([]byte, 0, 32), make([]byte, 0, 8<<10)
		cpu := startCPU(b)
		for b.Loop() {
			i := rng.IntN(n)
			key = fmt.Appendf(key[:0], "over:%d", i)
			r, err := db.Get(dst[:0], key)
			if err != nil || !r.Found || len(r.Value) != pathReadValue {
				b.Fatalf("get %s: %v found=%v", key, err, r.Found)
			}
		}
		cpu.report()
	})
	b.Run("pread", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "values"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		type loc struct{ off, n int64 }
		locs := make([]loc, n)
		var off int64
		for i := range n {
			v := valueOf(i)
			rec := binary.LittleEndian.AppendUint32(append([]byte(nil), v...), crc32.Checksum(v, castagnoli))
			if _, err := f.Write(rec); err != nil {
				b.Fatal(err)
			}
			locs[i] = loc{off, int64(len(rec))}
			off += int64(len(rec))
		}
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 8<<10)
		cpu := startCPU(b)
		for b.Loop() {
			l := locs[rng.IntN(n)]
			p := buf[:l.n]
			if _, err := f.ReadAt(p, l.off); err != nil {
				b.Fatal(err)
			}
			v := p[:len(p)-4]
			if crc32.Checksum(v, castagnoli) != binary.LittleEndian.Uint32(p[len(v):]) {
				b.Fatal("bad record")
			}
		}
		cpu.report()
	})
}

// settle flushes the memtables and waits for the compactions that follow.
func settle(b *testing.B, db *DB) {
	if err := db.pdb.Flush(); err != nil {
		b.Fatal(err)
	}
	waitCompactions(db)
}

// waitCompactions waits (bounded) until Pebble has had no compaction
// running for three polls in a row: the work the benchmark caused is done
// (a debt below the compaction triggers is never paid).
func waitCompactions(db *DB) {
	quiet := 0
	for range 600 {
		if db.pdb.Metrics().Compact.NumInProgress == 0 {
			if quiet++; quiet == 3 {
				return
			}
		} else {
			quiet = 0
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpuMeter reports the process's CPU time per benchmark operation.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
}

func startCPU(b *testing.B) cpuMeter { return cpuMeter{b, processCPU(b)} }

func (m cpuMeter) report() {
	m.b.ReportMetric(float64(processCPU(m.b)-m.start)/float64(m.b.N), "cpu-ns/op")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
