package lsm

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzMetadata: any bytes as the value of an m key (the format marker, a
// u64 counter, the flush marker, the epoch table, the history list) decode
// to an error or to a value that encodes to the same bytes; nothing
// panics. Errors of all but the format marker wrap ErrCorrupt (a foreign
// format marker is refused at Open with its own message).
func FuzzMetadata(f *testing.F) {
	f.Add(byte(0), encodeFormat(formatVersion))
	f.Add(byte(1), u64(42))
	f.Add(byte(2), encodeFlushMarker(FlushMarker{OldestLive: 1e9, OldestCAS: 7, Version: Version{HLC: 3, Node: 4}}))
	f.Add(byte(3), (&epochTable{lo: 2, cur: 4, stat: []epochStat{{1, 100}, {0, 0}, {-3, -300}}}).encode())
	f.Add(byte(4), encodeHistories([]History{{ID: 9, FirstSeq: 1}, {ID: 10, FirstSeq: 77}}))
	f.Add(byte(3), []byte{0, 0, 0, 5, 0, 0, 0, 1}) // cur below lo
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		var (
			enc []byte
			err error
		)
		switch kind % 5 {
		case 0:
			var v uint32
			if v, err = decodeFormat(b); err == nil {
				enc = encodeFormat(v)
			}
		case 1:
			var v uint64
			if v, err = decodeU64(b); err == nil {
				enc = u64(v)
			}
		case 2:
			var m FlushMarker
			if m, err = decodeFlushMarker(b); err == nil {
				enc = encodeFlushMarker(m)
			}
		case 3:
			var et epochTable
			if et, err = decodeEpochTable(b); err == nil {
				if uint64(len(et.stat)) != uint64(et.cur-et.lo)+1 {
					t.Fatalf("epoch table [%d, %d] with %d counters", et.lo, et.cur, len(et.stat))
				}
				enc = et.encode()
			}
		case 4:
			var hs []History
			if hs, err = decodeHistories(b); err == nil {
				enc = encodeHistories(hs)
			}
		}
		if err != nil {
			if kind%5 != 0 && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("kind %d: error not wrapping ErrCorrupt: %v", kind%5, err)
			}
			return
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("kind %d: %x decodes to a value that encodes to %x", kind%5, b, enc)
		}
	})
}
