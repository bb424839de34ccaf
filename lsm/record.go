package lsm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Record encoding (the value of a d key; doc.go draws it).
const (
	recordFormat = 1 // first byte of every record
	kindItem     = 1 // an item; kindTombstone (a versioned delete) arrives with replication

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

// appendRecord appends the encoding of rec (with rec.Value) to dst.
func (c *recordCodec) appendRecord(dst []byte, rec *Record) []byte {
	start := len(dst)
	var bits byte
	if rec.KeyBinary {
		bits |= bitKeyBinary
	}
	if rec.Stale {
		bits |= bitStale
	}
	dst = append(dst, recordFormat, kindItem, byte(CodecNone), bits)
	dst = binary.BigEndian.AppendUint32(dst, rec.Flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(rec.Exptime))
	dst = binary.BigEndian.AppendUint64(dst, uint64(rec.Time))
	dst = binary.BigEndian.AppendUint64(dst, rec.CAS)
	dst = binary.BigEndian.AppendUint64(dst, rec.Version.HLC)
	dst = binary.BigEndian.AppendUint64(dst, rec.Version.Node)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(rec.Value)))
	body := len(dst)
	v := rec.Value
	if c.min >= 0 && len(v) >= c.min && c.codec != CodecNone && len(v) > 0 {
		limit := len(v) - len(v)/8 // keep compressed only when it saves 1/8
		switch c.codec {
		case CodecS2:
			dst = slices.Grow(dst, s2.MaxEncodedLen(len(v)))
			out := s2.Encode(dst[body:cap(dst)], v)
			if len(out) <= limit {
				dst = dst[:body+len(out)]
				dst[start+2] = byte(CodecS2)
			}
		case CodecZstd:
			dst = slices.Grow(dst, len(v)+64)
			out := c.encoder().EncodeAll(v, dst[body:body])
			if len(out) <= limit {
				// out usually shares dst's array at body: the copy is then a no-op move.
				dst = append(dst[:body], out...)
				dst[start+2] = byte(CodecZstd)
			}
		}
	}
	if dst[start+2] == byte(CodecNone) {
		dst = append(dst[:body], v...)
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// recordHeader is the fixed part of a record.
type recordHeader struct {
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
	if src[1] != kindItem {
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
	return h, body, nil
}

// decodeRecord verifies src and fills rec, appending the value to dst
// (rec.Value). Every failure wraps ErrCorrupt. rec.Where is not touched.
func (c *recordCodec) decodeRecord(dst, src []byte, rec *Record) error {
	h, body, err := parseRecordHeader(src)
	if err != nil {
		return err
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
		Found:     true,
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
