package engine

// The operations of *Engine. Each runs in memory mode under its key's
// shard mutex, or hands over to its twin in tier_ops.go (tier.go for Get)
// with a disk tier. Both apply the mutation rules of rules.go.

// Get looks key up. On a hit it appends the value to dst (unless a.NoValue)
// and returns the extended slice, the item's description and true; on a
// miss it returns dst unchanged. The returned value aliases dst's array (as
// append does), never engine memory.
//
// Get applies memcached's fetch side effects: the first fetch sets the
// fetched bit, the second marks the item active and bumps its access time
// (unless a.NoBump); a.Touch sets a new exptime (gat, mg T); a.Vivify and
// a.Recache hand out win tokens as mg N / mg R do; a stale item hands the
// token to its first fetcher. Stats count as memcached counts get, gat and
// mg (a gat is a touch, not a get; an mg miss is a get miss even with T).
func (e *Engine) Get(dst, key []byte, a *GetArgs) (value []byte, info ItemInfo, found bool) {
	s, h := e.shardFor(key)
	now := e.now()
	var it item
	if e.tier != nil {
		return e.tier.get(s, h, dst, key, a, now)
	}
	s.mu.Lock()
	if !s.lookup(e, h, key, now, &it) {
		// mg N: create an empty item and hand this caller the win token.
		created := false
		if a.Vivify && len(key) <= MaxKeyLen {
			it.hdr = e.vivified(a.VivifyExptime, a.Touch && !a.VivifyAfterTouch, a.Exptime, now)
			it.hdr.cas, it.hdr.bits = e.nextCAS(), bitWinSent
			created = s.insert(e, h, key, &it.hdr, nil, nil, false, now)
		}
		s.mu.c.add(getMissCount(a, created))
		if created {
			info = e.vivifyInfo(&it.hdr, now)
		}
		s.mu.Unlock()
		return dst, info, created
	}
	info = e.hit(s, &it.hdr, a, now)
	it.r.writeHeader(it.pos, &it.hdr)
	if !a.NoValue {
		dst = it.r.appendTo(dst, it.valuePos(), int(it.hdr.valueLen))
	}
	s.mu.Unlock()
	return dst, info, true
}

// hit applies the side effects of a Get hit to hd (touch, win token, bump)
// and counts it; it returns the item's description. The caller holds s.mu
// and writes hd back.
func (e *Engine) hit(s *shard, hd *header, a *GetArgs, now int64) ItemInfo {
	info := e.info(hd, now)
	prevExptime := hd.exptime
	if a.Touch {
		hd.exptime = uint32(e.realtime(a.Exptime, now))
		info.Exptime = e.abs(int64(hd.exptime))
		info.TTL = ttl(hd.exptime, now)
		s.mu.c.cmdTouch++
		s.mu.c.touchHits++
	} else {
		s.mu.c.cmdGet++
		s.mu.c.getHits++
	}
	win := false
	if a.Recache && hd.bits&bitWinSent == 0 {
		exp := prevExptime
		if a.RecacheAfterTouch {
			exp = hd.exptime
		}
		win = exp != 0 && int64(exp) < e.realtime(a.RecacheTTL, now)
	}
	if hd.bits&bitStale != 0 && hd.bits&bitWinSent == 0 {
		win = true
	}
	if win {
		hd.bits |= bitWinSent
		info.Win = true
	}
	if !a.NoBump {
		bump(hd, now)
	}
	return info
}

// bump is memcached's do_item_bump for the segmented LRU (an item becomes
// active on its second fetch, which also refreshes its access time) plus
// the S3-FIFO frequency count.
func bump(hd *header, now int64) {
	if hd.bits&bitActive == 0 {
		if hd.bits&bitFetched == 0 {
			hd.bits |= bitFetched
		} else {
			hd.bits |= bitActive
			hd.time = uint32(now)
		}
	}
	if hd.bits&bitFreqMask < 3 {
		hd.bits++
	}
}

