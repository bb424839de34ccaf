package lsm

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/tcache/tcache/internal/clock"
)

// Concurrent committers get gap-free, increasing sequence numbers; after a
// reopen every log entry's data is present.
func TestConcurrentCommitLog(t *testing.T) {
	for _, d := range []Durability{DurabilitySync, DurabilityInterval, DurabilityNone} {
		t.Run(d.String(), func(t *testing.T) {
			fs := vfs.NewMem()
			o := testOptions(fs, clock.NewFake(testStart))
			o.Durability = d
			db := mustOpen(t, o)
			const writers, each = 8, 100
			var wg sync.WaitGroup
			var hlc atomic.Uint64
			for w := range writers {
				wg.Go(func() {
					b := db.NewBatch()
					for i := range each {
						rec := Record{Value: fmt.Appendf(nil, "v%d-%d", w, i), Version: Version{HLC: hlc.Add(1), Node: 1}}
						b.Put(fmt.Appendf(nil, "w%d-%d", w, i), &rec, Location{Known: true})
						if err := db.Commit(b); err != nil {
							t.Error(err)
							return
						}
						b.Reset()
					}
				})
			}
			wg.Wait()
			db = reopen(t, db, o)
			want := uint64(1)
			err := db.ReadLog(1, func(seq uint64, e LogEntry) bool {
				if seq != want {
					t.Fatalf("seq %d, want %d", seq, want)
				}
				want++
				r, err := db.Get(nil, e.Key)
				if err != nil || !r.Found || r.Version != e.Version {
					t.Fatalf("entry %d %q: record %+v %v", seq, e.Key, r, err)
				}
				return true
			})
			if err != nil || want != writers*each+1 {
				t.Fatalf("read log: %v, %d entries", err, want-1)
			}
			if s := db.Stats(); s.Items != writers*each {
				t.Fatalf("items %d", s.Items)
			}
		})
	}
}

// Concurrent sync committers share WAL fsyncs (group commit), also with
// one P (tcache -t 1), where Pebble's WAL writer alone ran one fsync per
// commit (groupsync.go).
func TestGroupCommit(t *testing.T) {
	for _, procs := range []int{1, runtime.GOMAXPROCS(0)} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			testGroupCommit(t)
		})
	}
}

func testGroupCommit(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(vfs.Default, clock.Real{})
	o.Dir = dir
	o.Durability = DurabilitySync
	db := mustOpen(t, o)
	defer db.Close()
	before := db.Stats().Fsyncs
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			b := db.NewBatch()
			for i := range each {
				rec := Record{Value: []byte("x")}
				b.Put(fmt.Appendf(nil, "%d-%d", w, i), &rec, Location{Known: true})
				if err := db.Commit(b); err != nil {
					t.Error(err)
				}
				b.Reset()
			}
		})
	}
	wg.Wait()
	fsyncs := db.Stats().Fsyncs - before
	t.Logf("%d sync commits, %d WAL fsyncs", writers*each, fsyncs)
	if fsyncs == 0 || fsyncs >= writers*each*3/4 {
		t.Fatalf("%d fsyncs for %d sync commits: no group commit", fsyncs, writers*each)
	}
}

// With sync durability every committed batch survives a crash, whatever
// part of the unsynced data the crash keeps: small records and large ones
// (blob files; sync durability keeps them out of the journal).
func TestCrashSync(t *testing.T) {
	for _, size := range []int{100, 1000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testCrashSync(t, size) })
	}
}

func testCrashSync(t *testing.T, size int) {
	for round := range 5 {
		fs := vfs.NewCrashableMem()
		o := testOptions(fs, clock.NewFake(testStart))
		o.Durability = DurabilitySync
		db := mustOpen(t, o)
		var committed atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		acked := make([]atomic.Bool, 4000)
		for w := range 4 {
			wg.Go(func() {
				b := db.NewBatch()
				for i := w; i < len(acked); i += 4 {
					select {
					case <-stop:
						return
					default:
					}
					rec := Record{Value: randomValue(fmt.Sprint(i), size)}
					b.Put(fmt.Appendf(nil, "k%d", i), &rec, Location{Known: true})
					if err := db.Commit(b); err != nil {
						return
					}
					acked[i].Store(true)
					committed.Add(1)
					b.Reset()
				}
			})
		}
		for committed.Load() < 200 {
			runtimeGosched()
		}
		var snapshot []bool
		for i := range acked {
			snapshot = append(snapshot, acked[i].Load())
		}
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(round), 1))})
		close(stop)
		wg.Wait()
		_ = db.Close()
		o.FS = crashed
		db = mustOpen(t, o)
		lost := 0
		for i, ok := range snapshot {
			if !ok {
				continue
			}
			r, err := db.Get(nil, fmt.Appendf(nil, "k%d", i))
			if err != nil || !r.Found || string(r.Value) != string(randomValue(fmt.Sprint(i), size)) {
				lost++
			}
		}
		// The log is gap-free after the crash.
		want := db.Stats().LogFirst
		_ = db.ReadLog(want, func(seq uint64, e LogEntry) bool {
			if seq != want {
				t.Errorf("log gap at %d (want %d)", seq, want)
				return false
			}
			want++
			return true
		})
		_ = db.Close()
		if lost > 0 {
			t.Fatalf("round %d: %d acknowledged writes lost", round, lost)
		}
	}
}

