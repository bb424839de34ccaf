package lsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/tcache/tcache/internal/clock"
)

// countPrefix counts the keys Pebble holds with the given prefix.
func countPrefix(t *testing.T, db *DB, prefix byte) int {
	t.Helper()
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

// In cache mode every item record goes to the journal (whatever
// JournalMin, once it is not negative) and Pebble holds no record, only a
// position entry per frame once its segment is sealed; in persistent mode
// every record is in Pebble's d. Everything reads back, through the keydir
// and after a restart (from the keydir's checkpoint).
func TestJournalRecords(t *testing.T) {
	for _, c := range []struct {
		mode       Mode
		journalMin int
	}{{ModeCache, 0}, {ModeCache, testJournalMin}, {ModePersistent, 0}} {
		t.Run(fmt.Sprintf("%s/journal_min=%d", c.mode, c.journalMin), func(t *testing.T) {
			mode := c.mode
			fs := vfs.NewMem()
			o := testOptions(fs, clock.NewFake(testStart))
			o.Mode = mode
			o.JournalMin = c.journalMin
			db := mustOpen(t, o)
			for i := range 200 {
				put(t, db, fmt.Sprintf("big-%d", i), string(randomValue(fmt.Sprint(i), 1000+i)), 0, uint64(i+1))
				put(t, db, fmt.Sprintf("small-%d", i), fmt.Sprint(i), 0, uint64(i+1))
			}
			journal := mode == ModeCache
			check := func(stage string) {
				t.Helper()
				for i := range 200 {
					if v, ok := get(t, db, fmt.Sprintf("big-%d", i)); !ok || v != string(randomValue(fmt.Sprint(i), 1000+i)) {
						t.Fatalf("%s: big-%d: %d bytes, found %v", stage, i, len(v), ok)
					}
					if v, ok := get(t, db, fmt.Sprintf("small-%d", i)); !ok || v != fmt.Sprint(i) {
						t.Fatalf("%s: small-%d = %q %v", stage, i, v, ok)
					}
				}
			}
			check("written")
			st := db.Stats()
			if (st.JournalBytes > 200*1000) != journal || st.JournalSegments != 1 {
				t.Fatalf("journal: %d bytes in %d segments", st.JournalBytes, st.JournalSegments)
			}
			if journal && (st.KeydirKeys != 400 || st.IndexPending != 400) {
				t.Fatalf("keydir %d keys, %d positions pending; want 400, 400", st.KeydirKeys, st.IndexPending)
			}
			db = reopen(t, db, o)
			if d, s := countPrefix(t, db, prefixData), countPrefix(t, db, prefixPos); journal && (d != 0 || s != 400) || !journal && (d != 400 || s != 0) {
				t.Fatalf("Pebble holds %d records and %d position entries", d, s)
			}
			check("reopened")
			if st := db.Stats(); st.Items != 400 || st.BadCRC != 0 || st.Lost != 0 || journal && st.KeydirKeys != 400 {
				t.Fatalf("after reopen: items %d bad %d lost %d keydir %d", st.Items, st.BadCRC, st.Lost, st.KeydirKeys)
			}
		})
	}
}

// A record whose frame a crash lost (durability interval: the WAL was
// synced, the journal's buffer was not written) is gone whole: its index
// entries were pending with it, so the key reads as absent (not as lost or
// damaged), and can be written again.
func TestJournalLostFrames(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.Durability = DurabilityInterval
	db := mustOpen(t, o)
	put(t, db, "kept", string(randomValue("kept", 1000)), 0, 1)
	syncNow(db) // journal and WAL synced
	put(t, db, "lost", string(randomValue("lost", 1000)), 0, 2)
	if err := db.pdb.LogData(nil, pebble.Sync); err != nil { // the WAL alone
		t.Fatal(err)
	}
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{})
	defer db.Close()
	if v, ok := get(t, db, "kept"); !ok || v != string(randomValue("kept", 1000)) {
		t.Fatalf("kept: %d bytes, %v", len(v), ok)
	}
	r, err := db.Get(nil, []byte("lost"))
	if err != nil || r.Found || r.Where.Present {
		t.Fatalf("lost: found %v err %v where %+v; want a plain miss", r.Found, err, r.Where)
	}
	if st := db.Stats(); st.Lost != 0 || st.BadCRC != 0 {
		t.Fatalf("lost %d bad %d, want 0 0", st.Lost, st.BadCRC)
	}
	b := db.NewBatch()
	rec := Record{Value: randomValue("again", 1000), Version: Version{HLC: 3, Node: 1}}
	b.Put([]byte("lost"), &rec, r.Where)
	mustCommit(t, db, b)
	if v, ok := get(t, db, "lost"); !ok || v != string(randomValue("again", 1000)) {
		t.Fatalf("rewritten: %d bytes %v", len(v), ok)
	}
}

