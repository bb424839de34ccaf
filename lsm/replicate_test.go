package lsm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

func replicatedOptions(fs vfs.FS, clk clock.Clock) Options {
	o := testOptions(fs, clk)
	o.Replicated = true
	o.Durability = DurabilitySync
	return o
}

// bothPaths runs test on a journal store and on a Pebble store made with
// o (the Pebble one with JournalMin -1).
func bothPaths(t *testing.T, o Options, test func(t *testing.T, o Options)) {
	for _, journal := range []bool{true, false} {
		t.Run(fmt.Sprintf("journal=%v", journal), func(t *testing.T) {
			if !journal {
				o.JournalMin, o.Dir = -1, o.Dir+"-pebble"
			}
			test(t, o)
		})
	}
}

func del(t testing.TB, db *DB, key string, hlc uint64) {
	t.Helper()
	b := db.NewBatch()
	b.Delete([]byte(key), Version{HLC: hlc, Node: db.NodeID()}, Location{})
	mustCommit(t, db, b)
}

// A delete leaves a tombstone with its version, counted in no item
// counter; an overwrite replaces it; the sweeper keeps it until the log
// head has passed the time it was written.
func TestTombstones(t *testing.T) {
	clk := clock.NewFake(testStart)
	o := replicatedOptions(vfs.NewMem(), clk)
	o.LogRetentionAge = time.Hour
	bothPaths(t, o, func(t *testing.T, o Options) { testTombstones(t, clk, o) })
}

func testTombstones(t *testing.T, clk *clock.Fake, o Options) {
	db := mustOpen(t, o)
	defer db.Close()
	put(t, db, "a", "1", 0, 10)
	put(t, db, "b", "2", 0, 11)
	del(t, db, "a", 12)
	r, err := db.Get(nil, []byte("a"))
	if err != nil || r.Found || !r.Tombstone || r.Version.HLC != 12 || !r.Where.Tombstone {
		t.Fatalf("get tombstone: %+v, %v", r, err)
	}
	if s := db.Stats(); s.Items != 1 || s.Tombstones != 1 {
		t.Fatalf("items %d tombstones %d, want 1 1", s.Items, s.Tombstones)
	}
	// Overwrite the tombstone (through its Location), then delete again.
	b := db.NewBatch()
	rec := Record{Value: []byte("3"), Version: Version{HLC: 13}}
	b.Put([]byte("a"), &rec, r.Where)
	mustCommit(t, db, b)
	if v, ok := get(t, db, "a"); !ok || v != "3" {
		t.Fatalf("a = %q %v after overwrite", v, ok)
	}
	if s := db.Stats(); s.Items != 2 {
		t.Fatalf("items %d, want 2", s.Items)
	}
	del(t, db, "a", 14)
	if s := db.Stats(); s.Items != 1 {
		t.Fatalf("items %d after delete, want 1", s.Items)
	}
	// The log still holds the delete: the sweeper keeps the tombstone.
	clk.Advance(10 * time.Minute)
	db.Maintain()
	if raw, _, _ := db.GetRaw(nil, []byte("a")); raw == nil {
		t.Fatal("tombstone swept while the log holds its delete")
	}
	// Past the retention the log is trimmed (but for its newest entry)
	// and the tombstone goes.
	clk.Advance(2 * time.Hour)
	put(t, db, "c", "4", 0, 15)
	clk.Advance(time.Second)
	db.Maintain()
	settleIndex(t, db) // a journal store's log is trimmed once ingested
	db.Maintain()
	if raw, _, _ := db.GetRaw(nil, []byte("a")); raw != nil {
		t.Fatalf("tombstone kept after the log passed it (log first %d)", db.Stats().LogFirst)
	}
	if db.Stats().TombSwept != 1 {
		t.Fatalf("swept %d tombstones, want 1", db.Stats().TombSwept)
	}
	if v, ok := get(t, db, "b"); !ok || v != "2" {
		t.Fatalf("b = %q %v", v, ok)
	}
}

// A new history starts after an unclean shutdown only.
func TestHistories(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := replicatedOptions(fs, clock.NewFake(testStart))
	db := mustOpen(t, o)
	h := db.Histories()
	if len(h) != 1 || h[0].ID == 0 || h[0].FirstSeq != 1 {
		t.Fatalf("fresh histories %+v", h)
	}
	put(t, db, "a", "1", 0, 1)
	put(t, db, "b", "1", 0, 2)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = mustOpen(t, o)
	if h2 := db.Histories(); len(h2) != 1 || h2[0] != h[0] {
		t.Fatalf("histories after a clean close %+v, want %+v", h2, h)
	}
	put(t, db, "c", "1", 0, 3)
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	defer db.Close()
	h3 := db.Histories()
	if len(h3) != 2 || h3[0] != h[0] || h3[1].ID == h[0].ID || h3[1].FirstSeq != db.LastSeq()+1 || db.LastSeq() != 3 {
		t.Fatalf("histories after a crash %+v (last seq %d)", h3, db.LastSeq())
	}
	if db.Stats().History != h3[1].ID {
		t.Fatal("Stats.History is not the current history")
	}
}

