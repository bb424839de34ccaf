package engine

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/clock"
)

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"defaults", Options{}, true},
		{"small memory", Options{MemoryLimit: 1024}, false},
		{"item too small", Options{MaxItemSize: 100}, false},
		{"item over half", Options{MemoryLimit: 1 << 20, MaxItemSize: 1 << 20}, false},
		{"item over 1g", Options{MemoryLimit: 4 << 30, MaxItemSize: 2 << 30}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.EnsureDefaults()
			err := tc.o.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("error %v does not wrap ErrInvalidOptions", err)
			}
		})
	}
}

func TestCloseStopsCrawler(t *testing.T) {
	e, err := New(Options{CrawlerInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.Store([]byte("k"), []byte("v"), &StoreArgs{Exptime: -1})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

// TestEvictionUnderLimit stores ten times the memory limit and checks that
// the tier stays within it, counts evictions, and keeps a hot set.
func TestEvictionUnderLimit(t *testing.T) {
	const limit = 4 << 20
	clk := clock.NewFake(testStart)
	e := newTestEngine(t, clk, limit, 64<<10)
	value := make([]byte, 200)
	hot := make([][]byte, 200)
	for i := range hot {
		hot[i] = []byte(fmt.Sprintf("hot-%d", i))
		e.Store(hot[i], value, &StoreArgs{})
	}
	var key []byte
	var dst []byte
	written := 0
	for i := 0; written < 10*limit; i++ {
		key = strconv.AppendInt(key[:0], int64(i), 10)
		if st, _ := e.Store(key, value, &StoreArgs{}); st != OK {
			t.Fatalf("store %d: %v", i, st)
		}
		written += len(key) + len(value)
		if i%4 == 0 {
			h := hot[i/4%len(hot)]
			dst, _, _ = e.Get(dst[:0], h, &GetArgs{})
		}
	}
	st := e.Stats()
	t.Logf("items=%d bytes=%d evictions=%d items-stats=%+v", st.CurrItems, st.Bytes, st.Evictions, e.ItemsStats())
	if st.Bytes > limit {
		t.Fatalf("bytes %d over the limit %d", st.Bytes, limit)
	}
	if st.Bytes < limit*7/10 {
		t.Fatalf("bytes %d: less than 70%% of the limit used", st.Bytes)
	}
	if st.Evictions == 0 || st.CurrItems+st.Evictions != st.TotalItems {
		t.Fatalf("evictions %d, curr %d, total %d", st.Evictions, st.CurrItems, st.TotalItems)
	}
	missing := 0
	for _, h := range hot {
		if _, _, ok := e.Get(nil, h, &GetArgs{}); !ok {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d hot items were evicted", missing, len(hot))
	}
	reserved, used := e.MemoryStats()
	if reserved != limit || used > limit {
		t.Fatalf("MemoryStats = %d, %d", reserved, used)
	}
	is := e.ItemsStats()
	if is.Number != st.CurrItems || is.NumberSmall+is.NumberMain != is.Number || is.Evicted != st.Evictions {
		t.Fatalf("ItemsStats %+v disagrees with Stats %+v", is, st)
	}
}

// TestLargeItems fills the tier with items near the maximum size.
func TestLargeItems(t *testing.T) {
	clk := clock.NewFake(testStart)
	e := newTestEngine(t, clk, 2<<20, 512<<10)
	big := make([]byte, 400<<10)
	for i := range 50 {
		big[0] = byte(i)
		key := []byte(fmt.Sprintf("big-%d", i))
		if st, _ := e.Store(key, big, &StoreArgs{}); st != OK {
			t.Fatalf("store %d: %v", i, st)
		}
		v, _, ok := e.Get(nil, key, &GetArgs{})
		if !ok || len(v) != len(big) || v[0] != byte(i) {
			t.Fatalf("get %d: ok=%v len=%d", i, ok, len(v))
		}
	}
	if st := e.Stats(); st.Bytes > 2<<20 {
		t.Fatalf("bytes %d over the limit", st.Bytes)
	}
}

// TestRingWrapIntegrity checks values across many ring wraps, with appends,
// incr and deletes mixed in, against a model.
func TestRingWrapIntegrity(t *testing.T) {
	clk := clock.NewFake(testStart)
	e := newTestEngine(t, clk, 256<<10, 16<<10)
	model := map[string]string{}
	var dst []byte
	for i := range 200000 {
		k := fmt.Sprintf("k%d", (i*7919)%3000)
		switch i % 7 {
		case 0, 1, 2:
			v := fmt.Sprintf("%0*d", i%200, i)
			e.Store([]byte(k), []byte(v), &StoreArgs{})
			model[k] = v
		case 3:
			if st, _ := e.Store([]byte(k), []byte("+"), &StoreArgs{Mode: ModeAppend}); st == OK {
				model[k] += "+"
			}
		case 4:
			e.Delete([]byte(k), &DeleteArgs{})
			delete(model, k)
		default:
			var ok bool
			dst, _, ok = e.Get(dst[:0], []byte(k), &GetArgs{})
			if want, in := model[k]; ok && (!in || string(dst) != want) {
				t.Fatalf("op %d: get %s = %q, want %q (present %v)", i, k, dst, want, in)
			}
		}
	}
}

// TestConcurrent runs mixed operations from several goroutines (run with
// -race to check the locking).
func TestConcurrent(t *testing.T) {
	e, err := New(Options{MemoryLimit: 1 << 20, MaxItemSize: 64 << 10, CrawlerInterval: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var dst []byte
			for i := range 20000 {
				k := []byte(strconv.Itoa((i * (g + 1)) % 5000))
				switch i % 5 {
				case 0:
					e.Store(k, []byte("12345678901234567890"), &StoreArgs{Exptime: int64(i % 3)})
				case 1:
					e.Arith(k, &ArithArgs{Incr: true, Delta: 1})
				case 2:
					e.Delete(k, &DeleteArgs{})
				default:
					dst, _, _ = e.Get(dst[:0], k, &GetArgs{})
				}
			}
		}()
	}
	for range 5 {
		e.Crawl()
		e.Stats()
	}
	wg.Wait()
}

func TestZeroAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts are not meaningful under -cover or -race")
	}
	clk := clock.NewFake(testStart)
	e := newTestEngine(t, clk, 8<<20, 64<<10)
	keys := make([][]byte, 1000)
	value := make([]byte, 100)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("key-%d", i))
		e.Store(keys[i], value, &StoreArgs{})
	}
	dst := make([]byte, 0, 1024)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		dst, _, _ = e.Get(dst[:0], keys[i%len(keys)], &GetArgs{})
		i++
	}); n != 0 {
		t.Errorf("Get hit: %v allocs", n)
	}
	miss := []byte("no-such-key")
	if n := testing.AllocsPerRun(1000, func() {
		dst, _, _ = e.Get(dst[:0], miss, &GetArgs{})
	}); n != 0 {
		t.Errorf("Get miss: %v allocs", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		e.Store(keys[i%len(keys)], value, &StoreArgs{})
		i++
	}); n != 0 {
		t.Errorf("Store set: %v allocs", n)
	}
	ctr := []byte("ctr")
	e.Store(ctr, []byte("0"), &StoreArgs{})
	if n := testing.AllocsPerRun(1000, func() {
		e.Arith(ctr, &ArithArgs{Incr: true, Delta: 1})
	}); n != 0 {
		t.Errorf("Arith: %v allocs", n)
	}
}

