package repl

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// frameType is the type byte of a frame (see doc.go for the layouts).
type frameType uint8

const (
	frameHello     frameType = 1
	frameAuth      frameType = 2
	framePull      frameType = 3
	frameStream    frameType = 4
	frameResync    frameType = 5
	frameSnap      frameType = 6
	frameSnapEnd   frameType = 7
	frameEntry     frameType = 8
	frameProgress  frameType = 9
	frameHeartbeat frameType = 10
	frameAck       frameType = 11
	frameTypeLimit frameType = 12 // one past the last known type
)

var frameNames = [...]string{"?", "HELLO", "AUTH", "PULL", "STREAM", "RESYNC", "SNAP", "SNAP_END", "ENTRY", "PROGRESS", "HEARTBEAT", "ACK"}

func (t frameType) String() string {
	if t > 0 && t < frameTypeLimit {
		return frameNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

const (
	frameHeaderLen  = 5 // len u32 + type u8
	frameTrailerLen = 4 // crc32c u32

	// protocolVersion is the version carried in HELLO. 2 added the
	// sender's wall clock to HELLO (the max clock skew check); a HELLO of
	// another version is refused with an error naming both.
	protocolVersion = 2

	// frameOverhead bounds everything in a frame but the record: the
	// fixed ENTRY fields and a key of at most maxKeyLen bytes.
	frameOverhead = 64 + maxKeyLen
	// maxKeyLen is the largest key a frame carries (its length is a u16).
	maxKeyLen = 1<<16 - 1
	// maxHistories bounds the history list of a STREAM frame.
	maxHistories = 4096

	helloLen = 4 + 1 + 1 + 8 + nonceLen + 8 + 8 + 8
	nonceLen = 16
	macLen   = 32
)

// helloMagic opens every HELLO payload.
var helloMagic = [4]byte{'T', 'C', 'R', 'P'}

// crcTable is CRC-32C (Castagnoli), read-only after package initialisation.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Errors of the link. Every error that closes a link wraps one of them.
var (
	ErrFrameTooLarge = errors.New("repl: frame too large")
	ErrChecksum      = errors.New("repl: frame checksum mismatch")
	ErrProtocol      = errors.New("repl: protocol violation")
	ErrAuth          = errors.New("repl: authentication failed")
	ErrSelfLink      = errors.New("repl: peer is this node")
	ErrDuplicatePeer = errors.New("repl: another link to this peer is active")
	ErrClockSkew     = errors.New("repl: peer clock offset beyond the max clock skew")
	ErrClosed        = errors.New("repl: closed")
)

// maxFrameLen is the largest value of a frame's len field (type + payload)
// for a given largest record.
func maxFrameLen(maxRecord int) int { return maxRecord + frameOverhead }

// frameReader reads frames from a stream. The payload it returns is valid
// until the next call to next; its buffer grows to the largest frame seen
// (bounded by max) and is then reused, so steady-state reading does not
// allocate.
type frameReader struct {
	r   *bufio.Reader
	max int // largest accepted len field
	hdr [frameHeaderLen]byte
	buf []byte // payload + crc of the current frame
}

func newFrameReader(r io.Reader, maxRecord int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10), max: maxFrameLen(maxRecord)}
}

// next reads one frame. io.EOF means the stream ended cleanly between
// frames; a torn frame is io.ErrUnexpectedEOF.
func (fr *frameReader) next() (frameType, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(fr.hdr[:4]))
	t := frameType(fr.hdr[4])
	if n < 1 || n > fr.max {
		return 0, nil, fmt.Errorf("%w: len %d (limit %d)", ErrFrameTooLarge, n, fr.max)
	}
	if t == 0 || t >= frameTypeLimit {
		return 0, nil, fmt.Errorf("%w: unknown frame type %d", ErrProtocol, uint8(t))
	}
	need := n - 1 + frameTrailerLen
	if cap(fr.buf) < need {
		fr.buf = make([]byte, need)
	}
	b := fr.buf[:need]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	payload := b[:n-1]
	want := binary.BigEndian.Uint32(b[n-1:])
	crc := crc32.Update(crc32.Update(0, crcTable, fr.hdr[4:5]), crcTable, payload)
	if crc != want {
		return 0, nil, fmt.Errorf("%w: %s frame", ErrChecksum, t)
	}
	return t, payload, nil
}

