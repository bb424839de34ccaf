package engine

import (
	"hash/maphash"
	"math/bits"
	"sync"
)

// shard is one lock's worth of the RAM tier: an index from key hash to
// record position, the two S3-FIFO rings and the ghost table.
type shard struct {
	mu struct {
		sync.Mutex
		index index     // key hash -> ref of the live record; guarded by mu
		small ring      // S3-FIFO small queue, ~10% of the bytes; guarded by mu
		main  ring      // S3-FIFO main queue; guarded by mu
		free  []int32   // ids of the shard's chunks held by neither ring; guarded by mu
		ghost []uint32  // fingerprints of hashes evicted from small; guarded by mu
		items uint64    // live records; guarded by mu
		bytes uint64    // sum of live record sizes; guarded by mu
		crawl [2]uint64 // crawler cursors (small, main); guarded by mu
		// crawled is the flush marker each ring's last full pass ran
		// under, once it was in effect; guarded by mu.
		crawled [2]flushMark
		c       counters // guarded by mu
		// lastEvictedTime is the idle seconds of the last evicted item
		// (memcached evicted_time); guarded by mu.
		lastEvictedTime int64
	}
	cs          uint64   // chunk size
	posBits     uint     // a ref holds the record position mod 2^posBits ...
	refMain     uint64   // ... and this bit for the main ring (1 << posBits)
	budget      uint64   // bytes of the shard's chunks
	smallTarget uint64   // small queue size above which eviction takes from small
	_           [64]byte // keep neighbouring shards' locks off one cache line
}

// counters are the per-shard statistics, summed by (*Engine).Stats.
type counters struct {
	cmdGet, getHits, getMisses, getExpired, getFlushed uint64
	cmdSet                                             uint64
	cmdTouch, touchHits, touchMisses                   uint64
	deleteHits, deleteMisses                           uint64
	incrHits, incrMisses, decrHits, decrMisses         uint64
	casHits, casMisses, casBadval                      uint64
	totalItems                                         uint64
	evictions, evictedNonzero, evictedUnfetched        uint64
	evictedActive                                      uint64
	reclaimed, expiredUnfetched                        uint64
	crawlerReclaimed, crawlerChecked                   uint64
	outOfMemory, tooLarge                              uint64
	movesToMain, movesWithinMain, ghostHits            uint64
	movesForRoom                                       uint64
	// movesNoChunk: moves refused because no chunk was free (the record
	// was evicted instead); reserveChunks makes it 0, tests check it.
	movesNoChunk uint64
}

// init gives the shard the chunks [first, first+n) of mem, each cs bytes,
// and maps its index.
func (s *shard) init(mem []byte, cs uint64, first, n int) error {
	s.cs = cs
	s.budget = uint64(n) * cs
	// A ring's live window [head, tail) never exceeds the shard's bytes, so
	// a position is known from its low posBits bits and the ring's tail.
	s.posBits = uint(bits.Len64(s.budget))
	s.refMain = 1 << s.posBits
	x, err := newIndex(s.posBits + 1)
	if err != nil {
		return err
	}
	s.mu.index = x
	s.smallTarget = s.budget / 10
	for _, r := range []*ring{&s.mu.small, &s.mu.main} {
		*r = ring{mem: mem, cs: cs, ids: make([]int32, n)}
	}
	s.mu.free = make([]int32, n)
	for i := range n {
		s.mu.free[i] = int32(first + n - 1 - i) // lowest id on top: RSS grows in order
	}
	g := uint64(64)
	for g < s.budget/ghostBytesPerEntry {
		g <<= 1
	}
	s.mu.ghost = make([]uint32, g)
	return nil
}

// grow gives r k chunks from the free list (the caller checked there are).
func (s *shard) grow(r *ring, k int) {
	for range k {
		top := len(s.mu.free) - 1
		r.ids[(r.first+r.n)%len(r.ids)] = s.mu.free[top]
		s.mu.free = s.mu.free[:top]
		r.n++
	}
}

