package engine

import "strconv"

// Memcached's mutation rules, written once for memory mode (ops.go) and
// the disk tier (tier_ops.go). A plan function is pure: from the request
// and the current item's header (nil: none) it decides the answer, or the
// action with the new header, and the counters to bump. The path reads
// the item, carries the plan out, draws the CAS (e.nextCAS, just before
// the item is linked or committed, where memcached calls get_cas_id) and
// applies the counters under the shard mutex.

// tally is a set of counters to increment by one each.
type tally uint32

// The counters a tally can name (counters.add; TestTally checks that each
// counts its own field).
const (
	cntCmdGet tally = 1 << iota
	cntGetHits
	cntGetMisses
	cntCmdSet
	cntCmdTouch
	cntTouchHits
	cntTouchMisses
	cntDeleteHits
	cntDeleteMisses
	cntIncrHits
	cntIncrMisses
	cntDecrHits
	cntDecrMisses
	cntCasHits
	cntCasMisses
	cntCasBadval
	cntTotalItems
	cntOutOfMemory
	cntTooLarge
	nTally = iota // the number of counters above
)

// add counts t. The caller holds s.mu.
func (c *counters) add(t tally) {
	for ; t != 0; t &= t - 1 {
		switch t & -t {
		case cntCmdGet:
			c.cmdGet++
		case cntGetHits:
			c.getHits++
		case cntGetMisses:
			c.getMisses++
		case cntCmdSet:
			c.cmdSet++
		case cntCmdTouch:
			c.cmdTouch++
		case cntTouchHits:
			c.touchHits++
		case cntTouchMisses:
			c.touchMisses++
		case cntDeleteHits:
			c.deleteHits++
		case cntDeleteMisses:
			c.deleteMisses++
		case cntIncrHits:
			c.incrHits++
		case cntIncrMisses:
			c.incrMisses++
		case cntDecrHits:
			c.decrHits++
		case cntDecrMisses:
			c.decrMisses++
		case cntCasHits:
			c.casHits++
		case cntCasMisses:
			c.casMisses++
		case cntCasBadval:
			c.casBadval++
		case cntTotalItems:
			c.totalItems++
		case cntOutOfMemory:
			c.outOfMemory++
		case cntTooLarge:
			c.tooLarge++
		}
	}
}

// count counts t under s.mu (the disk path's short counter sections).
func (s *shard) count(t tally) {
	if t != 0 {
		s.mu.Lock()
		s.mu.c.add(t)
		s.mu.Unlock()
	}
}

// Actions of a plan.
const (
	actNone     = iota // change nothing; answer plan.status
	actTouchAdd        // add of a present item: refresh its access time
	actInsert          // store plan.hd as a new item (there is none)
	actReplace         // store plan.hd as a new item replacing the current one
	actJoin            // append/prepend: a new item of the joined values
	actUpdate          // rewrite the current item's header (arith: and digits)
	actUnlink          // remove the current item
)

// plan is a mutation as memcached's rules decide it.
type plan struct {
	act    uint8
	status Status // the answer, unless the action fails
	hd     header // the new header; the path assigns the CAS
	cnt    tally  // counted whatever happens next
	done   tally  // counted once the change is made (with a disk: committed)
}

