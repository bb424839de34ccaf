package engine

import "github.com/tcache/tcache/lsm"

// Stats are the engine's counters, named after memcached's `stats` keys.
//
// With a disk tier, CurrItems counts the items stored (RAM and disk: the
// disk's item count, since every item is on disk), Bytes stays the RAM
// tier's bytes (at most LimitMaxbytes), Evictions counts items lost from
// the cache entirely (records the disk dropped in cache mode), and
// RAMEvictions counts RAM copies dropped while the item stays on disk. In
// memory mode Evictions and RAMEvictions are equal.
type Stats struct {
	CmdGet, GetHits, GetMisses, GetExpired, GetFlushed uint64
	CmdSet                                             uint64
	CmdTouch, TouchHits, TouchMisses                   uint64
	DeleteHits, DeleteMisses                           uint64
	IncrHits, IncrMisses, DecrHits, DecrMisses         uint64
	CasHits, CasMisses, CasBadval                      uint64
	CmdFlush                                           uint64
	CurrItems, TotalItems                              uint64
	Bytes, LimitMaxbytes                               uint64
	Evictions, Reclaimed                               uint64
	ExpiredUnfetched, EvictedUnfetched                 uint64
	CrawlerReclaimed                                   uint64

	RAMEvictions uint64 // tcache_ram_evictions: RAM copies dropped
	// The disk tier (zero in memory mode).
	DiskReads    uint64 // get_extstore: RAM misses that read the disk
	DiskMisses   uint64 // tcache_disk_misses: disk reads that found nothing live
	Promotions   uint64 // recache_from_extstore: items copied from disk into RAM
	CommitErrors uint64 // tcache_disk_commit_errors: writes refused (DiskFull, DiskError)
	ReadErrors   uint64 // tcache_disk_read_errors: disk reads that failed (served as misses)
	// ClockAhead counts the peers' versions applied (ApplyRecord,
	// ApplyFlush) that were further ahead of this node's wall clock than
	// Options.MaxClockSkew: they did not move its HLC past the bound
	// (repl_clock_ahead_versions).
	ClockAhead uint64
}

// Stats returns the engine's counters, summed over the shards.
func (e *Engine) Stats() Stats {
	var st Stats
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		c := &s.mu.c
		st.CmdGet += c.cmdGet
		st.GetHits += c.getHits
		st.GetMisses += c.getMisses
		st.GetExpired += c.getExpired
		st.GetFlushed += c.getFlushed
		st.CmdSet += c.cmdSet
		st.CmdTouch += c.cmdTouch
		st.TouchHits += c.touchHits
		st.TouchMisses += c.touchMisses
		st.DeleteHits += c.deleteHits
		st.DeleteMisses += c.deleteMisses
		st.IncrHits += c.incrHits
		st.IncrMisses += c.incrMisses
		st.DecrHits += c.decrHits
		st.DecrMisses += c.decrMisses
		st.CasHits += c.casHits
		st.CasMisses += c.casMisses
		st.CasBadval += c.casBadval
		st.TotalItems += c.totalItems
		st.Evictions += c.evictions
		st.Reclaimed += c.reclaimed
		st.ExpiredUnfetched += c.expiredUnfetched
		st.EvictedUnfetched += c.evictedUnfetched
		st.CrawlerReclaimed += c.crawlerReclaimed
		st.CurrItems += s.mu.items
		st.Bytes += s.mu.bytes
		s.mu.Unlock()
	}
	st.CmdFlush = e.cmdFlush.Load()
	st.LimitMaxbytes = uint64(e.opts.MemoryLimit)
	st.RAMEvictions = st.Evictions
	if t := e.tier; t != nil {
		ds := t.disk.Stats()
		st.CurrItems = ds.Items
		st.Evictions = ds.DroppedItems
		st.DiskReads = t.diskReads.Load()
		st.DiskMisses = t.diskMisses.Load()
		st.Promotions = t.promotions.Load()
		st.CommitErrors = t.commitErrors.Load()
		st.ReadErrors = t.readErrors.Load()
		st.ClockAhead = t.clock.ahead.Load()
	}
	return st
}

// ClockAhead is Stats().ClockAhead, without summing the shards.
func (e *Engine) ClockAhead() uint64 {
	if e.tier == nil {
		return 0
	}
	return e.tier.clock.ahead.Load()
}

// DiskStats returns the disk tier's figures, and false in memory mode.
func (e *Engine) DiskStats() (lsm.Stats, bool) {
	if e.tier == nil {
		return lsm.Stats{}, false
	}
	return e.tier.disk.Stats(), true
}