// A peer's record is stored without a log entry, with a local CAS and its
// own version, together with the applied offset; ReadLogRecords passes each
// entry's record or nil when superseded.
func TestRemoteWrites(t *testing.T) {
	fs := vfs.NewMem()
	clk := clock.NewFake(testStart)
	a := mustOpen(t, replicatedOptions(fs, clk))
	o := replicatedOptions(fs, clk)
	o.Dir = "/b"
	b := mustOpen(t, o)
	defer b.Close()

	put(t, a, "k", "v1", 0, 100)
	del(t, a, "gone", 101)
	bt := a.NewBatch()
	bt.Flush(FlushMarker{OldestLive: 5, OldestCAS: 6, Version: Version{HLC: 102, Node: a.NodeID()}})
	mustCommit(t, a, bt)
	put(t, a, "x", "old", 0, 103)
	put(t, a, "x", "new", 0, 104)

	type shipped struct {
		seq uint64
		e   LogEntry
		rec []byte
	}
	var got []shipped
	last, err := a.ReadLogRecords(1, func(seq uint64, e LogEntry, rec []byte) bool {
		got = append(got, shipped{seq, LogEntry{Op: e.Op, Version: e.Version, Key: append([]byte(nil), e.Key...)}, append([]byte(nil), rec...)})
		return true
	})
	if err != nil || last != 5 || len(got) != 5 {
		t.Fatalf("read log: last %d, %d entries, %v", last, len(got), err)
	}
	if got[3].rec != nil && len(got[3].rec) != 0 {
		t.Fatal("superseded put of x shipped its record")
	}
	if m, err := DecodeFlushRecord(got[2].rec); err != nil || m.OldestLive != 5 || m.Version.HLC != 102 {
		t.Fatalf("flush record %+v %v", m, err)
	}
	if h, err := ParseRecord(got[1].rec); err != nil || h.Kind != KindTombstone || h.Version.HLC != 101 {
		t.Fatalf("tombstone record %+v %v", h, err)
	}
	// Apply on b: records without log entries, offset in the same batch.
	bb := b.NewBatch()
	for _, s := range got {
		switch {
		case len(s.rec) == 0:
		case s.e.Op == LogFlush:
			m, _ := DecodeFlushRecord(s.rec)
			bb.FlushRemote(m)
		default:
			bb.PutRemote(s.e.Key, s.rec, 7777, Location{})
		}
	}
	bb.SetApplied(Applied{Peer: a.NodeID(), History: a.Histories()[0].ID, Seq: last})
	mustCommit(t, b, bb)
	if b.LastSeq() != 0 || b.Stats().LogLast != 0 {
		t.Fatalf("remote writes were logged: last seq %d", b.LastSeq())
	}
	r, err := b.Get(nil, []byte("k"))
	if err != nil || !r.Found || string(r.Value) != "v1" || r.CAS != 7777 || r.Version != (Version{HLC: 100, Node: a.NodeID()}) {
		t.Fatalf("applied k: %+v %v", r, err)
	}
	if r, _ := b.Get(nil, []byte("gone")); r.Found || !r.Tombstone {
		t.Fatalf("applied tombstone: %+v", r)
	}
	if b.FlushMarker().Version.HLC != 102 {
		t.Fatalf("flush marker %+v", b.FlushMarker())
	}
	if ap, ok, err := b.Applied(a.NodeID()); err != nil || !ok || ap.Seq != 5 || ap.History != a.Histories()[0].ID {
		t.Fatalf("applied %+v %v %v", ap, ok, err)
	}
	if s := b.Stats(); s.Items != 2 {
		t.Fatalf("b items %d, want 2", s.Items)
	}
	// A garbled record fails the commit; nothing is written.
	bad := append([]byte(nil), got[0].rec...)
	bad[len(bad)-6] ^= 1
	bb.Reset()
	bb.PutRemote([]byte("k"), bad, 1, Location{})
	bb.SetApplied(Applied{Peer: a.NodeID(), Seq: 99})
	if err := b.Commit(bb); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("commit of a garbled record: %v", err)
	}
	if ap, _, _ := b.Applied(a.NodeID()); ap.Seq != 5 {
		t.Fatalf("applied moved to %d by a failed commit", ap.Seq)
	}
	_ = a.Close()
	if _, err := a.ReadLogRecords(1, func(uint64, LogEntry, []byte) bool { return true }); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