// With durability interval, every record committed before a completed
// sync survives a crash, whatever part of the unsynced data the crash
// keeps; a record committed after it reads back whole or not at all.
func TestJournalCrashInterval(t *testing.T) {
	for round := range 4 {
		fs := vfs.NewCrashableMem()
		o := testOptions(fs, clock.NewFake(testStart))
		o.Durability = DurabilityInterval
		db := mustOpen(t, o)
		const n = 3000
		synced := 0
		for i := range n {
			put(t, db, fmt.Sprintf("k%d", i), string(randomValue(fmt.Sprint(i), 300+i%1500)), 0, uint64(i+1))
			if i%97 == 0 {
				syncNow(db)
				synced = i + 1
			}
		}
		db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(round), 2))})
		present := 0
		for i := range n {
			r, err := db.Get(nil, fmt.Appendf(nil, "k%d", i))
			want := string(randomValue(fmt.Sprint(i), 300+i%1500))
			switch {
			case err != nil:
				t.Fatalf("round %d: k%d: %v", round, i, err)
			case r.Found && string(r.Value) != want:
				t.Fatalf("round %d: k%d has a wrong value", round, i)
			case !r.Found && i < synced:
				t.Fatalf("round %d: k%d, committed before a sync, lost", round, i)
			case r.Found:
				present++
			}
		}
		if st := db.Stats(); st.BadCRC != 0 {
			t.Fatalf("round %d: %d corrupt reads", round, st.BadCRC)
		}
		t.Logf("round %d: %d synced, %d of %d present, %d lost frames", round, synced, present, n, db.Stats().Lost)
		_ = db.Close()
	}
}

// Cache mode at its limit drops whole epochs and their segments: the
// journal stays near the limit, recent data reads back, and no segment
// older than the live epochs remains.
func TestJournalDrops(t *testing.T) {
	o := testOptions(vfs.NewMem(), clock.NewFake(testStart))
	o.DiskLimit = 4 << 20
	db := mustOpen(t, o)
	defer db.Close()
	const n = 16000 // ~16 MiB, four times the limit
	for i := range n {
		put(t, db, fmt.Sprintf("k%d", i), string(randomValue(fmt.Sprint(i), 1000)), 0, uint64(i+1))
		if i%500 == 0 {
			db.Maintain()
		}
	}
	db.Maintain()
	st := db.Stats()
	if st.Drops == 0 || st.JournalBytes > uint64(o.DiskLimit*3/2) || st.BytesUsed > uint64(o.DiskLimit*2) {
		t.Fatalf("drops %d, journal %d bytes, used %d, limit %d", st.Drops, st.JournalBytes, st.BytesUsed, o.DiskLimit)
	}
	lo := uint32(db.liveEpochs.Load() >> 32)
	for _, s := range db.j.Segments() {
		if s.Epoch < lo && s.ID != db.j.Segment() {
			t.Fatalf("segment %d of dropped epoch %d kept (live from %d)", s.ID, s.Epoch, lo)
		}
	}
	for i := n - 1000; i < n; i++ {
		if v, ok := get(t, db, fmt.Sprintf("k%d", i)); !ok || v != string(randomValue(fmt.Sprint(i), 1000)) {
			t.Fatalf("recent k%d: %d bytes %v", i, len(v), ok)
		}
	}
	if _, ok := get(t, db, "k0"); ok {
		t.Fatal("the oldest key survived four times the limit")
	}
	if st := db.Stats(); st.BadCRC != 0 {
		t.Fatalf("%d corrupt reads", st.BadCRC)
	}
}