func ttl(exptime uint32, now int64) int64 {
	if exptime == 0 {
		return -1
	}
	return int64(exptime) - now
}

// info describes hd as seen before this access (Prev* = the current
// expiry; the caller updates Exptime and TTL after a touch).
func (e *Engine) info(hd *header, now int64) ItemInfo {
	exp, t := e.abs(int64(hd.exptime)), ttl(hd.exptime, now)
	return ItemInfo{
		Flags:       hd.flags,
		CAS:         hd.cas,
		Exptime:     exp,
		PrevExptime: exp,
		LastAccess:  e.abs(int64(hd.time)),
		Size:        int(hd.valueLen),
		Fetched:     hd.bits&bitFetched != 0,
		Stale:       hd.bits&bitStale != 0,
		WinSent:     hd.bits&bitWinSent != 0,
		KeyBinary:   hd.bits&bitKeyBinary != 0,
		TTL:         t,
		PrevTTL:     t,
		Idle:        now - int64(hd.time),
	}
}

// Store runs a storage command and returns its status and, on OK, the new
// CAS of the item.
//
// Semantics are memcached 1.6.18's do_store_item: add of a present item
// answers NotStored (and refreshes its access time); replace, append and
// prepend of a missing item answer NotStored; ModeCAS (or CompareCAS with
// set/replace) answers NotFound for a missing item and Exists on a mismatch,
// or with a.Invalidate and an older CAS stores the value as a stale item
// keeping the old expiry; append/prepend keep the old flags and expiry and
// answer Exists on a CompareCAS mismatch. An item too large for the limit
// answers TooLarge (NoMemory when it cannot fit a ring) and, for set or any
// meta store, removes the existing item as memcached does. a.Vivify is
// accepted but ignored, as memcached 1.6.18 ignores ms N.
func (e *Engine) Store(key, value []byte, a *StoreArgs) (Status, uint64) {
	if len(key) > MaxKeyLen {
		return TooLarge, 0
	}
	s, h := e.shardFor(key)
	now := e.now()
	if e.tier != nil {
		return e.tier.store(s, h, key, value, a, now)
	}
	fit, cnt, drop := e.storeFits(s, key, value, a)
	var it item
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.c.add(cnt)
	if fit != OK {
		if drop && s.lookup(e, h, key, now, &it) {
			s.unlink(&it)
		}
		return fit, 0
	}
	found := s.lookup(e, h, key, now, &it)
	p := e.planStore(s, key, value, a, present(found, &it.hdr), now)
	s.mu.c.add(p.cnt)
	v1, v2 := value, []byte(nil)
	switch p.act {
	case actNone:
		return p.status, 0
	case actTouchAdd:
		it.hdr.time = uint32(now) // memcached do_item_update
		it.r.writeHeader(it.pos, &it.hdr)
		return p.status, 0
	case actJoin:
		// Copy the old value out: making room may overwrite it.
		bp := e.getScratch()
		defer e.scratch.Put(bp)
		*bp = it.r.appendTo((*bp)[:0], it.valuePos(), int(it.hdr.valueLen))
		if a.Mode == ModeAppend {
			v1, v2 = *bp, value
		} else {
			v2 = *bp
		}
	}
	inMain := found && it.r == &s.mu.main
	if found {
		s.unlink(&it)
	}
	p.hd.cas = e.nextCAS()
	if !s.insert(e, h, key, &p.hd, v1, v2, inMain, now) { // only a new item can fail
		s.mu.c.add(cntOutOfMemory)
		return NoMemory, 0
	}
	s.mu.c.add(p.done)
	return OK, p.hd.cas
}

func (e *Engine) getScratch() *[]byte {
	if bp, ok := e.scratch.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 1024)
	return &b
}

