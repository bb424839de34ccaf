package lsm

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// The SipHash key of the tests' keydirs.
const testKeydirK0, testKeydirK1 = 0x0706050403020100, 0x0f0e0d0c0b0a0908

// kdCheck compares k with the model: every entry is found, nothing else
// is, and the counts agree.
func kdCheck(t *testing.T, k *keydir, model map[uint64]kdEntry, absent []uint64) {
	t.Helper()
	for h, want := range model {
		got, ok := k.get(h)
		if !ok || got != want {
			t.Fatalf("get(%#x) = %+v, %v; want %+v", h, got, ok, want)
		}
	}
	for _, h := range absent {
		if _, in := model[h]; in {
			continue
		}
		if e, ok := k.get(h); ok {
			t.Fatalf("get(%#x) = %+v for a removed hash", h, e)
		}
	}
	if n := k.len(); n != len(model) {
		t.Fatalf("len = %d, model has %d", n, len(model))
	}
}

// kdHashes returns n distinct hashes that crowd a few shards and a few
// home slots: the top bits pick one of two shards, the low bits one of
// eight homes, so probe chains are long, cross the end of a shard's table
// and shift on removal.
func kdHashes(rng *rand.Rand, n int) []uint64 {
	seen := map[uint64]bool{}
	var hs []uint64
	for len(hs) < n {
		h := uint64(rng.IntN(2))<<(64-keydirShardBits) | rng.Uint64()>>keydirShardBits&^0xff | uint64(0xf8+rng.IntN(8))
		if h == 0 || seen[h] {
			continue
		}
		seen[h] = true
		hs = append(hs, h)
	}
	return hs
}

func kdRandEntry(rng *rand.Rand) kdEntry {
	return kdEntry{
		loc:       JournalLoc{Segment: rng.Uint32N(1000) + 1, Off: rng.Int64N(1 << 32), Len: rng.Uint32N(kdTombstone)},
		exptime:   rng.Int64N(1 << 32),
		tombstone: rng.IntN(4) == 0,
	}
}

func TestKeydirModel(t *testing.T) {
	k, err := newKeydir(testKeydirK0, testKeydirK1)
	if err != nil {
		t.Fatal(err)
	}
	defer k.free()
	rng := rand.New(rand.NewPCG(1, 2))
	hs := kdHashes(rng, 3000) // grows each of the two shards several times
	model := map[uint64]kdEntry{}
	for step := range 60000 {
		h := hs[rng.IntN(len(hs))]
		switch op := rng.IntN(10); {
		case op < 6:
			e := kdRandEntry(rng)
			old, had, err := k.put(h, e)
			if err != nil {
				t.Fatal(err)
			}
			if want, in := model[h]; had != in || old != want {
				t.Fatalf("step %d: put(%#x) replaced %+v, %v; model %+v, %v", step, h, old, had, want, in)
			}
			model[h] = e
		case op < 8:
			old, had := k.remove(h)
			if want, in := model[h]; had != in || old != want {
				t.Fatalf("step %d: remove(%#x) = %+v, %v; model %+v, %v", step, h, old, had, want, in)
			}
			delete(model, h)
		default:
			// removeAt with the current location half of the time.
			loc := kdRandEntry(rng).loc
			want, in := model[h]
			if in && rng.IntN(2) == 0 {
				loc = want.loc
			}
			ok := k.removeAt(h, loc)
			if ok != (in && want.loc == loc) {
				t.Fatalf("step %d: removeAt(%#x, %+v) = %v; model %+v, %v", step, h, loc, ok, want, in)
			}
			if ok {
				delete(model, h)
			}
		}
		if step%5000 == 0 {
			kdCheck(t, k, model, hs)
		}
	}
	kdCheck(t, k, model, hs)
}

