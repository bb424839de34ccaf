package lsm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Record encoding (the value of a d key; doc.go draws it).
const (
	recordFormat = 1 // first byte of every record

	bitKeyBinary = 1 << 0
	bitStale     = 1 << 1
	knownBits    = bitKeyBinary | bitStale

	recordHeaderLen = 52 // format .. raw value length
	recordTrailer   = 4  // CRC-32C
	recordOverhead  = recordHeaderLen + recordTrailer

	// MaxValueSize bounds a value (memcached's -I cannot exceed 1 GiB).
	MaxValueSize = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordCodec encodes and decodes records. It is safe for concurrent use:
// the zstd encoder and decoder are shared (EncodeAll and DecodeAll may run
// concurrently), created once, not per call.
type recordCodec struct {
	codec Codec
	min   int // compress values of at least min bytes; < 0: never

	// A run of values that do not compress (random bytes, or values the
	// client compressed) pauses the attempts: after skipAfter failures in
	// a row, the next values are stored as they are without trying, one
	// after the first failure past it, then 2, 4, … up to maxSkip, so an
	// incompressible stream costs one attempt in maxSkip+1. A success ends
	// the run. The counters are shared by concurrent writers and updated
	// without a lock: a lost update only shifts when the next attempt
	// comes.
	misses  atomic.Uint32 // failed attempts in a row
	skip    atomic.Int32  // values still to store without an attempt
	skipped atomic.Uint64 // values stored without an attempt (tcache_disk_compress_skipped)

	zencOnce sync.Once
	zenc     *zstd.Encoder
	zdecOnce sync.Once
	zdec     *zstd.Decoder
}

func newRecordCodec(codec Codec, min int) *recordCodec {
	return &recordCodec{codec: codec, min: min}
}

func (c *recordCodec) encoder() *zstd.Encoder {
	c.zencOnce.Do(func() {
		// Errors are impossible with these options.
		c.zenc, _ = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithZeroFrames(true))
	})
	return c.zenc
}

func (c *recordCodec) decoder() *zstd.Decoder {
	c.zdecOnce.Do(func() {
		c.zdec, _ = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(MaxValueSize),
			zstd.IgnoreChecksum(true)) // the record has its own CRC
	})
	return c.zdec
}

// close releases the zstd encoder's and decoder's goroutines.
func (c *recordCodec) close() {
	if c.zenc != nil {
		_ = c.zenc.Close()
	}
	if c.zdec != nil {
		c.zdec.Close()
	}
}

