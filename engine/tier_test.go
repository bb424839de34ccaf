package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

func TestHLCMonotonic(t *testing.T) {
	clk := clock.NewFake(testStart)
	c := hlc{clock: clk}
	c.seed(uint64(testStart.Add(time.Hour).UnixMilli()) << hlcLogicalBits) // a disk from the future
	prev := c.next()
	if prev>>hlcLogicalBits != uint64(testStart.Add(time.Hour).UnixMilli()) {
		t.Fatalf("first value %x not above the seed", prev)
	}
	for i := range 1000 {
		switch i % 3 {
		case 0:
			clk.Advance(-time.Second) // the clock goes backwards
		case 1:
			clk.Advance(2 * time.Hour)
		}
		v := c.next()
		if v <= prev {
			t.Fatalf("step %d: %x after %x", i, v, prev)
		}
		prev = v
	}
	if got := prev >> hlcLogicalBits; got < uint64(clk.Now().UnixMilli()) {
		t.Fatalf("physical part %d behind the clock %d", got, clk.Now().UnixMilli())
	}
}

// TestTierRestart writes through a disk tier, drops the engine (all RAM
// state) and reads everything back from a new engine over the same disk.
func TestTierRestart(t *testing.T) {
	clk := clock.NewFake(testStart)
	d := newFakeDisk()
	e := newDiskEngine(t, clk, d, 1<<20, 64<<10)
	var maxCAS uint64
	for i := range 100 {
		k := []byte("k" + strconv.Itoa(i))
		exp := int64(0)
		if i%2 == 1 {
			exp = 100 // relative: absolute on disk
		}
		st, cas := e.Store(k, []byte("v"+strconv.Itoa(i)), &StoreArgs{Flags: uint32(i), Exptime: exp})
		if st != OK {
			t.Fatal(st)
		}
		maxCAS = max(maxCAS, cas)
	}
	e.Store([]byte("short"), []byte("x"), &StoreArgs{Exptime: 5})
	e.Delete([]byte("k0"), &DeleteArgs{Invalidate: true}) // stale persists
	e.FlushAll(3600)                                      // delayed flush across the restart
	e.Close()

	clk.Advance(10 * time.Second)
	e = newDiskEngine(t, clk, d, 1<<20, 64<<10)
	if v, _, ok := e.Get(nil, []byte("short"), &GetArgs{}); ok {
		t.Fatalf("expired item returned after restart: %q", v)
	}
	for i := range 100 {
		k := []byte("k" + strconv.Itoa(i))
		v, info, ok := e.Get(nil, k, &GetArgs{})
		if !ok || string(v) != "v"+strconv.Itoa(i) || info.Flags != uint32(i) {
			t.Fatalf("%s: %q %+v %v", k, v, info, ok)
		}
		wantExp := int64(0)
		if i%2 == 1 {
			wantExp = testStart.Unix() + 100
		}
		if info.Exptime != wantExp {
			t.Fatalf("%s: exptime %d, want %d", k, info.Exptime, wantExp)
		}
		if (i == 0) != info.Stale {
			t.Fatalf("%s: stale %v", k, info.Stale)
		}
	}
	_, cas := e.Store([]byte("new"), []byte("n"), &StoreArgs{})
	if cas <= maxCAS {
		t.Fatalf("CAS %d after restart not above %d", cas, maxCAS)
	}
	clk.Advance(time.Hour)
	for _, k := range []string{"k2", "new"} {
		if _, _, ok := e.Get(nil, []byte(k), &GetArgs{}); ok {
			t.Fatalf("%s survived the delayed flush_all across the restart", k)
		}
	}
	e.Store([]byte("after"), []byte("a"), &StoreArgs{})
	if _, _, ok := e.Get(nil, []byte("after"), &GetArgs{}); !ok {
		t.Fatal("item stored after the flush is gone")
	}
	for _, p := range d.problems() {
		t.Error(p)
	}
}

