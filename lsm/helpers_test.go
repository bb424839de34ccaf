package lsm

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/tcache/tcache/internal/clock"
)

var testStart = time.Unix(1_700_000_000, 0)

// testJournalMin keeps records under 256 bytes in Pebble in most tests,
// as the default did before every local item record went to the journal:
// both places a record can live stay covered (TestJournalRecords checks
// the default).
const testJournalMin = 256

func testOptions(fs vfs.FS, clk clock.Clock) Options {
	return Options{
		Dir:                 "/db",
		JournalMin:          testJournalMin,
		FS:                  fs,
		DiskLimit:           64 << 20,
		MemTableSize:        1 << 20,
		BlockCacheSize:      1 << 20,
		MaintenanceInterval: -1,
		Clock:               clk,
		Logger:              slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// syncNow runs the syncer's work at once: the journal and the WAL are
// written and synced.
func syncNow(db *DB) {
	db.pendingSyn.Store(true)
	db.syncWAL()
}

// crashReopen opens the store again as a crash of db would leave it on
// fs (cfg: what of the unsynced data survives), with o.FS the crashed copy.
func crashReopen(t testing.TB, db *DB, fs *vfs.MemFS, o *Options, cfg vfs.CrashCloneCfg) *DB {
	t.Helper()
	crashed := fs.CrashClone(cfg)
	_ = db.Close()
	o.FS = crashed
	return mustOpen(t, *o)
}

// reopen closes db cleanly and opens the store again with o; the new DB
// is closed when the test ends.
func reopen(t testing.TB, db *DB, o Options) *DB {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = mustOpen(t, o)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func mustOpen(t testing.TB, o Options) *DB {
	t.Helper()
	db, err := Open(o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return db
}

func mustCommit(t testing.TB, db *DB, b *Batch) {
	t.Helper()
	if err := db.Commit(b); err != nil {
		t.Fatalf("commit: %v", err)
	}
	b.Reset()
}

func put(t testing.TB, db *DB, key, value string, exptime int64, hlc uint64) Location {
	t.Helper()
	b := db.NewBatch()
	rec := Record{Value: []byte(value), Exptime: exptime, Version: Version{HLC: hlc, Node: db.NodeID()}}
	b.Put([]byte(key), &rec, Location{})
	mustCommit(t, db, b)
	return rec.Where
}

func get(t testing.TB, db *DB, key string) (string, bool) {
	t.Helper()
	r, err := db.Get(nil, []byte(key))
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return string(r.Value), r.Found
}

func timeSeconds(n int) time.Duration { return time.Duration(n) * time.Second }

// randomValue is n incompressible bytes, the same for the same seed.
func randomValue(seed string, n int) []byte {
	var h uint64 = 14695981039346656037
	for _, c := range []byte(seed) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	r := rand.New(rand.NewPCG(h, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func runtimeGosched() { runtime.Gosched() }

// enospcWrites fails writes to files whose name ends in suffix with ENOSPC
// while on is set.
func enospcWrites(on *atomic.Bool, suffix string) errorfs.Injector {
	return errorfs.InjectorFunc(func(op errorfs.Op) error {
		if on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, suffix) {
			return syscall.ENOSPC
		}
		return nil
	})
}
