package engine

import (
	"strconv"
)

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
		// memcached creates it without expiry, then applies N and T in
		// request order: the later one sets the exptime.
		created := false
		if a.Vivify && len(key) <= MaxKeyLen {
			it.hdr = header{
				exptime: uint32(e.realtime(a.VivifyExptime, now)),
				time:    uint32(now),
				cas:     e.nextCAS(),
				bits:    bitWinSent,
			}
			if a.Touch && !a.VivifyAfterTouch {
				it.hdr.exptime = uint32(e.realtime(a.Exptime, now))
			}
			created = s.insert(e, h, key, &it.hdr, nil, nil, false, now)
			if created {
				s.mu.c.totalItems++
			}
		}
		switch {
		case a.Touch && (created || !a.Meta):
			s.mu.c.cmdTouch++
			if created {
				s.mu.c.touchHits++
			} else {
				s.mu.c.touchMisses++
			}
		default:
			s.mu.c.cmdGet++
			if created {
				s.mu.c.getHits++
			} else {
				s.mu.c.getMisses++
			}
		}
		if !created {
			s.mu.Unlock()
			return dst, ItemInfo{}, false
		}
		info = e.info(&it.hdr, now)
		info.PrevExptime, info.PrevTTL = 0, -1
		info.WinSent = false // the token is this caller's (Win), not sent before
		info.Win = true
		info.Created = true
		s.mu.Unlock()
		return dst, info, true
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

// MaxKeyLen is the longest key the engine stores (memcached KEY_MAX_LENGTH);
// the protocol layer refuses longer keys before they reach the engine, and
// a Store of one answers TooLarge.
const MaxKeyLen = 250