// TestHeapFlat checks that the Go heap's object count does not grow with
// the number of items: the tier keeps no Go pointer per item.
func TestHeapFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a million items")
	}
	clk := clock.NewFake(testStart)
	e := newTestEngine(t, clk, 256<<20, 1<<20)
	value := make([]byte, 100)
	var key []byte
	load := func(from, to int) {
		for i := from; i < to; i++ {
			key = strconv.AppendInt(append(key[:0], "key:"...), int64(i), 10)
			e.Store(key, value, &StoreArgs{})
		}
	}
	objects := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapObjects
	}
	load(0, 200_000)
	at200k := objects()
	load(200_000, 1_000_000)
	at1m := objects()
	if st := e.Stats(); st.CurrItems != 1_000_000 {
		t.Fatalf("curr_items %d, want 1000000 (no eviction expected)", st.CurrItems)
	}
	growth := int64(at1m) - int64(at200k)
	t.Logf("heap objects: %d at 200k items, %d at 1M items (+%d for 800k items)", at200k, at1m, growth)
	// The index lives in mmap'd memory and grows there: nothing on the Go
	// heap depends on the item count. Allow for runtime noise only.
	if growth > 64 {
		t.Fatalf("heap objects grew by %d for 800k items", growth)
	}
}

func TestLongKey(t *testing.T) {
	e := newTestEngine(t, clock.NewFake(testStart), 0, 0)
	long := make([]byte, MaxKeyLen+1)
	if st, _ := e.Store(long, []byte("v"), &StoreArgs{}); st != TooLarge {
		t.Fatalf("Store of a %d-byte key: %v", len(long), st)
	}
	if _, _, ok := e.Get(nil, long, &GetArgs{Vivify: true}); ok {
		t.Fatal("vivified a too long key")
	}
	max := long[:MaxKeyLen]
	if st, _ := e.Store(max, []byte("v"), &StoreArgs{}); st != OK {
		t.Fatalf("Store of a %d-byte key: %v", len(max), st)
	}
	if v, _, ok := e.Get(nil, max, &GetArgs{}); !ok || string(v) != "v" {
		t.Fatal("lost the longest key")
	}
}

