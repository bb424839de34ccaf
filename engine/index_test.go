package engine

import (
	"math/rand/v2"
	"testing"

	"github.com/tcache/tcache/internal/clock"
)

// testIndex maps an index whose refs have 20 bits (tags of 43 bits).
func testIndex(t testing.TB) *index {
	t.Helper()
	x, err := newIndex(20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.free() })
	return &x
}

// refs returns the refs of every candidate for h, in probe order.
func (x *index) refs(h uint64) []uint64 {
	var p probe
	var out []uint64
	for _, r, ok := x.find(h, &p); ok; _, r, ok = x.next(h, &p) {
		out = append(out, r)
	}
	return out
}

// check verifies the table's invariants: n matches the occupied slots and
// every entry is reachable from its home with no empty slot or richer
// entry in between (the Robin Hood order).
func (x *index) check(t testing.TB) {
	t.Helper()
	n := 0
	for i, s := range x.slots {
		if s == 0 {
			continue
		}
		n++
		d := x.dist(uint64(i), s)
		for k := uint64(1); k <= d; k++ {
			j := (uint64(i) - k) & x.mask
			if x.slots[j] == 0 || x.dist(j, x.slots[j]) < d-k {
				t.Fatalf("slot %d (dist %d) unreachable: slot %d is %#x", i, d, j, x.slots[j])
			}
		}
	}
	if n != x.n {
		t.Fatalf("n = %d, %d slots used", x.n, n)
	}
}

func TestIndexInsertLookupDelete(t *testing.T) {
	x := testIndex(t)
	rng := rand.New(rand.NewPCG(1, 1))
	hashes := make([]uint64, 10000) // grows 1024 -> 16384 slots
	for i := range hashes {
		hashes[i] = rng.Uint64()
		if !x.reserve() {
			t.Fatal("reserve failed")
		}
		x.insert(hashes[i], uint64(i))
	}
	x.check(t)
	if len(x.slots) != 16384 || x.n != len(hashes) {
		t.Fatalf("%d slots, %d entries", len(x.slots), x.n)
	}
	for i, h := range hashes {
		if s := x.slotOf(h, uint64(i)); s < 0 {
			t.Fatalf("entry %d lost", i)
		}
	}
	// Delete every other entry; the rest stay reachable.
	for i := 0; i < len(hashes); i += 2 {
		x.remove(x.slotOf(hashes[i], uint64(i)))
	}
	x.check(t)
	for i, h := range hashes {
		if got := x.slotOf(h, uint64(i)) >= 0; got != (i%2 == 1) {
			t.Fatalf("entry %d present=%v after deleting the even ones", i, got)
		}
	}
	// setRef moves an entry in place.
	i := x.slotOf(hashes[1], 1)
	x.setRef(i, 12345)
	if x.slotOf(hashes[1], 12345) != i || x.slotOf(hashes[1], 1) >= 0 {
		t.Fatal("setRef")
	}
}

// TestIndexCollidingTags stores many entries with one hash (so one tag and
// one home): all are candidates of a lookup, and deleting them in any
// order keeps the others.
func TestIndexCollidingTags(t *testing.T) {
	x := testIndex(t)
	const h = 0xdead_beef_cafe
	other := uint64(h + 1) // the next home: its entries interleave
	for i := range uint64(50) {
		x.reserve()
		x.insert(h, i)
		x.reserve()
		x.insert(other, 1000+i)
	}
	x.check(t)
	if got := len(x.refs(h)); got != 50 {
		t.Fatalf("%d candidates for h, want 50", got)
	}
	for _, i := range []uint64{0, 49, 25, 1, 48} {
		x.remove(x.slotOf(h, i))
	}
	x.check(t)
	if got := len(x.refs(h)); got != 45 {
		t.Fatalf("%d candidates after 5 deletes, want 45", got)
	}
	if got := len(x.refs(other)); got != 50 {
		t.Fatalf("%d candidates for other, want 50", got)
	}
	if len(x.refs(h^1<<40)) != 0 {
		t.Fatal("a different tag matched")
	}
}

// TestIndexChurn deletes and inserts for many rounds at a steady size: with
// backward-shift deletion the table neither grows nor degrades.
func TestIndexChurn(t *testing.T) {
	x := testIndex(t)
	rng := rand.New(rand.NewPCG(2, 2))
	live := map[uint64]uint64{} // hash -> ref
	for len(live) < 700 {
		h := rng.Uint64()
		x.reserve()
		x.insert(h, uint64(len(live)))
		live[h] = uint64(len(live))
	}
	for range 200_000 {
		for h, r := range live { // delete one, insert a new one
			x.remove(x.slotOf(h, r))
			delete(live, h)
			break
		}
		h := rng.Uint64()
		x.reserve()
		x.insert(h, h&0xfffff)
		live[h] = h & 0xfffff
	}
	x.check(t)
	if len(x.slots) != minIndexSlots {
		t.Fatalf("table grew to %d slots at a steady %d entries", len(x.slots), len(live))
	}
	for h, r := range live {
		if x.slotOf(h, r) < 0 {
			t.Fatalf("lost %#x", h)
		}
	}
}