// advance moves r's head past a record of sz bytes and returns the chunks
// the head has left behind to the free list. An empty ring gives back all
// its chunks and restarts at the next chunk boundary.
func (s *shard) advance(r *ring, sz uint64) {
	r.head += sz
	for r.n > 0 && r.head >= r.base+r.cs {
		s.mu.free = append(s.mu.free, r.ids[r.first])
		r.first = (r.first + 1) % len(r.ids)
		r.n--
		r.base += r.cs
	}
	if r.head == r.tail && r.n > 0 {
		for ; r.n > 0; r.n-- {
			s.mu.free = append(s.mu.free, r.ids[r.first])
			r.first = (r.first + 1) % len(r.ids)
		}
		next := (r.tail + r.cs - 1) / r.cs * r.cs
		r.base, r.head, r.tail = next, next, next
	}
}

// A ref is what the index keeps of a record's place: its logical position
// modulo 2^posBits, with refMain set for the main ring. ringOf recovers the
// full position from the ring's tail: the record lies in the last
// 2^posBits bytes before it.
func (s *shard) ringOf(ref uint64) (*ring, uint64) {
	r := &s.mu.small
	if ref&s.refMain != 0 {
		r = &s.mu.main
	}
	mask := s.refMain - 1
	last := r.tail - 1
	return r, last - (last-ref)&mask
}

func (s *shard) refOf(r *ring, pos uint64) uint64 {
	ref := pos & (s.refMain - 1)
	if r == &s.mu.main {
		ref |= s.refMain
	}
	return ref
}

// ghostFP is the fingerprint kept in the ghost table (never 0).
func ghostFP(h uint64) uint32 { return uint32(h>>16) | 1 }

func (s *shard) ghostAdd(h uint64) {
	s.mu.ghost[h&uint64(len(s.mu.ghost)-1)] = ghostFP(h)
}

// ghostTake reports whether h was recently evicted from small, and forgets it.
func (s *shard) ghostTake(h uint64) bool {
	i := h & uint64(len(s.mu.ghost)-1)
	if s.mu.ghost[i] == ghostFP(h) {
		s.mu.ghost[i] = 0
		return true
	}
	return false
}

// item is a located live record.
type item struct {
	h    uint64
	slot int // its index slot; valid until the index next changes
	r    *ring
	pos  uint64
	hdr  header
}

func (it *item) keyPos() uint64   { return it.pos + it.hdr.keyOff() }
func (it *item) valuePos() uint64 { return it.keyPos() + uint64(it.hdr.keyLen) }

// find locates the record of key (hash h) through the index, comparing
// the stored key of every entry whose tag matches, so that keys with equal
// hashes are told apart. It applies no expiry rule.
func (s *shard) find(h uint64, key []byte, it *item) bool {
	var p probe
	x := &s.mu.index
	for slot, ref, ok := x.find(h, &p); ok; slot, ref, ok = x.next(h, &p) {
		it.r, it.pos = s.ringOf(ref)
		it.r.readHeader(it.pos, &it.hdr)
		if int(it.hdr.keyLen) == len(key) && it.r.equal(it.keyPos(), key) {
			it.h, it.slot = h, slot
			return true
		}
	}
	return false
}

// lookup finds the live item for key, as memcached's do_item_get does: an
// item that is flushed or expired is unlinked and counted (get_flushed,
// get_expired) and reported missing.
func (s *shard) lookup(e *Engine, h uint64, key []byte, now int64, it *item) bool {
	if !s.find(h, key, it) {
		return false
	}
	if e.flushed(&it.hdr, now) {
		s.unlink(it)
		s.mu.c.getFlushed++
		return false
	}
	if it.hdr.exptime != 0 && int64(it.hdr.exptime) <= now {
		s.unlink(it)
		s.mu.c.getExpired++
		return false
	}
	return true
}

