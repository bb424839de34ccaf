package lsm

import (
	"hash/maphash"
	"sync/atomic"
)

// hints is a lossy, fixed-size table of where keys' records are: a hash of
// the key selects a slot, which holds a 32-bit tag (more bits of the same
// hash) and the epoch of the key's record. It lets a read go straight to
// the record (one Pebble point read of d<epoch><key>) instead of reading
// the k index first (two point reads): reading k was a third of the
// server's CPU in the overflow workload (docs/benchmarks.md).
//
// A hint is only ever a guess to try first. When d<epoch><key> is not
// there (the slot was taken by another key with the same tag, the record
// moved, was deleted, swept or dropped with its epoch) the read falls back
// to k as before. A hint is never older than the k entry it copies:
//
//   - Commit sets the hint of every key it writes after Pebble has applied
//     the batch, under the commit mutex, and clears it for a plain delete;
//   - a read that fell back to k installs what it found with a
//     compare-and-swap against the slot it saw before reading k, so a
//     commit that ran in between wins.
//
// So a hint names the epoch of the key's k entry in some committed state
// that no later commit of the key has replaced, and a record found there
// is the current one (at most one d record per key, which Commit keeps).
//
// The table holds 8 bytes a slot and no pointers; it is part of the
// memory budget (Options.LocationHints). Empty after a restart.
type hints struct {
	slots []atomic.Uint64
	mask  uint64
	seed  maphash.Seed
}

// newHints returns a table of the largest power of two of slots that fits
// in bytes, or nil (no hints) when bytes is below one slot.
func newHints(bytes int64) *hints {
	n := uint64(1)
	for int64(n*2*8) <= bytes {
		n *= 2
	}
	if int64(n*8) > bytes {
		return nil
	}
	return &hints{slots: make([]atomic.Uint64, n), mask: n - 1, seed: maphash.MakeSeed()}
}

// slot returns the slot of key and the value a hint for key at epoch would
// have there. The tag is never 0, so a zero slot is empty.
func (h *hints) slot(key []byte, epoch uint32) (*atomic.Uint64, uint64) {
	x := maphash.Bytes(h.seed, key)
	tag := x>>32 | 1
	return &h.slots[x&h.mask], tag<<32 | uint64(epoch)
}

// get returns the hinted epoch of key, and the slot's value to pass to
// install after reading k.
func (h *hints) get(key []byte) (epoch uint32, ok bool, seen uint64) {
	s, want := h.slot(key, 0)
	v := s.Load()
	return uint32(v), v != 0 && v>>32 == want>>32, v
}

// install records epoch for key if the slot still holds seen (what get
// returned before k was read).
func (h *hints) install(key []byte, epoch uint32, seen uint64) {
	s, v := h.slot(key, epoch)
	s.CompareAndSwap(seen, v)
}

// set records epoch for key unconditionally (Commit, under the commit
// mutex, after the batch is applied).
func (h *hints) set(key []byte, epoch uint32) {
	s, v := h.slot(key, epoch)
	s.Store(v)
}

// clear forgets key's hint if the slot holds one for key (a delete).
func (h *hints) clear(key []byte) {
	s, v := h.slot(key, 0)
	if cur := s.Load(); cur>>32 == v>>32 {
		s.CompareAndSwap(cur, 0)
	}
}