// FuzzIndex runs an operation string against the index and a map model.
// Hashes come from a small set so that tags and homes collide often.
func FuzzIndex(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x80, 0x81, 4, 5})
	f.Add(make([]byte, 3000))
	f.Fuzz(func(t *testing.T, ops []byte) {
		x := testIndex(t)
		model := map[[2]uint64]int{} // (hash, ref) -> count
		for i, op := range ops {
			h := uint64(op&0x3f) * 0x9e3779b97f4a7c15 >> 20 // 64 hashes
			if op&0x40 != 0 {
				h &= 0x3ff // same home bucket, different tags
			}
			ref := uint64(i) & 0xfffff
			if op&0x80 == 0 {
				if !x.reserve() {
					t.Fatal("reserve")
				}
				x.insert(h, ref)
				model[[2]uint64{h, ref}]++
				continue
			}
			// Delete the first candidate of h, if any.
			var p probe
			if s, r, ok := x.find(h, &p); ok {
				x.remove(s)
				k := [2]uint64{h, r}
				if model[k]--; model[k] == 0 {
					delete(model, k)
				}
			}
		}
		x.check(t)
		n := 0
		for k, c := range model {
			n += c
			got := 0
			for _, r := range x.refs(k[0]) {
				if r == k[1] {
					got++
				}
			}
			if got != c {
				t.Fatalf("(%#x, %d): %d entries, model %d", k[0], k[1], got, c)
			}
		}
		if n != x.n {
			t.Fatalf("index has %d entries, model %d", x.n, n)
		}
	})
}

// TestSameHashKeys stores two keys under one forced 64-bit hash: both are
// kept, found, overwritten and deleted independently.
func TestSameHashKeys(t *testing.T) {
	e := newTestEngine(t, clock.NewFake(testStart), 1<<20, 64<<10)
	s := &e.shards[0]
	const h = 0x0123_4567_89ab_cdef
	now := e.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range []string{"alpha", "beta"} {
		hd := header{time: uint32(now), cas: e.nextCAS()}
		if !s.insert(e, h, []byte(k), &hd, []byte("v-"+k), nil, false, now) {
			t.Fatal("insert")
		}
	}
	var it item
	for _, k := range []string{"alpha", "beta"} {
		if !s.lookup(e, h, []byte(k), now, &it) {
			t.Fatalf("%s not found", k)
		}
		if v := it.r.appendTo(nil, it.valuePos(), int(it.hdr.valueLen)); string(v) != "v-"+k {
			t.Fatalf("%s = %q", k, v)
		}
	}
	if s.lookup(e, h, []byte("gamma"), now, &it) {
		t.Fatal("found a key never stored")
	}
	s.lookup(e, h, []byte("alpha"), now, &it)
	s.unlink(&it)
	if s.lookup(e, h, []byte("alpha"), now, &it) || !s.lookup(e, h, []byte("beta"), now, &it) {
		t.Fatal("deleting alpha disturbed beta")
	}
}

func TestRefPositions(t *testing.T) {
	// Positions far past 2^posBits (rings that have wrapped many times)
	// are recovered from the low bits and the ring's tail.
	e := newTestEngine(t, clock.NewFake(testStart), 1<<20, 64<<10)
	s := &e.shards[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tail := range []uint64{1, s.budget, 1 << 40, 1<<40 + 12345} {
		s.mu.main.tail = tail
		for _, back := range []uint64{1, 2, s.budget / 2, s.budget} {
			if back > tail {
				continue
			}
			pos := tail - back
			r, got := s.ringOf(s.refOf(&s.mu.main, pos))
			if r != &s.mu.main || got != pos {
				t.Fatalf("tail %d pos %d: got %d", tail, pos, got)
			}
		}
	}
	s.mu.main.tail = 0
}

func BenchmarkIndex(b *testing.B) {
	x := testIndex(b)
	rng := rand.New(rand.NewPCG(3, 3))
	const n = 100_000
	hashes := make([]uint64, n)
	for i := range hashes {
		hashes[i] = rng.Uint64()
		x.reserve()
		x.insert(hashes[i], uint64(i))
	}
	b.Logf("%d entries in %d slots (load %.2f)", x.n, len(x.slots), float64(x.n)/float64(len(x.slots)))
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			var p probe
			x.find(hashes[i%n], &p)
			i++
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		h := uint64(0)
		for b.Loop() {
			var p probe
			x.find(h, &p)
			h += 0x9e3779b97f4a7c15
		}
	})
	b.Run("delete+insert", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k := i % n
			x.remove(x.slotOf(hashes[k], uint64(k)))
			x.reserve()
			x.insert(hashes[k], uint64(k))
			i++
		}
	})
}
