package lsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

// model is what a sequence of writes leaves: each key's value, absent
// when deleted.
type model map[string]string

// op writes one random mutation of key through db and records it in m:
// a large put, a small put, an expiring put, or a delete. hlc is the
// version.
func (m model) op(t testing.TB, db *DB, r *rand.Rand, key string, hlc uint64) {
	t.Helper()
	switch n := r.IntN(10); {
	case n < 5:
		v := string(randomValue(fmt.Sprint(key, hlc), 300+r.IntN(1500)))
		put(t, db, key, v, 0, hlc)
		m[key] = v
	case n < 7:
		v := fmt.Sprint("small", hlc)
		put(t, db, key, v, 0, hlc)
		m[key] = v
	case n < 8:
		v := string(randomValue(fmt.Sprint(key, hlc), 400))
		put(t, db, key, v, testStart.Unix()+1_000_000, hlc)
		m[key] = v
	default:
		del(t, db, key, hlc)
		delete(m, key)
	}
}

// check compares every key of keys in db with m.
func (m model) check(t testing.TB, db *DB, stage string, keys int) {
	t.Helper()
	for i := range keys {
		key := fmt.Sprint("key", i)
		v, ok := get(t, db, key)
		want, wantOK := m[key]
		if ok != wantOK || v != want {
			t.Fatalf("%s: %s: found %v (%d bytes), want %v (%d bytes)", stage, key, ok, len(v), wantOK, len(want))
		}
	}
	if st := db.Stats(); st.BadCRC != 0 || st.Lost != 0 {
		t.Fatalf("%s: %d corrupt, %d lost", stage, st.BadCRC, st.Lost)
	}
}

func settleIndex(t testing.TB, db *DB) {
	t.Helper()
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.settleLocked(); err != nil {
		t.Fatal(err)
	}
}

// readLog reads the whole log and checks that it is gap-free from
// LogFirst to LastSeq; it returns the entries by seq.
func readLog(t testing.TB, db *DB) map[uint64]LogEntry {
	t.Helper()
	syncNow(db) // the log is read up to the durable seq
	got := make(map[uint64]LogEntry)
	last := uint64(0)
	if err := db.ReadLog(db.logFirst.Load(), func(seq uint64, e LogEntry) bool {
		if seq <= last {
			t.Fatalf("log entry %d after %d", seq, last)
		}
		last = seq
		e.Key = append([]byte(nil), e.Key...)
		got[seq] = e
		return true
	}); err != nil {
		t.Fatalf("read log: %v", err)
	}
	return got
}

// Records are written, overwritten and deleted in any order while their
// position and log entries reach Pebble as the tables fill; the state, the
// log and the counters stay exact, before and after a restart.
func TestPendingIngest(t *testing.T) {
	fs := vfs.NewMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.MemTableSize = minMemTableSize // seal often
	db := mustOpen(t, o)
	const keys, ops = 500, 12000
	m := model{}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range ops {
		m.op(t, db, r, fmt.Sprint("key", r.IntN(keys)), uint64(i+1))
		if i%2500 == 0 {
			m.check(t, db, fmt.Sprint("op ", i), keys)
		}
	}
	m.check(t, db, "written", keys)
	if st := db.Stats(); st.IndexIngests == 0 || st.IndexPending == 0 {
		t.Fatalf("ingests %d, pending %d: the index was not split between sstables and RAM", st.IndexIngests, st.IndexPending)
	}
	log := readLog(t, db)
	if uint64(len(log)) != db.LastSeq() || len(log) != ops {
		t.Fatalf("log holds %d entries up to %d, want %d", len(log), db.LastSeq(), ops)
	}
	settleIndex(t, db)
	if st := db.Stats(); st.IndexPending != 0 || st.Items != uint64(len(m)) {
		t.Fatalf("settled: %d pending, %d items, want 0 and %d", st.IndexPending, st.Items, len(m))
	}
	m.check(t, db, "settled", keys)
	db = reopen(t, db, o)
	m.check(t, db, "reopened", keys)
	if got := len(readLog(t, db)); got != ops {
		t.Fatalf("log after reopen: %d entries, want %d", got, ops)
	}
	if st := db.Stats(); st.Items != uint64(len(m)) {
		t.Fatalf("reopened: %d items, want %d", st.Items, len(m))
	}
	// Nothing of a superseded record is left in Pebble: every d, k and x
	// entry belongs to a live key's current record.
	assertIndexClean(t, db, m)
}

