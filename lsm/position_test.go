package lsm

import (
	"bytes"
	"errors"
	"testing"
)

func TestPosEntryRoundTrip(t *testing.T) {
	for _, in := range []posEntry{
		{loc: JournalLoc{Segment: 1, Off: 20, Len: frameOverhead + 1}, kind: posItem, key: []byte("k")},
		{loc: JournalLoc{Segment: 1<<32 - 1, Off: 1<<32 - 1, Len: 1 << 30}, kind: posTombstone, exptime: 1_800_000_000,
			version: Version{HLC: 1 << 60, Node: 7}, key: bytes.Repeat([]byte("x"), maxPosKeyLen)},
		{loc: JournalLoc{Segment: 9, Off: 4096, Len: 100}, kind: posDelete, key: []byte("gone")},
		// A peer's record may carry any exptime; the loader treats a
		// negative one as expired.
		{loc: JournalLoc{Segment: 9, Off: 8192, Len: 100}, kind: posItem, exptime: -5, key: []byte("past")},
	} {
		k := appendPosKey(nil, in.loc)
		v := appendPosValue(nil, &in)
		var out posEntry
		if err := decodePos(k, v, &out); err != nil {
			t.Fatalf("decode(encode(%+v)): %v", in.loc, err)
		}
		if out.loc != in.loc || out.kind != in.kind || out.exptime != in.exptime || out.version != in.version || !bytes.Equal(out.key, in.key) {
			t.Fatalf("round trip: %+v, want %+v", out, in)
		}
		if !bytes.HasPrefix(k, posSegmentPrefix(in.loc.Segment)) {
			t.Fatalf("key %x is outside its segment's span", k)
		}
		// A single-bit flip is caught: every bit of the fixed part, the
		// key's first bytes and the checksum.
		for i := range len(v) * 8 {
			if i/8 >= posFixedLen+16 && i/8 < len(v)-4 {
				continue
			}
			w := bytes.Clone(v)
			w[i/8] ^= 1 << (i % 8)
			if err := decodePos(k, w, &out); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip of bit %d: %v", i, err)
			}
		}
	}
	// Keys sort by position: segment, then offset.
	a := appendPosKey(nil, JournalLoc{Segment: 1, Off: 1 << 24})
	b := appendPosKey(nil, JournalLoc{Segment: 2, Off: 30})
	if bytes.Compare(a, b) >= 0 {
		t.Fatal("position keys do not sort by segment first")
	}
}

func FuzzDecodePos(f *testing.F) {
	e := posEntry{loc: JournalLoc{Segment: 3, Off: 99, Len: 200}, kind: posItem, exptime: 5, version: Version{HLC: 1, Node: 2}, key: []byte("key")}
	f.Add(appendPosKey(nil, e.loc), appendPosValue(nil, &e))
	e.kind, e.key = posDelete, []byte("k2")
	f.Add(appendPosKey(nil, e.loc), appendPosValue(nil, &e))
	f.Fuzz(func(t *testing.T, k, v []byte) {
		var out posEntry
		if err := decodePos(k, v, &out); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// What decodes re-encodes to the same bytes.
		if got := appendPosValue(nil, &out); !bytes.Equal(got, v) {
			t.Fatalf("re-encoding differs: %x, was %x", got, v)
		}
		if got := appendPosKey(nil, out.loc); !bytes.Equal(got, k) {
			t.Fatalf("key re-encoding differs: %x, was %x", got, k)
		}
	})
}