// The keydir keeps within IndexMemory: past it the oldest epochs are
// dropped, as past the disk limit, and their keys leave the keydir, while
// the newest keys read back and the counters follow.
func TestKeydirLimit(t *testing.T) {
	o := testOptions(vfs.NewMem(), clock.NewFake(testStart))
	o.IndexMemory = 256 << 10 // 4766 keys at the worst load
	db := mustOpen(t, o)
	defer db.Close()
	limit := int(o.IndexMemory / int64(kdBytesPerKey))
	const n = 20000 // small values: the disk limit is far
	for i := range n {
		put(t, db, fmt.Sprintf("k%d", i), fmt.Sprint(i), 0, uint64(i+1))
		if i%1000 == 0 {
			db.Maintain()
		}
	}
	db.Maintain()
	st := db.Stats()
	if st.Drops == 0 || st.KeydirKeys > uint64(limit) || st.Items != st.KeydirKeys {
		t.Fatalf("drops %d, keydir %d keys (limit %d), items %d", st.Drops, st.KeydirKeys, limit, st.Items)
	}
	if st.BytesUsed > uint64(o.DiskLimit) {
		t.Fatalf("the disk limit was reached: %d bytes", st.BytesUsed)
	}
	for i := n - 1000; i < n; i++ {
		if v, ok := get(t, db, fmt.Sprintf("k%d", i)); !ok || v != fmt.Sprint(i) {
			t.Fatalf("recent k%d: %q %v", i, v, ok)
		}
	}
	if _, ok := get(t, db, "k0"); ok {
		t.Fatal("the oldest key survived four times the keydir's limit")
	}
}

// The sweeper deletes an expired record whose frame stays in the journal:
// its hint must go with it, or a read would find the frame.
func TestJournalSweepForgetsHint(t *testing.T) {
	clk := clock.NewFake(testStart)
	db := mustOpen(t, testOptions(vfs.NewMem(), clk))
	defer db.Close()
	put(t, db, "exp", string(randomValue("exp", 1000)), testStart.Unix()+1, 1)
	if _, ok := get(t, db, "exp"); !ok {
		t.Fatal("not found before expiry")
	}
	clk.Advance(timeSeconds(5))
	db.Maintain()
	if db.Stats().Swept != 1 {
		t.Fatalf("swept %d", db.Stats().Swept)
	}
	r, err := db.Get(nil, []byte("exp"))
	if err != nil || r.Found || r.Where.Present {
		t.Fatalf("after the sweep: found %v present %v err %v", r.Found, r.Where.Present, err)
	}
}

// Replication reads a journal store's records from their frames: the log
// with its records, a snapshot and a scan; a peer's record is a frame too.
func TestJournalReplicationReads(t *testing.T) {
	o := testOptions(vfs.NewMem(), clock.NewFake(testStart))
	o.Replicated = true
	db := mustOpen(t, o)
	defer db.Close()
	want := map[string]string{}
	for i := range 50 {
		k, v := fmt.Sprintf("k%d", i), string(randomValue(fmt.Sprint(i), 2000))
		put(t, db, k, v, 0, uint64(i+1))
		want[k] = v
	}
	syncNow(db) // the log is read up to the durable seq
	checkRec := func(how string, key, raw []byte) {
		t.Helper()
		r, err := DecodeRecord(nil, raw)
		if err != nil || string(r.Value) != want[string(key)] {
			t.Fatalf("%s: %q: %d bytes, %v", how, key, len(r.Value), err)
		}
	}
	n := 0
	if _, err := db.ReadLogRecords(1, func(_ uint64, e LogEntry, rec []byte) bool {
		checkRec("log", e.Key, rec)
		n++
		return true
	}); err != nil || n != 50 {
		t.Fatalf("log: %d records, %v", n, err)
	}
	n = 0
	if _, _, err := db.Snapshot(func(key, rec []byte) error {
		checkRec("snapshot", key, rec)
		n++
		return nil
	}); err != nil || n != 50 {
		t.Fatalf("snapshot: %d records, %v", n, err)
	}
	n = 0
	if _, err := db.Scan(nil, 100, func(key, rec []byte) bool {
		checkRec("scan", key, rec)
		n++
		return true
	}); err != nil || n != 50 {
		t.Fatalf("scan: %d records, %v", n, err)
	}
	raw, _, err := db.GetRaw(nil, []byte("k3"))
	if err != nil {
		t.Fatal(err)
	}
	checkRec("GetRaw", []byte("k3"), raw)

	// A record from a peer is a frame, with its applied offset after it.
	b := db.NewBatch()
	b.PutRemote([]byte("remote"), raw, 999, Location{})
	b.SetApplied(Applied{Peer: 7, History: 1, Seq: 1})
	mustCommit(t, db, b)
	if _, ok := db.kd.get(db.kd.hash([]byte("remote"))); !ok || countPrefix(t, db, prefixData) != 0 {
		t.Fatal("a peer's record is not in the journal")
	}
	if a, ok, err := db.Applied(7); err != nil || !ok || a.Seq != 1 {
		t.Fatalf("applied: %+v %v %v", a, ok, err)
	}
	want["remote"] = want["k3"]
	if v, ok := get(t, db, "remote"); !ok || v != want["k3"] {
		t.Fatalf("remote: %d bytes %v", len(v), ok)
	}
}