// assertIndexClean checks that a journal store's index is exactly m: the
// keydir holds m's keys and nothing else, Pebble holds no record or key
// index (d, k, x), and every position entry names a live segment.
func assertIndexClean(t *testing.T, db *DB, m model) {
	t.Helper()
	for _, prefix := range []byte{prefixData, prefixIndex, prefixExp} {
		if n := countPrefix(t, db, prefix); n != 0 {
			t.Fatalf("Pebble holds %d %c entries in a journal store", n, prefix)
		}
	}
	if n := db.kd.len(); n != len(m) {
		t.Fatalf("keydir holds %d keys, want %d", n, len(m))
	}
	for k := range m {
		if _, ok := db.kd.get(db.kd.hash([]byte(k))); !ok {
			t.Fatalf("keydir has no entry for %q", k)
		}
	}
	keys, err := db.scan([]byte{prefixPos}, []byte{prefixPos + 1}, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if len(k) != posKeyLen {
			t.Fatalf("position key %x", k)
		}
		seg := binary.BigEndian.Uint32(k[1:])
		if _, ok := db.j.SegmentEpoch(seg); !ok {
			t.Fatalf("a position entry of segment %d, which is gone", seg)
		}
	}
}

// Writers race the sealer: each owns its keys. Readers run alongside.
// The end state is each writer's model.
func TestPendingConcurrent(t *testing.T) {
	fs := vfs.NewMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.MemTableSize = minMemTableSize
	db := mustOpen(t, o)
	const writers, keysEach, opsEach = 4, 60, 2500
	models := make([]model, writers)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		models[w] = model{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range opsEach {
				key := fmt.Sprint("key", w*keysEach+r.IntN(keysEach))
				models[w].op(t, db, r, key, uint64(i*writers+w+1))
			}
		}()
	}
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		r := rand.New(rand.NewPCG(9, 9))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := db.Get(nil, fmt.Appendf(nil, "key%d", r.IntN(writers*keysEach))); err != nil {
				t.Errorf("concurrent read: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	rwg.Wait()
	all := model{}
	for _, m := range models {
		for k, v := range m {
			all[k] = v
		}
	}
	all.check(t, db, "written", writers*keysEach)
	if db.Stats().IndexIngests == 0 {
		t.Fatal("no table was ingested")
	}
	if got := len(readLog(t, db)); got != writers*opsEach {
		t.Fatalf("log: %d entries, want %d", got, writers*opsEach)
	}
	db = reopen(t, db, o)
	all.check(t, db, "reopened", writers*keysEach)
	if st := db.Stats(); st.Items != uint64(len(all)) {
		t.Fatalf("reopened: %d items, want %d", st.Items, len(all))
	}
	assertIndexClean(t, db, all)
}

// After a crash, Open indexes the journal after the marker again: under
// durability interval every write before the last completed sync is
// there, a later one is there or its key reads as some later state, a
// delete that reached Pebble is not undone by re-indexing the frame it
// deleted, and the log has no gap.
func TestPendingCrashReindex(t *testing.T) {
	for round := range 4 {
		fs := vfs.NewCrashableMem()
		o := testOptions(fs, clock.NewFake(testStart))
		o.Durability = DurabilityInterval
		o.MemTableSize = minMemTableSize
		db := mustOpen(t, o)
		const keys, ops = 300, 6000
		m := model{}
		var atSync model
		later := make(map[string][]string) // values (or "" for deleted) written after the last sync

		r := rand.New(rand.NewPCG(uint64(round), 3))
		syncedSeq := uint64(0)
		for i := range ops {
			key := fmt.Sprint("key", r.IntN(keys))
			m.op(t, db, r, key, uint64(i+1))
			later[key] = append(later[key], m[key])

			if r.IntN(300) == 0 {
				syncNow(db)
				atSync, later, syncedSeq = clone(m), make(map[string][]string), db.LastSeq()
			}
			if round%2 == 1 && r.IntN(200) == 0 {
				// Pebble's WAL alone: deletes and small records are
				// durable, the journal's tail is not.
				if err := db.pdb.LogData(nil, pebble.Sync); err != nil {
					t.Fatal(err)
				}
			}
		}
		db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(round), 4))})
		for i := range keys {
			key := fmt.Sprint("key", i)
			v, ok := get(t, db, key)
			if !ok {
				v = ""
			}
			allowed := append([]string{atSync[key]}, later[key]...)
			if !contains(allowed, v) {
				t.Fatalf("round %d: %s reads %d bytes (found %v), not a state written since the last sync", round, key, len(v), ok)
			}
		}
		if db.LastSeq() < syncedSeq {
			t.Fatalf("round %d: log ends at %d, before the synced %d", round, db.LastSeq(), syncedSeq)
		}
		log := readLog(t, db) // gap-free
		for seq := db.logFirst.Load(); seq <= syncedSeq; seq++ {
			if _, ok := log[seq]; !ok {
				t.Fatalf("round %d: synced log entry %d is missing", round, seq)
			}
		}
		// Writes go on after the re-index.
		put(t, db, "after", string(randomValue("after", 1000)), 0, uint64(ops+1))
		if v, ok := get(t, db, "after"); !ok || v != string(randomValue("after", 1000)) {
			t.Fatalf("round %d: write after the re-index", round)
		}
		if st := db.Stats(); st.BadCRC != 0 {
			t.Fatalf("round %d: %d corrupt reads", round, st.BadCRC)
		}
		_ = db.Close()
	}
}

