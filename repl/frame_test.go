package repl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
)

// encodeAll returns one frame of every type.
func encodeAll() []byte {
	var fb frameBuf
	h := helloMsg{version: protocolVersion, flags: helloFlagSecret, node: 7, history: 9, lastSeq: 11, now: 1_700_000_000_123}
	copy(h.nonce[:], "0123456789abcdef")
	fb.hello(&h)
	fb.auth(bytes.Repeat([]byte{0xAB}, macLen))
	fb.u64s(framePull, 9, 12)
	fb.stream(12, 40, []History{{ID: 9, FirstSeq: 1}, {ID: 10, FirstSeq: 30}})
	fb.u64s(frameResync, 10, 40)
	fb.entry(frameSnap, &Entry{Op: OpPut, Key: []byte("k"), Record: []byte("rec"), Millis: 5})
	fb.u64s(frameSnapEnd, 10, 40, 1)
	fb.entry(frameEntry, &Entry{Seq: 41, Op: OpDelete, Key: []byte("key"), Record: []byte("tomb"), Millis: 6})
	fb.entry(frameEntry, &Entry{Seq: 42, Op: OpFlush, Record: []byte("flush")})
	fb.u64s(frameProgress, 45)
	fb.u64s(frameHeartbeat, 45, 1234)
	fb.u64s(frameAck, 44)
	return fb.buf
}

func TestFrameRoundTrip(t *testing.T) {
	fr := newFrameReader(bytes.NewReader(encodeAll()), DefaultMaxRecordSize)
	var types []frameType
	for {
		ft, p, err := fr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, ft)
		if err := decodePayload(ft, p); err != nil {
			t.Fatalf("%s: %v", ft, err)
		}
		switch ft {
		case frameHello:
			var h helloMsg
			_ = h.decode(p)
			if h.node != 7 || h.history != 9 || h.lastSeq != 11 || h.now != 1_700_000_000_123 || h.flags != helloFlagSecret || string(h.nonce[:]) != "0123456789abcdef" {
				t.Fatalf("hello %+v", h)
			}
		case frameStream:
			var m streamMsg
			_ = m.decode(p)
			if m.from != 12 || m.lastSeq != 40 || !reflect.DeepEqual(m.histories, []History{{9, 1}, {10, 30}}) {
				t.Fatalf("stream %+v", m)
			}
		case frameEntry:
			var m entryMsg
			_ = m.decode(ft, p)
			if m.Seq == 41 && (m.Op != OpDelete || string(m.Key) != "key" || string(m.Record) != "tomb" || m.Millis != 6) {
				t.Fatalf("entry %+v", m)
			}
		}
	}
	want := []frameType{frameHello, frameAuth, framePull, frameStream, frameResync, frameSnap, frameSnapEnd, frameEntry, frameEntry, frameProgress, frameHeartbeat, frameAck}
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("types %v, want %v", types, want)
	}
}

// decodePayload decodes p as its type's message (what the link does).
func decodePayload(t frameType, p []byte) error {
	var a, b, c uint64
	switch t {
	case frameHello:
		var h helloMsg
		return h.decode(p)
	case frameAuth:
		if len(p) != macLen {
			return ErrProtocol
		}
	case framePull, frameResync:
		return decodeU64s(t, p, &a, &b)
	case frameStream:
		var m streamMsg
		return m.decode(p)
	case frameSnap, frameEntry:
		var m entryMsg
		return m.decode(t, p)
	case frameSnapEnd:
		return decodeU64s(t, p, &a, &b, &c)
	case frameProgress, frameAck:
		return decodeU64s(t, p, &a)
	case frameHeartbeat:
		return decodeU64s(t, p, &a, &b)
	}
	return nil
}

func TestFrameErrors(t *testing.T) {
	good := encodeAll()
	first := int(binary.BigEndian.Uint32(good)) + frameHeaderLen - 1 + frameTrailerLen
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"torn header", good[:3], io.ErrUnexpectedEOF},
		{"torn payload", good[:first-1], io.ErrUnexpectedEOF},
		{"bad crc", func() []byte { b := bytes.Clone(good[:first]); b[10] ^= 1; return b }(), ErrChecksum},
		{"too large", []byte{0x01, 0, 0, 0, byte(frameEntry)}, ErrFrameTooLarge},
		{"zero len", []byte{0, 0, 0, 0, byte(frameEntry)}, ErrFrameTooLarge},
		{"unknown type", []byte{0, 0, 0, 1, 99, 0, 0, 0, 0}, ErrProtocol},
		{"memcached client", []byte("get foo\r\n"), ErrFrameTooLarge},
	}
	for _, tt := range tests {
		fr := newFrameReader(bytes.NewReader(tt.in), DefaultMaxRecordSize)
		if _, _, err := fr.next(); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
	var m entryMsg
	for name, p := range map[string][]byte{
		"short":        {1, 2, 3},
		"key overruns": append(make([]byte, 17), 0xFF, 0xFF),
		"seq 0": func() []byte {
			var fb frameBuf
			fb.entry(frameEntry, &Entry{Op: OpPut, Key: []byte("k"), Record: []byte("r")})
			return fb.buf[frameHeaderLen : len(fb.buf)-frameTrailerLen]
		}(),
	} {
		if err := m.decode(frameEntry, p); !errors.Is(err, ErrProtocol) {
			t.Errorf("entry %s: %v", name, err)
		}
	}
}

// TestFrameNoAllocs: encoding into a reused buffer and reading frames of a
// size already seen do not allocate.
func TestFrameNoAllocs(t *testing.T) {
	e := Entry{Seq: 1, Op: OpPut, Key: []byte("key"), Record: bytes.Repeat([]byte("v"), 1000)}
	var fb frameBuf
	fb.entry(frameEntry, &e)
	one := bytes.Clone(fb.buf)
	src := bytes.Repeat(one, 64)
	r := bytes.NewReader(src)
	fr := newFrameReader(r, DefaultMaxRecordSize)
	var m entryMsg
	allocs := testing.AllocsPerRun(1000, func() {
		fb.reset()
		fb.entry(frameEntry, &e)
		fb.u64s(frameAck, 1)
		if r.Len() == 0 {
			r.Reset(src)
		}
		ft, p, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.decode(ft, p); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}

func BenchmarkFrameEntry(b *testing.B) {
	e := Entry{Seq: 1, Op: OpPut, Key: []byte("key:000000001"), Record: bytes.Repeat([]byte("v"), 100)}
	var fb frameBuf
	b.ReportAllocs()
	for b.Loop() {
		fb.reset()
		fb.entry(frameEntry, &e)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	all := encodeAll()
	f.Add(all)
	f.Add(all[:40])
	f.Add([]byte("get foo\r\n"))
	f.Add([]byte{0, 0, 0, 1, 8, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := newFrameReader(bytes.NewReader(in), 1<<10)
		for {
			ft, p, err := fr.next()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrFrameTooLarge) &&
					!errors.Is(err, ErrChecksum) && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if ft == 0 || ft >= frameTypeLimit || len(p) > maxFrameLen(1<<10) {
				t.Fatalf("bad frame accepted: %s of %d bytes", ft, len(p))
			}
			if err := decodePayload(ft, p); err != nil && !errors.Is(err, ErrProtocol) {
				t.Fatalf("decode %s: unwrapped error %v", ft, err)
			}
		}
	})
}