// TestTierCommitError: a failed commit changes nothing and answers a
// status the protocol turns into SERVER_ERROR.
func TestTierCommitError(t *testing.T) {
	clk := clock.NewFake(testStart)
	d := newFakeDisk()
	e := newDiskEngine(t, clk, d, 1<<20, 64<<10)
	k := []byte("k")
	e.Store(k, []byte("1"), &StoreArgs{})
	for _, tc := range []struct {
		err  error
		want Status
	}{{lsm.ErrDiskFull, DiskFull}, {fmt.Errorf("write: %w", errors.New("EIO")), DiskError}} {
		d.setFail(tc.err)
		if st, _ := e.Store(k, []byte("2"), &StoreArgs{}); st != tc.want {
			t.Fatalf("store: %v, want %v", st, tc.want)
		}
		if _, _, st := e.Arith(k, &ArithArgs{Incr: true, Delta: 5}); st != tc.want {
			t.Fatalf("incr: %v", st)
		}
		if st := e.Delete(k, &DeleteArgs{}); st != tc.want {
			t.Fatalf("delete: %v", st)
		}
		if st := e.Touch(k, 10); st != tc.want {
			t.Fatalf("touch: %v", st)
		}
		if st := e.Flush(0); st != tc.want {
			t.Fatalf("flush: %v", st)
		}
		d.setFail(nil)
		v, info, ok := e.Get(nil, k, &GetArgs{})
		if !ok || string(v) != "1" || info.Exptime != 0 {
			t.Fatalf("after failed writes: %q %+v %v", v, info, ok)
		}
	}
	if st := e.Stats(); st.CommitErrors != 10 {
		t.Fatalf("commit errors %d", st.CommitErrors)
	}
}

// TestTierOverflow stores ten times the RAM tier in unique keys and reads
// every one back.
func TestTierOverflow(t *testing.T) {
	const limit = 1 << 20
	clk := clock.NewFake(testStart)
	d := newFakeDisk()
	e := newDiskEngine(t, clk, d, limit, 64<<10)
	// The disk may drop its page cache while RAM holds every record
	// (lsm/pagecache.go), and must keep it from the first eviction on.
	for i := range 100 { // keys testOverflow overwrites
		if st, _ := e.Store([]byte("key:"+strconv.Itoa(i)), []byte("v"), &StoreArgs{}); st != OK {
			t.Fatalf("store: %v", st)
		}
	}
	if !d.releasing() || e.Stats().RAMEvictions != 0 {
		t.Fatalf("before any eviction: release %v, %d evictions", d.releasing(), e.Stats().RAMEvictions)
	}
	testOverflow(t, e, limit)
	if d.releasing() {
		t.Fatal("the disk still releases its page cache after RAM evicted")
	}
}

// TestRAMMissingAllowance checks that records RAM lost keep the disk
// releasing its page cache (and writing the journal direct) up to
// 1/missingAllowanceDiv of the budget, and stop it past that.
func TestRAMMissingAllowance(t *testing.T) {
	const limit = 1 << 20
	d := newFakeDisk()
	e := newDiskEngine(t, clock.NewFake(testStart), d, limit, 64<<10)
	allowance := uint64(limit / missingAllowanceDiv)
	for lost := uint64(0); lost+1000 <= allowance; lost += 1000 {
		e.tier.ramIncomplete(1000)
		if !d.releasing() {
			t.Fatalf("release stopped after %d of the %d bytes allowed", lost+1000, allowance)
		}
	}
	e.tier.ramIncomplete(1000)
	if d.releasing() {
		t.Fatalf("still releasing past the allowance of %d bytes", allowance)
	}
}

