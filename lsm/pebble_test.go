package lsm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/tcache/tcache/internal/clock"
)

// Only the sstables and blob files Pebble creates get the write-behind
// buffer; WALs keep their fsync counting, everything else is untouched.
func TestWriteBehindOnlyTablesAndBlobs(t *testing.T) {
	var n atomic.Uint64
	fs := syncCountingFS{FS: vfs.NewMem(), n: &n}
	if err := fs.MkdirAll("/db", 0o755); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"/db/000012.sst":             "wb",
		"/db/000013.blob":            "wb",
		"/db/000014.log":             "wal",
		"/db/MANIFEST-000001":        "plain",
		"/db/OPTIONS-000003":         "plain",
		"/db/CURRENT":                "plain",
		"/db/marker.format.000001.x": "plain",
		"/db/temporary.000005.dbtmp": "plain",
		"/db/tcache-format":          "plain",
	} {
		f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		got := "plain"
		switch f.(type) {
		case *writeBehindFile:
			got = "wb"
		case syncCountingFile:
			got = "wal"
		}
		if got != want {
			t.Errorf("%s: %s file, want %s", name, got, want)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// Reopening for write keeps the current behaviour.
		f, err = fs.OpenReadWrite(name, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := f.(*writeBehindFile); ok {
			t.Errorf("%s: OpenReadWrite gave a write-behind file", name)
		}
		_ = f.Close()
	}
}

// writeSizes is a mix of write sizes: tiny, around a page, 1 MiB, random.
func writeSizes(seed uint64) []int {
	sizes := []int{1, 4095, 4096, 1 << 20, 1, 4096, 4095, writeBehindSize, writeBehindSize - 1, 2, writeBehindSize + 1, 3*writeBehindSize + 7}
	r := rand.New(rand.NewPCG(seed, 7))
	for range 200 {
		switch r.IntN(4) {
		case 0:
			sizes = append(sizes, 1+r.IntN(64))
		case 1:
			sizes = append(sizes, 4096)
		case 2:
			sizes = append(sizes, 1+r.IntN(16<<10))
		default:
			sizes = append(sizes, 1+r.IntN(600<<10))
		}
	}
	return sizes
}

func fill(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Content and sizes through the wrapper, on a real directory and in memory:
// Stat, ReadAt, WriteAt, Sync and Close see every byte written before them.
func TestWriteBehindContent(t *testing.T) {
	for _, c := range []struct {
		name string
		fs   vfs.FS
		dir  func(t *testing.T) string
	}{
		{"disk", vfs.Default, func(t *testing.T) string { return t.TempDir() }},
		{"mem", vfs.NewMem(), func(*testing.T) string { return "/d" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := c.dir(t)
			if err := c.fs.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			fs := syncCountingFS{FS: c.fs, n: new(atomic.Uint64)}
			name := filepath.Join(dir, "000007.sst")
			f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := f.(*writeBehindFile); !ok {
				t.Fatalf("%T is not a write-behind file", f)
			}
			r := rand.New(rand.NewPCG(1, 2))
			var want []byte
			checkSize := func(when string) {
				t.Helper()
				fi, err := f.Stat()
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() != int64(len(want)) {
					t.Fatalf("%s: Stat size %d, want %d", when, fi.Size(), len(want))
				}
			}
			checkSize("empty")
			for i, n := range writeSizes(3) {
				p := fill(r, n)
				want = append(want, p...)
				if w, err := f.Write(p); err != nil || w != n {
					t.Fatalf("write %d of %d: %d %v", i, n, w, err)
				}
				switch i % 17 {
				case 3:
					checkSize(fmt.Sprintf("after write %d", i))
				case 5:
					if err := f.Sync(); err != nil {
						t.Fatal(err)
					}
				case 8:
					// ReadAt sees the buffered tail.
					k := min(len(want), 10000)
					got := make([]byte, k)
					if _, err := f.ReadAt(got, int64(len(want)-k)); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want[len(want)-k:]) {
						t.Fatalf("ReadAt after write %d: wrong bytes", i)
					}
				case 11:
					// WriteAt over bytes still in the buffer.
					at := len(want) - min(len(want), 100)
					p := fill(r, len(want)-at)
					if _, err := f.WriteAt(p, int64(at)); err != nil {
						t.Fatal(err)
					}
					copy(want[at:], p)
				case 13:
					// A prefix sync leaves the buffer alone.
					if _, err := f.SyncTo(int64(len(want) / 2)); err != nil {
						t.Fatal(err)
					}
				}
			}
			checkSize("before close")
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err == nil {
				t.Fatal("second Close succeeded")
			}
			if _, err := f.Write([]byte("x")); err == nil {
				t.Fatal("Write after Close succeeded")
			}
			fi, err := fs.Stat(name)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != int64(len(want)) {
				t.Fatalf("size after close %d, want %d", fi.Size(), len(want))
			}
			if got := readAll(t, fs, name); !bytes.Equal(got, want) {
				t.Fatalf("content differs (%d bytes, want %d)", len(got), len(want))
			}
		})
	}
}

// recordingFile is a fake file below the wrapper: it keeps the bytes and
// the offset and length of every Write, and fails Writes while fail is set.
type recordingFile struct {
	vfs.File // nil: a method not overridden panics
	data     []byte
	writes   [][2]int64 // offset, length
	syncTos  []int64
	fail     error
	closed   bool
}

func (f *recordingFile) Write(p []byte) (int, error) {
	if f.fail != nil {
		return 0, f.fail
	}
	f.writes = append(f.writes, [2]int64{int64(len(f.data)), int64(len(p))})
	f.data = append(f.data, p...)
	return len(p), nil
}

func (f *recordingFile) SyncTo(length int64) (bool, error) {
	f.syncTos = append(f.syncTos, length)
	return false, nil
}
func (f *recordingFile) Sync() error                     { return nil }
func (f *recordingFile) SyncData() error                 { return nil }
func (f *recordingFile) Preallocate(_, _ int64) error    { return nil }
func (f *recordingFile) Fd() uintptr                     { return 1000 } // as if on disk: SyncTo, not Sync
func (f *recordingFile) Close() error                    { f.closed = true; return nil }
func (f *recordingFile) Prefetch(_ int64, _ int64) error { return nil }

// Through the same stack Pebble builds for an sstable (bufio.Writer over
// vfs.NewSyncingFile with BytesPerSync 1 MiB), every write to the file
// below is a whole number of buffers at a buffer-aligned offset but the
// last, and nothing is lost.
func TestWriteBehindAlignment(t *testing.T) {
	for seed := range uint64(4) {
		under := &recordingFile{}
		wb := newWriteBehindFile(under)
		sf := vfs.NewSyncingFile(wb, vfs.SyncingFileOptions{BytesPerSync: 1 << 20})
		bw := bufio.NewWriter(sf)
		r := rand.New(rand.NewPCG(seed, 9))
		var want []byte
		for _, n := range writeSizes(seed) {
			p := fill(r, n)
			want = append(want, p...)
			if _, err := bw.Write(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := sf.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := sf.Close(); err != nil {
			t.Fatal(err)
		}
		if !under.closed {
			t.Fatal("file below not closed")
		}
		if !bytes.Equal(under.data, want) {
			t.Fatalf("seed %d: content differs (%d bytes, want %d)", seed, len(under.data), len(want))
		}
		if len(under.syncTos) == 0 {
			t.Fatalf("seed %d: no SyncTo", seed)
		}
		for i, w := range under.writes {
			if w[0]%writeBehindSize != 0 {
				t.Fatalf("seed %d: write %d at offset %d", seed, i, w[0])
			}
			if i < len(under.writes)-1 && w[1]%writeBehindSize != 0 {
				t.Fatalf("seed %d: write %d of %d bytes", seed, i, w[1])
			}
		}
		if want := (len(want) + writeBehindSize - 1) / writeBehindSize; len(under.writes) > want {
			t.Fatalf("seed %d: %d writes for %d chunks", seed, len(under.writes), want)
		}
	}
}

// After a mid-file Sync (a short write), the next writes end at chunk
// boundaries again.
func TestWriteBehindRealigns(t *testing.T) {
	under := &recordingFile{}
	f := newWriteBehindFile(under)
	write := func(n int) {
		t.Helper()
		if _, err := f.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	write(5000)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	for range 300 {
		write(4096)
	}
	write(3 * writeBehindSize)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for i, w := range under.writes[1 : len(under.writes)-1] {
		if end := w[0] + w[1]; end%writeBehindSize != 0 {
			t.Fatalf("write %d ends at %d", i+1, end)
		}
	}
	if got, want := len(under.data), 5000+300*4096+3*writeBehindSize; got != want {
		t.Fatalf("%d bytes, want %d", got, want)
	}
}

// An error from a deferred write is returned by the next Write, Sync or
// Close, and by every call after it; Close still closes the file below.
func TestWriteBehindErrors(t *testing.T) {
	errDisk := syscall.ENOSPC
	for _, next := range []string{"Sync", "SyncData", "SyncTo", "Close", "Write", "Stat", "ReadAt", "WriteAt"} {
		t.Run(next, func(t *testing.T) {
			under := &recordingFile{}
			f := newWriteBehindFile(under)
			if _, err := f.Write(make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
			under.fail = errDisk
			var err error
			switch next {
			case "Sync":
				err = f.Sync()
			case "SyncData":
				err = f.SyncData()
			case "SyncTo":
				_, err = f.SyncTo(100)
			case "Close":
				err = f.Close()
			case "Write":
				var n int
				n, err = f.Write(make([]byte, writeBehindSize))
				if err != nil && n != 0 {
					t.Fatalf("Write reported %d bytes written", n)
				}
			case "Stat":
				_, err = f.Stat()
			case "ReadAt":
				_, err = f.ReadAt(make([]byte, 10), 0)
			case "WriteAt":
				_, err = f.WriteAt(make([]byte, 10), 0)
			}
			if !errors.Is(err, errDisk) {
				t.Fatalf("%s: %v, want %v", next, err, errDisk)
			}
			under.fail = nil // the disk recovers; the lost bytes stay lost
			if _, err := f.Write([]byte("more")); !errors.Is(err, errDisk) {
				t.Fatalf("later Write: %v", err)
			}
			if err := f.Sync(); !errors.Is(err, errDisk) {
				t.Fatalf("later Sync: %v", err)
			}
			if next != "Close" {
				if err := f.Close(); !errors.Is(err, errDisk) {
					t.Fatalf("Close: %v", err)
				}
			}
			if !under.closed {
				t.Fatal("file below not closed")
			}
		})
	}
}

// A write that fails in the middle of a large Write reports how much of it
// reached the file.
func TestWriteBehindPartialWrite(t *testing.T) {
	under := &recordingFile{}
	f := newWriteBehindFile(under)
	if _, err := f.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	// The first chunk (1000 buffered bytes + writeBehindSize-1000 of p)
	// is written, then the direct write of the next chunks fails.
	calls := 0
	under2 := &failAfter{recordingFile: under, ok: 1, calls: &calls}
	f.File = under2
	n, err := f.Write(make([]byte, 3*writeBehindSize))
	if !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("err %v", err)
	}
	if n != writeBehindSize-1000 {
		t.Fatalf("n %d, want %d", n, writeBehindSize-1000)
	}
	_ = f.Close()
}

type failAfter struct {
	*recordingFile
	ok    int
	calls *int
}

func (f *failAfter) Write(p []byte) (int, error) {
	*f.calls++
	if *f.calls > f.ok {
		return 0, errorfs.ErrInjected
	}
	return f.recordingFile.Write(p)
}

// errorfs underneath: an injected sstable write error surfaces from Close.
func TestWriteBehindErrorfs(t *testing.T) {
	var on atomic.Bool
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if on.Load() && op.Kind == errorfs.OpFileWrite {
			return syscall.EIO
		}
		return nil
	})
	fs := syncCountingFS{FS: errorfs.Wrap(vfs.NewMem(), inj), n: new(atomic.Uint64)}
	f, err := fs.Create("/000001.blob", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 5000)); err != nil {
		t.Fatalf("buffered write: %v", err)
	}
	on.Store(true)
	if err := f.Close(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Close: %v", err)
	}
}

// Sstable and blob write errors (ENOSPC during a flush) reach Pebble as
// background errors; once the disk recovers the flush succeeds and every
// value reads back, before and after a reopen.
func TestTableWriteErrors(t *testing.T) {
	mem := vfs.NewMem()
	var on atomic.Bool
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if on.Load() && op.Kind == errorfs.OpFileWrite && isTableOrBlob(op.Path) {
			return syscall.ENOSPC
		}
		return nil
	})
	o := testOptions(errorfs.Wrap(mem, inj), clock.NewFake(testStart))
	o.MemTableSize = 4 << 20
	db := mustOpen(t, o)
	const items = 1500
	for i := range items {
		put(t, db, fmt.Sprint(i), string(randomValue(fmt.Sprint(i), 300+i%2000)), 0, uint64(i+1))
	}
	on.Store(true)
	done := make(chan error, 1)
	go func() { done <- db.pdb.Flush() }()
	deadline := time.Now().Add(10 * time.Second)
	for db.st.writeErrors.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no background error from the failing flush")
		}
		time.Sleep(time.Millisecond)
	}
	on.Store(false)
	if err := <-done; err != nil {
		t.Fatalf("flush after recovery: %v", err)
	}
	check := func(db *DB, when string) {
		t.Helper()
		for i := range items {
			v, ok := get(t, db, fmt.Sprint(i))
			if !ok || v != string(randomValue(fmt.Sprint(i), 300+i%2000)) {
				t.Fatalf("%s: item %d: found %v, %d bytes", when, i, ok, len(v))
			}
		}
	}
	check(db, "after flush")
	var tables int
	names, _ := mem.List("/db")
	for _, n := range names {
		if strings.HasSuffix(n, ".sst") {
			tables++
		}
	}
	if tables == 0 {
		t.Fatalf("no sstable after the flush: %v", names)
	}
	db = reopen(t, db, o)
	check(db, "after reopen")
}
