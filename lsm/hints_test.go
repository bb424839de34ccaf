package lsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

// hintDB opens a cache-mode store that keeps its records in Pebble (hints
// are that path's: a journal store has the keydir) and whose epoch
// advances every 32 KiB, with a hint table of hintBytes.
func hintDB(t *testing.T, hintBytes int64) *DB {
	t.Helper()
	o := testOptions(vfs.NewMem(), clock.NewFake(testStart))
	o.JournalMin = -1
	o.DiskLimit = minDiskLimit
	o.IndexMemory = hintBytes
	db := mustOpen(t, o)
	t.Cleanup(func() { db.Close() })
	return db
}

var hintVer atomic.Uint64

func hintPut(t *testing.T, db *DB, key, value string) {
	t.Helper()
	b := db.NewBatch()
	rec := Record{Value: []byte(value), Version: Version{HLC: hintVer.Add(1), Node: 1}}
	b.Put([]byte(key), &rec, Location{})
	mustCommit(t, db, b)
}

func hintGet(t *testing.T, db *DB, key string) (string, bool) {
	t.Helper()
	r, err := db.Get(nil, []byte(key))
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return string(r.Value), r.Found
}

// advanceEpoch writes filler until the current epoch moves on.
func advanceEpoch(t *testing.T, db *DB) {
	t.Helper()
	e := db.curEpoch()
	for i := 0; db.curEpoch() == e; i++ {
		hintPut(t, db, fmt.Sprintf("filler-%d-%d", e, i), string(bytes.Repeat([]byte{'f'}, 1000)))
	}
}

