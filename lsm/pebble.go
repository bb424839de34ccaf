package lsm

import (
	"errors"
	"fmt"
	"log/slog"
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
		// Compact L0 early (reads of cold items stay cheap) and stall writes
		// late (a burst of sets is absorbed rather than refused).
		L0CompactionThreshold:     2,
		L0CompactionFileThreshold: 500,
		L0StopWritesThreshold:     24,
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

// syncCountingFS counts the fsyncs of WAL files (Stats.Fsyncs): group
// commit shows as fewer fsyncs than sync commits.
type syncCountingFS struct {
	vfs.FS
	n *atomic.Uint64
}

func isWAL(name string) bool { return strings.HasSuffix(name, ".log") }

func (fs syncCountingFS) wrap(f vfs.File, name string, err error) (vfs.File, error) {
	if err != nil || !isWAL(name) {
		return f, err
	}
	return syncCountingFile{File: f, n: fs.n}, nil
}

func (fs syncCountingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
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
