package engine

import (
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