// sizeOK is memcached's item_size_ok for the default settings (CAS on):
// sizeof(item) 48 + key + 1 + 4 bytes of flags when non-zero + value + 2
// (CRLF) + 8 (CAS) must not exceed the maximum item size.
func (e *Engine) sizeOK(nkey int, flags uint32, nvalue int) bool {
	n := 48 + nkey + 1 + nvalue + 2 + 8
	if flags != 0 {
		n += 4
	}
	return n <= e.opts.MaxItemSize
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
	var it item
	n := uint64(hdrSize + len(key) + len(value))
	if !e.sizeOK(len(key), a.Flags, len(value)) || !s.fits(n) {
		st := TooLarge
		s.mu.Lock()
		if !e.sizeOK(len(key), a.Flags, len(value)) {
			s.mu.c.tooLarge++
		} else {
			st = NoMemory
			s.mu.c.outOfMemory++
		}
		if a.Mode == ModeSet || a.Meta {
			if s.lookup(e, h, key, now, &it) {
				s.unlink(&it)
			}
		}
		s.mu.Unlock()
		return st, 0
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
	defer s.mu.Unlock()
	s.mu.c.cmdSet++
	if !s.lookup(e, h, key, now, &it) {
		switch {
		case isCAS:
			s.mu.c.casMisses++
			return NotFound, 0
		case a.Mode == ModeSet || a.Mode == ModeAdd:
			hd.cas = e.nextCAS()
			if !s.insert(e, h, key, &hd, value, nil, false, now) {
				s.mu.c.outOfMemory++
				return NoMemory, 0
			}
			s.mu.c.totalItems++
			return OK, hd.cas
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
	case reqCAS == it.hdr.cas:
		casRes = casMatch
	case a.Invalidate && isCAS && reqCAS < it.hdr.cas:
		casRes = casStale
	default:
		casRes = casBadval
	}
	old := &it.hdr
	inMain := it.r == &s.mu.main
	hd.bits |= old.bits & bitFreqMask // an overwrite keeps the key's hotness

	switch {
	case a.Mode == ModeAdd:
		old.time = uint32(now) // memcached do_item_update
		it.r.writeHeader(it.pos, old)
		return NotStored, 0
	case isCAS:
		switch casRes {
		case casMatch:
			s.mu.c.casHits++
		case casStale:
			s.mu.c.casHits++
			hd.exptime = old.exptime
			hd.bits |= bitStale | old.bits&bitWinSent
		default:
			s.mu.c.casBadval++
			return Exists, 0
		}
	case a.Mode == ModeAppend || a.Mode == ModePrepend:
		if casRes != casNone && casRes != casMatch {
			return Exists, 0
		}
		if !e.sizeOK(len(key), old.flags, int(old.valueLen)+len(value)) || !s.fits(n+uint64(old.valueLen)) {
			return NotStored, 0
		}
		// Copy the old value out: making room may overwrite it.
		bp := e.getScratch()
		buf := it.r.appendTo((*bp)[:0], it.valuePos(), int(old.valueLen))
		hd.flags, hd.exptime = old.flags, old.exptime
		// memcached builds the joined item afresh: no binary-key flag.
		hd.bits &^= bitKeyBinary
		s.unlink(&it)
		hd.cas = e.nextCAS()
		if a.Mode == ModeAppend {
			s.insert(e, h, key, &hd, buf, value, inMain, now)
		} else {
			s.insert(e, h, key, &hd, value, buf, inMain, now)
		}
		s.mu.c.totalItems++
		*bp = buf
		e.scratch.Put(bp)
		return OK, hd.cas
	}
	s.unlink(&it)
	hd.cas = e.nextCAS()
	s.insert(e, h, key, &hd, value, nil, inMain, now)
	s.mu.c.totalItems++
	return OK, hd.cas
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
	if !s.lookup(e, h, key, now, &it) {
		if !a.Vivify || len(key) > MaxKeyLen {
			if a.Incr {
				s.mu.c.incrMisses++
			} else {
				s.mu.c.decrMisses++
			}
			return 0, ItemInfo{}, NotFound
		}
		// ma N: memcached adds the item without expiry, then applies N and
		// T in request order: the later one sets the exptime.
		var db [20]byte
		digits := strconv.AppendUint(db[:0], a.Initial, 10)
		it.hdr = header{
			exptime: uint32(e.realtime(a.VivifyExptime, now)),
			time:    uint32(now),
			cas:     e.nextCAS(),
		}
		if a.Touch && !a.VivifyAfterTouch {
			it.hdr.exptime = uint32(e.realtime(a.Exptime, now))
		}
		if !s.insert(e, h, key, &it.hdr, digits, nil, false, now) {
			return 0, ItemInfo{}, NoMemory
		}
		s.mu.c.totalItems++
		info := e.info(&it.hdr, now)
		info.PrevExptime, info.PrevTTL = 0, -1
		info.Created = true
		return a.Initial, info, OK
	}
	hd := &it.hdr
	if hd.valueLen == 0 {
		return 0, ItemInfo{}, NonNumeric
	}
	if a.CompareCAS && a.CAS != 0 && a.CAS != hd.cas {
		return 0, ItemInfo{}, Exists
	}
	v, ok := parseUint(it.r, it.valuePos(), int(hd.valueLen))
	if !ok {
		return 0, ItemInfo{}, NonNumeric
	}
	if a.Incr {
		v += a.Delta
		s.mu.c.incrHits++
	} else {
		v -= min(a.Delta, v)
		s.mu.c.decrHits++
	}
	var db [20]byte
	digits := strconv.AppendUint(db[:0], v, 10)
	hd.cas = e.nextCAS()
	prevExptime, prevTTL := e.abs(int64(hd.exptime)), ttl(hd.exptime, now)
	if a.Touch {
		hd.exptime = uint32(e.realtime(a.Exptime, now))
	}
	if len(digits) <= int(hd.valueLen) {
		vp := it.valuePos()
		it.r.write(vp, digits)
		it.r.fill(vp+uint64(len(digits)), int(hd.valueLen)-len(digits), ' ')
		hd.time = uint32(now) // memcached do_item_update
		it.r.writeHeader(it.pos, hd)
		info := e.info(hd, now)
		info.PrevExptime, info.PrevTTL = prevExptime, prevTTL
		return v, info, OK
	}
	// A longer number makes a new item (memcached do_add_delta), which
	// keeps flags and expiry but not the binary-key flag.
	inMain := it.r == &s.mu.main
	nh := header{flags: hd.flags, exptime: hd.exptime, time: uint32(now), cas: hd.cas, bits: hd.bits & bitFreqMask}
	s.unlink(&it)
	s.insert(e, h, key, &nh, digits, nil, inMain, now) // cannot fail after unlink
	s.mu.c.totalItems++
	info := e.info(&nh, now)
	info.PrevExptime, info.PrevTTL = prevExptime, prevTTL
	return v, info, OK
}

// parseUint reads a uint64 from the n value bytes at pos like memcached's
// safe_strtoull over the value followed by "\r\n".
func parseUint(r *ring, pos uint64, n int) (uint64, bool) {
	return parseDecimal(n, func(i int) byte { return r.at(pos + uint64(i)) })
}

// parseDecimal is safe_strtoull over the n bytes that at returns.
func parseDecimal(n int, at func(int) byte) (uint64, bool) {
	isSpace := func(b byte) bool { return b == ' ' || (b >= '\t' && b <= '\r') }
	i := 0
	for i < n && isSpace(at(i)) {
		i++
	}
	if i == n {
		return 0, false // strtoull would read past the value; treat as junk
	}
	neg := false
	if b := at(i); b == '+' || b == '-' {
		neg = b == '-'
		i++
	}
	start := i
	var v uint64
	for i < n && at(i) >= '0' && at(i) <= '9' {
		d := uint64(at(i) - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false // ERANGE
		}
		v = v*10 + d
		i++
	}
	if i == start {
		return 0, false
	}
	if i < n && !isSpace(at(i)) && at(i) != 0 {
		return 0, false
	}
	if neg {
		v = -v
	}
	if int64(v) < 0 {
		for j := 0; j < n; j++ {
			if at(j) == '-' {
				return 0, false
			}
		}
	}
	return v, true
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
	if !s.lookup(e, h, key, now, &it) {
		s.mu.c.deleteMisses++
		return NotFound
	}
	if a.CompareCAS && a.CAS != it.hdr.cas {
		s.mu.c.deleteMisses++
		return Exists
	}
	if a.Invalidate {
		if a.Touch {
			it.hdr.exptime = uint32(e.realtime(a.Exptime, now))
		}
		it.hdr.bits = it.hdr.bits&^bitWinSent | bitStale
		it.hdr.cas = e.nextCAS()
		it.r.writeHeader(it.pos, &it.hdr)
		return OK
	}
	s.mu.c.deleteHits++
	s.unlink(&it)
	return OK
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
	s.mu.c.cmdTouch++
	if !s.lookup(e, h, key, now, &it) {
		s.mu.c.touchMisses++
		return NotFound
	}
	s.mu.c.touchHits++
	bump(&it.hdr, now)
	it.hdr.exptime = uint32(e.realtime(exptime, now))
	it.r.writeHeader(it.pos, &it.hdr)
	return OK
}
