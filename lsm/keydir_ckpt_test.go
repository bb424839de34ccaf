package lsm

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestKeydirCheckpoint(t *testing.T) {
	fs := vfs.NewMem()
	k, err := newKeydir(testKeydirK0, testKeydirK1)
	if err != nil {
		t.Fatal(err)
	}
	defer k.free()
	rng := rand.New(rand.NewPCG(7, 8))
	model := map[uint64]kdEntry{}
	for range 20000 {
		h := rng.Uint64() | 1
		e := kdRandEntry(rng)
		if _, _, err := k.put(h, e); err != nil {
			t.Fatal(err)
		}
		model[h] = e
	}
	pos := ckptPos{Seg: 12, Off: 1 << 20}
	if err := writeCheckpoint(fs, "keydir.ckpt", k, pos); err != nil {
		t.Fatal(err)
	}
	got, gpos, err := loadCheckpoint(fs, "keydir.ckpt", testKeydirK0, testKeydirK1)
	if err != nil {
		t.Fatal(err)
	}
	defer got.free()
	if gpos != pos {
		t.Fatalf("position %+v, want %+v", gpos, pos)
	}
	kdCheck(t, got, model, nil)
	// The loaded table takes writes as any other.
	for h := range model {
		if _, had := got.remove(h); !had {
			t.Fatalf("remove(%#x) found nothing", h)
		}
		delete(model, h)
		if len(model) < 10000 {
			break
		}
	}
	kdCheck(t, got, model, nil)

	// No file, another store's key: no checkpoint, not an error to report.
	if _, _, err := loadCheckpoint(fs, "none.ckpt", testKeydirK0, testKeydirK1); !errors.Is(err, errNoCheckpoint) {
		t.Fatalf("missing file: %v", err)
	}
	if _, _, err := loadCheckpoint(fs, "keydir.ckpt", testKeydirK0+1, testKeydirK1); !errors.Is(err, errNoCheckpoint) {
		t.Fatalf("other key: %v", err)
	}
	// A damaged file is corrupt: flip a byte in the header, in a shard's
	// head, in its slots, in its checksum; cut it short.
	var buf bytes.Buffer
	if err := writeCheckpointTo(&buf, k, pos); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	for _, at := range []int{3, ckptHdrLen - 1, ckptHdrLen + 2, ckptHdrLen + 8 + 100, ckptHdrLen + 8 + len(k.shards[0].mem) + 1} {
		bad := bytes.Clone(raw)
		bad[at] ^= 0x40
		if kk, _, err := readCheckpoint(bytes.NewReader(bad), testKeydirK0, testKeydirK1); !errors.Is(err, ErrCorrupt) {
			kk.free()
			t.Fatalf("byte %d flipped: %v", at, err)
		}
	}
	if kk, _, err := readCheckpoint(bytes.NewReader(raw[:len(raw)-1]), testKeydirK0, testKeydirK1); !errors.Is(err, ErrCorrupt) {
		kk.free()
		t.Fatalf("cut short: %v", err)
	}
	// Nothing is left of the temporary file.
	if _, err := fs.Stat("keydir.ckpt.tmp"); err == nil {
		t.Fatal("the temporary file is left")
	}
}

func FuzzReadCheckpoint(f *testing.F) {
	k, err := newKeydir(testKeydirK0, testKeydirK1)
	if err != nil {
		f.Fatal(err)
	}
	for i := range uint64(300) {
		k.put(i*0x9e3779b97f4a7c15|1, kdEntry{loc: JournalLoc{Segment: 1, Off: int64(i), Len: 40}})
	}
	var buf bytes.Buffer
	if err := writeCheckpointTo(&buf, k, ckptPos{Seg: 1, Off: 99}); err != nil {
		f.Fatal(err)
	}
	k.free()
	f.Add(buf.Bytes()[:ckptHdrLen+64])
	f.Add(buf.Bytes()[:ckptHdrLen])
	f.Fuzz(func(t *testing.T, data []byte) {
		kk, _, err := readCheckpoint(bytes.NewReader(data), testKeydirK0, testKeydirK1)
		if err == nil {
			kk.free()
			return
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, errNoCheckpoint) {
			t.Fatalf("unexpected error: %v", err)
		}
	})
}

// BenchmarkKeydirCheckpoint writes and loads the checkpoint of a keydir of
// a million keys on the real filesystem; it reports each step's time.
func BenchmarkKeydirCheckpoint(b *testing.B) {
	k, err := newKeydir(testKeydirK0, testKeydirK1)
	if err != nil {
		b.Fatal(err)
	}
	defer k.free()
	rng := rand.New(rand.NewPCG(9, 10))
	for range 1 << 20 {
		k.put(rng.Uint64()|1, kdRandEntry(rng))
	}
	path := b.TempDir() + "/keydir.ckpt"
	var write, load time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := writeCheckpoint(vfs.Default, path, k, ckptPos{Seg: 1}); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		got, _, err := loadCheckpoint(vfs.Default, path, testKeydirK0, testKeydirK1)
		if err != nil {
			b.Fatal(err)
		}
		load += time.Since(t1)
		write += t1.Sub(t0)
		got.free()
	}
	b.ReportMetric(float64(write.Milliseconds())/float64(b.N), "write-ms")
	b.ReportMetric(float64(load.Microseconds())/1000/float64(b.N), "load-ms")
	b.ReportMetric(float64(k.bytes())/(1<<20), "MiB")
}