// A snapshot holds every record, tombstones and the flush marker, at the
// seq it returns, whatever is committed while fn runs.
func TestSnapshot(t *testing.T) {
	bothPaths(t, replicatedOptions(vfs.NewMem(), clock.NewFake(testStart)), testSnapshot)
}

func testSnapshot(t *testing.T, o Options) {
	db := mustOpen(t, o)
	defer db.Close()
	put(t, db, "a", "1", 0, 1)
	put(t, db, "b", "2", 0, 2)
	del(t, db, "b", 3)
	bt := db.NewBatch()
	bt.Flush(FlushMarker{OldestLive: 1, Version: Version{HLC: 4}})
	mustCommit(t, db, bt)
	var keys []string
	var kinds []RecordKind
	h, seq, err := db.Snapshot(func(key, rec []byte) error {
		hd, err := ParseRecord(rec)
		if err != nil {
			return err
		}
		keys = append(keys, string(key))
		kinds = append(kinds, hd.Kind)
		if len(keys) == 1 {
			put(t, db, "c", "late", 0, 5) // after the snapshot
		}
		return nil
	})
	if err != nil || seq != 4 || h != db.Histories()[0] {
		t.Fatalf("snapshot: seq %d history %+v: %v", seq, h, err)
	}
	// The records in any order (a journal store's follow its keydir), the
	// flush marker last.
	if len(keys) != 3 || keys[2] != "" || kinds[2] != KindFlush {
		t.Fatalf("snapshot keys %q kinds %v", keys, kinds)
	}
	got := map[string]RecordKind{keys[0]: kinds[0], keys[1]: kinds[1]}
	if got["a"] != KindItem || got["b"] != KindTombstone {
		t.Fatalf("snapshot keys %q kinds %v", keys, kinds)
	}
	stop := errors.New("stop")
	if _, _, err := db.Snapshot(func(key, rec []byte) error { return stop }); err != stop {
		t.Fatalf("fn error not returned: %v", err)
	}
}

// A flush marker in a replicated store removes the records below its
// bound, record by record, and keeps those above it.
func TestFlushPass(t *testing.T) {
	bothPaths(t, replicatedOptions(vfs.NewMem(), clock.NewFake(testStart)), testFlushPass)
}

func testFlushPass(t *testing.T, o Options) {
	db := mustOpen(t, o)
	defer db.Close()
	nowHLC := uint64(testStart.UnixMilli()) << 16
	for i := range 600 {
		put(t, db, string(rune('a'+i%26))+string(rune('0'+i/26)), "v", 0, nowHLC-1000+uint64(i))
	}
	put(t, db, "after", "v", 0, nowHLC+10)
	del(t, db, "a0", nowHLC-1)
	bt := db.NewBatch()
	bt.FlushRemote(FlushMarker{OldestLive: testStart.Unix() - 1, Version: Version{HLC: nowHLC, Node: 1}})
	mustCommit(t, db, bt)
	db.Maintain()
	if s := db.Stats(); s.Items != 1 {
		t.Fatalf("items after the flush pass: %d, want 1", s.Items)
	}
	if _, ok := get(t, db, "after"); !ok {
		t.Fatal("a record above the flush bound was removed")
	}
	if raw, _, _ := db.GetRaw(nil, []byte("a0")); raw != nil {
		t.Fatal("a tombstone below the flush bound was kept")
	}
	// A scan passes on the one record left (a journal store's walks
	// every frame's position, in several calls).
	n := 0
	var next []byte
	for calls := 0; calls == 0 || next != nil; calls++ {
		var err error
		if next, err = db.Scan(next, 100, func(key, rec []byte) bool { n++; return true }); err != nil || calls > 100 {
			t.Fatalf("scan: %d calls, %v", calls, err)
		}
	}
	if n != 1 {
		t.Fatalf("scan: %d records, want 1", n)
	}
}