// A journaled record deleted through Pebble stays deleted when a crash
// loses the pending index: Open sees the delete's log entry after the
// frame's seq.
func TestPendingCrashDelete(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.Durability = DurabilityInterval
	db := mustOpen(t, o)
	put(t, db, "gone", string(randomValue("gone", 1000)), 0, 1)
	put(t, db, "kept", string(randomValue("kept", 1000)), 0, 2)
	syncNow(db) // both frames durable, their index only in RAM
	del(t, db, "gone", 3)
	put(t, db, "kept", "small now", 0, 4) // a Pebble record over a pending one
	syncNow(db)
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{})
	defer db.Close()
	if _, ok := get(t, db, "gone"); ok {
		t.Fatal("a deleted record came back from the journal")
	}
	if v, ok := get(t, db, "kept"); !ok || v != "small now" {
		t.Fatalf("kept = %q %v, want the later small record", v, ok)
	}
	if n := len(readLog(t, db)); n != 4 {
		t.Fatalf("log: %d entries, want 4", n)
	}
	waitRecount(t, db)
	if st := db.Stats(); st.Items != 1 {
		t.Fatalf("%d items, want 1", st.Items)
	}
}

// A record from a peer carries no log entry, so after a crash only its
// version tells the re-index whether it is newer than a journal frame of
// the same key: the newer of the two is what reads back.
func TestPendingCrashRemote(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.NewFake(testStart))
	o.Durability = DurabilityInterval
	db := mustOpen(t, o)
	remote := func(key, value string, hlc uint64) {
		t.Helper()
		raw := (&recordCodec{min: -1}).appendRecord(nil, &Record{Value: []byte(value), Version: Version{HLC: hlc, Node: 99}})
		b := db.NewBatch()
		b.PutRemote([]byte(key), raw, db.CASHighWater()+1, Location{})
		mustCommit(t, db, b)
	}
	// "peer": the local frame, then the peer's newer record over it.
	put(t, db, "peer", string(randomValue("local", 1000)), 0, 10)
	remote("peer", "from the peer", 20)
	// "local": the peer's record, then a newer local frame over it.
	remote("local", "from the peer", 10)
	put(t, db, "local", string(randomValue("local2", 1000)), 0, 20)
	syncNow(db) // the frames and Pebble's WAL durable, the index only in RAM
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{})
	defer db.Close()
	if db.reindexTook == 0 {
		t.Fatal("nothing was re-indexed")
	}
	if v, ok := get(t, db, "peer"); !ok || v != "from the peer" {
		t.Fatalf("peer = %.20q %v, want the peer's newer record", v, ok)
	}
	if v, ok := get(t, db, "local"); !ok || v != string(randomValue("local2", 1000)) {
		t.Fatalf("local = %.20q %v, want the newer local frame", v, ok)
	}
	waitRecount(t, db)
	if st := db.Stats(); st.Items != 2 {
		t.Fatalf("%d items, want 2", st.Items)
	}
	// The ingested index holds the newer record of each, and nothing of
	// the older: a clean restart reads the same.
	db2 := reopen(t, db, o)
	for key, want := range map[string]string{"peer": "from the peer", "local": string(randomValue("local2", 1000))} {
		if v, ok := get(t, db2, key); !ok || v != want {
			t.Fatalf("after a clean restart %s = %.20q %v", key, v, ok)
		}
	}
}