// Arith runs incr (a.Incr) or decr and returns the new value. The stored
// value must read as a decimal uint64 the way memcached's safe_strtoull
// reads it (leading white space and a sign allowed, digits, then white space
// or the end; "-0" is 0, other negatives are refused); otherwise NonNumeric.
// incr wraps at 2^64, decr stops at 0. As in memcached, a result no longer
// than the old value is written in place padded with spaces ("10" decr 1 is
// "9 "), a longer one makes a new item; either way flags and expiry are kept
// and the item gets a new CAS. A CompareCAS with a non-zero CAS that
// differs answers Exists; a.Vivify creates a missing item holding a.Initial.
func (e *Engine) Arith(key []byte, a *ArithArgs) (uint64, ItemInfo, Status) {
	s, h := e.shardFor(key)
	now := e.now()
	if e.tier != nil {
		return e.tier.arith(s, h, key, a, now)
	}
	var it item
	s.mu.Lock()
	defer s.mu.Unlock()
	found := s.lookup(e, h, key, now, &it)
	var v uint64
	numeric := false
	if found {
		v, numeric = parseUint(it.r, it.valuePos(), int(it.hdr.valueLen))
	}
	var db [20]byte
	p := e.planArith(key, a, present(found, &it.hdr), v, numeric, now, &db)
	s.mu.c.add(p.cnt)
	if p.act == actNone {
		return 0, ItemInfo{}, p.status
	}
	p.hd.cas = e.nextCAS()
	if p.act == actUpdate {
		vp := it.valuePos()
		it.r.write(vp, p.digits)
		it.r.fill(vp+uint64(len(p.digits)), int(p.hd.valueLen)-len(p.digits), ' ')
		it.r.writeHeader(it.pos, &p.hd)
	} else {
		inMain := found && it.r == &s.mu.main
		if found {
			s.unlink(&it)
		}
		if !s.insert(e, h, key, &p.hd, p.digits, nil, inMain, now) { // only ma N can fail
			return 0, ItemInfo{}, NoMemory
		}
	}
	s.mu.c.add(p.done)
	return p.v, e.arithInfo(&p, now), OK
}

// parseUint reads a uint64 from the n value bytes at pos like memcached's
// safe_strtoull over the value followed by "\r\n".
func parseUint(r *ring, pos uint64, n int) (uint64, bool) {
	return parseDecimal(n, func(i int) byte { return r.at(pos + uint64(i)) })
}

// Delete removes key (delete, md). With a.CompareCAS a different CAS answers
// Exists (counted as a delete miss, as memcached does). With a.Invalidate the
// item is kept but marked stale, its win token is reset, it gets a new CAS
// and, with a.Touch, a new exptime.
func (e *Engine) Delete(key []byte, a *DeleteArgs) Status {
	s, h := e.shardFor(key)
	now := e.now()
	if e.tier != nil {
		return e.tier.delete(s, h, key, a, now)
	}
	var it item
	s.mu.Lock()
	defer s.mu.Unlock()
	p := e.planDelete(a, present(s.lookup(e, h, key, now, &it), &it.hdr), now)
	s.mu.c.add(p.cnt | p.done)
	switch p.act {
	case actUpdate:
		p.hd.cas = e.nextCAS()
		it.r.writeHeader(it.pos, &p.hd)
	case actUnlink:
		s.unlink(&it)
	}
	return p.status
}

// Touch sets the exptime of key (raw memcached exptime) without changing its
// CAS; the access counts as a fetch for the item's recency.
func (e *Engine) Touch(key []byte, exptime int64) Status {
	s, h := e.shardFor(key)
	now := e.now()
	if e.tier != nil {
		return e.tier.touch(s, h, key, exptime, now)
	}
	var it item
	s.mu.Lock()
	defer s.mu.Unlock()
	p := e.planTouch(present(s.lookup(e, h, key, now, &it), &it.hdr), exptime, now)
	s.mu.c.add(p.cnt | p.done)
	if p.act == actUpdate {
		it.r.writeHeader(it.pos, &p.hd)
	}
	return p.status
}
