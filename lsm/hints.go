package lsm

import (
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"sync"
	"syscall"
	"unsafe"

	"github.com/tcache/tcache/internal/offheap"
)

// hints is a lossy, fixed-size table of where keys' records are: a hash of
// the key selects a bucket of three slots; a slot holds a 16-bit tag
// (other bits of the same hash), the epoch of the key's record and, when
// the record is in the journal, the frame's location and the record's
// exptime. A read with a location goes straight to the journal (one
// pread, no Pebble read at all, as memcached's extstore keeps each item's
// flash location in RAM); a read with an epoch only does one Pebble point
// read of d<epoch><key> instead of reading the k index first. A write
// replacing a journaled record learns all it needs of it (epoch, exptime,
// size) from the hint and a read of the frame's head (find's findHeader).
//
// Three slots per bucket, the key written (set or installed) most recently
// first: a new key pushes out the oldest. With one slot per hash, a table
// with room for all the keys still loses about a third of them to
// collisions, and a read of a key without a hint costs a k and a d read
// in Pebble. At 1.6 keys a bucket (420,000 keys in 16 MiB), three ways
// leave about 7% of the keys without a slot where two ways (as many bytes
// in 48-byte buckets of 24-byte slots, 1.2 keys a bucket) left 14%
// (docs/benchmarks.md has what overflow measured).
//
// A tag is only a filter: every hint is checked against the key itself
// before it is believed (the frame's key, or Pebble's d<epoch><key>), so a
// short tag costs a wasted read now and then (a key without a hint whose
// tag matches one of the three: 3 in 32,768), never a wrong answer.
//
// A hint is only ever a guess to try first. When it does not lead to the
// key's record (the slot belongs to another key with the same tag, the
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
// A slot is 20 bytes, a bucket of three 64, one cache line (the mapping is
// page-aligned); buckets are guarded by striped mutexes (a slot is more
// than one word). The table holds no pointers; it is part
// of the memory budget (Options.IndexMemory) and uses all of it (the
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

// hintSlot is one slot; tag 0 is empty. exp is the record's exptime plus
// one, 0 when the slot does not know it (a record in Pebble, an exptime
// outside 0..2^32-2). pos packs the tag and the frame's offset and length:
//
//	bits 63..48 tag | 47..22 offset (26 bits) | 21..0 length (22 bits)
//
// A frame starts before maxSegmentSize (32 MiB, 25 bits); one longer than
// 4 MiB keeps only its epoch in the slot. pos is two words so that a slot
// is 20 bytes, not 24.
type hintSlot struct {
	epoch uint32
	seg   uint32 // 0: the record is in Pebble (d)
	exp   uint32
	pos   [2]uint32 // low, high word
}

const (
	hintOffBits = 26
	hintLenBits = 22
)

func (s *hintSlot) packed() uint64 { return uint64(s.pos[1])<<32 | uint64(s.pos[0]) }

func (s *hintSlot) tag() uint16 { return uint16(s.packed() >> 48) }

// hintWays is the number of slots per bucket.
const hintWays = 3

// hintBucket is the slots one hash selects, most recently written first,
// padded to a cache line.
type hintBucket struct {
	s [hintWays]hintSlot
	_ uint32
}

// hint is what a slot says of a key.
type hint struct {
	epoch uint32
	loc   JournalLoc // Segment 0: none
	// exptime is the record's; a hint with a location always carries it
	// (whoever knows a frame's location knows its record's exptime). Of a
	// decoded hint, exptimeKnown says whether the slot kept it.
	exptime      int64
	exptimeKnown bool
}

// slot encodes hn under tag. A location or exptime that does not fit the
// slot's fields is left out (the hint then says less, never something
// else).
func (hn hint) slot(tag uint16) hintSlot {
	s := hintSlot{epoch: hn.epoch}
	p := uint64(tag) << 48
	if l := hn.loc; l.Segment != 0 && l.Off >= 0 && l.Off < 1<<hintOffBits && l.Len < 1<<hintLenBits {
		s.seg = l.Segment
		p |= uint64(l.Off)<<hintLenBits | uint64(l.Len)
		if hn.exptime >= 0 && hn.exptime < math.MaxUint32 {
			s.exp = uint32(hn.exptime) + 1
		}
	}
	s.pos = [2]uint32{uint32(p), uint32(p >> 32)}
	return s
}

// hint decodes s.
func (s *hintSlot) hint() hint {
	hn := hint{epoch: s.epoch}
	if s.seg != 0 {
		p := s.packed()
		hn.loc = JournalLoc{Segment: s.seg, Off: int64(p >> hintLenBits & (1<<hintOffBits - 1)), Len: uint32(p & (1<<hintLenBits - 1))}
	}
	if s.exp != 0 {
		hn.exptime, hn.exptimeKnown = int64(s.exp-1), true
	}
	return hn
}

const hintBucketSize = int64(unsafe.Sizeof(hintBucket{})) // 64: three 20-byte slots and padding

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
	// Huge pages (offheap.Map): a read or a commit touches one random
	// bucket, and with 4 KiB pages a table of hundreds of MiB misses the
	// TLB on nearly every one (mixed-1k at -m 1024 with a 256 MiB table:
	// 5-15% fewer ops/s without).
	mem, err := offheap.Map(int(n * hintBucketSize))
	if err != nil {
		return nil, fmt.Errorf("lsm: location hints: mmap %d bytes: %w", n*hintBucketSize, err)
	}
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
func (h *hints) bucket(key []byte) (uint64, uint16) {
	x := maphash.Bytes(h.seed, key)
	i, _ := bits.Mul64(x, uint64(len(h.buckets)))
	return i, uint16(x) | 1
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
	if w := b.find(tag); w >= 0 {
		return b.s[w].hint(), true, seen
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
	if w := b.find(tag); w >= 0 { // put keeps one slot per tag
		b.s[w] = hintSlot{}
	}
	mu.gen++
	mu.Unlock()
}

// find returns the first slot of b with tag, or -1.
func (b *hintBucket) find(tag uint16) int {
	for w := range b.s {
		if b.s[w].tag() == tag {
			return w
		}
	}
	return -1
}

// put writes tag's hint into b as its most recent key, in the first
// slot. The keys before the slot it takes move down one: the slot is
// tag's own if the bucket has one, else the first empty one (left by
// clear), else the last, whose key is dropped.
func (b *hintBucket) put(tag uint16, hn hint) {
	at := b.find(tag)
	if at < 0 {
		at = b.find(0)
	}
	if at < 0 {
		at = hintWays - 1
	}
	copy(b.s[1:at+1], b.s[:at])
	b.s[0] = hn.slot(tag)
}