// A key written in one epoch and overwritten in a later one is read from
// the later one whatever its hint says; the hint follows the writes.
func TestHintsFollowWrites(t *testing.T) {
	db := hintDB(t, 1<<16)
	hintPut(t, db, "k", "v1")
	e1 := db.curEpoch()
	if v, ok := hintGet(t, db, "k"); !ok || v != "v1" {
		t.Fatalf("get = %q %v", v, ok)
	}
	if st := db.Stats(); st.HintHits != 1 || st.HintMisses != 0 {
		t.Fatalf("a read after a put: hits %d misses %d, want 1 0", st.HintHits, st.HintMisses)
	}
	advanceEpoch(t, db)
	hintPut(t, db, "k", "v2")
	if db.curEpoch() == e1 {
		t.Fatal("the epoch did not advance")
	}
	if v, ok := hintGet(t, db, "k"); !ok || v != "v2" {
		t.Fatalf("after an overwrite in a new epoch: %q %v", v, ok)
	}

	// A stale hint (the previous epoch, as if a reader had raced a
	// commit): the read falls back to the k index, counts a miss, and
	// the hint is repaired.
	db.hints.set([]byte("k"), hint{epoch: e1})
	before := db.Stats()
	if v, ok := hintGet(t, db, "k"); !ok || v != "v2" {
		t.Fatalf("with a stale hint: %q %v", v, ok)
	}
	after := db.Stats()
	if after.HintMisses != before.HintMisses+1 {
		t.Fatalf("stale hint: misses %d → %d", before.HintMisses, after.HintMisses)
	}
	if v, ok := hintGet(t, db, "k"); !ok || v != "v2" || db.Stats().HintHits != after.HintHits+1 {
		t.Fatalf("the hint was not repaired: %q %v hits %d", v, ok, db.Stats().HintHits)
	}
	// The location a hinted read returns is the same as the index's.
	viaHint, err := db.lookup([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	db.hints.clear([]byte("k"))
	viaIndex, err := db.lookup([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	if viaHint != viaIndex {
		t.Fatalf("lookup via hint %+v, via index %+v", viaHint, viaIndex)
	}
}

// Deletes, expiry (the sweeper) and dropped epochs leave hints behind that
// must not resurrect anything.
func TestHintsNeverResurrect(t *testing.T) {
	clk := clock.NewFake(testStart)
	o := testOptions(vfs.NewMem(), clk)
	o.DiskLimit = minDiskLimit
	db := mustOpen(t, o)
	defer db.Close()

	hintPut(t, db, "del", "x")
	b := db.NewBatch()
	b.Delete([]byte("del"), Version{HLC: hintVer.Add(1), Node: 1}, Location{})
	mustCommit(t, db, b)
	if _, ok := hintGet(t, db, "del"); ok {
		t.Fatal("a deleted key was found")
	}

	// Expired and swept: the hint still names the epoch, the record is gone.
	b = db.NewBatch()
	rec := Record{Value: []byte("short"), Exptime: testStart.Unix() + 1, Version: Version{HLC: hintVer.Add(1), Node: 1}}
	b.Put([]byte("exp"), &rec, Location{})
	mustCommit(t, db, b)
	clk.Advance(5e9)
	db.Maintain()
	if r, err := db.Get(nil, []byte("exp")); err != nil || r.Found {
		t.Fatalf("a swept record: found %v err %v", r.Found, err)
	}

	// Dropped with its epoch (cache mode at its limit).
	hintPut(t, db, "old", "y")
	e := db.curEpoch()
	for db.Stats().Drops == 0 || db.epochLive(e) {
		advanceEpoch(t, db)
		db.Maintain()
	}
	if _, ok := hintGet(t, db, "old"); ok {
		t.Fatal("a key of a dropped epoch was found")
	}
}

// With a table of one bucket every key evicts every other key's hint:
// reads stay exact.
func TestHintsTinyTable(t *testing.T) {
	db := hintDB(t, hintBucketSize)
	want := map[string]string{}
	for i := range 300 {
		k := fmt.Sprintf("key-%d", i%50)
		v := fmt.Sprintf("v%d", i)
		hintPut(t, db, k, v)
		want[k] = v
		if i%7 == 0 {
			advanceEpoch(t, db)
		}
	}
	for k, v := range want {
		if got, ok := hintGet(t, db, k); !ok || got != v {
			t.Fatalf("%s = %q %v, want %q", k, got, ok, v)
		}
	}
	for _, c := range []struct{ bytes, buckets int64 }{{hintBucketSize - 1, 0}, {hintBucketSize, 1}, {1 << 20, (1 << 20) / 64}} {
		h, err := newHints(c.bytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := int64(len(h.bucketsOrNil())); got != c.buckets {
			t.Fatalf("newHints(%d): %d buckets, want %d", c.bytes, got, c.buckets)
		}
		h.free()
	}
}

// Concurrent writers, readers and maintenance over a few keys while epochs
// advance: every read returns the key's latest value written before it
// started or a later one, never an older one and never a miss (run with
// -race in CI). Without hints this caught find reading k, then missing
// the record a concurrent commit had just moved to a newer epoch.
func TestHintsConcurrent(t *testing.T) {
	t.Run("hints", func(t *testing.T) { testConcurrentReads(t, 1<<10) })
	t.Run("no-hints", func(t *testing.T) { testConcurrentReads(t, -1) })
}

func testConcurrentReads(t *testing.T, hintBytes int64) {
	db := hintDB(t, hintBytes)
	const keys = 16
	var latest [keys]atomic.Uint64 // highest value number committed per key
	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		writers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			b := db.NewBatch()
			for n := uint64(1); n <= 3000; n++ {
				k := rng.IntN(keys)
				// Each writer owns half the keys, so a key's values
				// are written in order.
				k = k - k%2 + w
				rec := Record{Value: fmt.Appendf(nil, "%d", n), Version: Version{HLC: hintVer.Add(1), Node: 1}}
				b.Put(fmt.Appendf(nil, "c%d", k), &rec, Location{})
				if n%97 == 0 {
					rec := Record{Value: bytes.Repeat([]byte{'z'}, 8000), Version: Version{HLC: hintVer.Add(1), Node: 1}}
					b.Put(fmt.Appendf(nil, "big-%d-%d", w, n), &rec, Location{})
				}
				if err := db.Commit(b); err != nil {
					t.Error(err)
					return
				}
				b.Reset()
				latest[k].Store(n)
			}
		})
	}
	for r := range 2 {
		readers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 2))
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := rng.IntN(keys)
				floor := latest[k].Load()
				rec, err := db.Get(nil, fmt.Appendf(nil, "c%d", k))
				if err != nil {
					t.Error(err)
					return
				}
				var got uint64
				if rec.Found {
					fmt.Sscan(string(rec.Value), &got)
				}
				if got < floor {
					t.Errorf("c%d: read %d after %d was committed (drops %d, hint hits %d misses %d)", k, got, floor, db.Stats().Drops, db.Stats().HintHits, db.Stats().HintMisses)
					return
				}
			}
		})
	}
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				db.Maintain()
			}
		}
	})
	writers.Wait()
	close(stop)
	readers.Wait()
	if hintBytes > 0 && db.Stats().HintHits == 0 {
		t.Fatal("no read used a hint")
	}
}