func TestKeydirSweep(t *testing.T) {
	k, err := newKeydir(testKeydirK0, testKeydirK1)
	if err != nil {
		t.Fatal(err)
	}
	defer k.free()
	rng := rand.New(rand.NewPCG(3, 4))
	hs := kdHashes(rng, 2000)
	model := map[uint64]kdEntry{}
	for _, h := range hs {
		e := kdRandEntry(rng)
		if _, _, err := k.put(h, e); err != nil {
			t.Fatal(err)
		}
		model[h] = e
	}
	// Remove the entries of odd segments; every entry must be offered.
	seen := map[uint64]bool{}
	removed := 0
	for i := range keydirShards {
		removed += k.sweepShard(i, func(h uint64, e kdEntry) bool {
			if e != model[h] {
				t.Fatalf("sweep offered %#x as %+v, model %+v", h, e, model[h])
			}
			seen[h] = true
			return e.loc.Segment%2 == 1
		})
	}
	want := 0
	for h, e := range model {
		if !seen[h] {
			t.Fatalf("sweep never offered %#x", h)
		}
		if e.loc.Segment%2 == 1 {
			delete(model, h)
			want++
		}
	}
	if removed != want {
		t.Fatalf("sweep removed %d, want %d", removed, want)
	}
	kdCheck(t, k, model, hs)
}

func TestKeydirEntryEncoding(t *testing.T) {
	for _, e := range []kdEntry{
		{loc: JournalLoc{Segment: 1, Off: 0, Len: 1}},
		{loc: JournalLoc{Segment: 1<<32 - 1, Off: 1<<32 - 1, Len: kdTombstone - 1}, exptime: 1<<32 - 1, tombstone: true},
		{loc: JournalLoc{Segment: 7, Off: 4096, Len: 1100}, exptime: 1_800_000_000},
	} {
		if !fitsKeydir(e.loc) {
			t.Fatalf("%+v does not fit", e.loc)
		}
		s := e.slot(42)
		if got := s.entry(); got != e {
			t.Fatalf("slot round trip: %+v, want %+v", got, e)
		}
	}
	if fitsKeydir(JournalLoc{Off: 1 << 32}) || fitsKeydir(JournalLoc{Len: kdTombstone}) || fitsKeydir(JournalLoc{Off: -1}) {
		t.Fatal("an offset or length out of range fits")
	}
	s := kdEntry{exptime: 1 << 40}.slot(1)
	if got := s.entry().exptime; got != 1<<32-1 {
		t.Fatalf("exptime past 2106 kept as %d", got)
	}
}

func TestKeydirConcurrent(t *testing.T) {
	k, err := newKeydir(testKeydirK0, testKeydirK1)
	if err != nil {
		t.Fatal(err)
	}
	defer k.free()
	const workers, keys = 4, 20000
	var wg sync.WaitGroup
	final := make([]map[uint64]kdEntry, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			model := map[uint64]kdEntry{}
			for i := range keys {
				h := k.hash(fmt.Appendf(nil, "w%d-k%d", w, i%(keys/4)))
				if rng.IntN(5) == 0 {
					k.remove(h)
					delete(model, h)
					continue
				}
				e := kdRandEntry(rng)
				if _, _, err := k.put(h, e); err != nil {
					t.Error(err)
					return
				}
				model[h] = e
				if got, ok := k.get(h); !ok || got != e {
					t.Errorf("get after put: %+v, %v", got, ok)
					return
				}
			}
			final[w] = model
		}()
	}
	wg.Wait()
	all := map[uint64]kdEntry{}
	for _, m := range final {
		for h, e := range m {
			all[h] = e
		}
	}
	kdCheck(t, k, all, nil)
}

// BenchmarkKeydir measures the keydir's operations at a million keys,
// the set path's (put over an existing entry) and the read path's (get),
// against the location hints they replace.
func BenchmarkKeydir(b *testing.B) {
	const n = 1 << 20
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "memtier-%d", i)
	}
	e := kdEntry{loc: JournalLoc{Segment: 3, Off: 4096, Len: 1100}}
	filled := func(b *testing.B) *keydir {
		k, err := newKeydir(testKeydirK0, testKeydirK1)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(k.free)
		for _, key := range keys {
			k.put(k.hash(key), e)
		}
		b.ResetTimer()
		return k
	}
	b.Run("keydir-put", func(b *testing.B) {
		k := filled(b)
		for i := 0; b.Loop(); i++ {
			k.put(k.hash(keys[uint32(i*7919)%n]), e)
		}
	})
	b.Run("keydir-get", func(b *testing.B) {
		k := filled(b)
		for i := 0; b.Loop(); i++ {
			k.get(k.hash(keys[uint32(i*7919)%n]))
		}
	})
	b.Run("hints-set", func(b *testing.B) {
		h, err := newHints(n / 3 * 2 * hintBucketSize) // 1.5 keys a bucket, as overflow
		if err != nil {
			b.Fatal(err)
		}
		defer h.free()
		hn := hint{epoch: 1, loc: e.loc}
		for _, key := range keys {
			h.set(key, hn)
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			h.set(keys[uint32(i*7919)%n], hn)
		}
	})
}

