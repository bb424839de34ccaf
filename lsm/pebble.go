package lsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// pebbleFormat is the pinned Pebble format major version: the newest that
// pebble v2.1.7 calls stable (FormatNewest). Pinned by name so that a
// Pebble upgrade never ratchets the on-disk format by itself.
const pebbleFormat = pebble.FormatValueSeparation

// pebbleOptions are the Pebble options for a cache workload on a small
// machine; docs/lsm-tuning.md explains each one.
func pebbleOptions(o *Options, fs vfs.FS, c *pebble.Cache, l pebble.Logger, el *pebble.EventListener) *pebble.Options {
	po := &pebble.Options{
		FS:                 fs,
		FormatMajorVersion: pebbleFormat,
		Cache:              c,
		MemTableSize:       uint64(o.MemTableSize),
		// Two memtables: one filling, one flushing (the memory budget).
		MemTableStopWritesThreshold: 2,
		// Let L0 collect a dozen flushes and ingested index tables before
		// compacting it into Lbase: with random keys every L0 compaction
		// rewrites most of Lbase, so fewer, larger ones cut write
		// amplification (docs/lsm-tuning.md). Stall writes late (a burst of
		// sets is absorbed rather than refused).
		L0CompactionThreshold:     12,
		L0CompactionFileThreshold: 500,
		L0StopWritesThreshold:     48,
		LBaseMaxBytes:             64 << 20,
		// 2 cores shared with the server: one compaction, two when debt grows.
		CompactionConcurrencyRange: func() (int, int) { return 1, 2 },
		DisableWAL:                 o.Durability == DurabilityNone,
		Logger:                     l,
		EventListener:              el,
		BytesPerSync:               1 << 20,
		WALBytesPerSync:            0, // the WAL is synced by commits and the syncer
	}
	for i := range po.Levels {
		// Bloom filters on every level: a miss (the common case of a
		// cache in front of a larger data set) costs no data-block read.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		// 4 KiB blocks: a read that misses the block cache checksums and
		// decompresses one whole block (docs/lsm-tuning.md).
		po.Levels[i].BlockSize = 4 << 10
	}
	// Value separation (WiscKey-style blob files; the pinned format
	// supports them): a flush writes records of at least
	// valueSeparationMin bytes once into blob files, and compactions move
	// only the keys and value handles. Without it every byte of a 1–4 KiB
	// value is rewritten at each of the LSM's levels (10–20 times over the
	// life of a 1 GiB store): the CPU and disk bandwidth that set-heavy
	// workloads and the overflow prefill were waiting on. Overwrites and
	// dropped epochs leave garbage in blob files; when more than a quarter
	// of their bytes are garbage, files older than a minute are rewritten.
	po.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           valueSeparationMin,
			MaxBlobReferenceDepth: 100,
			RewriteMinimumAge:     time.Minute,
			TargetGarbageRatio:    0.25,
		}
	}
	po.EnsureDefaults()
	return po
}

// valueSeparationMin is the smallest record (value and its 56 bytes of
// framing) kept in a blob file rather than in the sstable: small records
// (counters, 100-byte values) stay inline, where a read needs one block.
const valueSeparationMin = 256

// fatalLogger adapts slog to pebble.Logger. Pebble calls Fatalf on errors it
// cannot recover from (a failed WAL or MANIFEST write); its default logger
// then exits the process. tcache must not exit from a library, so Fatalf
// records the error, marks the DB failed (every later Commit returns
// ErrFailed; reads keep working) and logs it. Pebble's commit pipeline is
// not usable after such an error, so nothing calls into it again for a
// write; a reopen recovers everything committed before.
type fatalLogger struct {
	log  *slog.Logger
	fail func(error)
}