// flush_all removes pending records too; records written after it stay,
// across a restart.
func TestPendingFlush(t *testing.T) {
	clk := clock.NewFake(testStart)
	o := testOptions(vfs.NewMem(), clk)
	db := mustOpen(t, o)
	for i := range 50 {
		put(t, db, fmt.Sprint("old", i), string(randomValue(fmt.Sprint(i), 1000)), 0, uint64(i+1))
	}
	b := db.NewBatch()
	b.Flush(FlushMarker{OldestLive: testStart.Unix(), Version: Version{HLC: 100, Node: db.NodeID()}})
	mustCommit(t, db, b)
	clk.Advance(time.Second)
	put(t, db, "new", string(randomValue("new", 1000)), 0, 200)
	for i := range 50 {
		if _, ok := get(t, db, fmt.Sprint("old", i)); ok {
			t.Fatalf("old%d survived flush_all", i)
		}
	}
	db = reopen(t, db, o)
	if _, ok := get(t, db, "old3"); ok {
		t.Fatal("old3 came back after a restart")
	}
	if v, ok := get(t, db, "new"); !ok || v != string(randomValue("new", 1000)) {
		t.Fatal("a record written after flush_all was lost")
	}
	if n := len(readLog(t, db)); n != 52 {
		t.Fatalf("log: %d entries, want 52", n)
	}
}

// waitRecount waits for the counters rebuilt after an unclean shutdown.
func waitRecount(t testing.TB, db *DB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); db.recounting.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("recount did not finish")
		}
	}
}

func clone(m model) model {
	c := make(model, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// FuzzIndexedMarker: any bytes as the indexed marker decode to an error
// wrapping ErrCorrupt or to a marker that encodes back to them.
func FuzzIndexedMarker(f *testing.F) {
	f.Add(indexedMarker{Seg: 3, Off: 1 << 20, Seq: 42}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeIndexedMarker(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not wrapping ErrCorrupt: %v", err)
			}
			return
		}
		if string(m.encode()) != string(b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, m, m.encode())
		}
	})
}

// A batch whose frames cross a segment boundary (32 MiB) keeps every
// entry and log entry, those of the table it sealed included.
func TestPendingBatchAcrossSeal(t *testing.T) {
	o := testOptions(vfs.NewMem(), clock.NewFake(testStart))
	o.MemTableSize = minMemTableSize
	db := mustOpen(t, o)
	m := model{}
	b := db.NewBatch()
	for i := range 3000 {
		key := fmt.Sprint("key", i)
		v := string(randomValue(key, 12000))
		rec := Record{Value: []byte(v), Version: Version{HLC: uint64(i + 1), Node: db.NodeID()}}
		b.Put([]byte(key), &rec, Location{Known: true})
		m[key] = v
	}
	mustCommit(t, db, b)
	if n := len(db.j.Segments()); n < 2 {
		t.Fatalf("the batch's frames are in %d segments: it sealed too few tables", n)
	}
	m.check(t, db, "committed", 3000)
	if n := len(readLog(t, db)); n != 3000 {
		t.Fatalf("log: %d entries, want 3000", n)
	}
	db = reopen(t, db, o)
	m.check(t, db, "reopened", 3000)
	assertIndexClean(t, db, m)
}