// A sweep in small chunks, with puts, removals and table growth between
// them, offers every entry that stays in the shard through the walk,
// removes those fn asks for, and leaves each shard's minExp at or below
// every kept item's exptime (so that a later pass finds them due).
func TestKeydirSweepChunked(t *testing.T) {
	defer func(n int) { sweepChunk = n }(sweepChunk)
	sweepChunk = 64
	k, err := newKeydir(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer k.free()
	rng := rand.New(rand.NewPCG(5, 6))
	model := map[uint64]kdEntry{}
	put := func(h uint64, e kdEntry) {
		if _, _, err := k.put(h, e); err != nil {
			t.Fatal(err)
		}
		model[h] = e
	}
	for _, h := range kdHashes(rng, 20000) {
		put(h, kdRandEntry(rng))
	}
	odd := func(e kdEntry) bool { return e.loc.Segment%2 == 1 }
	for i := range keydirShards {
		// The entries in the shard before the walk, and those a removal
		// between chunks takes out (the walk need not offer them).
		before := map[uint64]bool{}
		var evens []uint64 // entries the walk keeps: candidates for a removal between chunks
		for h, e := range model {
			if int(h>>(64-keydirShardBits)) == i {
				before[h] = true
				if !odd(e) {
					evens = append(evens, h)
				}
			}
		}
		seen := map[uint64]bool{}
		c := k.sweepBegin(i)
		for step := 0; ; step++ {
			_, done := k.sweepStep(&c, func(h uint64, e kdEntry) bool {
				if e != model[h] {
					t.Fatalf("shard %d: offered %#x as %+v, model %+v", i, h, e, model[h])
				}
				seen[h] = true
				if odd(e) {
					delete(model, h)
					return true
				}
				return false
			})
			if done {
				break
			}
			// Between chunks: a removal, an overwrite and new entries of
			// this shard (now and then enough to grow its table).
			if len(evens) > 0 && rng.IntN(2) == 0 {
				x := rng.IntN(len(evens))
				h := evens[x]
				evens[x] = evens[len(evens)-1]
				evens = evens[:len(evens)-1]
				if _, ok := model[h]; ok {
					k.remove(h)
					delete(model, h)
					delete(before, h)
				}
			}
			n := 1
			if step%5 == 4 {
				n = 40
			}
			for range n {
				h := uint64(i)<<(64-keydirShardBits) | rng.Uint64()>>keydirShardBits | 1
				put(h, kdRandEntry(rng))
			}
		}
		for h := range before {
			if _, ok := model[h]; ok && !seen[h] {
				t.Fatalf("shard %d: %#x stayed through the walk and was never offered", i, h)
			}
		}
		s := &k.shards[i]
		for h, e := range model {
			if int(h>>(64-keydirShardBits)) != i || e.tombstone || e.exptime == 0 {
				continue
			}
			if s.minExp == 0 || int64(s.minExp) > e.exptime {
				t.Fatalf("shard %d: minExp %d after the walk, a kept item expires at %d", i, s.minExp, e.exptime)
			}
		}
	}
	// The walk removed the odd segments' entries it was offered; the
	// model holds what is left: the keydir must match it (and hold
	// nothing else).
	kdCheck(t, k, model, nil)
}

// sweepShard sweeps shard i whole (sweepBegin, then sweepStep to the
// end), taking its lock for each chunk.
func (k *keydir) sweepShard(i int, fn func(h uint64, e kdEntry) bool) (removed int) {
	c := k.sweepBegin(i)
	for {
		n, done := k.sweepStep(&c, fn)
		removed += n
		if done {
			return removed
		}
	}
}
