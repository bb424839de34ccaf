package lsm

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/dchest/siphash"

	"github.com/tcache/tcache/internal/offheap"
	"github.com/tcache/tcache/internal/prefetch"
)

// keydir is the complete RAM index of the journal (docs/keydir.md): for
// every key whose current record is a journal frame, where that frame is,
// its record's expiry and whether it is a tombstone. It is Bitcask's
// keydir, and what memcached's extstore keeps of each flash item in RAM: a
// read of an item the RAM tier evicted finds its frame here and reads it
// with one pread, and a write learns what it replaces without a disk
// read. It is rebuilt at open from the position index Pebble keeps (s,
// keys.go) and the journal's tail.
//
// A key is known by a 64-bit hash of it, not by its bytes (24 bytes a key
// whatever its length; Bitcask keeps whole keys). Every read checks the
// key in the frame, so two keys with one hash can never return each
// other's value; they share one entry, so writing one evicts the other
// from the disk tier (for a million keys, a chance of about 3 in 10^8 that
// any two collide). The hash is SipHash-2-4 under a random key of the
// store, kept in its metadata: a checkpoint of the table (hashes and
// all) stays valid across restarts, and clients that choose keys cannot
// aim them at one slot's probe chain without knowing the key.
//
// The table is split in keydirShards shards by the hash's top bits, each
// an open-addressing table with Robin Hood probing (as the engine's
// index.go) in its own anonymous mapping, outside the Go heap, grown by
// doubling: a shard holds 1/256 of the keys, so a growth copies little
// while its shard's lock is held. The shard's mutex guards it.
type keydir struct {
	k0, k1 uint64 // the SipHash key
	// drops counts the times segments were removed (their entries are
	// dead: misses to reads, removed by the sweeper's next walk).
	drops  atomic.Uint64
	shards [keydirShards]kdShard
	// where holds each shard's table address and mask for prefetch,
	// which reads them without the shard's lock: 4 KiB that stay in the
	// caches, where the shards' own lines (mutex and all) may not.
	where [keydirShards]kdWhere
}

// kdWhere is where a shard's table is, for prefetch: set by alloc under
// the shard's lock, read without it. A reader may pair an old base with
// a new mask; it only prefetches a wrong line (prefetch never faults).
type kdWhere struct {
	base atomic.Uintptr
	mask atomic.Uint64
}

const (
	keydirShardBits = 8
	keydirShards    = 1 << keydirShardBits
	// kdMinSlots is a shard's first size: 6 KiB, 1.5 MiB for the table.
	kdMinSlots = 256
	// kdLoadNum/kdLoadDen is the load past which a shard grows.
	kdLoadNum, kdLoadDen = 7, 8
)

// kdShard is one shard, padded to its own cache lines.
type kdShard struct {
	mu     sync.Mutex
	slots  []kdSlot // len a power of two; over mem
	mem    []byte
	mask   uint64
	n      int // entries
	growAt int
	// minExp is at or below the earliest exptime of the shard's items (0:
	// none expires), minTomb the same for its tombstones' times: the
	// sweeper skips a shard with nothing due.
	minExp, minTomb uint32
	// drops is the keydir's drops when the sweeper last walked the shard.
	drops uint64
	// gen counts the tables the shard has had (alloc): a sweep that paused
	// finds out that the table was rebuilt meanwhile.
	gen uint64
	// where is the keydir's prefetch entry of the shard (alloc keeps it
	// up to date).
	where *kdWhere
	_     [64]byte
}

// kdSlot is one entry. hash 0 marks an empty slot (a key whose hash is 0
// is stored as 1). lenKind is the frame's length with kdTombstone set for
// a tombstone. exp is an item's exptime (0: none; the slot keeps up to
// 2^32-1, unix seconds until 2106) or a tombstone's time.
type kdSlot struct {
	hash    uint64
	seg     uint32
	off     uint32
	lenKind uint32
	exp     uint32
}

const kdTombstone = 1 << 31