// ResetStats zeroes the counters, as memcached's "stats reset" does; the
// gauges (curr_items, bytes) and the items themselves are kept.
func (e *Engine) ResetStats() {
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		s.mu.c = counters{}
		s.mu.lastEvictedTime = 0
		s.mu.Unlock()
	}
	e.cmdFlush.Store(0)
	if t := e.tier; t != nil {
		t.diskReads.Store(0)
		t.diskMisses.Store(0)
		t.promotions.Store(0)
		t.commitErrors.Store(0)
		t.readErrors.Store(0)
	}
}

// ItemsStats describes the RAM tier for `stats items` and `stats slabs`.
// tcache has no slab classes: the whole tier is reported as one pseudo
// class, id 1. Field names follow memcached's `stats items` keys; the
// S3-FIFO small queue stands in for memcached's HOT LRU and the main queue
// for WARM+COLD.
type ItemsStats struct {
	Number           uint64 // items:1:number (live items)
	NumberSmall      uint64 // items in the small (probationary) queue; number_hot
	NumberMain       uint64 // items in the main queue; number_cold
	Age              uint64 // seconds since the last access of the oldest item at a main head
	AgeSmall         uint64 // the same for the small queue; age_hot
	MemRequested     uint64 // bytes of live records (header+key+value); mem_requested
	Evicted          uint64
	EvictedNonzero   uint64
	EvictedTime      uint64 // idle seconds of the last evicted item
	EvictedUnfetched uint64
	EvictedActive    uint64
	OutOfMemory      uint64
	TooLarge         uint64
	Reclaimed        uint64
	ExpiredUnfetched uint64
	CrawlerReclaimed uint64
	CrawlerChecked   uint64 // crawler_items_checked
	MovesToMain      uint64 // small -> main promotions (moves_to_warm)
	MovesWithinMain  uint64 // main re-insertions (moves_within_lru)
	GhostHits        uint64 // new items admitted straight to main by the ghost
	// MovesForRoom counts records moved rather than evicted only because
	// the live data fits (not hit, or past S3-FIFO's cap on moves); they
	// are also counted in MovesToMain or MovesWithinMain.
	MovesForRoom uint64
}

// ItemsStats returns the pseudo class's statistics.
func (e *Engine) ItemsStats() ItemsStats {
	var st ItemsStats
	now := e.now()
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		c := &s.mu.c
		st.Number += s.mu.items
		st.MemRequested += s.mu.bytes
		st.Evicted += c.evictions
		st.EvictedNonzero += c.evictedNonzero
		st.EvictedUnfetched += c.evictedUnfetched
		st.EvictedActive += c.evictedActive
		st.OutOfMemory += c.outOfMemory
		st.TooLarge += c.tooLarge
		st.Reclaimed += c.reclaimed
		st.ExpiredUnfetched += c.expiredUnfetched
		st.CrawlerReclaimed += c.crawlerReclaimed
		st.CrawlerChecked += c.crawlerChecked
		st.MovesToMain += c.movesToMain
		st.MovesWithinMain += c.movesWithinMain
		st.GhostHits += c.ghostHits
		st.MovesForRoom += c.movesForRoom
		st.EvictedTime = max(st.EvictedTime, uint64(max(s.mu.lastEvictedTime, 0)))
		ns, as := s.queueStats(&s.mu.small, now)
		nm, am := s.queueStats(&s.mu.main, now)
		st.NumberSmall += ns
		st.NumberMain += nm
		st.AgeSmall = max(st.AgeSmall, as)
		st.Age = max(st.Age, am)
		s.mu.Unlock()
	}
	return st
}

// queueStats counts the live records of r and the age of the first one.
// It walks the ring: stats items is rare and the ring is bounded.
func (s *shard) queueStats(r *ring, now int64) (n, age uint64) {
	var hd header
	first := true
	for p := r.head; p < r.tail; p += hd.size() {
		r.readHeader(p, &hd)
		if hd.bits&bitDead != 0 {
			continue
		}
		n++
		if first {
			first = false
			age = uint64(max(now-int64(hd.time), 0))
		}
	}
	return n, age
}

// MemoryStats reports the arena: reserved is the mapped size (MemoryLimit
// rounded down to whole chunks), used is the bytes of the chunks the rings
// hold now (memcached total_malloced).
func (e *Engine) MemoryStats() (reserved, used uint64) {
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		used += (uint64(len(s.mu.main.ids)) - uint64(len(s.mu.free))) * s.cs
		s.mu.Unlock()
	}
	return uint64(len(e.arena.mem)), used
}
