package engine

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tcache/tcache/lsm"
)

// This file is the disk tier's side of the engine (docs/disk-tier.md): with
// Options.Disk the RAM tier is a write-through cache of the disk, which is
// the system of record.
//
// Write path: take the key's stripe lock; read the current item (RAM, else
// disk); compute the new item with the memcached rules memory mode uses
// (rules.go); assign CAS and version; commit one lsm batch; only then
// update the RAM tier; release the stripe lock; answer (tier_ops.go). A failed commit leaves RAM as it
// was and answers DiskFull or DiskError.
//
// Read path: a RAM hit is served as in memory mode, under the shard lock
// only. A RAM miss takes the stripe lock (so that a concurrent delete cannot
// be undone by a late promotion), reads the disk, applies the expiry and
// flush rules, and promotes the item into RAM when admit says so.
//
// What lives only in RAM: the win token (mg W/Z), the fetched and active
// bits, the last access time (mg h/l) and the S3-FIFO frequency. An item
// whose RAM copy is evicted forgets them and comes back from disk as if
// never fetched, with its store time as last access. The stale mark, flags,
// expiry, CAS and the binary-key mark persist.

// stripeCount is the number of stripe locks: a power of two well above the
// number of writers that commit at once, so that unrelated keys rarely
// share one.
const stripeCount = 1024

// casBlock is how many CAS values one reservation covers: the CAS counter
// persists its high-water mark once per casBlock values, and a restart
// skips at most that many.
const casBlock = 1 << 16

// stripe serialises the mutations of the keys that hash to it, across the
// RAM tier and the disk, without holding a shard lock during I/O. It is
// the lock alone, one per cache line: a set lands on a random stripe, and
// 1024 lines (64 KiB) stay in the CPU's cache where lines that also held
// a mutation (about 300 bytes each, written and cleared by every set) did
// not; mutations come from tier.muts instead.
type stripe struct {
	mu sync.Mutex
	_  [64 - unsafe.Sizeof(sync.Mutex{})]byte // the rest of the line
}

// tier is the engine's disk-tier state.
type tier struct {
	e       *Engine
	disk    diskStore
	node    uint64 // this node's id (lsm.Version.Node)
	clock   hlc
	stripes []stripe
	// muts pools the mutations being built (tier.mutation): a pooled one
	// was usually the last one this P used, so its lines are in cache.
	muts sync.Pool

	// casReserved: every CAS below it is covered by a persisted reservation.
	casReserved atomic.Uint64
	// seen is the promotion filter: a direct-mapped table of fingerprints
	// of keys recently read from disk. A key read again while its
	// fingerprint is still there is promoted. Accessed atomically.
	seen []uint32

	// ahead holds the keys whose stored record a peer stamped further
	// ahead of this node's clock than MaxClockSkew (see aheadKeys).
	ahead aheadKeys

	flushMu sync.Mutex // serialises flush markers: commit order = apply order
	// marker is the current flush marker (local or a peer's); disk records
	// below its bound are flushed once its time has passed (recordFlushed).
	marker atomic.Pointer[lsm.FlushMarker]

	// ramComplete: RAM has held a copy of every record committed since
	// open, but for at most missingAllowance bytes of them, so reads of
	// the disk's copies are rare and the disk may drop its page cache of
	// them (and write the journal with O_DIRECT). False once the records
	// without their RAM copy (evictions, committed records RAM could not
	// take) pass the allowance; missing counts their bytes until then.
	ramComplete atomic.Bool
	missing     atomic.Uint64

	diskReads    atomic.Uint64 // RAM misses that read the disk (get_extstore)
	diskMisses   atomic.Uint64 // of those, keys the disk did not have
	promotions   atomic.Uint64 // items copied from disk into RAM (recache_from_extstore)
	commitErrors atomic.Uint64 // commits that failed (tcache_disk_commit_errors)
	readErrors   atomic.Uint64 // disk reads that failed (treated as misses)
	lastErrLog   atomic.Int64  // unix second of the last logged disk error
}

