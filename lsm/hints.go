package lsm

import (
	"fmt"
	"hash/maphash"
	"math/bits"
	"sync"
	"syscall"
	"unsafe"
)

// hints is a lossy, fixed-size table of where keys' records are: a hash of
// the key selects a bucket of two slots; a slot holds a 32-bit tag (other
// bits of the same hash), the epoch of the key's record and, when the
// record is in the journal, the frame's location. A read with a location
// goes straight to the journal (one pread, no Pebble read at all, as
// memcached's extstore keeps each item's flash location in RAM); a read
// with an epoch only does one Pebble point read of d<epoch><key> instead
// of reading the k index first.
//
// Two slots per bucket, the key written (set or installed) most recently
// first: a new key pushes out the older of the two. With one slot per
// hash, a table with room for all the keys still loses about a third of
// them to collisions, and a read of a key without a hint costs a k read
// in Pebble.
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
//   - a read that fell back to Pebble installs what it found only if no
//     set, clear or install touched the bucket's stripe since it looked
//     (install, by the stripe's generation), so a commit that ran in
//     between wins. Comparing the bucket itself would not do: a delete of
//     a key without a hint leaves the bucket as it was, and the read would
//     then install a hint to a frame the delete left behind, which a later
//     read would serve.
//
// So a hint names the key's record in some committed state that no later
// write or deletion of the key has replaced: the record found there is the
// current one (at most one d record per key, which Commit keeps).
//
// A slot is 24 bytes, a bucket 48; buckets are guarded by striped mutexes
// (a slot is more than one word). The table holds no pointers; it is part
// of the memory budget (Options.LocationHints) and uses all of it (the
// bucket index is a multiply-shift of the hash, not a mask, so any number
// of buckets works). Empty after a restart.
type hints struct {
	mem     []byte       // the mapping (newHints)
	buckets []hintBucket // over mem
	locks   [hintStripes]paddedMutex
	seed    maphash.Seed
}

const hintStripes = 64

type paddedMutex struct {
	sync.Mutex
	gen uint64   // changes of the stripe's buckets; guarded by the mutex
	_   [48]byte // one cache line each
}

// hintSlot is one slot; tag 0 is empty.
type hintSlot struct {
	tag   uint32
	epoch uint32
	loc   JournalLoc // Segment 0: the record is in Pebble (d)
}

// hintWays is the number of slots per bucket.
const hintWays = 2

// hintBucket is the slots one hash selects, most recently written first.
type hintBucket [hintWays]hintSlot

// hint is what a slot says of a key.
type hint struct {
	epoch uint32
	loc   JournalLoc // Segment 0: none
}

const hintBucketSize = int64(unsafe.Sizeof(hintBucket{})) // 48: two 24-byte slots

// newHints returns a table of as many buckets as fit in bytes, or nil (no
// hints) when bytes is below one bucket. The table is an anonymous mapping
// outside the Go heap, as the engine's arena is: the kernel backs a page
// when it is first written, and the garbage collector neither scans it nor
// counts it in the heap whose growth sets its pace (a quarter of -m on the
// heap would let as much garbage pile up before a collection). free
// unmaps it.
func newHints(bytes int64) (*hints, error) {
	n := bytes / hintBucketSize
	if n < 1 {
		return nil, nil
	}
	mem, err := syscall.Mmap(-1, 0, int(n*hintBucketSize), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("lsm: location hints: mmap %d bytes: %w", n*hintBucketSize, err)
	}
	// Huge pages where the kernel allows them (THP "madvise"): a read or a
	// commit touches one random bucket, and with 4 KiB pages a table of
	// hundreds of MiB misses the TLB on nearly every one (mixed-1k at -m
	// 1024 with a 256 MiB table: 5-15% fewer ops/s without).
	_ = syscall.Madvise(mem, syscall.MADV_HUGEPAGE)
	return &hints{mem: mem, buckets: unsafe.Slice((*hintBucket)(unsafe.Pointer(&mem[0])), n), seed: maphash.MakeSeed()}, nil
}

// free unmaps the table; nothing may use it afterwards (DB.Close, under
// closeMu, once every reader and writer has left).
func (h *hints) free() {
	if h == nil {
		return
	}
	h.buckets = nil
	_ = syscall.Munmap(h.mem)
	h.mem = nil
}

// bucket returns key's bucket index and tag (never 0). The index comes
// from the hash's high bits (multiply-shift), the tag from its low ones.
func (h *hints) bucket(key []byte) (uint64, uint32) {
	x := maphash.Bytes(h.seed, key)
	i, _ := bits.Mul64(x, uint64(len(h.buckets)))
	return i, uint32(x) | 1
}

func (h *hints) lock(i uint64) *paddedMutex { return &h.locks[i%hintStripes] }

// get returns key's hint, and the generation of its stripe, to pass to
// install after reading Pebble.
func (h *hints) get(key []byte) (hn hint, ok bool, seen uint64) {
	i, tag := h.bucket(key)
	mu := h.lock(i)
	mu.Lock()
	b, seen := h.buckets[i], mu.gen
	mu.Unlock()
	for _, s := range b {
		if s.tag == tag {
			return hint{epoch: s.epoch, loc: s.loc}, true, seen
		}
	}
	return hint{}, false, seen
}

// install records hn for key if nothing changed the stripe since get
// returned seen (before Pebble was read).
func (h *hints) install(key []byte, hn hint, seen uint64) {
	i, tag := h.bucket(key)
	mu := h.lock(i)
	mu.Lock()
	if mu.gen == seen {
		h.buckets[i].put(tag, hn)
		mu.gen++
	}
	mu.Unlock()
}

// set records hn for key unconditionally (Commit, under the commit mutex,
// after the batch is applied).
func (h *hints) set(key []byte, hn hint) {
	i, tag := h.bucket(key)
	mu := h.lock(i)
	mu.Lock()
	h.buckets[i].put(tag, hn)
	mu.gen++
	mu.Unlock()
}

// clear forgets key's hint if the bucket holds one for key (a delete), and
// in any case fails the installs of reads that looked before it.
func (h *hints) clear(key []byte) {
	i, tag := h.bucket(key)
	mu := h.lock(i)
	mu.Lock()
	b := &h.buckets[i]
	for w := range b {
		if b[w].tag == tag {
			b[w] = hintSlot{}
		}
	}
	mu.gen++
	mu.Unlock()
}

// put writes tag's hint into b as its most recent key: the first slot,
// the key there moving to the second and the second one's dropped (an
// empty first slot, left by clear, is taken without moving anything).
func (b *hintBucket) put(tag uint32, hn hint) {
	s := hintSlot{tag: tag, epoch: hn.epoch, loc: hn.loc}
	switch {
	case b[0].tag == tag:
		b[0] = s
	case b[1].tag == tag:
		b[1], b[0] = b[0], s
	case b[0].tag == 0:
		b[0] = s
	default:
		b[1], b[0] = b[0], s
	}
}