func (l fatalLogger) Infof(format string, args ...any) {
	l.log.Info("pebble: " + strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"))
}

func (l fatalLogger) Errorf(format string, args ...any) {
	l.log.Warn("pebble: " + strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"))
}

func (l fatalLogger) Fatalf(format string, args ...any) {
	msg := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
	var cause error
	for _, a := range args {
		if e, ok := a.(error); ok {
			cause = e
			break
		}
	}
	if cause == nil {
		cause = errors.New(msg)
	}
	l.log.Error("pebble: fatal error, the disk tier refuses writes until restarted", "err", msg)
	l.fail(cause)
}

// syncCountingFS is the FS tcache gives Pebble. It counts the fsyncs of
// WAL files (Stats.Fsyncs): group commit shows as fewer fsyncs than sync
// commits. And it gives the sstables and blob files Pebble creates a
// write-behind buffer (writeBehindFile); every other file (WALs, MANIFEST,
// OPTIONS, markers) is written as Pebble writes it.
type syncCountingFS struct {
	vfs.FS
	n *atomic.Uint64
}

func isWAL(name string) bool { return strings.HasSuffix(name, ".log") }

// isTableOrBlob reports whether name is an sstable or a blob file
// (base.MakeFilename: "%s.sst", "%s.blob").
func isTableOrBlob(name string) bool {
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob")
}

func (fs syncCountingFS) wrap(f vfs.File, name string, err error) (vfs.File, error) {
	if err != nil || !isWAL(name) {
		return f, err
	}
	return syncCountingFile{File: f, n: fs.n}, nil
}

func (fs syncCountingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err == nil && isTableOrBlob(name) {
		return newWriteBehindFile(f), nil
	}
	return fs.wrap(f, name, err)
}

func (fs syncCountingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(f, newname, err)
}

func (fs syncCountingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(f, name, err)
}

func (fs syncCountingFS) Unwrap() vfs.FS { return fs.FS }

type syncCountingFile struct {
	vfs.File
	n *atomic.Uint64
}

func (f syncCountingFile) Sync() error {
	f.n.Add(1)
	return f.File.Sync()
}

func (f syncCountingFile) SyncData() error {
	f.n.Add(1)
	return f.File.SyncData()
}

func (f syncCountingFile) SyncTo(length int64) (bool, error) {
	f.n.Add(1)
	return f.File.SyncTo(length)
}

// writeBehindSize is the write-behind buffer of a new sstable or blob file,
// and the size of every write(2) to such a file but its last.
//
// Pebble writes these files through a 4 KiB bufio.Writer, and writes larger
// than that go around it, so without this buffer the file gets one write(2)
// per 4 KiB, most of them not page-aligned once a large block went through:
// the syscalls, and ext4 zeroing the uncovered part of every new page, were
// about 15% of the server's CPU under a set-heavy load. Writes of whole
// 256 KiB chunks at chunk-aligned offsets cover whole pages; the copy into
// the buffer costs far less.
const writeBehindSize = 256 << 10

var writeBehindBufs = sync.Pool{New: func() any { return new([writeBehindSize]byte) }}

// writeBehindFile buffers the sequential Writes to a new file and hands
// them to the file below in whole writeBehindSize chunks that end at a
// multiple of writeBehindSize; the rest waits for the next Write, or for
// anything that needs the bytes in the file: Sync, SyncData, Close, Stat,
// Read, ReadAt, WriteAt, and SyncTo past what was already written. The
// buffer comes from a pool at the first Write and goes back at Close.
//
// An error from the file below is sticky: the Write, Sync or Close that
// meets it and every later one (Close still closes the file) return it, so
// bytes lost with a failed write are never reported as written or synced.
// (Pebble's syncingFile.Close returns a Sync error without closing the file
// below; that file descriptor is then closed by the os.File finalizer.)
// Preallocate, Prefetch and Fd pass through.
type writeBehindFile struct {
	vfs.File
	mu     sync.Mutex
	buf    *[writeBehindSize]byte // nil before the first Write and after Close
	n      int                    // buffered bytes, for offsets [off, off+n)
	off    int64                  // bytes written to the file below by Write
	err    error                  // the first error of the file below's Write
	closed bool
}

var _ vfs.File = (*writeBehindFile)(nil)

func newWriteBehindFile(f vfs.File) *writeBehindFile { return &writeBehindFile{File: f} }

// room is how many more bytes the buffer takes before it is written: up to
// the next multiple of writeBehindSize. Only a flush for a Sync (or Stat,
// ReadAt, WriteAt) leaves off unaligned, and the next chunk realigns it.
func (f *writeBehindFile) room() int {
	return writeBehindSize - int(f.off%writeBehindSize) - f.n
}

func (f *writeBehindFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	if f.closed {
		return 0, os.ErrClosed
	}
	start := f.off + int64(f.n) // the file offset of p[0]
	written := func() int {     // how much of p reached the file below
		return int(min(max(f.off-start, 0), int64(len(p))))
	}
	for rest := p; len(rest) > 0; {
		room := f.room()
		if f.n == 0 && len(rest) >= room {
			// Nothing buffered: whole chunks go to the file directly.
			k := room + (len(rest)-room)/writeBehindSize*writeBehindSize
			if err := f.write(rest[:k]); err != nil {
				return written(), err
			}
			rest = rest[k:]
			continue
		}
		if f.buf == nil {
			f.buf = writeBehindBufs.Get().(*[writeBehindSize]byte)
		}
		c := copy(f.buf[f.n:f.n+room], rest)
		f.n += c
		rest = rest[c:]
		if c == room {
			if err := f.flush(); err != nil {
				return written(), err
			}
		}
	}
	return len(p), nil
}

// write writes b to the file below at f.off; a failure is kept in f.err.
func (f *writeBehindFile) write(b []byte) error {
	n, err := f.File.Write(b)
	f.off += int64(n)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		f.err = err
	}
	return err
}

// flush writes the buffer to the file below, or returns the sticky error.
func (f *writeBehindFile) flush() error {
	if f.err != nil {
		return f.err
	}
	if f.n == 0 {
		return nil
	}
	err := f.write(f.buf[:f.n])
	f.n = 0
	return err
}

func (f *writeBehindFile) flushLocked() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flush()
}