func newTier(e *Engine, d diskStore) *tier {
	t := &tier{e: e, disk: d, node: d.NodeID(), stripes: make([]stripe, stripeCount)}
	t.clock.clock = e.clock
	if sk := e.opts.MaxClockSkew; sk > 0 {
		t.clock.maxAhead = max(uint64(sk.Milliseconds()), 1) << hlcLogicalBits
	}
	// The seed is this node's own high-water mark (reserved up to a second
	// ahead of its writes): never bounded.
	t.clock.seed(d.HLCHighWater())
	hw := d.CASHighWater()
	if hw > 0 {
		e.casID.Store(hw - 1) // the next CAS is hw
	}
	t.casReserved.Store(hw)
	n := uint64(4096)
	for n < uint64(e.opts.MemoryLimit)/1024 && n < 1<<20 {
		n <<= 1
	}
	t.seen = make([]uint32, n)
	t.ramComplete.Store(true)
	d.ReleaseJournalPages(true)

	// Relative time must stay positive for every stored item that can
	// still be live: move the process start before the flush marker, so
	// that items that survived it (stored after it) have positive times.
	m := d.FlushMarker()
	t.marker.Store(&m)
	if m.OldestLive != 0 {
		e.started = min(e.started, m.OldestLive-itemUpdateInterval-2)
		e.oldestLive.Store(m.OldestLive - e.started)
		e.oldestCAS.Store(m.OldestCAS)
	}
	return t
}

func (t *tier) stripeFor(h uint64) *stripe { return &t.stripes[h&(stripeCount-1)] }

// mutation returns an empty mutation to build; commit hands it back.
func (t *tier) mutation() *mutation {
	if m, ok := t.muts.Get().(*mutation); ok {
		return m
	}
	return new(mutation)
}

// version is the version of a local write of key (nil for a flush): the
// next HLC value, or, when a peer's record of key is stamped beyond it
// (ahead), just above that record, so that the write wins on every node.
// Requires key's stripe lock.
func (t *tier) version(key []byte) lsm.Version {
	v, _ := t.versionAt(key)
	return v
}

// versionAt is version, with the wall clock reading it was made from
// (the commit's time: lsm.Batch.SetTime).
func (t *tier) versionAt(key []byte) (lsm.Version, time.Time) {
	v, wall := t.clock.nextAt()
	if key != nil && t.ahead.n.Load() != 0 {
		v = t.ahead.after(key, v, physicalOf(wall))
	}
	return lsm.Version{HLC: v, Node: t.node}, wall
}

// aheadKeys remembers the keys whose newest record is stamped ahead of
// this node's HLC: a peer's record applied beyond wall clock + MaxClockSkew
// (the clock stopped at the bound), and this node's own writes ordered
// after one. A local write of such a key must get a version above the
// stored one, or it would win here (local writes replace) and lose on
// every peer (the conflict rule): the nodes would diverge. The map only
// fills while a peer's clock is off (the links refuse such peers within
// a heartbeat), entries are useless once the wall clock passes them, and
// the whole map is dropped when it passes the furthest one. While it is
// empty a write pays one atomic load.
type aheadKeys struct {
	n  atomic.Int64 // len(m), for the lock-free empty check
	mu sync.Mutex
	m  map[string]uint64 // key → the HLC of its newest record
	hi uint64            // the largest value in m
}

// maxAheadKeys bounds aheadKeys: past it, an applied record beyond the
// bound moves the clock after all (ordering before the bound).
var maxAheadKeys = 1 << 16

// add records that key's newest record has HLC v; false when the map is
// full (of values the wall clock has not passed yet).
func (a *aheadKeys) add(key []byte, v, now uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	if _, ok := a.m[string(key)]; !ok && len(a.m) >= maxAheadKeys {
		for k, f := range a.m {
			if f < now {
				delete(a.m, k)
			}
		}
		if len(a.m) >= maxAheadKeys {
			return false
		}
	}
	if a.m == nil {
		a.m = make(map[string]uint64)
	}
	a.m[string(key)] = v
	a.hi = max(a.hi, v)
	a.n.Store(int64(len(a.m)))
	return true
}

