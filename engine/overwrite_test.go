package engine

// Overwrite workloads: dead space left by overwrites must not cost live
// items while the live data fits (memcached frees the old slot on
// overwrite and never evicts then), and S3-FIFO must still evict sanely
// when it does not fit.

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/tcache/tcache/internal/clock"
)

// overwriteRun stores a working set of keys whose records add up to about
// frac of limit, then overwrites random keys with random value sizes
// (passes x the key count), each set followed by a get of a random key.
// Every value read is checked against the last one stored. It returns the
// gets' hit ratio.
func overwriteRun(t *testing.T, e *Engine, limit int64, frac float64, passes int, seed uint64) float64 {
	t.Helper()
	const maxValue = 1500
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	// Mean record: header + key ("ow:" + ~5 digits) + mean value.
	mean := float64(hdrSize + 8 + maxValue/2)
	keys := int(frac * float64(limit) / mean)
	gen := make([]uint8, keys) // version byte of each key's value
	size := make([]int, keys)  // value length of each key's value
	value := make([]byte, maxValue)
	var key, dst []byte
	keyOf := func(k int) []byte { return strconv.AppendInt(append(key[:0], "ow:"...), int64(k), 10) }
	set := func(k int) {
		gen[k]++
		size[k] = 1 + rng.IntN(maxValue)
		v := value[:size[k]]
		for i := range v {
			v[i] = gen[k] + byte(i)
		}
		key = keyOf(k)
		if st, _ := e.Store(key, v, &StoreArgs{}); st != OK {
			t.Fatalf("store %s: %v", key, st)
		}
	}
	for k := range keys {
		set(k)
	}
	hits, gets := 0, passes*keys
	for range gets {
		set(rng.IntN(keys))
		k := rng.IntN(keys)
		key = keyOf(k)
		var ok bool
		if dst, _, ok = e.Get(dst[:0], key, &GetArgs{}); !ok {
			continue
		}
		hits++
		if len(dst) != size[k] {
			t.Fatalf("get %s: %d bytes, want %d", key, len(dst), size[k])
		}
		for i, c := range dst {
			if c != gen[k]+byte(i) {
				t.Fatalf("get %s: byte %d is %d, want %d", key, i, c, gen[k]+byte(i))
			}
		}
	}
	return float64(hits) / float64(gets)
}

// TestOverwriteFitsNoEviction: a working set of 60% of the limit,
// overwritten 20 times over with random keys and value sizes, is never
// evicted: every get hits.
func TestOverwriteFitsNoEviction(t *testing.T) {
	const limit = 16 << 20
	// 32 shards of 4 KiB chunks, and 2 shards of 64 KiB chunks (the shape
	// of -m 1024 -I 1m), where room is freed 64 KiB at a time.
	for _, maxItem := range []int{64 << 10, 1 << 20} {
		t.Run(strconv.Itoa(maxItem>>10)+"KiB", func(t *testing.T) {
			e := newTestEngine(t, clock.NewFake(testStart), limit, maxItem)
			ratio := overwriteRun(t, e, limit, 0.6, 20, 7)
			st, is := e.Stats(), e.ItemsStats()
			t.Logf("hit ratio %.4f, evictions %d, bytes %d of %d, moves to main %d, within main %d, for room %d",
				ratio, st.Evictions, st.Bytes, st.LimitMaxbytes, is.MovesToMain, is.MovesWithinMain, is.MovesForRoom)
			if st.Evictions != 0 || ratio != 1 {
				t.Errorf("working set of 60%% of the limit: %d evictions, hit ratio %.4f; want 0 and 1", st.Evictions, ratio)
			}
			if n := movesNoChunk(e); n != 0 {
				t.Errorf("%d moves found no free chunk", n)
			}
		})
	}
}

// movesNoChunk sums the moves that found no free chunk over e's shards.
func movesNoChunk(e *Engine) (n uint64) {
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		n += s.mu.c.movesNoChunk
		s.mu.Unlock()
	}
	return n
}