// kdEntry is what the keydir says of a key.
type kdEntry struct {
	loc       JournalLoc
	exptime   int64 // item: its exptime; tombstone: the delete's time
	tombstone bool
}

func (e kdEntry) slot(h uint64) kdSlot {
	s := kdSlot{hash: h, seg: e.loc.Segment, off: uint32(e.loc.Off), lenKind: e.loc.Len, exp: clampU32(e.exptime)}
	if e.tombstone {
		s.lenKind |= kdTombstone
	}
	return s
}

func (s *kdSlot) entry() kdEntry {
	return kdEntry{
		loc:       JournalLoc{Segment: s.seg, Off: int64(s.off), Len: s.lenKind &^ kdTombstone},
		exptime:   int64(s.exp),
		tombstone: s.lenKind&kdTombstone != 0,
	}
}

func clampU32(v int64) uint32 {
	switch {
	case v < 0:
		return 0
	case v > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(v)
}

// fitsKeydir reports whether loc can be kept in a slot: an offset below
// 4 GiB and a length below 2 GiB (a segment is at most maxSegmentSize and
// a frame at most the largest item, so every frame fits).
func fitsKeydir(loc JournalLoc) bool {
	return loc.Off >= 0 && loc.Off < 1<<32 && loc.Len < kdTombstone
}

const kdSlotSize = int(unsafe.Sizeof(kdSlot{}))

// newKeydir returns an empty keydir (every shard at its first size) that
// hashes keys under the SipHash key (k0, k1).
func newKeydir(k0, k1 uint64) (*keydir, error) {
	k := blankKeydir(k0, k1)
	for i := range k.shards {
		if err := k.shards[i].alloc(kdMinSlots); err != nil {
			k.free()
			return nil, err
		}
	}
	return k, nil
}

// blankKeydir returns a keydir whose shards have no table yet (alloc
// gives them one).
func blankKeydir(k0, k1 uint64) *keydir {
	k := &keydir{k0: k0, k1: k1}
	k.drops.Store(1) // every shard is walked once (sweepDue): its minExp is not known yet
	for i := range k.shards {
		k.shards[i].where = &k.where[i]
	}
	return k
}

// free unmaps every shard; nothing may use k afterwards.
func (k *keydir) free() {
	if k == nil {
		return
	}
	for i := range k.shards {
		s := &k.shards[i]
		if s.mem != nil {
			_ = syscall.Munmap(s.mem)
		}
		s.mem, s.slots = nil, nil
	}
}

// hash is key's hash, never 0.
func (k *keydir) hash(key []byte) uint64 {
	if h := siphash.Hash(k.k0, k.k1, key); h != 0 {
		return h
	}
	return 1
}

func (k *keydir) shard(h uint64) *kdShard { return &k.shards[h>>(64-keydirShardBits)] }

// prefetch starts loading the lines a put or get of hash h will touch
// first, its shard's mutex and its home slot, so that their cache misses
// overlap the work the caller does before it gets there (a commit encodes
// the record and appends the frame first).
func (k *keydir) prefetch(h uint64) {
	i := h >> (64 - keydirShardBits)
	prefetch.Line(uintptr(unsafe.Pointer(&k.shards[i])))
	w := &k.where[i]
	prefetch.Line(w.base.Load() + uintptr(h&w.mask.Load())*uintptr(kdSlotSize))
}

// get returns the entry of hash h.
func (k *keydir) get(h uint64) (kdEntry, bool) {
	s := k.shard(h)
	s.mu.Lock()
	i := s.find(h)
	var e kdEntry
	if i >= 0 {
		e = s.slots[i].entry()
	}
	s.mu.Unlock()
	return e, i >= 0
}

// put makes e the entry of hash h and returns the one it replaces. It
// fails only when the shard must grow and the kernel refuses the mapping.
func (k *keydir) put(h uint64, e kdEntry) (old kdEntry, had bool, err error) {
	s := k.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := e.slot(h)
	s.due(&sl)
	if i := s.find(h); i >= 0 {
		old = s.slots[i].entry()
		s.slots[i] = sl
		return old, true, nil
	}
	if s.n >= s.growAt {
		if err := s.grow(); err != nil {
			return kdEntry{}, false, err
		}
	}
	s.insert(sl)
	return kdEntry{}, false, nil
}

// due lowers the shard's minExp or minTomb to sl's time.
func (s *kdShard) due(sl *kdSlot) {
	m := &s.minExp
	if sl.lenKind&kdTombstone != 0 {
		m = &s.minTomb
	}
	if sl.exp != 0 && (*m == 0 || sl.exp < *m) {
		*m = sl.exp
	}
}

// remove deletes the entry of hash h and returns it.
func (k *keydir) remove(h uint64) (kdEntry, bool) {
	s := k.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.find(h)
	if i < 0 {
		return kdEntry{}, false
	}
	e := s.slots[i].entry()
	s.remove(i)
	return e, true
}

// removeAt deletes the entry of hash h if it still names the frame at
// loc: the sweeper's removal of an entry it read before, which a write
// may have replaced since.
func (k *keydir) removeAt(h uint64, loc JournalLoc) bool {
	s := k.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.find(h)
	if i < 0 || s.slots[i].entry().loc != loc {
		return false
	}
	s.remove(i)
	return true
}

// len counts the entries.
func (k *keydir) len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

// kdVictim is an entry a walk outside the shard's lock may remove
// (removeAt, if it is still there).
type kdVictim struct {
	h uint64
	e kdEntry
}

// shardEntries appends shard i's entries to dst.
func (k *keydir) shardEntries(i int, dst []kdVictim) []kdVictim {
	s := &k.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	for j := range s.slots {
		if sl := &s.slots[j]; sl.hash != 0 {
			dst = append(dst, kdVictim{sl.hash, sl.entry()})
		}
	}
	return dst
}

// locations lists the frame of every entry (items and tombstones), shard
// by shard.
func (k *keydir) locations() []JournalLoc {
	var out []JournalLoc
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			if sl := &s.slots[j]; sl.hash != 0 {
				out = append(out, sl.entry().loc)
			}
		}
		s.mu.Unlock()
	}
	return out
}