// after returns the version of a local write of key: v, or just above
// key's record when that is not below v (and remembers it).
func (a *aheadKeys) after(key []byte, v, now uint64) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.expireLocked(now) {
		return v
	}
	f, ok := a.m[string(key)]
	switch {
	case !ok:
	case f >= v:
		v = f + 1
		a.m[string(key)] = v
		a.hi = max(a.hi, v)
	default:
		delete(a.m, string(key)) // the clock passed it
		a.n.Store(int64(len(a.m)))
	}
	return v
}

// expireLocked empties the map once the wall clock (now, as an HLC) has
// passed every value in it, and reports whether it did.
func (a *aheadKeys) expireLocked(now uint64) bool {
	if len(a.m) == 0 || a.hi >= now {
		return len(a.m) == 0
	}
	clear(a.m)
	a.hi = 0
	a.n.Store(0)
	return true
}

// locationOf is the disk location of the RAM item it (under its shard
// lock): known when the record carries a location, else the zero
// Location (the batch looks the key up).
func (t *tier) locationOf(it *item) lsm.Location {
	if it.hdr.ext&extLoc == 0 {
		return lsm.Location{}
	}
	it.r.readLoc(it.pos, &it.hdr)
	return lsm.Location{
		Known:   true,
		Present: true,
		Epoch:   it.hdr.loc.epoch,
		Exptime: t.e.abs(int64(it.hdr.exptime)),
		Size:    it.hdr.loc.size,
	}
}

// setLocation makes hd carry where as its location (none when
// where is not a known, present record).
func setLocation(hd *header, where lsm.Location) {
	if !where.Known || !where.Present {
		hd.ext &^= extLoc
		hd.loc = diskLoc{}
		return
	}
	hd.ext |= extLoc
	hd.loc = diskLoc{epoch: where.Epoch, size: where.Size}
}

// admit reports whether an item just read from disk goes into RAM: when
// its shard's live data has room for it without evicting (warm-up after a
// restart; s.roomFor, so that dead space left by overwrites and deletes,
// which makeRoom reclaims, does not count as full), or when it was read
// from disk recently (its fingerprint is in seen), so that a scan of cold
// keys does not flush the hot set out of RAM.
func (t *tier) admit(s *shard, h uint64, size uint64) bool {
	if s.roomFor(size) {
		return true
	}
	i := h & uint64(len(t.seen)-1)
	fp := uint32(h>>32) | 1
	if atomic.LoadUint32(&t.seen[i]) == fp {
		atomic.StoreUint32(&t.seen[i], 0)
		return true
	}
	atomic.StoreUint32(&t.seen[i], fp)
	return false
}

// current is the item a mutation starts from, read under the stripe lock.
type current struct {
	found  bool
	inRAM  bool // found in the RAM tier (else read from disk)
	inMain bool // in the S3-FIFO main queue
	hd     header
	value  []byte       // the value, in the caller's scratch (when asked for)
	where  lsm.Location // the key's record on disk (zero: unknown)
}

// read modes of current.
const (
	readRAM   = 1 << iota // RAM only: the disk is not read on a miss
	readValue             // copy the value
)