func (f *writeBehindFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.flushLocked(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *writeBehindFile) Read(p []byte) (int, error) {
	if err := f.flushLocked(); err != nil {
		return 0, err
	}
	return f.File.Read(p)
}

func (f *writeBehindFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.flushLocked(); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *writeBehindFile) Stat() (vfs.FileInfo, error) {
	if err := f.flushLocked(); err != nil {
		return nil, err
	}
	return f.File.Stat()
}

func (f *writeBehindFile) Sync() error {
	if err := f.flushLocked(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *writeBehindFile) SyncData() error {
	if err := f.flushLocked(); err != nil {
		return err
	}
	return f.File.SyncData()
}

// SyncTo flushes the buffer only if the prefix reaches into it: Pebble's
// syncingFile asks every BytesPerSync for a prefix ending 1 MiB behind
// what it wrote, which is always in the file already, and a flush there
// would unalign the writes. A full sync by the file below does not cover
// the buffer, so it is reported as a prefix sync then.
func (f *writeBehindFile) SyncTo(length int64) (fullSync bool, err error) {
	f.mu.Lock()
	if f.err != nil {
		f.mu.Unlock()
		return false, f.err
	}
	if length > f.off {
		if err := f.flush(); err != nil {
			f.mu.Unlock()
			return false, err
		}
	}
	buffered := f.n > 0
	f.mu.Unlock()
	fullSync, err = f.File.SyncTo(length)
	return fullSync && !buffered, err
}

func (f *writeBehindFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	f.closed = true
	err := f.flush()
	if f.buf != nil {
		writeBehindBufs.Put(f.buf)
		f.buf = nil
	}
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}

// rateLimitedLog logs at most one line per key-ish event per second and
// counts what it suppressed, so a disk full of bad records cannot flood the
// log.
type rateLimitedLog struct {
	mu struct {
		sync.Mutex
		last       int64 // unix second of the last line
		suppressed int
	}
}

func (r *rateLimitedLog) allow(now int64) (ok bool, suppressed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now == r.mu.last {
		r.mu.suppressed++
		return false, 0
	}
	r.mu.last, suppressed, r.mu.suppressed = now, r.mu.suppressed, 0
	return true, suppressed
}