// The log is trimmed in Pebble only. A pending table whose oldest log
// entry is past the retention age is sealed by the maintenance pass, so
// that the next pass trims those entries: small writes would otherwise
// hold the log back until their segment filled.
func TestLogTrimSealsPending(t *testing.T) {
	clk := clock.NewFake(testStart)
	o := testOptions(vfs.NewMem(), clk)
	o.JournalMin = 0 // the default: every item record in the journal
	o.LogRetentionAge = time.Hour
	db := mustOpen(t, o)
	defer db.Close()
	for i := range 10 {
		put(t, db, fmt.Sprint("k", i), "v", 0, uint64(i+1))
	}
	db.Maintain()
	if st := db.Stats(); st.LogFirst != 1 || st.IndexIngests != 0 {
		t.Fatalf("before the retention age: log first %d, %d ingestions", st.LogFirst, st.IndexIngests)
	}
	clk.Advance(2 * time.Hour)
	db.Maintain() // seals the open table
	db.mu.Lock()
	err := db.waitHandedLocked() // its ingestion; settleIndex would seal it itself
	db.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	put(t, db, "new", "v", 0, 11)
	db.Maintain()
	if st := db.Stats(); st.LogFirst != 11 || st.IndexIngests != 1 {
		t.Fatalf("after the retention age: log first %d, %d ingestions; want 11, 1", st.LogFirst, st.IndexIngests)
	}
	for i := range 10 {
		if v, ok := get(t, db, fmt.Sprint("k", i)); !ok || v != "v" {
			t.Fatalf("k%d = %q %v", i, v, ok)
		}
	}
	readLog(t, db)
}

// A pending table's arena is a list of chunks: entries never straddle
// two, each reads back by its reference, and a log cursor made before
// later appends reads its entries whatever chunks came after.
func TestPendingArenaChunks(t *testing.T) {
	tab := newSegIndex(1)
	type ent struct {
		ref, n uint32
		b      []byte
	}
	var pos, logs []ent
	total := 0
	for i := 0; total < 3*arenaChunk; i++ {
		b := randomValue(fmt.Sprint(i), 1+(i*7919)%5000)
		total += len(b)
		if i%2 == 0 {
			tab.addPos(b)
			p := tab.pos[len(tab.pos)-1]
			pos = append(pos, ent{p.off, p.n, b})
		} else {
			tab.addLog(uint64(i), b)
			l := tab.logs[len(tab.logs)-1]
			logs = append(logs, ent{l.off, l.n, b})
		}
	}
	if len(tab.chunks) < 3 {
		t.Fatalf("%d bytes in %d chunks", total, len(tab.chunks))
	}
	for _, e := range append(pos, logs...) {
		if o := e.ref & (arenaChunk - 1); int(o)+int(e.n) > arenaChunk {
			t.Fatalf("entry at %d of %d bytes straddles a chunk", o, e.n)
		}
		if got := tab.entry(e.ref, e.n); !bytes.Equal(got, e.b) {
			t.Fatalf("entry %x: %d bytes differ", e.ref, len(got))
		}
	}
	// A cursor's view stays whole while the table grows.
	got, chunks := tab.logsFrom(0)
	for i := range 2000 {
		tab.addLog(uint64(1<<40+i), randomValue(fmt.Sprint("more", i), 3000))
	}
	if len(got) != len(logs) {
		t.Fatalf("cursor of %d log entries, want %d", len(got), len(logs))
	}
	for i, l := range got {
		if !bytes.Equal(arenaEntry(chunks, l.off, l.n), logs[i].b) {
			t.Fatalf("log entry %d read through the cursor differs", i)
		}
	}
	if tab.arenaFull() {
		t.Fatal("arena full at a few chunks")
	}
}