// frameBuf accumulates encoded frames; the owner writes buf out and resets
// it with buf = buf[:0], so the backing array is reused.
type frameBuf struct {
	buf   []byte
	start int // offset of the frame being built
}

func (f *frameBuf) begin(t frameType) {
	f.start = len(f.buf)
	f.buf = append(f.buf, 0, 0, 0, 0, byte(t))
}

func (f *frameBuf) end() {
	body := f.buf[f.start+4:]
	binary.BigEndian.PutUint32(f.buf[f.start:], uint32(len(body)))
	f.buf = binary.BigEndian.AppendUint32(f.buf, crc32.Checksum(body, crcTable))
}

func (f *frameBuf) reset() { f.buf = f.buf[:0] }

// Message payloads. All integers are big-endian.

// helloMsg: magic[4] version u8 flags u8 node u64 nonce[16] history u64
// lastSeq u64 now u64 (history and lastSeq are 0 from a puller; now is the
// sender's wall clock in unix ms when it sent the HELLO).
type helloMsg struct {
	version uint8
	flags   uint8
	node    uint64
	nonce   [nonceLen]byte
	history uint64
	lastSeq uint64
	now     uint64
}

const helloFlagSecret = 1 // the sender has a secret and requires AUTH

func (f *frameBuf) hello(m *helloMsg) {
	f.begin(frameHello)
	f.buf = append(f.buf, helloMagic[:]...)
	f.buf = append(f.buf, m.version, m.flags)
	f.buf = binary.BigEndian.AppendUint64(f.buf, m.node)
	f.buf = append(f.buf, m.nonce[:]...)
	f.buf = binary.BigEndian.AppendUint64(f.buf, m.history)
	f.buf = binary.BigEndian.AppendUint64(f.buf, m.lastSeq)
	f.buf = binary.BigEndian.AppendUint64(f.buf, m.now)
	f.end()
}

func (m *helloMsg) decode(p []byte) error {
	// The version is checked before the length: a HELLO of another
	// version has another length, and the error should say which.
	if len(p) < 5 || [4]byte(p[:4]) != helloMagic {
		return fmt.Errorf("%w: not a HELLO", ErrProtocol)
	}
	if m.version = p[4]; m.version != protocolVersion {
		return fmt.Errorf("%w: protocol version %d, want %d (every node of a mesh must run the same replication protocol)", ErrProtocol, m.version, protocolVersion)
	}
	if len(p) != helloLen {
		return fmt.Errorf("%w: not a HELLO", ErrProtocol)
	}
	m.flags = p[5]
	m.node = binary.BigEndian.Uint64(p[6:])
	copy(m.nonce[:], p[14:14+nonceLen])
	m.history = binary.BigEndian.Uint64(p[30:])
	m.lastSeq = binary.BigEndian.Uint64(p[38:])
	m.now = binary.BigEndian.Uint64(p[46:])
	if m.node == 0 {
		return fmt.Errorf("%w: node id 0", ErrProtocol)
	}
	return nil
}

func (f *frameBuf) auth(mac []byte) {
	f.begin(frameAuth)
	f.buf = append(f.buf, mac...)
	f.end()
}

// u64s appends a frame whose payload is the given integers.
func (f *frameBuf) u64s(t frameType, v ...uint64) {
	f.begin(t)
	for _, x := range v {
		f.buf = binary.BigEndian.AppendUint64(f.buf, x)
	}
	f.end()
}

// decodeU64s decodes a payload of exactly len(dst) integers.
func decodeU64s(t frameType, p []byte, dst ...*uint64) error {
	if len(p) != 8*len(dst) {
		return fmt.Errorf("%w: %s payload of %d bytes, want %d", ErrProtocol, t, len(p), 8*len(dst))
	}
	for i, d := range dst {
		*d = binary.BigEndian.Uint64(p[8*i:])
	}
	return nil
}

