package engine

import (
	"bytes"
	"slices"
)

// MultiGet is the reusable state of GetMulti: keep one per connection, so
// that multi-key gets allocate nothing in the steady state. The zero value
// is ready to use; it is not safe for concurrent use.
type MultiGet struct {
	buf     []byte     // the values, back to back
	results []mgResult // per key, in request order
	pending []int32    // keys that missed RAM, sorted by key for the disk pass
}

type mgResult struct {
	off, n  int
	info    ItemInfo
	found   bool
	pending bool
}

// GetMulti looks up keys as Get does with a, and calls fn once per key in
// request order with the value (valid until fn returns), the item's
// description and whether it was found. With a disk tier a plain fetch
// (no Touch, no Vivify) serves every RAM hit first, then reads the RAM
// misses from disk in one pass in key order, so that their reads share
// Pebble's blocks; fetches that touch or vivify are mutations and go key by
// key. The protocol layer uses it for get, gets, gat and gats with several
// keys. fn should be created once (a method value kept by the caller):
// a closure built per call may allocate.
func (e *Engine) GetMulti(m *MultiGet, keys [][]byte, a *GetArgs, fn func(i int, value []byte, info ItemInfo, found bool)) {
	if e.tier == nil || a.Touch || a.Vivify {
		for i, k := range keys {
			v, info, found := e.Get(m.buf[:0], k, a)
			m.buf = v[:0]
			fn(i, v, info, found)
		}
		return
	}
	m.buf = m.buf[:0]
	m.results = slices.Grow(m.results[:0], len(keys))[:len(keys)]
	m.pending = m.pending[:0]
	now := e.now()
	for i, k := range keys {
		r := &m.results[i]
		*r = mgResult{off: len(m.buf)}
		s, h := e.shardFor(k)
		var it item
		s.mu.Lock()
		if s.lookup(e, h, k, now, &it) {
			r.info = e.hit(s, &it.hdr, a, now)
			it.r.writeHeader(it.pos, &it.hdr)
			if !a.NoValue {
				m.buf = it.r.appendTo(m.buf, it.valuePos(), int(it.hdr.valueLen))
			}
			r.found = true
		} else {
			r.pending = true
			m.pending = append(m.pending, int32(i))
		}
		s.mu.Unlock()
		r.n = len(m.buf) - r.off
	}
	slices.SortFunc(m.pending, func(x, y int32) int { return bytes.Compare(keys[x], keys[y]) })
	for _, i := range m.pending {
		r := &m.results[i]
		r.off = len(m.buf)
		k := keys[i]
		s, h := e.shardFor(k)
		st := e.tier.stripeFor(h)
		st.mu.Lock()
		var v []byte
		v, r.info, r.found = e.tier.getLocked(s, h, m.buf, k, a, now)
		st.mu.Unlock()
		m.buf = v
		r.n = len(m.buf) - r.off
	}
	for i := range keys {
		r := &m.results[i]
		fn(i, m.buf[r.off:r.off+r.n:r.off+r.n], r.info, r.found)
	}
}
