package engine

import (
	"strconv"

	"github.com/tcache/tcache/lsm"
)

// The mutations with a disk tier. Each follows the write path of tier.go
// and the memcached rules of its memory-mode twin in ops.go (the comments
// there explain them); the counters are the same.

// store is Engine.Store with a disk tier.
func (t *tier) store(s *shard, h uint64, key, value []byte, a *StoreArgs, now int64) (Status, uint64) {
	e := t.e
	st := t.stripeFor(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	bp, buf := t.scratch()
	defer func() { t.release(bp, buf) }()

	n := uint64(hdrSize + len(key) + len(value))
	if !e.sizeOK(len(key), a.Flags, len(value)) || !s.fits(n) {
		status := TooLarge
		s.mu.Lock()
		if !e.sizeOK(len(key), a.Flags, len(value)) {
			s.mu.c.tooLarge++
		} else {
			status = NoMemory
			s.mu.c.outOfMemory++
		}
		s.mu.Unlock()
		if a.Mode == ModeSet || a.Meta {
			c, err := t.current(s, h, key, now, 0, buf)
			if err == nil && c.found {
				if t.del(st, key, c.where) == OK {
					t.drop(s, h, key)
				}
			}
		}
		return status, 0
	}

	isCAS := a.Mode == ModeCAS || (a.CompareCAS && (a.Mode == ModeSet || a.Mode == ModeReplace))
	var reqCAS uint64
	if isCAS || a.CompareCAS {
		reqCAS = a.CAS
	}
	hd := header{
		flags:   a.Flags,
		exptime: uint32(e.realtime(a.Exptime, now)),
		time:    uint32(now),
	}
	if a.KeyBinary {
		hd.bits = bitKeyBinary
	}
	s.mu.Lock()
	s.mu.c.cmdSet++
	s.mu.Unlock()

	// A plain set needs the old item only for its RAM state and disk
	// location: a RAM copy has both; without one the batch looks the key
	// up itself.
	mode := readValue
	if a.Mode == ModeSet && !isCAS {
		mode = readRAM
	}
	c, err := t.current(s, h, key, now, mode, buf)
	if c.value != nil {
		buf = c.value[:0]
	}
	if err != nil {
		return DiskError, 0
	}
	if !c.found {
		switch {
		case isCAS:
			s.mu.Lock()
			s.mu.c.casMisses++
			s.mu.Unlock()
			return NotFound, 0
		case a.Mode == ModeSet || a.Mode == ModeAdd:
			hd.cas = e.nextCAS()
			return t.storeNew(st, s, h, key, &hd, value, nil, c.where, false, now)
		default:
			return NotStored, 0
		}
	}

	const (
		casNone = iota
		casMatch
		casStale
		casBadval
	)
	casRes := casNone
	switch {
	case reqCAS == 0:
	case reqCAS == c.hd.cas:
		casRes = casMatch
	case a.Invalidate && isCAS && reqCAS < c.hd.cas:
		casRes = casStale
	default:
		casRes = casBadval
	}
	old := &c.hd
	hd.bits |= old.bits & bitFreqMask // an overwrite keeps the key's hotness

	switch {
	case a.Mode == ModeAdd:
		// memcached do_item_update: the access time is RAM-only state.
		if c.inRAM {
			var it item
			s.mu.Lock()
			if s.find(h, key, &it) {
				it.hdr.time = uint32(now)
				it.r.writeHeader(it.pos, &it.hdr)
			}
			s.mu.Unlock()
		}
		return NotStored, 0
	case isCAS:
		s.mu.Lock()
		switch casRes {
		case casMatch:
			s.mu.c.casHits++
		case casStale:
			s.mu.c.casHits++
			hd.exptime = old.exptime
			hd.bits |= bitStale | old.bits&bitWinSent
		default:
			s.mu.c.casBadval++
			s.mu.Unlock()
			return Exists, 0
		}
		s.mu.Unlock()
	case a.Mode == ModeAppend || a.Mode == ModePrepend:
		if casRes != casNone && casRes != casMatch {
			return Exists, 0
		}
		if !e.sizeOK(len(key), old.flags, int(old.valueLen)+len(value)) || !s.fits(n+uint64(old.valueLen)) {
			return NotStored, 0
		}
		hd.flags, hd.exptime = old.flags, old.exptime
		hd.bits &^= bitKeyBinary // memcached builds the joined item afresh
		hd.cas = e.nextCAS()
		// The record needs the joined value in one piece: build it after
		// the old one in buf.
		joined := c.value[len(c.value):]
		if a.Mode == ModeAppend {
			joined = append(append(joined, c.value...), value...)
		} else {
			joined = append(append(joined, value...), c.value...)
		}
		buf = joined[:0]
		return t.storeNew(st, s, h, key, &hd, joined, nil, c.where, c.inMain, now)
	}
	hd.cas = e.nextCAS()
	return t.storeNew(st, s, h, key, &hd, value, nil, c.where, c.inMain, now)
}

// storeNew commits the new item hd with value v1+v2 (v2 nil when the
// value is in one piece) over the record at prev, then installs it in RAM.
func (t *tier) storeNew(st *stripe, s *shard, h uint64, key []byte, hd *header, v1, v2 []byte, prev lsm.Location, toMain bool, now int64) (Status, uint64) {
	where, status := t.put(st, key, hd, v1, prev)
	if status != OK {
		return status, 0
	}
	t.install(s, h, key, hd, v1, v2, where, toMain, now)
	s.mu.Lock()
	s.mu.c.totalItems++
	s.mu.Unlock()
	return OK, hd.cas
}

// arith is Engine.Arith with a disk tier.
func (t *tier) arith(s *shard, h uint64, key []byte, a *ArithArgs, now int64) (uint64, ItemInfo, Status) {
	e := t.e
	st := t.stripeFor(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	bp, buf := t.scratch()
	defer func() { t.release(bp, buf) }()
	c, err := t.current(s, h, key, now, readValue, buf)
	if c.value != nil {
		buf = c.value[:0]
	}
	if err != nil {
		return 0, ItemInfo{}, DiskError
	}
	var db [24]byte
	if !c.found {
		if !a.Vivify || len(key) > MaxKeyLen {
			s.mu.Lock()
			if a.Incr {
				s.mu.c.incrMisses++
			} else {
				s.mu.c.decrMisses++
			}
			s.mu.Unlock()
			return 0, ItemInfo{}, NotFound
		}
		digits := strconv.AppendUint(db[:0], a.Initial, 10)
		hd := header{
			exptime: uint32(e.realtime(a.VivifyExptime, now)),
			time:    uint32(now),
			cas:     e.nextCAS(),
		}
		if a.Touch && !a.VivifyAfterTouch {
			hd.exptime = uint32(e.realtime(a.Exptime, now))
		}
		if status, _ := t.storeNew(st, s, h, key, &hd, digits, nil, c.where, false, now); status != OK {
			return 0, ItemInfo{}, status
		}
		info := e.info(&hd, now)
		info.PrevExptime, info.PrevTTL = 0, -1
		info.Created = true
		return a.Initial, info, OK
	}
	hd := c.hd
	if hd.valueLen == 0 {
		return 0, ItemInfo{}, NonNumeric
	}
	if a.CompareCAS && a.CAS != 0 && a.CAS != hd.cas {
		return 0, ItemInfo{}, Exists
	}
	v, ok := parseDecimal(len(c.value), func(i int) byte { return c.value[i] })
	if !ok {
		return 0, ItemInfo{}, NonNumeric
	}
	if a.Incr {
		v += a.Delta
	} else {
		v -= min(a.Delta, v)
	}
	digits := strconv.AppendUint(db[:0], v, 10)
	hd.cas = e.nextCAS()
	prevExptime, prevTTL := e.abs(int64(hd.exptime)), ttl(hd.exptime, now)
	if a.Touch {
		hd.exptime = uint32(e.realtime(a.Exptime, now))
	}
	hd.time = uint32(now) // memcached do_item_update
	var value []byte
	if len(digits) <= int(hd.valueLen) {
		// In place, space-padded: the value keeps its length.
		value = c.value
		copy(value, digits)
		for i := len(digits); i < len(value); i++ {
			value[i] = ' '
		}
	} else {
		// A new item (memcached do_add_delta) keeps flags and expiry but
		// not the binary-key mark or the access bits.
		hd.bits &= bitFreqMask
		value = digits
	}
	where, status := t.put(st, key, &hd, value, c.where)
	if status != OK {
		return 0, ItemInfo{}, status
	}
	t.install(s, h, key, &hd, value, nil, where, c.inMain, now)
	s.mu.Lock()
	if a.Incr {
		s.mu.c.incrHits++
	} else {
		s.mu.c.decrHits++
	}
	if len(digits) > len(c.value) {
		s.mu.c.totalItems++
	}
	s.mu.Unlock()
	info := e.info(&hd, now)
	info.PrevExptime, info.PrevTTL = prevExptime, prevTTL
	return v, info, OK
}

// delete is Engine.Delete with a disk tier.
func (t *tier) delete(s *shard, h uint64, key []byte, a *DeleteArgs, now int64) Status {
	e := t.e
	st := t.stripeFor(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	bp, buf := t.scratch()
	defer func() { t.release(bp, buf) }()
	mode := 0
	if a.Invalidate {
		mode = readValue
	}
	c, err := t.current(s, h, key, now, mode, buf)
	if c.value != nil {
		buf = c.value[:0]
	}
	if err != nil {
		return DiskError
	}
	if !c.found || (a.CompareCAS && a.CAS != c.hd.cas) {
		s.mu.Lock()
		s.mu.c.deleteMisses++
		s.mu.Unlock()
		if !c.found {
			return NotFound
		}
		return Exists
	}
	if a.Invalidate {
		hd := c.hd
		if a.Touch {
			hd.exptime = uint32(e.realtime(a.Exptime, now))
		}
		hd.bits = hd.bits&^bitWinSent | bitStale
		hd.cas = e.nextCAS()
		where, status := t.put(st, key, &hd, c.value, c.where)
		if status != OK {
			return status
		}
		t.install(s, h, key, &hd, c.value, nil, where, c.inMain, now)
		return OK
	}
	if status := t.del(st, key, c.where); status != OK {
		return status
	}
	t.drop(s, h, key)
	s.mu.Lock()
	s.mu.c.deleteHits++
	s.mu.Unlock()
	return OK
}

// touch is Engine.Touch with a disk tier: the CAS is kept, the record is
// rewritten with the new expiry.
func (t *tier) touch(s *shard, h uint64, key []byte, exptime int64, now int64) Status {
	e := t.e
	st := t.stripeFor(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	bp, buf := t.scratch()
	defer func() { t.release(bp, buf) }()
	c, err := t.current(s, h, key, now, readValue, buf)
	if c.value != nil {
		buf = c.value[:0]
	}
	if err != nil {
		return DiskError
	}
	s.mu.Lock()
	s.mu.c.cmdTouch++
	if !c.found {
		s.mu.c.touchMisses++
		s.mu.Unlock()
		return NotFound
	}
	s.mu.Unlock()
	hd := c.hd
	bump(&hd, now)
	hd.exptime = uint32(e.realtime(exptime, now))
	where, status := t.put(st, key, &hd, c.value, c.where)
	if status != OK {
		return status
	}
	t.install(s, h, key, &hd, c.value, nil, where, c.inMain, now)
	s.mu.Lock()
	s.mu.c.touchHits++
	s.mu.Unlock()
	return OK
}

// flush persists a flush_all marker (oldest: memcached's new oldest_live,
// relative), then applies it as memory mode does. It holds every stripe
// lock, so that every mutation committed before it has a lower version
// and every one after a higher one: the disk rule (recordFlushed) then
// agrees with memcached's. The marker's version is the command's; its
// bound is the HLC of the flush time.
func (t *tier) flush(oldest, now int64) Status {
	e := t.e
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	t.lockAll()
	defer t.unlockAll()
	oc := e.oldestCAS.Load()
	var cas uint64
	if oldest <= now {
		cas = e.nextCAS()
		oc = cas
	}
	marker := lsm.FlushMarker{
		OldestLive: e.abs(oldest),
		OldestCAS:  oc,
		Version:    t.version(),
	}
	m := &mutation{flush: true, marker: marker}
	if _, status := t.commit(m, cas); status != OK {
		return status
	}
	t.marker.Store(&marker)
	e.oldestLive.Store(oldest)
	e.oldestCAS.Store(oc)
	return OK
}