// bytes is the RAM the table's mappings take.
func (k *keydir) bytes() int64 {
	var b int64
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		b += int64(len(s.mem))
		s.mu.Unlock()
	}
	return b
}

// The sweeper walks a shard in chunks of sweepChunk slots, each under the
// shard's lock (and the caller's commit mutex), so that a shard of a
// large keydir (400 000 entries a shard at a hundred million keys) does
// not hold up commits for the whole walk. After a pause it starts
// sweepBack slots before where it stopped: a removal meanwhile shifts the
// entries after it back by one slot (Robin Hood), and such an entry must
// not slip behind the walk.
var sweepChunk = 4096 // a variable for the tests

const sweepBack = 32

// sweepCursor is where a chunked sweep of one shard is.
type sweepCursor struct {
	shard int
	next  int    // the next slot to look at
	gen   uint64 // the table the walk is in (kdShard.gen)
}

// sweepBegin starts a sweep of shard i: it marks the shard swept since
// the last drop (sweepDue) and clears its minExp and minTomb, which the
// walk's kept entries and the puts meanwhile (due) set again.
func (k *keydir) sweepBegin(i int) sweepCursor {
	s := &k.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops = k.drops.Load()
	s.minExp, s.minTomb = 0, 0
	return sweepCursor{shard: i, gen: s.gen}
}