// unlink removes a live item from the index and marks its record dead; the
// bytes are reclaimed when the ring's head passes them.
func (s *shard) unlink(it *item) {
	s.mu.index.remove(it.slot)
	it.hdr.bits |= bitDead
	it.r.setByte(it.pos+hdrBits, it.hdr.bits)
	s.mu.items--
	s.mu.bytes -= it.hdr.size()
}

// indexed reports whether the record at pos of r is the live one of its
// key (hash h) and if so sets it.slot; a record the index does not point
// to is dead.
func (s *shard) indexed(it *item) bool {
	it.slot = s.mu.index.slotOf(it.h, s.refOf(it.r, it.pos))
	return it.slot >= 0
}

// fits reports whether a record of n bytes can be placed at all.
// A record may straddle one more chunk than its size needs.
func (s *shard) fits(n uint64) bool { return n+(1+reserveChunks)*s.cs <= s.budget }

// reserveChunks are kept free by makeRoom so that a move into main always
// finds its chunk. One makeRoom call moves records from small's head, then
// (at most once) from main's; each head may stop partway into a chunk it
// has not freed yet, while main's tail takes a chunk per chunk's worth
// moved, plus one when a record straddles: the tail can get 3 chunks ahead
// of what the heads free. With 2 in reserve, a move now and then found the
// free list empty and the record was evicted, with the shard at 60% live
// (a rare failure of TestOverwriteFitsNoEviction/64KiB).
const reserveChunks = 3

// insert appends a new record (header hd, key, value v1+v2) and indexes it.
// Any record of key must have been unlinked. toMain places it in the main
// ring (an overwrite of an item already there); otherwise it goes to small
// unless h is in the ghost or the record is larger than small. The caller
// has checked s.fits. insert reports false, storing nothing, only when the
// index is full and cannot grow (mmap failed); it cannot fail right after
// an unlink. Callers count total_items (a promotion from disk is not a
// store).
func (s *shard) insert(e *Engine, h uint64, key []byte, hd *header, v1, v2 []byte, toMain bool, now int64) bool {
	if !s.mu.index.reserve() {
		return false
	}
	hd.keyLen = uint8(len(key))
	hd.valueLen = uint32(len(v1) + len(v2))
	n := hd.size()
	r := &s.mu.small
	if toMain || n > s.smallTarget {
		r = &s.mu.main
	} else if s.ghostTake(h) {
		s.mu.c.ghostHits++
		r = &s.mu.main
	}
	s.makeRoom(e, r, n, now)
	pos := r.tail
	r.writeHeader(pos, hd)
	if e.flushed(hd, now) {
		// Stored in the second a flush_all took effect, perhaps after
		// the crawler's walk under it (Engine.Crawl).
		r.reclaim = true
	}
	if hd.ext&extLoc != 0 {
		r.writeLoc(pos, hd)
	}
	p := pos + hd.keyOff()
	r.write(p, key)
	p += uint64(len(key))
	r.write(p, v1)
	p += uint64(len(v1))
	r.write(p, v2)
	r.tail += n
	s.mu.index.insert(h, s.refOf(r, pos))
	s.mu.items++
	s.mu.bytes += n
	return true
}

