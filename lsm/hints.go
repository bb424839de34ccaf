package lsm

import (
	"hash/maphash"
	"sync"
	"unsafe"
)

// hints is a lossy, fixed-size table of where keys' records are: a hash of
// the key selects a slot, which holds a 32-bit tag (more bits of the same
// hash), the epoch of the key's record and, when the record is in the
// journal, the frame's location. A read with a location goes straight to
// the journal (one pread, no Pebble read at all, as memcached's extstore
// keeps each item's flash location in RAM); a read with an epoch only
// does one Pebble point read of d<epoch><key> instead of reading the k
// index first.
//
// A hint is only ever a guess to try first. When it does not lead to the
// key's record (the slot was taken by another key with the same tag, the
// record moved or was deleted, its epoch or segment dropped) the read
// falls back to k as before: a frame read through a hint must hold the
// key. A hint is never older than the record it names:
//
//   - Commit sets the hint of every key it writes after Pebble has applied
//     the batch, under the commit mutex, and clears it for a plain delete;
//     the sweeper and the flush pass clear the hints of the records they
//     delete, under the same mutex;
//   - a read that fell back to Pebble installs what it found only if the
//     slot still holds what it saw before reading (install), so a commit
//     that ran in between wins.
//
// So a hint names the key's record in some committed state that no later
// write or deletion of the key has replaced: the record found there is the
// current one (at most one d record per key, which Commit keeps).
//
// A slot is 24 bytes; slots are guarded by striped mutexes (a slot is
// more than one word). The table holds no pointers; it is part of the
// memory budget (Options.LocationHints). Empty after a restart.
type hints struct {
	slots []hintSlot
	locks [hintStripes]paddedMutex
	mask  uint64
	seed  maphash.Seed
}

const hintStripes = 64

type paddedMutex struct {
	sync.Mutex
	_ [56]byte // one cache line each
}

// hintSlot is one slot; tag 0 is empty.
type hintSlot struct {
	tag   uint32
	epoch uint32
	loc   JournalLoc // Segment 0: the record is in Pebble (d)
}

// hint is what a slot says of a key.
type hint struct {
	epoch uint32
	loc   JournalLoc // Segment 0: none
}

const hintSlotSize = int64(unsafe.Sizeof(hintSlot{})) // 24

// newHints returns a table of the largest power of two of slots that fits
// in bytes, or nil (no hints) when bytes is below one slot.
func newHints(bytes int64) *hints {
	n := int64(1)
	for n*2*hintSlotSize <= bytes {
		n *= 2
	}
	if n*hintSlotSize > bytes {
		return nil
	}
	return &hints{slots: make([]hintSlot, n), mask: uint64(n - 1), seed: maphash.MakeSeed()}
}

// slot returns key's slot index and tag (never 0).
func (h *hints) slot(key []byte) (uint64, uint32) {
	x := maphash.Bytes(h.seed, key)
	return x & h.mask, uint32(x>>32) | 1
}

func (h *hints) lock(i uint64) *sync.Mutex { return &h.locks[i%hintStripes].Mutex }

// get returns key's hint, and the slot as it was, to pass to install
// after reading Pebble.
func (h *hints) get(key []byte) (hn hint, ok bool, seen hintSlot) {
	i, tag := h.slot(key)
	mu := h.lock(i)
	mu.Lock()
	seen = h.slots[i]
	mu.Unlock()
	return hint{epoch: seen.epoch, loc: seen.loc}, seen.tag == tag, seen
}

// install records hn for key if the slot still holds seen (what get
// returned before Pebble was read).
func (h *hints) install(key []byte, hn hint, seen hintSlot) {
	i, tag := h.slot(key)
	mu := h.lock(i)
	mu.Lock()
	if h.slots[i] == seen {
		h.slots[i] = hintSlot{tag: tag, epoch: hn.epoch, loc: hn.loc}
	}
	mu.Unlock()
}

// set records hn for key unconditionally (Commit, under the commit mutex,
// after the batch is applied).
func (h *hints) set(key []byte, hn hint) {
	i, tag := h.slot(key)
	mu := h.lock(i)
	mu.Lock()
	h.slots[i] = hintSlot{tag: tag, epoch: hn.epoch, loc: hn.loc}
	mu.Unlock()
}

// clear forgets key's hint if the slot holds one for key (a delete).
func (h *hints) clear(key []byte) {
	i, tag := h.slot(key)
	mu := h.lock(i)
	mu.Lock()
	if h.slots[i].tag == tag {
		h.slots[i] = hintSlot{}
	}
	mu.Unlock()
}