// present is hd when found, else nil: the current item as a plan sees it.
func present(found bool, hd *header) *header {
	if found {
		return hd
	}
	return nil
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

// storeFits is the size rule of a store, checked before the current item
// is looked at: an item over memcached's limit is TooLarge, one larger
// than a shard can hold NoMemory, each with its counter; drop says that
// the refused store removes the existing item (set, or any meta store, as
// memcached does). A store that fits counts as cmd_set.
func (e *Engine) storeFits(s *shard, key, value []byte, a *StoreArgs) (st Status, cnt tally, drop bool) {
	drop = a.Mode == ModeSet || a.Meta
	switch {
	case !e.sizeOK(len(key), a.Flags, len(value)):
		return TooLarge, cntTooLarge, drop
	case !s.fits(uint64(hdrSize + len(key) + len(value))):
		return NoMemory, cntOutOfMemory, drop
	}
	return OK, cntCmdSet, false
}

// casStore reports whether a store compares CAS values the way cas does
// (NotFound for a missing item): ModeCAS, or CompareCAS with set/replace.
func casStore(a *StoreArgs) bool {
	return a.Mode == ModeCAS || (a.CompareCAS && (a.Mode == ModeSet || a.Mode == ModeReplace))
}

// planStore is Store's do_store_item over the current item old, for a
// store that fits (storeFits).
func (e *Engine) planStore(s *shard, key, value []byte, a *StoreArgs, old *header, now int64) (p plan) {
	isCAS := casStore(a)
	p.hd = header{
		flags:   a.Flags,
		exptime: uint32(e.realtime(a.Exptime, now)),
		time:    uint32(now),
	}
	if a.KeyBinary {
		p.hd.bits = bitKeyBinary
	}
	p.done = cntTotalItems
	if old == nil {
		switch {
		case isCAS:
			p.status, p.cnt = NotFound, cntCasMisses
		case a.Mode == ModeSet || a.Mode == ModeAdd:
			p.act = actInsert
		default:
			p.status = NotStored
		}
		return p
	}
	p.hd.bits |= old.bits & bitFreqMask // an overwrite keeps the key's hotness
	p.act = actReplace
	switch {
	case a.Mode == ModeAdd:
		p.act, p.status = actTouchAdd, NotStored
	case isCAS && a.CAS != 0 && a.CAS == old.cas:
		p.cnt = cntCasHits
	case isCAS && a.CAS != 0 && a.Invalidate && a.CAS < old.cas:
		// ms I with an older CAS: stored as a stale item that keeps the
		// old expiry and win token.
		p.cnt = cntCasHits
		p.hd.exptime = old.exptime
		p.hd.bits |= bitStale | old.bits&bitWinSent
	case isCAS:
		p.act, p.status, p.cnt = actNone, Exists, cntCasBadval
	case a.Mode != ModeAppend && a.Mode != ModePrepend:
		// set, replace: overwrite
	case a.CompareCAS && a.CAS != 0 && a.CAS != old.cas:
		p.act, p.status = actNone, Exists
	case !e.sizeOK(len(key), old.flags, int(old.valueLen)+len(value)) ||
		!s.fits(uint64(hdrSize+len(key)+len(value))+uint64(old.valueLen)):
		p.act, p.status = actNone, NotStored
	default:
		// The joined item keeps the old flags and expiry; memcached builds
		// it afresh, without the binary-key mark.
		p.act = actJoin
		p.hd.flags, p.hd.exptime = old.flags, old.exptime
		p.hd.bits &^= bitKeyBinary
	}
	return p
}

// arithPlan is a planned incr/decr.
type arithPlan struct {
	plan
	v      uint64 // the new value, the answer
	digits []byte // v in decimal (in the caller's array)
	// the expiry before the call, for ItemInfo.PrevExptime and PrevTTL
	prevExptime, prevTTL int64
}

// planArith is Arith's do_add_delta over the current item old, whose
// value reads as v when numeric (parseDecimal): digits that fit the old
// value are written in place, space padded (actUpdate), longer ones make a
// new item (actReplace); ma N creates a missing item (actInsert). The
// digits are formatted into db.
func (e *Engine) planArith(key []byte, a *ArithArgs, old *header, v uint64, numeric bool, now int64, db *[20]byte) (p arithPlan) {
	if old == nil {
		if !a.Vivify || len(key) > MaxKeyLen {
			p.status, p.cnt = NotFound, cntDecrMisses
			if a.Incr {
				p.cnt = cntIncrMisses
			}
			return p
		}
		p.act, p.v, p.done = actInsert, a.Initial, cntTotalItems
		p.hd = e.vivified(a.VivifyExptime, a.Touch && !a.VivifyAfterTouch, a.Exptime, now)
		p.prevExptime, p.prevTTL = 0, -1
		p.digits = strconv.AppendUint(db[:0], p.v, 10)
		return p
	}
	switch {
	case old.valueLen == 0:
		p.status = NonNumeric
	case a.CompareCAS && a.CAS != 0 && a.CAS != old.cas:
		p.status = Exists
	case !numeric:
		p.status = NonNumeric
	case a.Incr:
		p.v, p.done = v+a.Delta, cntIncrHits // wraps at 2^64
	default:
		p.v, p.done = v-min(a.Delta, v), cntDecrHits // stops at 0
	}
	if p.status != OK {
		return p
	}
	p.digits = strconv.AppendUint(db[:0], p.v, 10)
	p.hd = *old
	p.prevExptime, p.prevTTL = e.abs(int64(old.exptime)), ttl(old.exptime, now)
	if a.Touch {
		p.hd.exptime = uint32(e.realtime(a.Exptime, now))
	}
	p.hd.time = uint32(now) // memcached do_item_update
	p.act = actUpdate
	if len(p.digits) > int(old.valueLen) {
		p.act = actReplace
		p.hd.bits &= bitFreqMask
		p.done |= cntTotalItems
	}
	return p
}

// arithInfo describes the item p left (after the path stored it).
func (e *Engine) arithInfo(p *arithPlan, now int64) ItemInfo {
	info := e.info(&p.hd, now)
	info.PrevExptime, info.PrevTTL = p.prevExptime, p.prevTTL
	info.Created = p.act == actInsert
	return info
}

// parseDecimal is memcached's safe_strtoull over the n bytes that at
// returns, followed by "\r\n": leading white space and a sign allowed,
// digits, then white space or the end; "-0" is 0, other negatives are
// refused.
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

// vivified is the header (without CAS) of the item mg N or ma N creates
// on a miss: memcached adds it without expiry, then applies N and T in
// request order, so the later one sets the exptime (touchLast: T came
// after N).
func (e *Engine) vivified(vivifyExptime int64, touchLast bool, exptime, now int64) header {
	hd := header{exptime: uint32(e.realtime(vivifyExptime, now)), time: uint32(now)}
	if touchLast {
		hd.exptime = uint32(e.realtime(exptime, now))
	}
	return hd
}

// getMissCount counts a Get that missed, or created the item (mg N): a
// gat counts as a touch, an mg with T only when it created the item.
func getMissCount(a *GetArgs, created bool) tally {
	switch {
	case a.Touch && created:
		return cntCmdTouch | cntTouchHits | cntTotalItems
	case a.Touch && !a.Meta:
		return cntCmdTouch | cntTouchMisses
	case created:
		return cntCmdGet | cntGetHits | cntTotalItems
	}
	return cntCmdGet | cntGetMisses
}

// vivifyInfo describes an item mg N just created for this caller: no
// previous expiry, and the win token is this caller's (Win), not one sent
// before.
func (e *Engine) vivifyInfo(hd *header, now int64) ItemInfo {
	info := e.info(hd, now)
	info.PrevExptime, info.PrevTTL, info.Created = 0, -1, true
	info.WinSent, info.Win = false, true
	return info
}

// planDelete is Delete over the current item old; md I keeps it
// (actUpdate, with a new CAS).
func (e *Engine) planDelete(a *DeleteArgs, old *header, now int64) (p plan) {
	switch {
	case old == nil:
		p.status, p.cnt = NotFound, cntDeleteMisses
	case a.CompareCAS && a.CAS != old.cas:
		p.status, p.cnt = Exists, cntDeleteMisses
	case a.Invalidate:
		p.act, p.hd = actUpdate, *old
		if a.Touch {
			p.hd.exptime = uint32(e.realtime(a.Exptime, now))
		}
		p.hd.bits = p.hd.bits&^bitWinSent | bitStale
	default:
		p.act, p.done = actUnlink, cntDeleteHits
	}
	return p
}

// planTouch is Touch over the current item old: a new exptime, the same
// CAS, and the access counts as a fetch for the item's recency.
func (e *Engine) planTouch(old *header, exptime, now int64) (p plan) {
	if old == nil {
		p.status, p.cnt = NotFound, cntCmdTouch|cntTouchMisses
		return p
	}
	p.act, p.cnt, p.done = actUpdate, cntCmdTouch, cntTouchHits
	p.hd = *old
	bump(&p.hd, now)
	p.hd.exptime = uint32(e.realtime(exptime, now))
	return p
}
