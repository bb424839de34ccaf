package engine

import (
	"fmt"
	"math/bits"
	"syscall"
	"unsafe"

	"github.com/tcache/tcache/internal/offheap"
)

// index is a shard's hash index: an open-addressing table of 8-byte slots
// in its own anonymous mmap, outside the Go heap, from a key hash to the
// position of the key's live record.
//
// Slot layout (one uint64; refBits = 1 + the shard's position bits):
//
//	 63   62                    refBits  refBits-1                      0
//	+----+--------------------------+--------------------------------+
//	| 1  |   tag (62 - posBits)     | main | record position mod 2^p |
//	+----+--------------------------+--------------------------------+
//
// A zero slot is empty. The tag is the low tagBits bits of the key's hash
// (the shard is chosen by the high bits); its low bits are also the slot's
// home bucket, so a slot's probe distance is known without the key, and
// growth rehashes without reading the arena. The ref (main bit and
// position) is decoded by the shard (see shard.decodeRef).
//
// Probing is linear with Robin Hood ordering: an insert takes the slot of
// any entry nearer its home than the new one is (and carries on inserting
// the displaced entry), so a lookup stops at the first slot that is empty
// or nearer its home than the probe is far. Deletion shifts the following
// displaced entries back one slot, leaving no tombstones, so a table that
// lives for months under churn probes as well as a fresh one. When an
// insert would pass maxLoad the table is rehashed into a new mapping of
// twice the size and the old mapping is unmapped at once.
//
// A tag match is only a candidate: the caller compares the key stored in
// the record and keeps probing (with next) on a mismatch, so two keys with
// equal hashes are both indexed. An index is guarded by its shard's mutex.
type index struct {
	slots   []uint64 // len is a power of two; backed by mem
	mem     []byte   // the mapping; nil once freed
	mask    uint64   // len(slots) - 1
	n       int      // entries
	growAt  int      // grow when n reaches this
	refBits uint     // low bits of a slot holding the ref
	refMask uint64
	tagMask uint64 // tagBits = 63 - refBits
}

const (
	slotUsed = 1 << 63
	// minIndexSlots is a new index's size: 8 KiB per shard.
	minIndexSlots = 1 << 10
	// maxLoadNum/maxLoadDen is the load factor past which the table grows.
	maxLoadNum, maxLoadDen = 4, 5
)

// newIndex maps an empty index of minIndexSlots slots whose refs have
// refBits bits.
func newIndex(refBits uint) (index, error) {
	x := index{refBits: refBits, refMask: 1<<refBits - 1, tagMask: 1<<(63-refBits) - 1}
	if err := x.alloc(minIndexSlots); err != nil {
		return index{}, err
	}
	return x, nil
}

// alloc maps a zeroed table of n slots (a power of two) into x.
func (x *index) alloc(n int) error {
	mem, err := offheap.Map(n * 8)
	if err != nil {
		return fmt.Errorf("engine: mmap index of %d slots: %w", n, err)
	}
	x.mem = mem
	x.slots = unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(mem))), n)
	x.mask = uint64(n - 1)
	x.n = 0
	x.growAt = n / maxLoadDen * maxLoadNum
	return nil
}

// free unmaps the table; the index must not be used afterwards.
func (x *index) free() error {
	if x.mem == nil {
		return nil
	}
	err := syscall.Munmap(x.mem)
	x.mem, x.slots = nil, nil
	if err != nil {
		return fmt.Errorf("engine: munmap index: %w", err)
	}
	return nil
}

// tag is the part of hash h kept in a slot.
func (x *index) tag(h uint64) uint64 { return h & x.tagMask }

func (x *index) slotTag(s uint64) uint64 { return s &^ slotUsed >> x.refBits }

// dist is the probe distance of slot s stored at i from its home.
func (x *index) dist(i uint64, s uint64) uint64 { return (i - x.slotTag(s)) & x.mask }

// probe is a lookup in progress: the next slot to look at and its
// distance from the home bucket.
type probe struct{ i, d uint64 }

// find starts a lookup of hash h and returns the first candidate: the slot
// number and ref of an entry whose tag matches h, or ok=false. Continue
// with next after a candidate that is not the key.
func (x *index) find(h uint64, p *probe) (slot int, ref uint64, ok bool) {
	t := x.tag(h)
	*p = probe{i: t & x.mask}
	return x.scan(t, p)
}

// next returns the candidate after the one find or next returned last.
func (x *index) next(h uint64, p *probe) (slot int, ref uint64, ok bool) {
	p.i = (p.i + 1) & x.mask
	p.d++
	return x.scan(x.tag(h), p)
}

func (x *index) scan(t uint64, p *probe) (int, uint64, bool) {
	for {
		s := x.slots[p.i]
		if s == 0 || x.dist(p.i, s) < p.d {
			return -1, 0, false
		}
		if x.slotTag(s) == t {
			return int(p.i), s & x.refMask, true
		}
		p.i = (p.i + 1) & x.mask
		p.d++
	}
}

// slotOf returns the slot holding exactly (h, ref), or -1.
func (x *index) slotOf(h, ref uint64) int {
	var p probe
	for i, r, ok := x.find(h, &p); ok; i, r, ok = x.next(h, &p) {
		if r == ref {
			return i
		}
	}
	return -1
}

// setRef replaces the ref of the entry at slot i (a record moved).
func (x *index) setRef(i int, ref uint64) {
	x.slots[i] = x.slots[i]&^x.refMask | ref
}

// reserve makes sure one more entry can be inserted without passing the
// load limit, growing the table when needed. It reports false only when
// the table is at its limit and a larger one cannot be mapped.
func (x *index) reserve() bool {
	if x.n < x.growAt {
		return true
	}
	if err := x.grow(); err != nil {
		return x.n < len(x.slots)-1 // over the load limit, but never full
	}
	return true
}

// grow rehashes into a table twice the size and unmaps the old one. The
// home bucket comes from the tag, so no key is read. The table never has
// more slots than tags can address.
func (x *index) grow() error {
	if bits.Len64(x.mask+1) > bits.Len64(x.tagMask) {
		return fmt.Errorf("engine: index of %d slots cannot grow", len(x.slots))
	}
	old, oldMem := x.slots, x.mem
	if err := x.alloc(2 * len(old)); err != nil { // x is unchanged
		return err
	}
	for _, s := range old {
		if s != 0 {
			x.insertSlot(s)
		}
	}
	if err := syscall.Munmap(oldMem); err != nil {
		return fmt.Errorf("engine: munmap index: %w", err)
	}
	return nil
}

// insert adds an entry for hash h; the caller has called reserve and knows
// that (h, ref) is not indexed yet.
func (x *index) insert(h, ref uint64) {
	x.insertSlot(slotUsed | x.tag(h)<<x.refBits | ref)
}

func (x *index) insertSlot(cur uint64) {
	i := x.slotTag(cur) & x.mask
	d := uint64(0)
	for {
		s := x.slots[i]
		if s == 0 {
			x.slots[i] = cur
			x.n++
			return
		}
		if sd := x.dist(i, s); sd < d { // Robin Hood: the nearer one moves on
			x.slots[i], cur = cur, s
			d = sd
		}
		i = (i + 1) & x.mask
		d++
	}
}

// remove deletes the entry at slot i, shifting the displaced entries that
// follow it back by one.
func (x *index) remove(i int) {
	u := uint64(i)
	for {
		j := (u + 1) & x.mask
		s := x.slots[j]
		if s == 0 || x.dist(j, s) == 0 {
			x.slots[u] = 0
			break
		}
		x.slots[u] = s
		u = j
	}
	x.n--
}