// A journal write error (ENOSPC) fails the commits of journal records,
// keeps the server's reads working and damages nothing written before;
// small records, which stay in Pebble, are still accepted.
func TestJournalWriteFault(t *testing.T) {
	mem := vfs.NewCrashableMem()
	var on atomic.Bool
	o := testOptions(errorfs.Wrap(mem, enospcWrites(&on, journalSuffix)), clock.NewFake(testStart))
	o.Durability = DurabilityInterval
	db := mustOpen(t, o)
	for i := range 50 {
		put(t, db, fmt.Sprint(i), string(randomValue(fmt.Sprint(i), 1000)), 0, uint64(i+1))
	}
	syncNow(db)
	on.Store(true)
	// The first commit after the fault is buffered; the syncer's write
	// fails, and from then on commits of journal records fail.
	put(t, db, "buffered", string(randomValue("b", 1000)), 0, 99)
	syncNow(db)
	if db.Stats().WriteErrors == 0 {
		t.Fatal("the syncer's failed journal write was not counted")
	}
	b := db.NewBatch()
	rec := Record{Value: randomValue("x", 1000), Version: Version{HLC: 100, Node: 1}}
	b.Put([]byte("new"), &rec, Location{})
	if err := db.Commit(b); !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrJournalFailed) {
		t.Fatalf("commit under ENOSPC: %v", err)
	}
	b = db.NewBatch()
	rec = Record{Value: []byte("small"), Version: Version{HLC: 101, Node: 1}}
	b.Put([]byte("small"), &rec, Location{})
	if err := db.Commit(b); !errors.Is(err, ErrJournalFailed) {
		t.Fatalf("a small record's commit under ENOSPC: %v", err) // every record is a frame
	}
	for i := range 50 {
		if v, ok := get(t, db, fmt.Sprint(i)); !ok || v != string(randomValue(fmt.Sprint(i), 1000)) {
			t.Fatalf("%d after the fault: %d bytes %v", i, len(v), ok)
		}
	}
	_ = db.Close()
	on.Store(false)
	o.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	db = mustOpen(t, o)
	defer db.Close()
	for i := range 50 {
		if v, ok := get(t, db, fmt.Sprint(i)); !ok || v != string(randomValue(fmt.Sprint(i), 1000)) {
			t.Fatalf("%d after reopen: %d bytes %v", i, len(v), ok)
		}
	}
	put(t, db, "again", string(randomValue("again", 1000)), 0, 1000)
}