// current reads the live item of key for a mutation or a RAM-missed
// fetch, applying memcached's expiry and flush rules to RAM and disk
// items alike and counting get_expired/get_flushed as do_item_get does.
// An item found in RAM is not read from disk (RAM holds what the disk
// holds). A disk read error other than a corrupt record is returned.
func (t *tier) current(s *shard, h uint64, key []byte, now int64, mode int, buf []byte) (current, error) {
	e := t.e
	var c current
	var it item
	s.mu.Lock()
	if s.find(h, key, &it) {
		c.inRAM = true
		c.where = t.locationOf(&it)
		switch {
		case e.flushed(&it.hdr, now):
			s.unlink(&it)
			s.mu.c.getFlushed++
		case it.hdr.exptime != 0 && int64(it.hdr.exptime) <= now:
			s.unlink(&it)
			s.mu.c.getExpired++
		default:
			c.found = true
			c.hd = it.hdr
			c.inMain = it.r == &s.mu.main
			if mode&readValue != 0 {
				c.value = it.r.appendTo(buf, it.valuePos(), int(it.hdr.valueLen))
			}
		}
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	if mode&readRAM != 0 {
		return c, nil
	}
	t.diskReads.Add(1)
	rec, err := t.disk.Get(buf, key)
	if err != nil {
		if !errors.Is(err, lsm.ErrCorrupt) {
			t.readErrors.Add(1)
			return c, err
		}
		// Never served; the next write of the key replaces it.
		t.logErr("engine: corrupt record treated as a miss", err)
		t.diskMisses.Add(1)
		return c, nil
	}
	c.where = rec.Where
	if !rec.Found {
		t.diskMisses.Add(1)
		return c, nil
	}
	absNow := now + e.started
	switch {
	case t.recordFlushed(&rec, now):
		s.mu.Lock()
		s.mu.c.getFlushed++
		s.mu.Unlock()
		return c, nil
	case rec.Exptime != 0 && rec.Exptime <= absNow:
		s.mu.Lock()
		s.mu.c.getExpired++
		s.mu.Unlock()
		return c, nil
	}
	c.found = true
	c.hd = header{
		flags:    rec.Flags,
		keyLen:   uint8(len(key)),
		valueLen: uint32(len(rec.Value) - len(buf)),
		cas:      rec.CAS,
		time:     uint32(max(rec.Time-e.started, 1)),
	}
	setLocation(&c.hd, rec.Where)
	if rec.Exptime != 0 {
		c.hd.exptime = uint32(min(rec.Exptime-e.started, 1<<32-1))
	}
	if rec.Stale {
		c.hd.bits |= bitStale
	}
	if rec.KeyBinary {
		c.hd.bits |= bitKeyBinary
	}
	c.value = rec.Value[len(buf):]
	return c, nil
}

// recordFlushed is the flush rule for a disk record: the current marker
// (local or a peer's) flushes, once its time has passed, every record whose
// version is below its bound (lsm.FlushMarker.Bound: the HLC of the flush
// time). Every node applies the same rule to the same versions, so a
// replicated flush_all removes the same items everywhere and items written
// after it survive everywhere. The RAM tier keeps memcached's
// oldest_live/oldest_cas rule as a conservative pre-check (it has no
// versions): an item it finds flushed is dropped from RAM and the disk
// decides (current).
func (t *tier) recordFlushed(rec *lsm.Record, now int64) bool {
	return t.marker.Load().Flushes(rec.Version, now+t.e.started)
}

// lockAll takes every stripe lock, in order: no mutation is then between
// its version and its commit (flush markers need that).
func (t *tier) lockAll() {
	for i := range t.stripes {
		t.stripes[i].mu.Lock()
	}
}

func (t *tier) unlockAll() {
	for i := range t.stripes {
		t.stripes[i].mu.Unlock()
	}
}

// commit writes m (from tier.mutation), reserving CAS values up to cas
// when needed, and maps a failure to its Status. It clears m and returns
// it to the pool.
func (t *tier) commit(m *mutation, cas uint64) (lsm.Location, Status) {
	if cas != 0 && cas >= t.casReserved.Load() {
		m.reserveCAS = cas + casBlock
	}
	err := t.disk.Commit(m)
	where, reserved := m.rec.Where, m.reserveCAS
	m.clear()
	t.muts.Put(m)
	if err != nil {
		return lsm.Location{}, t.failed(err)
	}
	for reserved != 0 {
		r := t.casReserved.Load()
		if reserved <= r || t.casReserved.CompareAndSwap(r, reserved) {
			break
		}
	}
	return where, OK
}

// put commits hd with value (the whole value) as the record of key,
// replacing the record at prev.
func (t *tier) put(key []byte, hd *header, value []byte, prev lsm.Location) (lsm.Location, Status) {
	e := t.e
	m := t.mutation()
	m.op, m.key, m.prev = opPut, key, prev
	ver, wall := t.versionAt(key)
	m.wall = wall
	m.rec = lsm.Record{
		Flags:     hd.flags,
		Exptime:   e.abs(int64(hd.exptime)),
		Time:      e.abs(int64(hd.time)),
		CAS:       hd.cas,
		Version:   ver,
		KeyBinary: hd.bits&bitKeyBinary != 0,
		Stale:     hd.bits&bitStale != 0,
		Value:     value,
	}
	return t.commit(m, hd.cas)
}

// del commits the deletion of key's record at prev.
func (t *tier) del(key []byte, prev lsm.Location) Status {
	m := t.mutation()
	m.op, m.key, m.prev = opDelete, key, prev
	m.ver, m.wall = t.versionAt(key)
	_, status := t.commit(m, 0)
	return status
}

// failed counts and logs a failed commit and returns its Status.
func (t *tier) failed(err error) Status {
	t.commitErrors.Add(1)
	t.logErr("engine: disk commit failed", err)
	if errors.Is(err, lsm.ErrDiskFull) {
		return DiskFull
	}
	return DiskError
}

// logErr logs a disk error at most once a second (a full disk fails every
// write).
func (t *tier) logErr(msg string, err error) {
	now := t.e.clock.Now().Unix()
	last := t.lastErrLog.Load()
	if now > last && t.lastErrLog.CompareAndSwap(last, now) {
		t.e.log.Error(msg, "err", err)
	}
}

// install makes hd with value the RAM copy of key after a commit (where:
// the new record's location), replacing any copy there. When the record
// cannot be placed the key simply has no RAM copy: the disk has it.
func (t *tier) install(s *shard, h uint64, key []byte, hd *header, value []byte, where lsm.Location, toMain bool, now int64) {
	setLocation(hd, where)
	hd.keyLen, hd.valueLen = uint8(len(key)), uint32(len(value))
	n := hd.size()
	var it item
	s.mu.Lock()
	if s.find(h, key, &it) {
		toMain = toMain || it.r == &s.mu.main
		s.unlink(&it)
	}
	if !s.fits(n) || !s.insert(t.e, h, key, hd, value, nil, toMain, now) {
		t.ramIncomplete(n)
	}
	s.mu.Unlock()
}

// missingAllowanceDiv sets how much of the RAM tier's budget may be
// records RAM lost while the disk still treats it as holding everything:
// 1/256 (4 MiB of a 1 GiB tier).
//
// One lost record must not switch the journal to the page cache: the
// eviction that bounds makeRoom's work (shard.go) can drop a live record
// with the shard far from full, and did so in a prefill of 100 000 keys
// into a tier a quarter full, in about one run in six. Through the page
// cache every journal write costs a copy into new page-cache pages: the
// server's CPU per request in mixed-1k rose by a quarter for the rest of
// its life. A read of one of the allowed records goes to the device once,
// and the promotion policy takes it back into RAM.
const missingAllowanceDiv = 256

// ramIncomplete records that RAM does not hold a record committed since
// open (an eviction, or a committed record RAM could not take) of n
// bytes; past missingAllowanceDiv of the budget, the disk's page cache
// serves the reads of the copies RAM does not have from then on.
func (t *tier) ramIncomplete(n uint64) {
	if !t.ramComplete.Load() {
		return
	}
	if t.missing.Add(n) <= uint64(t.e.opts.MemoryLimit)/missingAllowanceDiv {
		return
	}
	if t.ramComplete.CompareAndSwap(true, false) {
		t.disk.ReleaseJournalPages(false)
	}
}

// drop removes key's RAM copy, if any.
func (t *tier) drop(s *shard, h uint64, key []byte) {
	var it item
	s.mu.Lock()
	if s.find(h, key, &it) {
		s.unlink(&it)
	}
	s.mu.Unlock()
}

func (t *tier) scratch() (*[]byte, []byte) {
	bp := t.e.getScratch()
	return bp, (*bp)[:0]
}

func (t *tier) release(bp *[]byte, buf []byte) {
	if cap(buf) <= 4<<20 { // do not keep huge buffers around
		*bp = buf[:0]
	}
	t.e.scratch.Put(bp)
}

// get is Engine.Get with a disk tier. A plain fetch that hits RAM is served
// under the shard lock alone; the rest (misses, touches, vivify) take the
// stripe lock.
func (t *tier) get(s *shard, h uint64, dst, key []byte, a *GetArgs, now int64) ([]byte, ItemInfo, bool) {
	e := t.e
	if !a.Touch && !a.Vivify {
		var it item
		s.mu.Lock()
		if s.lookup(e, h, key, now, &it) {
			info := e.hit(s, &it.hdr, a, now)
			it.r.writeHeader(it.pos, &it.hdr)
			if !a.NoValue {
				dst = it.r.appendTo(dst, it.valuePos(), int(it.hdr.valueLen))
			}
			s.mu.Unlock()
			return dst, info, true
		}
		s.mu.Unlock()
	}
	st := t.stripeFor(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	return t.getLocked(s, h, dst, key, a, now)
}

// getLocked is the part of get under the key's stripe lock (the caller's).
func (t *tier) getLocked(s *shard, h uint64, dst, key []byte, a *GetArgs, now int64) ([]byte, ItemInfo, bool) {
	e := t.e
	var x txn // no stripe: the caller holds it
	defer t.end(&x)
	if t.read(&x, s, h, key, now, readValue) != OK {
		t.logErr("engine: disk read failed", x.err)
	}
	c := &x.c
	if !c.found {
		if a.Vivify && len(key) <= MaxKeyLen && x.err == nil {
			return t.vivify(s, h, dst, key, a, c, now)
		}
		s.count(getMissCount(a, false))
		return dst, ItemInfo{}, false
	}
	if a.Touch {
		// The new expiry is persisted first; the hit side effects below
		// compute the same exptime from the same now.
		nh := c.hd
		nh.exptime = uint32(e.realtime(a.Exptime, now))
		where, status := t.put(key, &nh, c.value, c.where)
		if status != OK {
			s.count(cntCmdTouch | cntTouchMisses)
			return dst, ItemInfo{}, false // the touch did not happen
		}
		setLocation(&c.hd, where)
	}
	var it item
	s.mu.Lock()
	if c.inRAM && s.find(h, key, &it) {
		// Still in RAM (a touch, or promoted meanwhile): the hit applies
		// to the RAM record's state (win token, fetched bits); its copy
		// is replaced to carry the new location.
		c.hd.bits, c.hd.time = it.hdr.bits, it.hdr.time
		s.unlink(&it)
	}
	info := e.hit(s, &c.hd, a, now)
	n := c.hd.size()
	// An item the RAM tier's flush pre-check would flag (a record above a
	// peer's flush bound with an older local CAS or time) is served from
	// disk rather than cached: in RAM it would read as flushed.
	cached := false
	if s.fits(n) && !e.flushed(&c.hd, now) && (c.inRAM || a.Touch || t.admit(s, h, n)) {
		cached = s.insert(e, h, key, &c.hd, c.value, nil, c.inMain, now)
		if cached && !c.inRAM {
			t.promotions.Add(1)
		}
	}
	if a.Touch && !cached {
		t.ramIncomplete(n) // the touch wrote a record RAM does not hold
	}
	s.mu.Unlock()
	if !a.NoValue {
		dst = append(dst, c.value...)
	}
	return dst, info, true
}

// vivify is mg N on a miss: create an empty item and hand this caller the
// win token.
func (t *tier) vivify(s *shard, h uint64, dst, key []byte, a *GetArgs, c *current, now int64) ([]byte, ItemInfo, bool) {
	e := t.e
	hd := e.vivified(a.VivifyExptime, a.Touch && !a.VivifyAfterTouch, a.Exptime, now)
	hd.cas, hd.bits = e.nextCAS(), bitWinSent
	where, status := t.put(key, &hd, nil, c.where)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.c.add(getMissCount(a, status == OK))
	if status != OK {
		return dst, ItemInfo{}, false
	}
	setLocation(&hd, where)
	hd.keyLen = uint8(len(key))
	if !s.fits(hd.size()) || !s.insert(e, h, key, &hd, nil, nil, false, now) {
		t.ramIncomplete(hd.size())
	}
	return dst, e.vivifyInfo(&hd, now), true
}