// appendRecord appends the encoding of rec (with rec.Value) to dst: an
// item, or a tombstone when rec.Tombstone (no value, flags or expiry).
func (c *recordCodec) appendRecord(dst []byte, rec *Record) []byte {
	start := len(dst)
	if rec.Tombstone {
		return appendBareRecord(dst, KindTombstone, 0, rec.Time, 0, rec.Version)
	}
	var bits byte
	if rec.KeyBinary {
		bits |= bitKeyBinary
	}
	if rec.Stale {
		bits |= bitStale
	}
	dst = append(dst, recordFormat, byte(KindItem), byte(CodecNone), bits)
	dst = binary.BigEndian.AppendUint32(dst, rec.Flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(rec.Exptime))
	dst = binary.BigEndian.AppendUint64(dst, uint64(rec.Time))
	dst = binary.BigEndian.AppendUint64(dst, rec.CAS)
	dst = binary.BigEndian.AppendUint64(dst, rec.Version.HLC)
	dst = binary.BigEndian.AppendUint64(dst, rec.Version.Node)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(rec.Value)))
	body := len(dst)
	v := rec.Value
	if c.min >= 0 && len(v) >= c.min && c.codec != CodecNone && len(v) > 0 && c.try() {
		limit := len(v) - len(v)/8 // keep compressed only when it saves 1/8
		switch c.codec {
		case CodecS2:
			dst = slices.Grow(dst, s2.MaxEncodedLen(len(v)))
			out := s2.Encode(dst[body:cap(dst)], v)
			if len(out) <= limit {
				dst = dst[:body+len(out)]
				dst[start+2] = byte(CodecS2)
			}
			c.tried(len(out) <= limit)
		case CodecZstd:
			dst = slices.Grow(dst, len(v)+64)
			out := c.encoder().EncodeAll(v, dst[body:body])
			if len(out) <= limit {
				// out usually shares dst's array at body: the copy is then a no-op move.
				dst = append(dst[:body], out...)
				dst[start+2] = byte(CodecZstd)
			}
			c.tried(len(out) <= limit)
		}
	}
	if dst[start+2] == byte(CodecNone) {
		dst = append(dst[:body], v...)
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

const (
	skipAfter = 8  // failed attempts in a row before the first pause
	maxSkip   = 64 // the longest pause, in values
)

// try reports whether to attempt compressing the next eligible value
// (false: a pause after a run of failures; see recordCodec).
func (c *recordCodec) try() bool {
	if c.skip.Load() > 0 && c.skip.Add(-1) >= 0 {
		c.skipped.Add(1)
		return false
	}
	return true
}

// tried records the outcome of an attempt.
func (c *recordCodec) tried(saved bool) {
	if saved {
		if c.misses.Load() != 0 {
			c.misses.Store(0)
		}
		return
	}
	if m := c.misses.Add(1); m >= skipAfter {
		c.skip.Store(int32(min(1<<min(m-skipAfter, 31), maxSkip)))
	}
}

// recordHeader is the fixed part of a record.
type recordHeader struct {
	kind    RecordKind
	codec   Codec
	bits    byte
	flags   uint32
	exptime int64
	time    int64
	cas     uint64
	version Version
	rawLen  uint32
}

// parseRecordHeader checks the framing and the checksum of src and returns
// its header and its (possibly compressed) value bytes.
func parseRecordHeader(src []byte) (h recordHeader, body []byte, err error) {
	if len(src) < recordOverhead {
		return h, nil, fmt.Errorf("%w: %d bytes, below the %d-byte minimum", ErrCorrupt, len(src), recordOverhead)
	}
	n := len(src) - recordTrailer
	if got, want := crc32.Checksum(src[:n], castagnoli), binary.BigEndian.Uint32(src[n:]); got != want {
		return h, nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	if src[0] != recordFormat {
		return h, nil, fmt.Errorf("%w: format %d", ErrCorrupt, src[0])
	}
	h.kind = RecordKind(src[1])
	if h.kind < KindItem || h.kind > KindFlush {
		return h, nil, fmt.Errorf("%w: kind %d", ErrCorrupt, src[1])
	}
	h.codec = Codec(src[2])
	if h.codec > CodecZstd {
		return h, nil, fmt.Errorf("%w: codec %d", ErrCorrupt, src[2])
	}
	h.bits = src[3]
	if h.bits&^knownBits != 0 {
		return h, nil, fmt.Errorf("%w: flag bits %02x", ErrCorrupt, h.bits)
	}
	h.flags = binary.BigEndian.Uint32(src[4:])
	h.exptime = int64(binary.BigEndian.Uint64(src[8:]))
	h.time = int64(binary.BigEndian.Uint64(src[16:]))
	h.cas = binary.BigEndian.Uint64(src[24:])
	h.version.HLC = binary.BigEndian.Uint64(src[32:])
	h.version.Node = binary.BigEndian.Uint64(src[40:])
	h.rawLen = binary.BigEndian.Uint32(src[48:])
	body = src[recordHeaderLen:n]
	if h.rawLen > MaxValueSize {
		return h, nil, fmt.Errorf("%w: value length %d", ErrCorrupt, h.rawLen)
	}
	if h.codec == CodecNone && int(h.rawLen) != len(body) {
		return h, nil, fmt.Errorf("%w: value length %d, %d bytes stored", ErrCorrupt, h.rawLen, len(body))
	}
	if h.kind != KindItem && (len(body) != 0 || h.codec != CodecNone || h.bits != 0 || h.flags != 0) {
		return h, nil, fmt.Errorf("%w: %v record with a value", ErrCorrupt, h.kind)
	}
	return h, body, nil
}

// decodeRecord verifies src and fills rec, appending the value to dst
// (rec.Value). Every failure wraps ErrCorrupt. rec.Where is not touched.
func (c *recordCodec) decodeRecord(dst, src []byte, rec *Record) error {
	h, body, err := parseRecordHeader(src)
	if err != nil {
		return err
	}
	if h.kind == KindFlush {
		return fmt.Errorf("%w: a flush marker where an item was expected", ErrCorrupt)
	}
	start := len(dst)
	switch h.codec {
	case CodecNone:
		dst = append(dst, body...)
	case CodecS2:
		n, err := s2.DecodedLen(body)
		if err != nil || n != int(h.rawLen) {
			return fmt.Errorf("%w: s2 length %d (%v), want %d", ErrCorrupt, n, err, h.rawLen)
		}
		dst = slices.Grow(dst, n)
		out, err := s2.Decode(dst[start:start+n], body)
		if err != nil || len(out) != n {
			return fmt.Errorf("%w: s2: %v", ErrCorrupt, err)
		}
		dst = dst[:start+n]
	case CodecZstd:
		var zh zstd.Header
		// Small frames may omit the content size; the output length is
		// checked after decoding (the decoder's memory is bounded).
		if err := zh.Decode(body); err != nil || (zh.HasFCS && zh.FrameContentSize != uint64(h.rawLen)) {
			return fmt.Errorf("%w: zstd frame header (size %d, %v), want %d", ErrCorrupt, zh.FrameContentSize, err, h.rawLen)
		}
		dst = slices.Grow(dst, int(h.rawLen))
		out, err := c.decoder().DecodeAll(body, dst)
		if err != nil || len(out)-start != int(h.rawLen) {
			return fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		dst = out
	}
	*rec = Record{
		Found:     h.kind == KindItem,
		Tombstone: h.kind == KindTombstone,
		Flags:     h.flags,
		Exptime:   h.exptime,
		Time:      h.time,
		CAS:       h.cas,
		Version:   h.version,
		KeyBinary: h.bits&bitKeyBinary != 0,
		Stale:     h.bits&bitStale != 0,
		Value:     dst,
		Where:     rec.Where,
	}
	return nil
}

// RecordKind is what a record holds (byte 1 of the encoding).
type RecordKind uint8

const (
	KindItem      RecordKind = 1 // an item with its value
	KindTombstone RecordKind = 2 // a versioned delete (Options.Replicated)
	KindFlush     RecordKind = 3 // a flush_all marker (shipped, never stored in d)
)

func (k RecordKind) String() string {
	switch k {
	case KindItem:
		return "item"
	case KindTombstone:
		return "tombstone"
	case KindFlush:
		return "flush"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// RecordHeader is the fixed part of an encoded record, as ParseRecord
// reads it without decompressing the value.
type RecordHeader struct {
	Kind      RecordKind
	Flags     uint32
	Exptime   int64 // items: absolute unix seconds, 0 never; flush: OldestLive
	Time      int64 // unix seconds when written
	CAS       uint64
	Version   Version
	KeyBinary bool
	Stale     bool
	ValueLen  int // the value's length once decompressed
}

// ParseRecord checks the framing and checksum of an encoded record (an
// item, tombstone or flush marker: the bytes GetRaw, ReadLogRecords and
// Snapshot pass) and returns its header. It does not decompress the value:
// DecodeRecord does. Every failure wraps ErrCorrupt.
func ParseRecord(raw []byte) (RecordHeader, error) {
	h, _, err := parseRecordHeader(raw)
	if err != nil {
		return RecordHeader{}, err
	}
	return RecordHeader{
		Kind:      h.kind,
		Flags:     h.flags,
		Exptime:   h.exptime,
		Time:      h.time,
		CAS:       h.cas,
		Version:   h.version,
		KeyBinary: h.bits&bitKeyBinary != 0,
		Stale:     h.bits&bitStale != 0,
		ValueLen:  int(h.rawLen),
	}, nil
}

// plainCodec decodes records outside a DB (DecodeRecord); its zstd decoder
// is created on first use and shared.
var plainCodec = newRecordCodec(CodecNone, -1)

// DecodeRecord verifies raw (an item or a tombstone) and decodes it, the
// value decompressed and appended to dst. A tombstone decodes with Found
// false and Tombstone true. Every failure wraps ErrCorrupt.
func DecodeRecord(dst, raw []byte) (Record, error) {
	var rec Record
	err := plainCodec.decodeRecord(dst, raw, &rec)
	return rec, err
}

// AppendRecord appends the encoding of rec to dst, uncompressed: an item,
// or a tombstone when rec.Tombstone. Tests and tools use it; a DB
// compresses per its Options.
func AppendRecord(dst []byte, rec *Record) []byte { return plainCodec.appendRecord(dst, rec) }

// AppendFlushRecord appends m encoded as a flush record: the record
// framing (with its CRC) of kind flush, OldestLive in the exptime field and
// OldestCAS in the CAS field.
func AppendFlushRecord(dst []byte, m FlushMarker) []byte {
	return appendBareRecord(dst, KindFlush, m.OldestLive, 0, m.OldestCAS, m.Version)
}

// DecodeFlushRecord verifies and decodes a flush record. Failures wrap
// ErrCorrupt.
func DecodeFlushRecord(raw []byte) (FlushMarker, error) {
	h, _, err := parseRecordHeader(raw)
	if err != nil {
		return FlushMarker{}, err
	}
	if h.kind != KindFlush {
		return FlushMarker{}, fmt.Errorf("%w: a %v record where a flush marker was expected", ErrCorrupt, h.kind)
	}
	return FlushMarker{OldestLive: h.exptime, OldestCAS: h.cas, Version: h.version}, nil
}

// appendBareRecord appends a record without a value (a tombstone or a
// flush marker).
func appendBareRecord(dst []byte, kind RecordKind, exptime, when int64, cas uint64, v Version) []byte {
	start := len(dst)
	dst = append(dst, recordFormat, byte(kind), byte(CodecNone), 0)
	dst = binary.BigEndian.AppendUint32(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, uint64(exptime))
	dst = binary.BigEndian.AppendUint64(dst, uint64(when))
	dst = binary.BigEndian.AppendUint64(dst, cas)
	dst = binary.BigEndian.AppendUint64(dst, v.HLC)
	dst = binary.BigEndian.AppendUint64(dst, v.Node)
	dst = binary.BigEndian.AppendUint32(dst, 0)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// patchRecord rewrites the CAS (items) or the time (tombstones) of an
// encoded record in place and recomputes its checksum: an applied record
// keeps its stored (possibly compressed) value bytes.
func patchRecord(raw []byte, kind RecordKind, cas uint64, now int64) {
	switch kind {
	case KindItem:
		binary.BigEndian.PutUint64(raw[24:], cas)
	case KindTombstone:
		binary.BigEndian.PutUint64(raw[16:], uint64(now))
	}
	n := len(raw) - recordTrailer
	binary.BigEndian.PutUint32(raw[n:], crc32.Checksum(raw[:n], castagnoli))
}

// A journal reference is the value of a d key whose record is in the
// journal (cache mode, records of at least Options.JournalMin bytes;
// docs/disk-tier-next.md). It carries what the maintenance passes and
// the write path read without fetching the record (expiry, version) and
// the frame's location:
//
//	0      1         9        17       25        29       37       41
//	| fmt=2| exptime | ver HLC| ver node| segment | offset | length | CRC-32C |
//
// A record read through it must be the frame of the same key holding a
// record of the same version, or it is not served.
const (
	refFormat = 2
	refLen    = 1 + 8 + 16 + 4 + 8 + 4 + 4
)

// appendRef appends the reference to a record of (exptime, ver) at loc.
func appendRef(dst []byte, exptime int64, ver Version, loc JournalLoc) []byte {
	start := len(dst)
	dst = append(dst, refFormat)
	dst = binary.BigEndian.AppendUint64(dst, uint64(exptime))
	dst = binary.BigEndian.AppendUint64(dst, ver.HLC)
	dst = binary.BigEndian.AppendUint64(dst, ver.Node)
	dst = binary.BigEndian.AppendUint32(dst, loc.Segment)
	dst = binary.BigEndian.AppendUint64(dst, uint64(loc.Off))
	dst = binary.BigEndian.AppendUint32(dst, loc.Len)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func isRef(v []byte) bool { return len(v) > 0 && v[0] == refFormat }

// parseRef decodes a journal reference. Failures wrap ErrCorrupt.
func parseRef(src []byte) (exptime int64, ver Version, loc JournalLoc, err error) {
	if len(src) != refLen || src[0] != refFormat {
		return 0, ver, loc, fmt.Errorf("%w: journal reference of %d bytes", ErrCorrupt, len(src))
	}
	n := refLen - recordTrailer
	if got, want := crc32.Checksum(src[:n], castagnoli), binary.BigEndian.Uint32(src[n:]); got != want {
		return 0, ver, loc, fmt.Errorf("%w: journal reference checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	exptime = int64(binary.BigEndian.Uint64(src[1:]))
	ver = Version{HLC: binary.BigEndian.Uint64(src[9:]), Node: binary.BigEndian.Uint64(src[17:])}
	loc = JournalLoc{Segment: binary.BigEndian.Uint32(src[25:]), Off: int64(binary.BigEndian.Uint64(src[29:])),
		Len: binary.BigEndian.Uint32(src[37:])}
	if loc.Off < 0 || loc.Len < frameOverhead {
		return 0, ver, loc, fmt.Errorf("%w: journal reference to %+v", ErrCorrupt, loc)
	}
	return exptime, ver, loc, nil
}

// parseStored reads the header of a d value: a record (as
// parseRecordHeader), or a journal reference, whose header has the kind
// item, its exptime and version and nothing else, and whose location is
// returned with ref set.
func parseStored(v []byte) (h recordHeader, loc JournalLoc, ref bool, err error) {
	if !isRef(v) {
		h, _, err = parseRecordHeader(v)
		return h, loc, false, err
	}
	h.kind = KindItem
	h.exptime, h.version, loc, err = parseRef(v)
	return h, loc, true, err
}

// storedSize is the size a d value of key counts for in the item byte
// counters: the key and the record, wherever the record is.
func storedSize(key, v []byte) int64 {
	if isRef(v) && len(v) == refLen {
		return int64(binary.BigEndian.Uint32(v[37:])) - frameOverhead
	}
	return int64(len(key) + len(v))
}

// recordVersion is the version in an encoded record's header (zero when
// it is too short to have one); the record's checks are decodeRecord's.
func recordVersion(rec []byte) Version {
	if len(rec) < recordHeaderLen {
		return Version{}
	}
	return Version{HLC: binary.BigEndian.Uint64(rec[32:]), Node: binary.BigEndian.Uint64(rec[40:])}
}