// TestCrawlerSkipsRingsWithNothingToReclaim: a pass walks a ring only when
// an item with an expiry time was written to it or seen live in it, or a
// flush_all took effect since its last walk.
func TestCrawlerSkipsRingsWithNothingToReclaim(t *testing.T) {
	clk := clock.NewFake(testStart)
	e := newTestEngine(t, clk, 64<<20, 1<<20)
	value := make([]byte, 100)
	checked := func() uint64 { return e.ItemsStats().CrawlerChecked }
	for i := range 1000 {
		e.Store([]byte("k"+strconv.Itoa(i)), value, &StoreArgs{})
	}
	e.Crawl()
	if n := checked(); n != 0 {
		t.Fatalf("a pass over items without an expiry time checked %d records", n)
	}

	// An item with an expiry time: the pass walks its ring (and keeps
	// walking it while the item lives), then reclaims it once expired.
	e.Store([]byte("ttl"), value, &StoreArgs{Exptime: 2})
	e.Crawl()
	first := checked()
	if first == 0 {
		t.Fatal("a pass after a store with an expiry time checked nothing")
	}
	e.Crawl()
	if checked() == first {
		t.Fatal("a pass skipped the ring of a live item with an expiry time")
	}
	clk.Advance(3 * time.Second)
	e.Crawl()
	if st := e.Stats(); st.CrawlerReclaimed != 1 || st.CurrItems != 1000 {
		t.Fatalf("reclaimed %d, %d items left; want 1 and 1000", st.CrawlerReclaimed, st.CurrItems)
	}
	before := checked()
	e.Crawl()
	if n := checked(); n != before {
		t.Fatalf("a pass after the last expiring item went checked %d more records", n-before)
	}

	// flush_all with a delay: nothing to walk until it takes effect, then
	// one pass reclaims every item, and the next one skips again.
	e.FlushAll(5)
	e.Crawl()
	if n := checked(); n != before {
		t.Fatalf("a pass before a delayed flush took effect checked %d records", n-before)
	}
	clk.Advance(6 * time.Second)
	e.Crawl()
	if st := e.Stats(); st.CrawlerReclaimed != 1001 || st.CurrItems != 0 {
		t.Fatalf("after the flush: reclaimed %d, %d items left; want 1001 and 0", st.CrawlerReclaimed, st.CurrItems)
	}
	e.Store([]byte("after"), value, &StoreArgs{})
	before = checked()
	e.Crawl()
	if n := checked(); n != before {
		t.Fatalf("a second pass under the same flush checked %d records", n-before)
	}
	if _, _, found := e.Get(nil, []byte("after"), &GetArgs{}); !found {
		t.Fatal("an item stored after the flush is gone")
	}
}

// TestCrawlerReclaimsMovedAndLateFlushedItems: records that reach a ring
// without a header write of their own (an S3-FIFO move into main) or that
// are stored already flushed (in the second a delayed flush_all takes
// effect, after the walk under it) still mark their ring for the crawler.
func TestCrawlerReclaimsMovedAndLateFlushedItems(t *testing.T) {
	clk := clock.NewFake(testStart)
	e := newTestEngine(t, clk, 8<<20, 1<<20)
	value := make([]byte, 1000)
	const ttlKeys = 2000
	for i := range ttlKeys {
		e.Store([]byte("ttl"+strconv.Itoa(i)), value, &StoreArgs{Exptime: 100})
	}
	for i := range ttlKeys {
		e.Get(nil, []byte("ttl"+strconv.Itoa(i)), &GetArgs{}) // hit: moved to main, not evicted
	}
	for i := range 20000 {
		e.Store([]byte("fill"+strconv.Itoa(i)), value, &StoreArgs{})
	}
	if e.ItemsStats().MovesToMain == 0 {
		t.Fatal("no record moved to main: the test does not test moves")
	}
	clk.Advance(101 * time.Second)
	e.Crawl()
	// A get that meets an expired item counts get_expired: the crawler
	// should have left none.
	expired := e.Stats().GetExpired
	for i := range ttlKeys {
		e.Get(nil, []byte("ttl"+strconv.Itoa(i)), &GetArgs{})
	}
	if n := e.Stats().GetExpired - expired; n != 0 {
		t.Fatalf("%d expired items were left for gets to find after a crawler pass", n)
	}

	// A delayed flush takes effect; the crawler walks under it; an item is
	// then stored in the same second, so it is flushed already.
	e.FlushAll(2)
	clk.Advance(time.Second) // the flush takes effect at the end of this second
	e.Crawl()
	e.Store([]byte("late"), value, &StoreArgs{})
	reclaimed := e.ItemsStats().CrawlerReclaimed
	e.Crawl()
	if n := e.ItemsStats().CrawlerReclaimed - reclaimed; n != 1 {
		t.Fatalf("a record stored flushed after the walk: the next pass reclaimed %d, want 1", n)
	}
}