// A bucket keeps the three keys written most recently, newest first.
func TestHintBucketPut(t *testing.T) {
	if hintBucketSize != 64 {
		t.Fatalf("a bucket is %d bytes, want one 64-byte cache line", hintBucketSize)
	}
	var b hintBucket
	tags := func() [hintWays]uint16 { return [hintWays]uint16{b.s[0].tag(), b.s[1].tag(), b.s[2].tag()} }
	steps := []struct {
		tag  uint16
		want [hintWays]uint16
	}{
		{1, [3]uint16{1, 0, 0}}, // empty bucket: the first slot
		{2, [3]uint16{2, 1, 0}}, // a second key goes first, the older one second
		{3, [3]uint16{3, 2, 1}},
		{4, [3]uint16{4, 3, 2}}, // a full bucket drops the oldest
		{2, [3]uint16{2, 4, 3}}, // a key in the last slot comes first again
		{4, [3]uint16{4, 2, 3}}, // one in the middle too, the slots after it stay
		{4, [3]uint16{4, 2, 3}}, // and the first stays first
	}
	for i, s := range steps {
		b.put(s.tag, hint{epoch: uint32(i)})
		if got := tags(); got != s.want {
			t.Fatalf("step %d: put %d: slots %v, want %v", i, s.tag, got, s.want)
		}
		if b.s[0].epoch != uint32(i) {
			t.Fatalf("step %d: the new hint is not in the first slot: %+v", i, b)
		}
	}
	b.s[1] = hintSlot{} // cleared: the next key takes the slot, the last stays
	b.put(7, hint{})
	if got := tags(); got != [3]uint16{7, 4, 3} {
		t.Fatalf("after a clear: slots %v, want [7 4 3]", got)
	}
	b.s[0] = hintSlot{} // an empty slot before a key's own: the key's own is taken
	b.put(3, hint{})
	if got := tags(); got != [3]uint16{3, 0, 4} {
		t.Fatalf("after a clear: slots %v, want [3 0 4]", got)
	}
}

// A slot keeps what fits its fields and leaves out what does not: a
// location past 26 bits of offset or 22 of length, an exptime past 32 bits.
func TestHintSlotEncoding(t *testing.T) {
	loc := JournalLoc{Segment: 9, Off: 1<<hintOffBits - 1, Len: 1<<hintLenBits - 1}
	for _, c := range []struct {
		in, want hint
	}{
		{hint{epoch: 3}, hint{epoch: 3}},
		{hint{epoch: 3, loc: loc, exptime: 0}, hint{epoch: 3, loc: loc, exptime: 0, exptimeKnown: true}},
		{hint{epoch: 3, loc: loc, exptime: 5}, hint{epoch: 3, loc: loc, exptime: 5, exptimeKnown: true}},
		{hint{epoch: 3, loc: loc, exptime: 1 << 31}, hint{epoch: 3, loc: loc, exptime: 1 << 31, exptimeKnown: true}},
		{hint{epoch: 3, loc: loc, exptime: 1 << 32}, hint{epoch: 3, loc: loc}},
		{hint{epoch: 3, loc: loc, exptime: -1}, hint{epoch: 3, loc: loc}},
		{hint{epoch: 3, loc: JournalLoc{Segment: 9, Off: 1 << hintOffBits, Len: 30}}, hint{epoch: 3}},
		{hint{epoch: 3, loc: JournalLoc{Segment: 9, Off: 100, Len: 1 << hintLenBits}}, hint{epoch: 3}},
		{hint{epoch: 3, exptime: 5}, hint{epoch: 3}}, // no location, no exptime
	} {
		s := c.in.slot(0xbeef)
		if got := s.hint(); got != c.want || s.tag() != 0xbeef {
			t.Errorf("slot(%+v) = %+v tag %x, want %+v tag beef", c.in, got, s.tag(), c.want)
		}
	}
}

func (h *hints) bucketsOrNil() []hintBucket {
	if h == nil {
		return nil
	}
	return h.buckets
}
