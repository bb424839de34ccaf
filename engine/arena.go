package engine

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/tcache/tcache/internal/offheap"
)

// arena is the off-heap memory of an engine: one anonymous private mapping
// of MemoryLimit bytes, carved into the rings of every shard. The kernel
// backs a page only when it is first written, so resident memory grows with
// use while the Go heap holds nothing but the slice header.
type arena struct {
	mem []byte
}

func newArena(size int64) (*arena, error) {
	if size <= 0 {
		return &arena{}, nil
	}
	mem, err := offheap.Map(int(size)) // huge pages: a get touches a record at a random place
	if err != nil {
		return nil, fmt.Errorf("engine: mmap %d bytes: %w", size, err)
	}
	return &arena{mem: mem}, nil
}

func (a *arena) free() error {
	if a.mem == nil {
		return nil
	}
	err := syscall.Munmap(a.mem)
	a.mem = nil
	if err != nil {
		return fmt.Errorf("engine: munmap: %w", err)
	}
	return nil
}

// ring is an append-only log of records over a deque of fixed-size chunks
// of the arena. Positions are logical, monotonically increasing byte
// offsets; the chunk at deque slot (first+i) holds positions
// [base+i*cs, base+(i+1)*cs). The live window is [head, tail); a chunk goes
// back to the shard's free list once head has passed it, and the tail takes
// chunks from that list, so the two rings of a shard share its memory.
// Records may straddle chunks; the helpers below copy piecewise.
//
// A ring is owned by a shard and guarded by the shard's mutex.
type ring struct {
	mem   []byte  // the whole arena; chunk id c is mem[c*cs:(c+1)*cs]
	cs    uint64  // chunk size
	ids   []int32 // circular deque of chunk ids; len = the shard's chunk count
	first int     // deque slot of the chunk starting at base
	n     int     // chunks held
	base  uint64  // logical position of the start of ids[first]; multiple of cs
	head  uint64  // oldest byte still in the log
	tail  uint64  // next byte to write
	// reclaim says the ring may hold something for the crawler to
	// reclaim (crawler.go): it is set when a record with an expiry time
	// is written or moved into the ring, when a record is stored already
	// flushed (in the second a flush_all takes effect), and by the
	// crawler when it meets a live record with an expiry time.
	reclaim bool
}

func (r *ring) used() uint64 { return r.tail - r.head }

// span returns the arena bytes from pos to the end of pos's chunk.
func (r *ring) span(pos uint64) []byte {
	ci := int((pos - r.base) / r.cs)
	id := uint64(r.ids[(r.first+ci)%len(r.ids)])
	start := id * r.cs
	return r.mem[start+pos%r.cs : start+r.cs]
}

// read copies len(dst) bytes at logical position pos into dst.
func (r *ring) read(pos uint64, dst []byte) {
	for len(dst) > 0 {
		k := copy(dst, r.span(pos))
		dst = dst[k:]
		pos += uint64(k)
	}
}

// write copies src to logical position pos.
func (r *ring) write(pos uint64, src []byte) {
	for len(src) > 0 {
		k := copy(r.span(pos), src)
		src = src[k:]
		pos += uint64(k)
	}
}

// appendTo appends the n bytes at pos to dst.
func (r *ring) appendTo(dst []byte, pos uint64, n int) []byte {
	for n > 0 {
		sp := r.span(pos)
		k := min(n, len(sp))
		dst = append(dst, sp[:k]...)
		n -= k
		pos += uint64(k)
	}
	return dst
}

// equal reports whether the bytes at pos equal b.
func (r *ring) equal(pos uint64, b []byte) bool {
	for len(b) > 0 {
		sp := r.span(pos)
		k := min(len(b), len(sp))
		if string(sp[:k]) != string(b[:k]) {
			return false
		}
		b = b[k:]
		pos += uint64(k)
	}
	return true
}

// at returns the byte at pos.
func (r *ring) at(pos uint64) byte { return r.span(pos)[0] }

// setByte writes one byte at pos.
func (r *ring) setByte(pos uint64, c byte) { r.span(pos)[0] = c }

// fill writes n copies of c at pos.
func (r *ring) fill(pos uint64, n int, c byte) {
	for i := 0; i < n; i++ {
		r.setByte(pos+uint64(i), c)
	}
}

// chunksNeeded is how many more chunks appending n bytes requires.
func (r *ring) chunksNeeded(n uint64) int {
	end := r.tail + n
	need := int((end-r.base+r.cs-1)/r.cs) - r.n
	return max(need, 0)
}

// copyRecord copies n bytes from position src of ring from to position dst
// of ring to. The two ranges must be distinct logical ranges held by the
// rings (so they never share arena bytes).
func copyRecord(to *ring, dst uint64, from *ring, src uint64, n uint64) {
	for n > 0 {
		s := from.span(src)
		d := to.span(dst)
		k := min(n, uint64(len(s)), uint64(len(d)))
		copy(d[:k], s[:k])
		src += k
		dst += k
		n -= k
	}
}

