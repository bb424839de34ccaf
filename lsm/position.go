package lsm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Position entries (docs/keydir.md): in cache mode, Pebble keeps one entry
// per journal frame, keyed by the frame's position, from which Open
// rebuilds the keydir. Frames are appended in order, so a sealed
// segment's entries are already sorted: one sstable that nothing older
// overlaps, ingested into the last level and never compacted.
//
//	key:   's' segment(u32 BE) offset(u32 BE)
//	value: format(u8)=1 kind(u8) frame-length(u32) exptime(u64)
//	       hlc(u64) node(u64) key-length(uvarint) key crc32c(u32)
//
// The kind says what the frame does to its key when the keydir is
// rebuilt: an item or a tombstone becomes the key's entry, a delete
// removes it. exptime is an item's expiry (0: none) or a tombstone's
// time; the version is the record's, for the flush marker's bound.
const (
	prefixPos    = 's'
	posFormat    = 1
	posFixedLen  = 1 + 1 + 4 + 8 + 8 + 8 // format kind length exptime hlc node
	posKeyLen    = 1 + 4 + 4
	maxPosKeyLen = maxJournalKey
)

// posKind is what a frame does to its key.
type posKind uint8

const (
	posItem      posKind = iota + 1 // the key's record is this item
	posTombstone                    // the key's record is this tombstone (Options.Replicated)
	posDelete                       // the key has no record (a plain delete)
)

// posEntry is a decoded position entry; key aliases the value it was
// decoded from.
type posEntry struct {
	loc     JournalLoc
	kind    posKind
	exptime int64
	version Version
	key     []byte
}

// appendPosKey appends the s key of the frame at loc.
func appendPosKey(dst []byte, loc JournalLoc) []byte {
	dst = append(dst, prefixPos)
	dst = binary.BigEndian.AppendUint32(dst, loc.Segment)
	return binary.BigEndian.AppendUint32(dst, uint32(loc.Off))
}

// posSegmentPrefix is the start of segment seg's s span;
// posSegmentPrefix(seg+1) ends it.
func posSegmentPrefix(seg uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixPos}, seg)
}

// appendPosValue appends the value of e's position entry.
func appendPosValue(dst []byte, e *posEntry) []byte {
	start := len(dst)
	dst = append(dst, posFormat, byte(e.kind))
	dst = binary.BigEndian.AppendUint32(dst, e.loc.Len)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.exptime))
	dst = binary.BigEndian.AppendUint64(dst, e.version.HLC)
	dst = binary.BigEndian.AppendUint64(dst, e.version.Node)
	dst = binary.AppendUvarint(dst, uint64(len(e.key)))
	dst = append(dst, e.key...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// decodePos parses the position entry k → v into e (e.key aliases v).
// Failures wrap ErrCorrupt.
func decodePos(k, v []byte, e *posEntry) error {
	if len(k) != posKeyLen || k[0] != prefixPos {
		return fmt.Errorf("%w: position key of %d bytes", ErrCorrupt, len(k))
	}
	n, err := checkEntry(v, posFixedLen+1, posFormat, "position entry")
	if err != nil {
		return err
	}
	*e = posEntry{
		loc: JournalLoc{Segment: binary.BigEndian.Uint32(k[1:]), Off: int64(binary.BigEndian.Uint32(k[5:])),
			Len: binary.BigEndian.Uint32(v[2:])},
		kind:    posKind(v[1]),
		exptime: int64(binary.BigEndian.Uint64(v[6:])),
		version: Version{HLC: binary.BigEndian.Uint64(v[14:]), Node: binary.BigEndian.Uint64(v[22:])},
	}
	if e.kind < posItem || e.kind > posDelete {
		return fmt.Errorf("%w: position entry kind %d", ErrCorrupt, e.kind)
	}
	if e.loc.Len < frameOverhead || !fitsKeydir(e.loc) {
		return fmt.Errorf("%w: position entry of frame %+v, exptime %d", ErrCorrupt, e.loc, e.exptime)
	}
	p := v[posFixedLen:n]
	kl, w := binary.Uvarint(p)
	if w <= 0 || kl == 0 || kl > maxPosKeyLen || uint64(len(p)-w) != kl {
		return fmt.Errorf("%w: position entry key length", ErrCorrupt)
	}
	e.key = p[w:]
	return nil
}
