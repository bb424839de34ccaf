package engine

import (
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/tcache/tcache/internal/clock"
)

const benchKeys = 100_000

func benchEngine(b *testing.B) (*Engine, [][]byte, []byte) {
	e := newTestEngine(b, clock.NewFake(testStart), 256<<20, 1<<20)
	keys := make([][]byte, benchKeys)
	value := make([]byte, 100)
	for i := range keys {
		keys[i] = []byte("key:" + strconv.Itoa(i))
		e.Store(keys[i], value, &StoreArgs{})
	}
	return e, keys, value
}

func BenchmarkGetHit(b *testing.B) {
	e, keys, _ := benchEngine(b)
	dst := make([]byte, 0, 256)
	a := &GetArgs{}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst, _, _ = e.Get(dst[:0], keys[i%benchKeys], a)
		i++
	}
}

func BenchmarkGetMiss(b *testing.B) {
	e, _, _ := benchEngine(b)
	key := []byte("no-such-key")
	a := &GetArgs{}
	b.ReportAllocs()
	for b.Loop() {
		e.Get(nil, key, a)
	}
}

func BenchmarkSet(b *testing.B) {
	e, keys, value := benchEngine(b)
	a := &StoreArgs{}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		e.Store(keys[i%benchKeys], value, a)
		i++
	}
}

func BenchmarkSetParallel(b *testing.B) {
	e, keys, value := benchEngine(b)
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		a := &StoreArgs{}
		i := int(next.Add(7919))
		for pb.Next() {
			e.Store(keys[i%benchKeys], value, a)
			i++
		}
	})
}

// BenchmarkSetOverwrite is a set-heavy overwrite workload: random keys of a
// working set sized to a fraction of the limit, random value sizes (1 to
// 1500 bytes), nine sets to one get. At 60% the working set fits and no
// set may evict; at 150% it does not.
func BenchmarkSetOverwrite(b *testing.B) {
	for _, bc := range []struct {
		name string
		frac float64
	}{{"fits-60%", 0.6}, {"overflow-150%", 1.5}} {
		b.Run(bc.name, func(b *testing.B) {
			const (
				limit    = 64 << 20
				maxValue = 1500
			)
			e := newTestEngine(b, clock.NewFake(testStart), limit, 1<<20)
			keys := make([][]byte, int(bc.frac*limit/(hdrSize+8+maxValue/2)))
			for i := range keys {
				keys[i] = []byte("ow:" + strconv.Itoa(i))
			}
			rng := rand.NewPCG(1, 2)
			next := func() (key []byte, size int) {
				x := rng.Uint64()
				return keys[(x>>32)%uint64(len(keys))], 1 + int(uint32(x)%maxValue)
			}
			value := make([]byte, maxValue)
			a := &StoreArgs{}
			for i := range keys { // fill, then overwrite until the logs wrap
				_, size := next()
				e.Store(keys[i], value[:size], a)
			}
			for range 2 * len(keys) {
				key, size := next()
				e.Store(key, value[:size], a)
			}
			dst := make([]byte, 0, maxValue)
			g := &GetArgs{}
			ev := e.Stats().Evictions
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				key, size := next()
				if i%10 == 9 {
					dst, _, _ = e.Get(dst[:0], key, g)
				} else {
					e.Store(key, value[:size], a)
				}
				i++
			}
			b.ReportMetric(float64(e.Stats().Evictions-ev)/float64(i), "evictions/op")
		})
	}
}

// BenchmarkCrawl is one crawler pass over a full 1 GiB RAM tier: 1 000
// live keys overwritten with 4 KiB values until the rings wrapped (the
// compare's warm-up), then 100 000 live 1 KiB items, all with an expiry
// time an hour away (without one the pass skips the rings) and none
// expired. Paced (internal/pace), a pass sleeps about once per
// millisecond of work.
func BenchmarkCrawl(b *testing.B) {
	e := newTestEngine(b, clock.NewFake(testStart), 1<<30, 1<<20)
	a := &StoreArgs{Exptime: 3600}
	warm := make([]byte, 4096)
	for i := range 1 << 18 {
		e.Store([]byte("warm:"+strconv.Itoa(i%1000)), warm, a)
	}
	value := make([]byte, 1024)
	for i := range benchKeys {
		e.Store([]byte("key:"+strconv.Itoa(i)), value, a)
	}
	for b.Loop() {
		e.Crawl()
	}
}