func TestFlushMarkerBound(t *testing.T) {
	issue := Version{HLC: 1000_500 << 16, Node: 9} // at 1000.5 s
	now := FlushMarker{OldestLive: 999, Version: issue}
	if now.Bound() != issue {
		t.Fatalf("immediate flush bound %+v", now.Bound())
	}
	later := FlushMarker{OldestLive: 1009, Version: issue}
	if b := later.Bound(); b.HLC != 1010_000<<16 {
		t.Fatalf("delayed flush bound %+v", b)
	}
	if later.Flushes(Version{HLC: 1005_000 << 16}, 1008) || !later.Flushes(Version{HLC: 1005_000 << 16}, 1009) ||
		later.Flushes(Version{HLC: 1010_000 << 16, Node: 1}, 2000) {
		t.Fatal("Flushes")
	}
	if (FlushMarker{}).Flushes(Version{}, 5) {
		t.Fatal("the zero marker flushes")
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add(AppendRecord(nil, &Record{Value: []byte("v"), CAS: 1}))
	f.Add(AppendRecord(nil, &Record{Tombstone: true, Time: 5, Version: Version{HLC: 7}}))
	f.Add(AppendFlushRecord(nil, FlushMarker{OldestLive: 3, OldestCAS: 4, Version: Version{HLC: 5, Node: 6}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseRecord(data) // must not panic
		if err != nil {
			return
		}
		r, derr := DecodeRecord(nil, data)
		m, ferr := DecodeFlushRecord(data)
		switch h.Kind {
		case KindFlush:
			if ferr != nil || derr == nil || m.Version != h.Version {
				t.Fatalf("flush record: %v %v", ferr, derr)
			}
		case KindTombstone:
			if derr != nil || !r.Tombstone || r.Found || ferr == nil {
				t.Fatalf("tombstone: %+v %v %v", r, derr, ferr)
			}
			// Patching keeps it valid.
			c := append([]byte(nil), data...)
			patchRecord(c, h.Kind, 1, 2)
			if h2, err := ParseRecord(c); err != nil || h2.Time != 2 {
				t.Fatalf("patched tombstone: %+v %v", h2, err)
			}
		case KindItem:
			if derr == nil && (len(r.Value) != h.ValueLen || !r.Found) {
				t.Fatalf("item: %+v", r)
			}
			c := append([]byte(nil), data...)
			patchRecord(c, h.Kind, 99, 0)
			if h2, err := ParseRecord(c); err != nil || h2.CAS != 99 {
				t.Fatalf("patched item: %+v %v", h2, err)
			}
		}
	})
}

// In a journal store a peer's records are journal frames, and the applied
// offset that goes with them is a frame after them: a crash that loses
// the journal's unwritten tail loses the offset with the records (the
// peer sends them again), never the records alone; a crash after the
// journal was synced keeps both, and so does a clean close (the offset
// then in Pebble).
func TestRemoteAppliedCrash(t *testing.T) {
	const peer = 77
	rec := func(v string, hlc uint64) []byte {
		return AppendRecord(nil, &Record{Value: []byte(v), Version: Version{HLC: hlc, Node: peer}})
	}
	apply := func(t *testing.T, db *DB, key, v string, hlc, seq uint64) {
		b := db.NewBatch()
		b.ReserveCAS(hlc)
		b.PutRemote([]byte(key), rec(v, hlc), hlc, Location{})
		b.SetApplied(Applied{Peer: peer, History: 5, Seq: seq})
		mustCommit(t, db, b)
	}
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.Durability = DurabilityInterval
	db := mustOpen(t, o)
	apply(t, db, "synced", "s", 10, 1)
	syncNow(db)
	apply(t, db, "unsynced", "u", 11, 2)
	if err := db.pdb.LogData(nil, pebble.Sync); err != nil { // the WAL alone
		t.Fatal(err)
	}
	if a, ok, err := db.Applied(peer); err != nil || !ok || a.Seq != 2 {
		t.Fatalf("applied before the crash: %+v %v %v", a, ok, err)
	}
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{})
	a, ok, err := db.Applied(peer)
	_, found := get(t, db, "unsynced")
	if err != nil || !ok || a.Seq != 1 || found {
		t.Fatalf("after losing the tail: applied %+v %v %v, unsynced record found %v; want seq 1 and no record", a, ok, err, found)
	}
	if v, ok := get(t, db, "synced"); !ok || v != "s" {
		t.Fatalf("synced record: %q %v", v, ok)
	}
	apply(t, db, "later", "l", 12, 3)
	syncNow(db)
	db = crashReopen(t, db, o.FS.(*vfs.MemFS), &o, vfs.CrashCloneCfg{})
	if a, ok, err := db.Applied(peer); err != nil || !ok || a.Seq != 3 {
		t.Fatalf("after a crash past the sync: applied %+v %v %v, want seq 3", a, ok, err)
	}
	db = reopen(t, db, o)
	if a, ok, err := db.Applied(peer); err != nil || !ok || a.Seq != 3 {
		t.Fatalf("after a clean close: applied %+v %v %v, want seq 3", a, ok, err)
	}
	if v, err := db.getMeta(appliedKey(peer)); err != nil || v == nil {
		t.Fatalf("a clean close left no applied offset in Pebble: %v", err)
	}
	if v, ok := get(t, db, "later"); !ok || v != "l" {
		t.Fatalf("later record: %q %v", v, ok)
	}
}
