package engine

import (
	"github.com/tcache/tcache/lsm"
)

// The mutations with a disk tier, on the write path of tier.go: begin
// (stripe lock, scratch buffer, current item), the rules of rules.go that
// memory mode (ops.go) uses too, then apply (commit, install in RAM, count
// what a plan counts once the change is made).

// txn is a disk-tier operation under way on one key: it holds the key's
// stripe lock (taken by begin or lock; nil: the caller holds it), a
// scratch buffer and c, the current item read into it. A mutation starts
//
//	var x txn
//	defer t.end(&x)
//	if status := t.begin(&x, s, h, key, now, readValue); status != OK {
//		return status
//	}
type txn struct {
	st  *stripe
	bp  *[]byte // the scratch buffer (nil before read)
	buf []byte  // its slice now, returned by end with what it grew to
	c   current
	err error // the disk read error behind a DiskError
}

// begin takes key's stripe lock and reads its current item (read).
func (t *tier) begin(x *txn, s *shard, h uint64, key []byte, now int64, mode int) Status {
	t.lock(x, h)
	return t.read(x, s, h, key, now, mode)
}

func (t *tier) lock(x *txn, h uint64) {
	x.st = t.stripeFor(h)
	x.st.mu.Lock()
}

// read takes a scratch buffer and reads key's current item into it
// (current, with read mode mode). A disk read error answers DiskError.
func (t *tier) read(x *txn, s *shard, h uint64, key []byte, now int64, mode int) Status {
	x.bp, x.buf = t.scratch()
	x.c, x.err = t.current(s, h, key, now, mode, x.buf)
	if x.c.value != nil {
		x.buf = x.c.value[:0]
	}
	if x.err != nil {
		return DiskError
	}
	return OK
}

// end releases the scratch buffer and the stripe lock x holds.
func (t *tier) end(x *txn) {
	if x.bp != nil {
		t.release(x.bp, x.buf)
	}
	if x.st != nil {
		x.st.mu.Unlock()
	}
}

// apply commits hd with value as the record of key, replacing the current
// one, then installs it in RAM and counts done.
func (t *tier) apply(x *txn, s *shard, h uint64, key []byte, hd *header, value []byte, done tally, now int64) Status {
	where, status := t.put(key, hd, value, x.c.where)
	if status == OK {
		t.install(s, h, key, hd, value, where, x.c.inMain, now)
		s.count(done)
	}
	return status
}

// store is Engine.Store with a disk tier.
func (t *tier) store(s *shard, h uint64, key, value []byte, a *StoreArgs, now int64) (Status, uint64) {
	e := t.e
	var x txn
	defer t.end(&x)
	t.lock(&x, h)
	fit, cnt, drop := e.storeFits(s, key, value, a)
	s.count(cnt)
	if fit != OK {
		if drop && t.read(&x, s, h, key, now, 0) == OK && x.c.found {
			if t.del(key, x.c.where) == OK {
				t.drop(s, h, key)
			}
		}
		return fit, 0
	}
	// A plain set needs the old item only for its RAM state and disk
	// location: a RAM copy has both; without one the batch looks the key
	// up itself.
	mode := readValue
	if a.Mode == ModeSet && !casStore(a) {
		mode = readRAM
	}
	if status := t.read(&x, s, h, key, now, mode); status != OK {
		return status, 0
	}
	p := e.planStore(s, key, value, a, present(x.c.found, &x.c.hd), now)
	s.count(p.cnt)
	switch p.act {
	case actNone:
		return p.status, 0
	case actTouchAdd:
		// memcached do_item_update: the access time is RAM-only state.
		if x.c.inRAM {
			var it item
			s.mu.Lock()
			if s.find(h, key, &it) {
				it.hdr.time = uint32(now)
				it.r.writeHeader(it.pos, &it.hdr)
			}
			s.mu.Unlock()
		}
		return p.status, 0
	case actJoin:
		// The record needs the joined value in one piece: build it after
		// the old one in the scratch buffer.
		joined := x.c.value[len(x.c.value):]
		if a.Mode == ModeAppend {
			joined = append(append(joined, x.c.value...), value...)
		} else {
			joined = append(append(joined, value...), x.c.value...)
		}
		x.buf = joined[:0]
		value = joined
	}
	p.hd.cas = e.nextCAS()
	if status := t.apply(&x, s, h, key, &p.hd, value, p.done, now); status != OK {
		return status, 0
	}
	return OK, p.hd.cas
}

// arith is Engine.Arith with a disk tier.
func (t *tier) arith(s *shard, h uint64, key []byte, a *ArithArgs, now int64) (uint64, ItemInfo, Status) {
	e := t.e
	var x txn
	defer t.end(&x)
	if status := t.begin(&x, s, h, key, now, readValue); status != OK {
		return 0, ItemInfo{}, status
	}
	old := x.c.value
	v, numeric := parseDecimal(len(old), func(i int) byte { return old[i] })
	var db [20]byte
	p := e.planArith(key, a, present(x.c.found, &x.c.hd), v, numeric, now, &db)
	s.count(p.cnt)
	if p.act == actNone {
		return 0, ItemInfo{}, p.status
	}
	p.hd.cas = e.nextCAS()
	value := p.digits
	if p.act == actUpdate {
		// In place, space-padded: the value keeps its length.
		value = old
		copy(value, p.digits)
		for i := len(p.digits); i < len(value); i++ {
			value[i] = ' '
		}
	}
	if status := t.apply(&x, s, h, key, &p.hd, value, p.done, now); status != OK {
		return 0, ItemInfo{}, status
	}
	return p.v, e.arithInfo(&p, now), OK
}

// delete is Engine.Delete with a disk tier.
func (t *tier) delete(s *shard, h uint64, key []byte, a *DeleteArgs, now int64) Status {
	e := t.e
	mode := 0
	if a.Invalidate {
		mode = readValue
	}
	var x txn
	defer t.end(&x)
	if status := t.begin(&x, s, h, key, now, mode); status != OK {
		return status
	}
	p := e.planDelete(a, present(x.c.found, &x.c.hd), now)
	s.count(p.cnt)
	switch p.act {
	case actUpdate:
		p.hd.cas = e.nextCAS()
		return t.apply(&x, s, h, key, &p.hd, x.c.value, p.done, now)
	case actUnlink:
		if status := t.del(key, x.c.where); status != OK {
			return status
		}
		t.drop(s, h, key)
		s.count(p.done)
	}
	return p.status
}

// touch is Engine.Touch with a disk tier: the CAS is kept, the record is
// rewritten with the new expiry.
func (t *tier) touch(s *shard, h uint64, key []byte, exptime int64, now int64) Status {
	var x txn
	defer t.end(&x)
	if status := t.begin(&x, s, h, key, now, readValue); status != OK {
		return status
	}
	p := t.e.planTouch(present(x.c.found, &x.c.hd), exptime, now)
	s.count(p.cnt)
	if p.act == actUpdate {
		return t.apply(&x, s, h, key, &p.hd, x.c.value, p.done, now)
	}
	return p.status
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
		Version:    t.version(nil),
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