// streamMsg: from u64 lastSeq u64 count u32 then count × (history u64,
// firstSeq u64): the histories that hold from and every later seq, oldest
// first.
type streamMsg struct {
	from, lastSeq uint64
	histories     []History // reused across decodes
}

func (f *frameBuf) stream(from, lastSeq uint64, hs []History) {
	f.begin(frameStream)
	f.buf = binary.BigEndian.AppendUint64(f.buf, from)
	f.buf = binary.BigEndian.AppendUint64(f.buf, lastSeq)
	f.buf = binary.BigEndian.AppendUint32(f.buf, uint32(len(hs)))
	for _, h := range hs {
		f.buf = binary.BigEndian.AppendUint64(f.buf, h.ID)
		f.buf = binary.BigEndian.AppendUint64(f.buf, h.FirstSeq)
	}
	f.end()
}

func (m *streamMsg) decode(p []byte) error {
	if len(p) < 20 {
		return fmt.Errorf("%w: short STREAM", ErrProtocol)
	}
	m.from = binary.BigEndian.Uint64(p)
	m.lastSeq = binary.BigEndian.Uint64(p[8:])
	n := binary.BigEndian.Uint32(p[16:])
	p = p[20:]
	if n == 0 || n > maxHistories || uint64(len(p)) != 16*uint64(n) {
		return fmt.Errorf("%w: STREAM with %d histories in %d bytes", ErrProtocol, n, len(p))
	}
	m.histories = m.histories[:0]
	for i := 0; i < int(n); i++ {
		h := History{ID: binary.BigEndian.Uint64(p[16*i:]), FirstSeq: binary.BigEndian.Uint64(p[16*i+8:])}
		if i > 0 && h.FirstSeq <= m.histories[i-1].FirstSeq {
			return fmt.Errorf("%w: STREAM histories out of order", ErrProtocol)
		}
		m.histories = append(m.histories, h)
	}
	if m.from == 0 || m.histories[0].FirstSeq > m.from {
		return fmt.Errorf("%w: STREAM from %d not covered by its histories", ErrProtocol, m.from)
	}
	return nil
}

// entryMsg is the payload of ENTRY and SNAP: seq u64 op u8 millis u64
// keyLen u16 key record. seq is 0 in SNAP. Key and Record alias the frame.
type entryMsg struct {
	Entry
	millis uint64
}

func (f *frameBuf) entry(t frameType, e *Entry) {
	f.begin(t)
	f.buf = binary.BigEndian.AppendUint64(f.buf, e.Seq)
	f.buf = append(f.buf, byte(e.Op))
	f.buf = binary.BigEndian.AppendUint64(f.buf, e.Millis)
	f.buf = binary.BigEndian.AppendUint16(f.buf, uint16(len(e.Key)))
	f.buf = append(f.buf, e.Key...)
	f.buf = append(f.buf, e.Record...)
	f.end()
}

func (m *entryMsg) decode(t frameType, p []byte) error {
	if len(p) < 19 {
		return fmt.Errorf("%w: short %s", ErrProtocol, t)
	}
	m.Seq = binary.BigEndian.Uint64(p)
	m.Op = Op(p[8])
	m.Millis = binary.BigEndian.Uint64(p[9:])
	kl := int(binary.BigEndian.Uint16(p[17:]))
	p = p[19:]
	if kl > len(p) {
		return fmt.Errorf("%w: %s key overruns the frame", ErrProtocol, t)
	}
	m.Key, m.Record = p[:kl:kl], p[kl:]
	switch {
	case m.Op < OpPut || m.Op > OpFlush:
		return fmt.Errorf("%w: %s with op %d", ErrProtocol, t, m.Op)
	case t == frameEntry && m.Seq == 0:
		return fmt.Errorf("%w: ENTRY with seq 0", ErrProtocol)
	case t == frameSnap && m.Seq != 0:
		return fmt.Errorf("%w: SNAP with seq %d", ErrProtocol, m.Seq)
	case len(m.Record) == 0:
		return fmt.Errorf("%w: %s without a record", ErrProtocol, t)
	}
	return nil
}

// entryFrameLen is the len field an ENTRY or SNAP of e would have.
func entryFrameLen(e *Entry) int { return 1 + 19 + len(e.Key) + len(e.Record) }