// makeRoom frees chunks until n more bytes fit at the tail of r, keeping
// reserveChunks free for moves. It takes records from the head of the small
// queue while that holds more than its target share, else from main, and
// disposes of each (evictHead):
//
//   - a dead record is skipped, an expired or flushed one reclaimed;
//   - S3-FIFO: a small record that was hit moves to main (frequency reset),
//     a main record that was hit is re-appended to main with its frequency
//     decremented;
//   - live data fits: a record that was not hit (frequency left at 0), or
//     a hit one past S3-FIFO's cap on moves, is moved too (small -> main or
//     main -> main) when the shard's live bytes plus the incoming n are
//     within the budget less the cleaning headroom (s.roomFor), because its
//     eviction is not needed: the room will come from dead records
//     (overwritten, deleted, expired) further on;
//   - otherwise the record is evicted (hash remembered in the ghost when it
//     leaves small).
//
// A call is bounded: moves copy at most s.capsFor(n).room bytes (of which
// moves of hit records at most .hit, S3-FIFO's cap as it always was), and
// past that every live record met is evicted whatever its frequency.
// A move spends at least hdrSize bytes of the cap and every other step
// removes a record from the shard for good, and an empty shard has room for
// any record that s.fits, so the loop ends.
//
// Moves for room are amortised O(1). A move takes at the tail as many bytes
// as it frees at the head, so room only ever comes from dead bytes. The
// logs are FIFOs: a moved record goes behind everything now in them, so
// between two moves of the same record the heads pass, and reclaim, every
// byte that was dead. While moves for room are allowed, live bytes L <=
// budget - headroom, and the logs fill the shard but for the free and
// partly used chunks (roomSlackChunks), so they hold at least
// budget/roomHeadroomDiv dead bytes against at most L moved: at most 7
// bytes copied per byte reclaimed, about 1.5 with 60% of the shard live.
// (S3-FIFO's moves of hit records are paid for by the hits, as before.)
// Room is freed a chunk at a time, so the cap is four chunks or four
// records: a call whose head region is live beyond 4 parts in 5 evicts
// once the cap is spent, and later calls reach the dead bytes. That happens
// only close to the headroom or when the dead bytes are bunched far from
// the head; a shard 99% full of live data never moves for room and runs
// S3-FIFO as before (TestMakeRoomBounded).
func (s *shard) makeRoom(e *Engine, r *ring, n uint64, now int64) {
	caps := s.capsFor(n)
	for {
		k := r.chunksNeeded(n)
		if len(s.mu.free) >= k+reserveChunks {
			s.grow(r, k)
			return
		}
		s.evictOne(e, n, &caps, now)
	}
}

// moveCaps are the bytes one makeRoom call may still move: every move
// spends from both; a record that was hit moves only while hit covers it,
// one that was not (for room) while room does. room >= hit throughout.
type moveCaps struct{ hit, room uint64 }

// capsFor returns the caps for making room for n bytes: S3-FIFO's cap on
// moves of hit records, four times the record and at least 64 KiB; and a
// cap on all moves of four times what the call must free, which is the
// record or, since room comes in whole chunks, a chunk (at least the
// former).
func (s *shard) capsFor(n uint64) moveCaps {
	hit := max(4*n, 64<<10)
	return moveCaps{hit: hit, room: max(hit, 4*s.cs)}
}

// roomHeadroomDiv and roomSlackChunks size the headroom that live data must
// leave for makeRoom to move records for room instead of evicting them:
// budget/8 of dead space for cleaning (it bounds the bytes copied per
// byte reclaimed, see makeRoom), plus the reserve and one partly used chunk
// at each end of either log. A smaller headroom keeps more live data when
// the working set does not fit, at a steeply higher copying cost per store:
// with the slack chunks alone, a working set of 150% of the budget keeps
// 95% of it live instead of 83% (TestOverwriteOverflowEvicts), but stores
// cost about 3x (BenchmarkSetOverwrite/overflow-150%).
const (
	roomHeadroomDiv = 8
	roomSlackChunks = reserveChunks + 4
)

// roomFor reports whether the shard's live records and n more bytes fit
// within its budget less the cleaning headroom: then no live record needs
// to be evicted to make room for n bytes.
func (s *shard) roomFor(n uint64) bool {
	headroom := s.budget/roomHeadroomDiv + roomSlackChunks*s.cs
	return s.mu.bytes+n+headroom <= s.budget
}

// evictOne disposes of one head record of the queue S3-FIFO picks, to make
// room for n bytes.
func (s *shard) evictOne(e *Engine, n uint64, caps *moveCaps, now int64) {
	small, main := &s.mu.small, &s.mu.main
	if small.used() > 0 && (small.used() > s.smallTarget || main.used() == 0) {
		s.evictHead(e, small, n, caps, now)
	} else {
		s.evictHead(e, main, n, caps, now)
	}
}