// sweepStep calls fn for each entry of the cursor's next chunk, under the
// shard's lock, and deletes those for which fn returns true; done says
// the shard was walked to its end. fn must not use k. An entry may be
// offered twice (a deletion that wraps the table's end, the slots walked
// again after a pause, a table rebuilt by a grow, which restarts the
// walk): fn must give the same answer.
func (k *keydir) sweepStep(c *sweepCursor, fn func(h uint64, e kdEntry) bool) (removed int, done bool) {
	s := &k.shards[c.shard]
	s.mu.Lock()
	defer s.mu.Unlock()
	start := c.next
	if s.gen != c.gen {
		c.gen, start = s.gen, 0
	}
	j := max(start-sweepBack, 0)
	end := min(start+sweepChunk, len(s.slots))
	for j < end {
		sl := &s.slots[j]
		if sl.hash == 0 {
			j++
			continue
		}
		if fn(sl.hash, sl.entry()) {
			s.remove(j) // the next entry may shift into j: look at j again
			removed++
			continue
		}
		s.due(sl)
		j++
	}
	c.next = end
	return removed, end >= len(s.slots)
}

// sweepDue reports whether shard i may hold an entry for the sweeper: a
// segment was removed since its last walk, an item's exptime has come
// (now), or a tombstone is older than tombCut.
func (k *keydir) sweepDue(i int, now, tombCut int64) bool {
	s := &k.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops != k.drops.Load() || (s.minExp != 0 && int64(s.minExp) <= now) ||
		(s.minTomb != 0 && int64(s.minTomb) < tombCut)
}

// alloc maps a zeroed table of n slots (a power of two) into s.
func (s *kdShard) alloc(n int) error {
	mem, err := offheap.Map(n * kdSlotSize)
	if err != nil {
		return fmt.Errorf("lsm: keydir: mmap %d slots: %w", n, err)
	}
	s.mem = mem
	s.gen++
	s.slots = unsafe.Slice((*kdSlot)(unsafe.Pointer(unsafe.SliceData(mem))), n)
	s.mask = uint64(n - 1)
	s.n = 0
	s.growAt = n / kdLoadDen * kdLoadNum
	if s.where != nil {
		s.where.base.Store(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
		s.where.mask.Store(s.mask)
	}
	return nil
}

// grow rehashes s into a table twice the size and unmaps the old one.
func (s *kdShard) grow() error {
	old, oldMem := s.slots, s.mem
	if err := s.alloc(2 * len(old)); err != nil { // s is unchanged
		return err
	}
	for _, sl := range old {
		if sl.hash != 0 {
			s.insert(sl)
		}
	}
	if err := syscall.Munmap(oldMem); err != nil {
		return fmt.Errorf("lsm: keydir: munmap: %w", err)
	}
	return nil
}

// home is the slot a hash would take in an empty table; the low bits of
// the hash (the shard is chosen by its high bits).
func (s *kdShard) home(h uint64) uint64 { return h & s.mask }

// dist is how far the entry at slot i lies from its home.
func (s *kdShard) dist(i uint64) uint64 { return (i - s.home(s.slots[i].hash)) & s.mask }

// find returns the slot of hash h, or -1. Robin Hood order lets it stop
// at the first slot that is empty or nearer its home than the probe is
// far from h's.
func (s *kdShard) find(h uint64) int {
	i, d := s.home(h), uint64(0)
	for {
		sl := &s.slots[i]
		if sl.hash == 0 || s.dist(i) < d {
			return -1
		}
		if sl.hash == h {
			return int(i)
		}
		i = (i + 1) & s.mask
		d++
	}
}

// insert adds cur, whose hash is not in s; s has room.
func (s *kdShard) insert(cur kdSlot) {
	i, d := s.home(cur.hash), uint64(0)
	for {
		if s.slots[i].hash == 0 {
			s.slots[i] = cur
			s.n++
			return
		}
		if sd := s.dist(i); sd < d { // Robin Hood: the nearer one moves on
			s.slots[i], cur = cur, s.slots[i]
			d = sd
		}
		i = (i + 1) & s.mask
		d++
	}
}

// remove deletes the entry at slot i, shifting the displaced entries
// that follow it back by one (no tombstones).
func (s *kdShard) remove(i int) {
	u := uint64(i)
	for {
		j := (u + 1) & s.mask
		if s.slots[j].hash == 0 || s.dist(j) == 0 {
			s.slots[u] = kdSlot{}
			break
		}
		s.slots[u] = s.slots[j]
		u = j
	}
	s.n--
}