// With no WAL, a clean Close loses nothing.
func TestCloseNone(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.Durability = DurabilityNone
	db := mustOpen(t, o)
	for i := range 500 {
		put(t, db, fmt.Sprint(i), fmt.Sprint(i), 0, uint64(i))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	o.FS = fs.CrashClone(vfs.CrashCloneCfg{}) // only synced data
	db = mustOpen(t, o)
	defer db.Close()
	for i := range 500 {
		if v, ok := get(t, db, fmt.Sprint(i)); !ok || v != fmt.Sprint(i) {
			t.Fatalf("%d: %q %v", i, v, ok)
		}
	}
}

// A WAL write error (ENOSPC) fails the commit with ErrFailed, does not
// exit, keeps reads working, and everything committed before survives.
func TestWriteErrors(t *testing.T) {
	for _, c := range []struct {
		d       Durability
		journal bool // a journal store, the fault in the journal (else a Pebble store, the fault in Pebble's WAL)
	}{{DurabilitySync, false}, {DurabilityInterval, false}, {DurabilitySync, true}} {
		t.Run(fmt.Sprintf("%s/journal=%v", c.d, c.journal), func(t *testing.T) {
			d := c.d
			mem := vfs.NewCrashableMem()
			var on atomic.Bool
			suffix := ".log"
			if c.journal {
				suffix = journalSuffix
			}
			o := testOptions(errorfs.Wrap(mem, enospcWrites(&on, suffix)), clock.NewFake(testStart))
			o.Durability = d
			if !c.journal {
				o.JournalMin = -1
			}
			db := mustOpen(t, o)
			for i := range 100 {
				put(t, db, fmt.Sprint(i), "before", 0, uint64(i+1))
			}
			if d == DurabilityInterval {
				db.syncWAL()
			}
			on.Store(true)
			var err error
			for i := 0; i < 10 && err == nil; i++ {
				b := db.NewBatch()
				rec := Record{Value: []byte("after")}
				b.Put([]byte("new"), &rec, Location{})
				err = db.Commit(b)
				if err == nil && d == DurabilityInterval {
					syncNow(db)
				}
			}
			if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("commit after ENOSPC: %v", err)
			}
			b := db.NewBatch()
			rec := Record{Value: []byte("x")}
			b.Put([]byte("later"), &rec, Location{Known: true})
			if err := db.Commit(b); !errors.Is(err, ErrFailed) {
				t.Fatalf("commit on a failed DB: %v", err)
			}
			if v, ok := get(t, db, "7"); !ok || v != "before" {
				t.Fatalf("read after failure: %q %v", v, ok)
			}
			_ = db.Close()
			on.Store(false)
			o.FS = mem.CrashClone(vfs.CrashCloneCfg{})
			db = mustOpen(t, o)
			defer db.Close()
			for i := range 100 {
				if v, ok := get(t, db, fmt.Sprint(i)); !ok || v != "before" {
					t.Fatalf("%d after reopen: %q %v", i, v, ok)
				}
			}
			put(t, db, "again", "ok", 0, 1000)
		})
	}
}

// A directory of another format is refused, untouched.
func TestIncompatible(t *testing.T) {
	fs := vfs.NewMem()
	o := testOptions(fs, clock.NewFake(testStart))
	db := mustOpen(t, o)
	b := db.pdb.NewBatch()
	_ = b.Set(metaFormat, encodeFormat(99), nil)
	_ = db.pdb.Apply(b, nil)
	_ = db.Close()
	before, _ := fs.List("/db")
	slices.Sort(before)
	_, err := Open(o)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), fmt.Sprintf("format tcache-lsm/99, expected tcache-lsm/%d", formatVersion)) {
		t.Fatalf("open: %v", err)
	}
	after, _ := fs.List("/db")
	slices.Sort(after)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("files changed: %v → %v", before, after)
	}
	// Something that is not a store at all.
	_ = fs.MkdirAll("/other", 0o755)
	f, _ := fs.Create("/other/notes.txt", vfs.WriteCategoryUnspecified)
	_ = f.Close()
	o.Dir = "/other"
	if _, err := Open(o); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("open of a foreign directory: %v", err)
	}
}

// A real directory that holds no store is refused and left exactly as it
// was: listing, file contents, and the directory's mtime (no LOCK file).
func TestIncompatibleUntouched(t *testing.T) {
	for _, files := range [][]string{{"notes.txt"}, {"CURRENT"}, {"000001.log", "MANIFEST-000001"}} {
		dir := t.TempDir()
		for _, name := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("not a store: "+name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		old := time.Now().Add(-time.Hour).Truncate(time.Second)
		if err := os.Chtimes(dir, old, old); err != nil {
			t.Fatal(err)
		}
		snapshot := func() string {
			st, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			out := st.ModTime().String()
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
				out += fmt.Sprintf("\n%s %q", e.Name(), b)
			}
			return out
		}
		before := snapshot()
		o := testOptions(vfs.Default, clock.Real{})
		o.Dir = dir
		if db, err := Open(o); err == nil {
			db.Close()
			t.Fatalf("%v: opened", files)
		} else if !errors.Is(err, ErrIncompatible) {
			t.Logf("%v: refused with %v", files, err)
		}
		if after := snapshot(); after != before {
			t.Fatalf("%v: directory changed:\n%s\n→\n%s", files, before, after)
		}
	}
}