// A version 1 store (every record in Pebble) opens on the Pebble path,
// reads as it was and is marked version 4, which an older tcache refuses;
// the journal path refuses it (converting it is not built: docs/keydir.md)
// and so it refuses a store of the other data path, in both directions,
// before writing anything.
func TestFormatUpgrade(t *testing.T) {
	fs := vfs.NewMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.JournalMin = -1
	db := mustOpen(t, o)
	put(t, db, "old", string(randomValue("old", 1000)), 0, 1)
	for _, k := range [][]byte{metaIndexed, metaDataPath} { // version 1 had neither
		if err := db.pdb.Delete(k, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.pdb.Set(metaFormat, encodeFormat(formatVersionPebbleOnly), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	journal := o
	journal.JournalMin = 0
	if _, err := Open(journal); !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "format tcache-lsm/1") {
		t.Fatalf("journal path on a version 1 store: %v", err)
	}
	db = mustOpen(t, o)
	if v, ok := get(t, db, "old"); !ok || v != string(randomValue("old", 1000)) {
		t.Fatalf("old record: %d bytes %v", len(v), ok)
	}
	v, err := db.getMeta(metaFormat)
	if f, _ := decodeFormat(v); err != nil || f != formatVersion {
		t.Fatalf("format after upgrade: %d %v", f, err)
	}
	_ = db.Close()
	if _, err := Open(journal); !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "keeps its records in the pebble") {
		t.Fatalf("journal path on a Pebble store: %v", err)
	}

	// A version 3 store an older tcache did not close cleanly is refused
	// on both paths: only that version re-indexes its journal's tail.
	o.Dir, journal.Dir = "/v3", "/v3"
	db = mustOpen(t, o)
	_ = db.Close()
	raw, err := pebble.Open(o.Dir, &pebble.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	b := raw.NewBatch()
	_ = b.Set(metaFormat, encodeFormat(formatVersionIndexed), nil)
	_ = b.Set(metaClosed, []byte{0}, nil) // as a crash leaves it
	_ = b.Delete(metaDataPath, nil)
	if err := raw.Apply(b, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	_ = raw.Close()
	for _, opts := range []Options{o, journal} {
		if _, err := Open(opts); !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "not closed cleanly") {
			t.Fatalf("an unclean version 3 store: %v", err)
		}
	}

	o.Dir, journal.Dir = "/journal", "/journal"
	db = mustOpen(t, journal)
	put(t, db, "k", "v", 0, 1)
	_ = db.Close()
	if _, err := Open(o); !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "keeps its records in the journal") {
		t.Fatalf("Pebble path on a journal store: %v", err)
	}
	db = mustOpen(t, journal)
	defer db.Close()
	if v, ok := get(t, db, "k"); !ok || v != "v" {
		t.Fatalf("after the refused open: %q %v", v, ok)
	}
}

// FuzzJournalRef: any bytes as a d value parse (parseStored) to an error
// wrapping ErrCorrupt, or to a reference that re-encodes to the same bytes
// or a record; nothing panics, and storedSize never goes negative for a
// valid reference.
func FuzzJournalRef(f *testing.F) {
	f.Add(appendRef(nil, 0, Version{HLC: 1, Node: 2}, JournalLoc{Segment: 1, Off: 20, Len: 100}))
	f.Add(appendRef(nil, 1<<40, Version{}, JournalLoc{Segment: 9, Off: 1 << 30, Len: frameOverhead}))
	f.Add(AppendRecord(nil, &Record{Value: []byte("v")}))
	f.Add([]byte{refFormat})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, loc, ref, err := parseStored(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not wrapping ErrCorrupt: %v", err)
			}
			return
		}
		if !ref {
			return
		}
		if again := appendRef(nil, h.exptime, h.version, loc); string(again) != string(b) {
			t.Fatalf("reference re-encodes differently: %x → %x", b, again)
		}
		if storedSize([]byte("k"), b) < 0 {
			t.Fatalf("negative size for %+v", loc)
		}
	})
}

// A crash can keep the journal's frames of a new epoch and lose the commit
// that advanced the epoch (still in Pebble's WAL buffer): Open takes the
// advance again from the segment's header, and every frame the journal
// kept reads back.
func TestJournalEpochAdvanceLost(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.IndexMemory = 64 << 10 // an epoch every 37 puts
	db := mustOpen(t, o)
	syncNow(db)
	e0 := db.curEpoch()
	n := 0
	for ; db.curEpoch() == e0 || n < 100; n++ {
		put(t, db, fmt.Sprint("k", n), "v", 0, uint64(n+1))
	}
	if err := db.syncJournal(); err != nil { // the journal alone: the WAL keeps the advance in its buffer
		t.Fatal(err)
	}
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{})
	defer db.Close()
	for i := range n {
		if v, ok := get(t, db, fmt.Sprint("k", i)); !ok || v != "v" {
			t.Fatalf("k%d after the crash: %q %v (epoch %d, cur %d)", i, v, ok, e0, db.curEpoch())
		}
	}
	if st := db.Stats(); st.Items != uint64(n) {
		t.Fatalf("items %d, want %d", st.Items, n)
	}
}