// Record header. See doc.go for the diagram.
const (
	hdrSize = 28

	hdrValueLen = 0  // u32
	hdrKeyLen   = 4  // u8
	hdrBits     = 5  // u8
	hdrExt      = 6  // u16 extension marks (extLoc)
	hdrFlags    = 8  // u32 client flags
	hdrExptime  = 12 // u32 relative time, 0 = never
	hdrTime     = 16 // u32 relative time of last access/store
	hdrCAS      = 20 // u64
)

// Bits of the header's bits byte.
const (
	bitFreqMask = 0x03 // S3-FIFO access frequency, 0..3
	bitFetched  = 0x04 // fetched at least once (memcached ITEM_FETCHED)
	bitActive   = 0x08 // fetched twice (memcached ITEM_ACTIVE)
	bitStale    = 0x10 // invalidated by ms I / md I (memcached ITEM_STALE)
	bitWinSent  = 0x20 // a win token was handed out (memcached ITEM_TOKEN_SENT)
	bitDead     = 0x40 // unlinked; skipped by eviction and the crawler
	// bitKeyBinary: stored by a meta command with a base64 key (memcached
	// ITEM_KEY_BINARY); mg k and me print the key base64-encoded.
	bitKeyBinary = 0x80
)

// header is the decoded fixed part of a record.
type header struct {
	valueLen uint32
	keyLen   uint8
	bits     uint8
	// ext holds extension marks (extLoc); 0 in memory mode.
	ext     uint16
	flags   uint32
	exptime uint32
	time    uint32
	cas     uint64

	// loc is the disk location, present when ext&extLoc: where the item's
	// record is on disk, so that overwriting a RAM-resident key needs no
	// disk read. Not part of the 28 encoded bytes: it follows them, before
	// the key (see doc.go), and is read and written by the tier.
	loc diskLoc
}

// diskLoc is the 8-byte location of a RAM record in disk mode:
// the lsm epoch and on-disk size of the item's current record (its expiry
// is the header's).
type diskLoc struct {
	epoch, size uint32
}

const (
	// extLoc marks a record whose header is followed by a diskLoc.
	extLoc  = 0x0001
	locSize = 8
)

func (h *header) size() uint64 {
	n := hdrSize + uint64(h.keyLen) + uint64(h.valueLen)
	if h.ext&extLoc != 0 {
		n += locSize
	}
	return n
}

func (h *header) encode(b *[hdrSize]byte) {
	binary.LittleEndian.PutUint32(b[hdrValueLen:], h.valueLen)
	b[hdrKeyLen] = h.keyLen
	b[hdrBits] = h.bits
	binary.LittleEndian.PutUint16(b[hdrExt:], h.ext)
	binary.LittleEndian.PutUint32(b[hdrFlags:], h.flags)
	binary.LittleEndian.PutUint32(b[hdrExptime:], h.exptime)
	binary.LittleEndian.PutUint32(b[hdrTime:], h.time)
	binary.LittleEndian.PutUint64(b[hdrCAS:], h.cas)
}

func (h *header) decode(b *[hdrSize]byte) {
	h.valueLen = binary.LittleEndian.Uint32(b[hdrValueLen:])
	h.keyLen = b[hdrKeyLen]
	h.bits = b[hdrBits]
	h.ext = binary.LittleEndian.Uint16(b[hdrExt:])
	h.flags = binary.LittleEndian.Uint32(b[hdrFlags:])
	h.exptime = binary.LittleEndian.Uint32(b[hdrExptime:])
	h.time = binary.LittleEndian.Uint32(b[hdrTime:])
	h.cas = binary.LittleEndian.Uint64(b[hdrCAS:])
}

func (r *ring) readHeader(pos uint64, h *header) {
	var b [hdrSize]byte
	r.read(pos, b[:])
	h.decode(&b)
}

// keyOff is the offset of the key in the record: after the header and
// the location, when there is one.
func (h *header) keyOff() uint64 {
	if h.ext&extLoc != 0 {
		return hdrSize + locSize
	}
	return hdrSize
}

// locPos is the position of the location of the record at pos, right
// after its header: an overwrite reads it with the header, from the line
// the key lookup already brought into the cache (after the value, it was a
// cache miss of its own for values of a few hundred bytes or more).
func (h *header) locPos(pos uint64) uint64 {
	return pos + hdrSize
}

func (r *ring) readLoc(pos uint64, h *header) {
	var b [locSize]byte
	r.read(h.locPos(pos), b[:])
	h.loc.epoch = binary.LittleEndian.Uint32(b[0:])
	h.loc.size = binary.LittleEndian.Uint32(b[4:])
}

func (r *ring) writeLoc(pos uint64, h *header) {
	var b [locSize]byte
	binary.LittleEndian.PutUint32(b[0:], h.loc.epoch)
	binary.LittleEndian.PutUint32(b[4:], h.loc.size)
	r.write(h.locPos(pos), b[:])
}

func (r *ring) writeHeader(pos uint64, h *header) {
	if h.exptime != 0 {
		r.reclaim = true
	}
	var b [hdrSize]byte
	h.encode(&b)
	r.write(pos, b[:])
}