// TestOverwriteOverflowEvicts: a working set of 150% of the limit must be
// evicted from, and the hit ratio stays near the fraction that fits.
func TestOverwriteOverflowEvicts(t *testing.T) {
	const limit = 16 << 20
	for _, maxItem := range []int{64 << 10, 1 << 20} {
		t.Run(strconv.Itoa(maxItem>>10)+"KiB", func(t *testing.T) {
			e := newTestEngine(t, clock.NewFake(testStart), limit, maxItem)
			ratio := overwriteRun(t, e, limit, 1.5, 10, 8)
			st, is := e.Stats(), e.ItemsStats()
			t.Logf("hit ratio %.4f, evictions %d, bytes %d of %d, moves to main %d, within main %d, for room %d",
				ratio, st.Evictions, st.Bytes, st.LimitMaxbytes, is.MovesToMain, is.MovesWithinMain, is.MovesForRoom)
			if st.Evictions == 0 {
				t.Errorf("working set of 150%% of the limit: no evictions")
			}
			if n := movesNoChunk(e); n != 0 {
				t.Errorf("%d moves found no free chunk", n)
			}
			// Uniform access: at best the resident fraction (1/1.5) of the
			// gets hit; the live data is kept above 80% of the limit.
			if ratio < 0.53 || ratio > 0.67 {
				t.Errorf("hit ratio %.4f, want within [0.53, 0.67]", ratio)
			}
		})
	}
}

// shardMoves returns the records moved so far in s (all kinds) and those
// moved for room.
func shardMoves(s *shard) (all, forRoom uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.c.movesToMain + s.mu.c.movesWithinMain, s.mu.c.movesForRoom
}

// TestMakeRoomBounded drives one shard into the cases that could make
// makeRoom loop or copy without end: full of live records that were never
// hit (above the headroom, so plain S3-FIFO: evict, move nothing), and live
// data under the headroom with all the dead space bunched at the far end
// of the log (moves up to the cap, then evictions), then steady churn.
// Every store must move at most capsFor(n).room bytes.
func TestMakeRoomBounded(t *testing.T) {
	e := newTestEngine(t, clock.NewFake(testStart), 1<<20, 128<<10) // one shard, 128 chunks of 8 KiB
	if len(e.shards) != 1 {
		t.Fatalf("%d shards, want 1", len(e.shards))
	}
	s := &e.shards[0]
	value := make([]byte, 200)
	keyOf := func(k int) []byte { return []byte(fmt.Sprintf("k%07d", k)) }
	rec := uint64(hdrSize + len(keyOf(0)) + len(value))
	capBytes := s.capsFor(rec).room
	store := func(k int) {
		t.Helper()
		before, _ := shardMoves(s)
		if st, _ := e.Store(keyOf(k), value, &StoreArgs{}); st != OK {
			t.Fatalf("store %d: %v", k, st)
		}
		after, _ := shardMoves(s)
		if moved := (after - before) * rec; moved > capBytes {
			t.Fatalf("store %d moved %d bytes, cap %d", k, moved, capBytes)
		}
	}
	live := func() uint64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.mu.bytes
	}

	// Full of live data: fill until the first eviction, then go on.
	next := 0
	for e.Stats().Evictions == 0 {
		store(next)
		next++
	}
	t.Logf("full: %d records, live %.3f of the budget", next, float64(live())/float64(s.budget))
	_, room0 := shardMoves(s)
	for range 5 * next {
		store(next)
		next++
	}
	if _, room := shardMoves(s); room != room0 {
		t.Errorf("a full shard moved %d records for room", room-room0)
	}
	if l := float64(live()) / float64(s.budget); l < 0.95 {
		t.Errorf("a full shard keeps %.3f of its budget live, want at least 0.95", l)
	}

	// Dead space bunched at the tail: delete the newest records down to
	// 70% live, then churn (a new key in, a random old key out).
	oldest := next - int(live()/rec)
	for live() > s.budget*7/10 {
		next--
		if e.Delete(keyOf(next), &DeleteArgs{}) != OK {
			t.Fatalf("delete %d", next)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	present := make([]int, 0, next-oldest)
	for k := oldest; k < next; k++ {
		present = append(present, k)
	}
	churn := func(steps int) uint64 {
		ev := e.Stats().Evictions
		for range steps {
			store(next)
			present = append(present, next)
			next++
			i := rng.IntN(len(present))
			e.Delete(keyOf(present[i]), &DeleteArgs{})
			present[i] = present[len(present)-1]
			present = present[:len(present)-1]
		}
		return e.Stats().Evictions - ev
	}
	first := churn(3 * len(present))
	last := churn(3 * len(present))
	_, room := shardMoves(s)
	t.Logf("70%% live: %d evictions in the first passes, %d after, %d moves for room", first, last, room-room0)
	if first == 0 {
		t.Errorf("no evictions while the dead space was a whole log away: the cap did not bind")
	}
	if last != 0 {
		t.Errorf("%d evictions with 70%% of the budget live after the dead space spread", last)
	}
}
