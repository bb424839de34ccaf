package engine

// Trace-driven hit-ratio simulation: the real engine against a model of
// memcached 1.6's segmented LRU with the same byte budget, on seeded Zipf
// traces of several skews and on a Zipf trace polluted by scans. Each
// request is a get; a miss is followed by a set (cache-aside). Both caches
// charge an item the same size (the engine's record size), so only the
// replacement policy differs.

import (
	"container/list"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"testing"

	"github.com/tcache/tcache/internal/clock"
)

// zipf draws ranks 0..n-1 with P(i) ∝ 1/(i+1)^s (any s > 0).
type zipf struct {
	cdf []float64
	rng *rand.Rand
}

func newZipf(n int, s float64, seed uint64) *zipf {
	z := &zipf{cdf: make([]float64, n), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	var sum float64
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
		z.cdf[i] = sum
	}
	for i := range z.cdf {
		z.cdf[i] /= sum
	}
	return z
}

func (z *zipf) next() int { return sort.SearchFloat64s(z.cdf, z.rng.Float64()) }

// trace builds a key sequence: Zipf ranks scrambled over the key space, and
// with scanEvery > 0 a run of scanLen never-repeated keys every scanEvery
// requests.
func trace(n, keys int, s float64, seed uint64, scanEvery, scanLen int) []int {
	z := newZipf(keys, s, seed)
	perm := rand.New(rand.NewPCG(seed, 1)).Perm(keys)
	out := make([]int, 0, n)
	scanKey := keys
	for len(out) < n {
		if scanEvery > 0 && len(out) > 0 && len(out)%scanEvery == 0 {
			for range scanLen {
				out = append(out, scanKey)
				scanKey++
			}
		}
		out = append(out, perm[z.next()])
	}
	return out[:n]
}

// slru models memcached 1.6's segmented LRU (items.c): new items enter HOT;
// a fetch marks an item FETCHED, a second one ACTIVE; in COLD an ACTIVE item
// is bumped to WARM at once. The maintainer keeps HOT at 20% and WARM at 40%
// of the bytes: an ACTIVE tail item of HOT moves to WARM, of WARM to WARM's
// head (ACTIVE cleared), an inactive one to COLD. Evictions take COLD's tail.
type slru struct {
	limit, used int64
	q           [3]*list.List // hot, warm, cold; front = head (newest)
	qBytes      [3]int64
	items       map[int]*list.Element
}

type slruItem struct {
	key            int
	size           int64
	lru            int
	fetched, activ bool
}

const (
	hotLRU = iota
	warmLRU
	coldLRU
)

func newSLRU(limit int64) *slru {
	c := &slru{limit: limit, items: map[int]*list.Element{}}
	for i := range c.q {
		c.q[i] = list.New()
	}
	return c
}

func (c *slru) link(it *slruItem, lru int) {
	it.lru = lru
	c.items[it.key] = c.q[lru].PushFront(it)
	c.qBytes[lru] += it.size
}

func (c *slru) unlink(el *list.Element) *slruItem {
	it := el.Value.(*slruItem)
	c.q[it.lru].Remove(el)
	c.qBytes[it.lru] -= it.size
	delete(c.items, it.key)
	return it
}

func (c *slru) get(key int) bool {
	el, ok := c.items[key]
	if !ok {
		return false
	}
	it := el.Value.(*slruItem)
	if !it.activ {
		if !it.fetched {
			it.fetched = true
		} else {
			it.activ = true
			if it.lru == coldLRU {
				c.unlink(el)
				it.activ = false
				c.link(it, warmLRU)
			}
		}
	}
	return true
}

// juggle is the LRU maintainer: bring HOT and WARM back under their limits.
func (c *slru) juggle() {
	for _, l := range []struct {
		lru int
		pct int64
	}{{hotLRU, 20}, {warmLRU, 40}} {
		limit := c.limit * l.pct / 100
		for tries := 0; c.qBytes[l.lru] > limit && tries < 1000; tries++ {
			el := c.q[l.lru].Back()
			it := c.unlink(el)
			if it.activ {
				it.activ = false
				c.link(it, warmLRU)
			} else {
				c.link(it, coldLRU)
			}
		}
	}
}

func (c *slru) set(key int, size int64) {
	if el, ok := c.items[key]; ok {
		c.used -= c.unlink(el).size
	}
	for c.used+size > c.limit {
		el := c.q[coldLRU].Back()
		if el == nil {
			c.juggle()
			if el = c.q[coldLRU].Back(); el == nil {
				el = c.q[warmLRU].Back()
			}
		}
		c.used -= c.unlink(el).size
	}
	c.link(&slruItem{key: key, size: size}, hotLRU)
	c.used += size
	c.juggle()
}

func TestHitRatioVersusSegmentedLRU(t *testing.T) {
	const (
		limit    = 8 << 20
		keys     = 200_000
		requests = 600_000
		valueLen = 100
	)
	if testing.Short() {
		t.Skip("simulation")
	}
	cases := []struct {
		name            string
		skew            float64
		scanEvery, scan int
	}{
		{"zipf-0.6", 0.6, 0, 0},
		{"zipf-0.8", 0.8, 0, 0},
		{"zipf-1.0", 1.0, 0, 0},
		{"zipf-1.2", 1.2, 0, 0},
		{"zipf-0.9+scans", 0.9, 20_000, 10_000},
	}
	value := make([]byte, valueLen)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := trace(requests, keys, tc.skew, uint64(42+i), tc.scanEvery, tc.scan)
			e := newTestEngine(t, clock.NewFake(testStart), limit, 64<<10)
			m := newSLRU(limit)
			var eh, mh int
			var key, dst []byte
			for _, k := range tr {
				key = strconv.AppendInt(append(key[:0], "key:"...), int64(k), 10)
				var ok bool
				if dst, _, ok = e.Get(dst[:0], key, &GetArgs{}); ok {
					eh++
				} else {
					e.Store(key, value, &StoreArgs{})
				}
				if m.get(k) {
					mh++
				} else {
					m.set(k, int64(hdrSize+len(key)+valueLen))
				}
			}
			er, mr := float64(eh)/requests, float64(mh)/requests
			t.Logf("%s: engine (S3-FIFO) hit ratio %.4f, memcached SLRU model %.4f", tc.name, er, mr)
			if er < mr-0.002 {
				t.Errorf("engine hit ratio %.4f below the SLRU model's %.4f", er, mr)
			}
		})
	}
}