func testOverflow(t *testing.T, e *Engine, limit int) {
	value := func(i int) []byte {
		return bytes.Repeat([]byte(strconv.Itoa(i)+"."), 200/len(strconv.Itoa(i)))
	}
	n := 0
	for written := 0; written < 10*limit; n++ {
		k := []byte("key:" + strconv.Itoa(n))
		v := value(n)
		if st, _ := e.Store(k, v, &StoreArgs{Flags: uint32(n)}); st != OK {
			t.Fatalf("store %d: %v", n, st)
		}
		written += len(k) + len(v)
	}
	var dst []byte
	for i := range n {
		var info ItemInfo
		var ok bool
		dst, info, ok = e.Get(dst[:0], []byte("key:"+strconv.Itoa(i)), &GetArgs{})
		if !ok || !bytes.Equal(dst, value(i)) || info.Flags != uint32(i) {
			t.Fatalf("key %d: found=%v flags=%d value %.20q", i, ok, info.Flags, dst)
		}
	}
	st := e.Stats()
	t.Logf("items=%d curr_items=%d bytes=%d ram_evictions=%d disk_reads=%d promotions=%d",
		n, st.CurrItems, st.Bytes, st.RAMEvictions, st.DiskReads, st.Promotions)
	if st.CurrItems != uint64(n) || st.Bytes > uint64(limit) || st.RAMEvictions == 0 || st.DiskReads == 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestTierConcurrent mixes set/get/delete/incr on overlapping keys from
// many goroutines, then checks that RAM and disk agree: a fresh engine over
// the same disk (no RAM copies) reads every key the same.
func TestTierConcurrent(t *testing.T) {
	clk := clock.NewFake(testStart)
	d := newFakeDisk()
	e := newDiskEngine(t, clk, d, 1<<20, 64<<10)
	const keys = 64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			var dst []byte
			for range 2000 {
				k := []byte("k" + strconv.Itoa(r.IntN(keys)))
				switch r.IntN(5) {
				case 0:
					e.Store(k, []byte(strconv.Itoa(r.IntN(1000))), &StoreArgs{})
				case 1:
					e.Delete(k, &DeleteArgs{})
				case 2:
					e.Arith(k, &ArithArgs{Incr: true, Delta: 1})
				case 3:
					e.Store(k, []byte("+"), &StoreArgs{Mode: ModeAppend})
				default:
					dst, _, _ = e.Get(dst[:0], k, &GetArgs{})
				}
			}
		})
	}
	wg.Wait()
	fresh := newDiskEngine(t, clk, d, 1<<20, 64<<10)
	for i := range keys {
		k := []byte("k" + strconv.Itoa(i))
		v1, i1, ok1 := e.Get(nil, k, &GetArgs{NoBump: true})
		v2, i2, ok2 := fresh.Get(nil, k, &GetArgs{NoBump: true})
		if ok1 != ok2 || !bytes.Equal(v1, v2) || i1.CAS != i2.CAS || i1.Flags != i2.Flags {
			t.Fatalf("%s: RAM %v %q cas %d, disk %v %q cas %d", k, ok1, v1, i1.CAS, ok2, v2, i2.CAS)
		}
	}
	for _, p := range d.problems() {
		t.Error(p)
	}
}

func TestGetMulti(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(fmt.Sprint("disk=", disk), func(t *testing.T) {
			clk := clock.NewFake(testStart)
			var e *Engine
			if disk {
				e = newDiskEngine(t, clk, newFakeDisk(), 1<<20, 64<<10)
			} else {
				e = newTestEngine(t, clk, 1<<20, 64<<10)
			}
			for i := range 2000 {
				e.Store([]byte("k"+strconv.Itoa(i)), []byte("v"+strconv.Itoa(i)), &StoreArgs{})
			}
			keys := [][]byte{[]byte("k5"), []byte("nope"), []byte("k1999"), []byte("k0"), []byte("k5")}
			var m MultiGet
			var got []string
			fn := func(i int, v []byte, info ItemInfo, found bool) {
				if len(got) != i {
					t.Fatalf("callback %d out of order", i)
				}
				got = append(got, fmt.Sprintf("%v:%s", found, v))
			}
			e.GetMulti(&m, keys, &GetArgs{}, fn)
			want := "[true:v5 false: true:v1999 true:v0 true:v5]"
			if fmt.Sprint(got) != want {
				t.Fatalf("got %v, want %s", got, want)
			}
			got = got[:0]
			if raceEnabled {
				return
			}
			calls := 0
			count := func(int, []byte, ItemInfo, bool) { calls++ }
			allocs := testing.AllocsPerRun(100, func() { e.GetMulti(&m, keys, &GetArgs{}, count) })
			if allocs != 0 {
				t.Fatalf("GetMulti allocates %.1f per call", allocs)
			}
		})
	}
}

func TestTierGetHitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations differ under -race")
	}
	clk := clock.NewFake(testStart)
	e := newDiskEngine(t, clk, newFakeDisk(), 1<<20, 64<<10)
	k := []byte("k")
	e.Store(k, []byte("value"), &StoreArgs{})
	dst := make([]byte, 0, 64)
	a := &GetArgs{}
	if n := testing.AllocsPerRun(100, func() { dst, _, _ = e.Get(dst[:0], k, a) }); n != 0 {
		t.Fatalf("RAM hit with a disk tier allocates %.1f", n)
	}
}

// A stripe is one cache line: the lock of one stripe never shares a line
// with its neighbour's, and the 1024 of them stay small enough to cache.
func TestStripeIsOneCacheLine(t *testing.T) {
	if n := unsafe.Sizeof(stripe{}); n != 64 {
		t.Fatalf("a stripe is %d bytes, want 64", n)
	}
}
