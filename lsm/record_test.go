package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	big := randomValue("big", 5000)
	compressible := bytes.Repeat([]byte("tcache "), 1000)
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		c := newRecordCodec(codec, 256)
		for _, v := range [][]byte{nil, []byte("x"), big, compressible} {
			in := Record{Flags: 7, Exptime: 1e9, Time: 1e9 - 5, CAS: 42, Version: Version{HLC: 9, Node: 3},
				KeyBinary: true, Stale: true, Value: v}
			enc := c.appendRecord([]byte("prefix"), &in)
			var out Record
			if err := c.decodeRecord([]byte("dst:"), enc[6:], &out); err != nil {
				t.Fatalf("%v %d: %v", codec, len(v), err)
			}
			if string(out.Value) != "dst:"+string(v) || out.Flags != 7 || out.Exptime != 1e9 || out.Time != 1e9-5 ||
				out.CAS != 42 || out.Version != in.Version || !out.KeyBinary || !out.Stale || !out.Found {
				t.Fatalf("%v %d: round trip %+v", codec, len(v), out)
			}
			if codec != CodecNone && len(v) == len(compressible) && len(enc) > len(v)/2 {
				t.Fatalf("%v: compressible value not compressed (%d bytes)", codec, len(enc))
			}
			if len(v) == len(big) && len(enc)-6 != len(big)+recordOverhead {
				t.Fatalf("%v: incompressible value kept compressed (%d bytes)", codec, len(enc))
			}
			// Every single-bit flip is detected.
			for i := 0; i < len(enc)-6; i += 7 {
				bad := append([]byte(nil), enc[6:]...)
				bad[i] ^= 0x10
				if err := c.decodeRecord(nil, bad, &out); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%v: flip at %d: %v", codec, i, err)
				}
			}
		}
		c.close()
	}
}

// A run of incompressible values pauses the attempts, up to one in
// maxSkip+1; the first compressible value tried ends the pause, and every
// value still reads back.
func TestCompressSkip(t *testing.T) {
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		c := newRecordCodec(codec, 256)
		roundTrip := func(v []byte) bool { // reports whether v was stored compressed
			t.Helper()
			enc := c.appendRecord(nil, &Record{Value: v})
			var out Record
			if err := c.decodeRecord(nil, enc, &out); err != nil || !bytes.Equal(out.Value, v) {
				t.Fatalf("%v: round trip of %d bytes: %v", codec, len(v), err)
			}
			return enc[2] != byte(CodecNone)
		}
		const n = 1000
		for i := range n {
			roundTrip(randomValue(fmt.Sprint(i), 1024))
		}
		attempts := n - c.skipped.Load()
		// 8 before the first pause, then one per pause of 1, 2, 4, … 64.
		if attempts < skipAfter || attempts > skipAfter+7+(n-127)/(maxSkip+1)+1 {
			t.Fatalf("%v: %d attempts for %d incompressible values", codec, attempts, n)
		}
		compressible := bytes.Repeat([]byte("session data "), 100)
		stored := 0
		for !roundTrip(compressible) {
			if stored++; stored > maxSkip {
				t.Fatalf("%v: %d compressible values in a row stored uncompressed", codec, stored)
			}
		}
		for range 2 * maxSkip {
			if !roundTrip(compressible) {
				t.Fatalf("%v: a compressible value stored uncompressed after a success", codec)
			}
		}
		c.close()
	}
}

func FuzzDecodeRecord(f *testing.F) {
	c := newRecordCodec(CodecS2, 16)
	z := newRecordCodec(CodecZstd, 16)
	defer c.close()
	defer z.close()
	for _, v := range []string{"", "v", "a longer value that compresses, compresses, compresses"} {
		f.Add(c.appendRecord(nil, &Record{Value: []byte(v), CAS: 1}), []byte(v))
		f.Add(z.appendRecord(nil, &Record{Value: []byte(v), Exptime: 5}), []byte(v))
	}
	f.Fuzz(func(t *testing.T, data, value []byte) {
		var r Record
		_ = c.decodeRecord(nil, data, &r) // must not panic
		for _, codec := range []*recordCodec{c, z} {
			in := Record{Value: value, Flags: uint32(len(data)), CAS: uint64(len(value))}
			enc := codec.appendRecord(nil, &in)
			var out Record
			if err := codec.decodeRecord(nil, enc, &out); err != nil {
				t.Fatalf("decode(encode): %v", err)
			}
			if !bytes.Equal(out.Value, value) || out.Flags != in.Flags || out.CAS != in.CAS {
				t.Fatalf("round trip: %+v", out)
			}
		}
	})
}

func FuzzDecodeLogEntry(f *testing.F) {
	for _, e := range []LogEntry{
		{Op: LogPut, Time: 1, Version: Version{HLC: 2, Node: 3}, Key: []byte("key")},
		{Op: LogDelete, Key: []byte("k")},
		{Op: LogFlush, Flush: FlushMarker{OldestLive: 5, OldestCAS: 6}},
	} {
		f.Add(appendLogEntry(nil, &e), e.Key, uint8(e.Op))
	}
	f.Fuzz(func(t *testing.T, data, key []byte, op uint8) {
		var e LogEntry
		_ = decodeLogEntry(data, &e) // must not panic
		in := LogEntry{Op: LogOp(op%3 + 1), Time: int64(len(data)), Version: Version{HLC: uint64(op)}, Key: key}
		if in.Op == LogFlush {
			in.Key = nil
			in.Flush = FlushMarker{OldestLive: 9, OldestCAS: 10, Version: in.Version}
		}
		if len(in.Key) > maxLogKeyLen {
			return
		}
		if err := decodeLogEntry(appendLogEntry(nil, &in), &e); err != nil {
			t.Fatalf("decode(encode): %v", err)
		}
		if e.Op != in.Op || e.Time != in.Time || e.Version != in.Version || !bytes.Equal(e.Key, in.Key) || e.Flush != in.Flush {
			t.Fatalf("round trip: %+v, want %+v", e, in)
		}
	})
}