// hashAt recomputes the key hash of the record at pos.
func (s *shard) hashAt(e *Engine, r *ring, pos uint64, hd *header) uint64 {
	var kb [255]byte
	k := kb[:hd.keyLen]
	r.read(pos+hd.keyOff(), k)
	return maphash.Bytes(e.seed, k)
}

// evictHead disposes of the record at the head of r to make room for n
// bytes (see makeRoom).
func (s *shard) evictHead(e *Engine, r *ring, n uint64, caps *moveCaps, now int64) {
	var it item
	it.r, it.pos = r, r.head
	r.readHeader(it.pos, &it.hdr)
	sz := it.hdr.size()
	if it.hdr.bits&bitDead != 0 {
		s.advance(r, sz)
		return
	}
	it.h = s.hashAt(e, r, it.pos, &it.hdr)
	if !s.indexed(&it) {
		s.advance(r, sz) // not indexed: dead
		return
	}
	if e.flushed(&it.hdr, now) || (it.hdr.exptime != 0 && int64(it.hdr.exptime) <= now) {
		s.unlink(&it)
		s.mu.c.reclaimed++
		if it.hdr.bits&bitFetched == 0 {
			s.mu.c.expiredUnfetched++
		}
		s.advance(r, sz)
		return
	}
	freq := it.hdr.bits & bitFreqMask
	main := &s.mu.main
	// S3-FIFO moves a record that was hit (within its cap); a record that
	// was not, or one past that cap, moves if live data fits.
	hitMove := freq > 0 && caps.hit >= sz
	roomMove := !hitMove && caps.room >= sz && s.roomFor(n)
	if hitMove || roomMove {
		bits := it.hdr.bits
		if freq > 0 {
			bits &^= bitFreqMask // small -> main: frequency reset
			if r == main {
				bits |= freq - 1 // main -> main tail: frequency decremented
			}
		}
		if s.move(&it, bits) {
			caps.hit -= min(caps.hit, sz)
			caps.room -= sz
			if r == main {
				s.mu.c.movesWithinMain++
			} else {
				s.mu.c.movesToMain++
			}
			if roomMove {
				s.mu.c.movesForRoom++
			}
			return
		}
	}
	s.unlink(&it)
	s.mu.c.evictions++
	if e.tier != nil {
		e.tier.ramIncomplete(sz)
	}
	if it.hdr.exptime != 0 {
		s.mu.c.evictedNonzero++
	}
	if it.hdr.bits&bitFetched == 0 {
		s.mu.c.evictedUnfetched++
	}
	if freq > 0 || it.hdr.bits&bitActive != 0 {
		s.mu.c.evictedActive++
	}
	s.mu.lastEvictedTime = now - int64(it.hdr.time)
	if r != main {
		s.ghostAdd(it.h)
	}
	s.advance(r, sz)
}

// move re-appends the head record it of its ring at the tail of main with
// the given bits, and reports whether it could: records larger than a chunk
// are never moved, and a move needs its chunks free (makeRoom keeps
// reserveChunks free for that).
func (s *shard) move(it *item, bits uint8) bool {
	main := &s.mu.main
	sz := it.hdr.size()
	k := main.chunksNeeded(sz)
	if sz > s.cs {
		return false
	}
	if k > len(s.mu.free) {
		s.mu.c.movesNoChunk++
		return false
	}
	s.grow(main, k)
	dst := main.tail
	copyRecord(main, dst, it.r, it.pos, sz)
	if it.hdr.exptime != 0 {
		main.reclaim = true // for Engine.Crawl, as ring.writeHeader
	}
	main.tail += sz
	main.setByte(dst+hdrBits, bits)
	s.advance(it.r, sz)
	s.mu.index.setRef(it.slot, s.refOf(main, dst))
	return true
}