// The disk usage counts the values in the journal, and in blob files, across
// a restart (Pebble v2.1.7 forgets the blob files present at open in its
// own figure).
func TestUsageAfterRestart(t *testing.T) {
	for _, mode := range []Mode{ModeCache, ModePersistent} {
		t.Run(mode.String(), func(t *testing.T) { testUsageAfterRestart(t, mode) })
	}
}

func testUsageAfterRestart(t *testing.T, mode Mode) {
	o := testOptions(vfs.Default, clock.Real{})
	o.Mode = mode
	o.Dir = t.TempDir()
	o.MemTableSize = 1 << 20
	db := mustOpen(t, o)
	rng := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, 2048)
	for i := range 4000 { // 8 MiB of incompressible values: blob files
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		put(t, db, fmt.Sprintf("key-%d", i), string(value), 0, uint64(i+1))
	}
	db = reopen(t, db, o)
	var onDisk int64
	_ = filepath.WalkDir(o.Dir, func(_ string, e fs.DirEntry, err error) error {
		if fi, ierr := e.Info(); err == nil && ierr == nil && !e.IsDir() {
			onDisk += fi.Size()
		}
		return nil
	})
	used := int64(db.Stats().BytesUsed)
	if onDisk < 8<<20 || used < onDisk*8/10 || used > onDisk*12/10 {
		t.Fatalf("after a restart BytesUsed = %d, the directory holds %d bytes", used, onDisk)
	}
}

// A second Open of the same directory is refused by the lock.
func TestLocked(t *testing.T) {
	o := testOptions(vfs.Default, clock.Real{})
	o.Dir = t.TempDir()
	db := mustOpen(t, o)
	defer db.Close()
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
}

// A record with a bad checksum is a counted miss, never served, in
// Pebble (a store that keeps its records there) and in the journal.
func TestCorruptRecord(t *testing.T) {
	for _, journal := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal=%v", journal), func(t *testing.T) {
			fs := vfs.NewMem()
			o := testOptions(fs, clock.NewFake(testStart))
			if !journal {
				o.JournalMin = -1
			}
			db := mustOpen(t, o)
			defer db.Close()
			w := put(t, db, "a", "value", 0, 1)
			if journal {
				syncNow(db)
				e, _ := db.kd.get(db.kd.hash([]byte("a")))
				f, err := fs.OpenReadWrite(fs.PathJoin(o.Dir, journalDirName, segmentName(e.loc.Segment)), vfs.WriteCategoryUnspecified)
				if err != nil {
					t.Fatal(err)
				}
				// The last byte of the record, before the frame's CRC.
				at := e.loc.Off + int64(e.loc.Len) - 5
				b := []byte{0}
				if _, err := f.ReadAt(b, at); err != nil {
					t.Fatal(err)
				}
				b[0] ^= 1
				if _, err := f.WriteAt(b, at); err != nil {
					t.Fatal(err)
				}
				_ = f.Close()
			} else {
				raw, closer, err := db.pdb.Get(appendDataKey(nil, w.Epoch, []byte("a")))
				if err != nil {
					t.Fatal(err)
				}
				bad := append([]byte(nil), raw...)
				closer.Close()
				bad[recordHeaderLen] ^= 1
				_ = db.pdb.Set(appendDataKey(nil, w.Epoch, []byte("a")), bad, nil)
			}
			r, err := db.Get(nil, []byte("a"))
			if !errors.Is(err, ErrCorrupt) || r.Found || !r.Where.Present {
				t.Fatalf("get corrupt: %+v %v", r, err)
			}
			if db.Stats().BadCRC != 1 {
				t.Fatal("BadCRC not counted")
			}
			// Overwriting with the Where removes it and keeps the counts.
			b := db.NewBatch()
			rec := Record{Value: []byte("new")}
			b.Put([]byte("a"), &rec, r.Where)
			mustCommit(t, db, b)
			if v, ok := get(t, db, "a"); !ok || v != "new" || db.Stats().Items != 1 {
				t.Fatalf("after overwrite: %q %v %+v", v, ok, db.Stats())
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	o := Options{}
	o.EnsureDefaults()
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "Dir is required") {
		t.Fatal(err)
	}
	o = Options{Dir: "x", DiskLimit: 10, MemTableSize: 1}
	o.EnsureDefaults()
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "DiskLimit") || !strings.Contains(err.Error(), "MemTableSize") {
		t.Fatal(err)
	}
	o = Options{Dir: "x", CompressMin: -1}
	o.EnsureDefaults()
	if o.Codec != CodecNone || o.Validate() != nil {
		t.Fatal("CompressMin -1 must switch compression off")
	}
	_ = os.Getpid
}
