package lsm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

// ingestPositions writes es (in position order, one segment each call) as
// one sstable and has db's Pebble ingest it, as the sealer will.
func ingestPositions(t testing.TB, db *DB, fs vfs.FS, dir string, n int, es []posEntry) {
	t.Helper()
	path := fs.PathJoin(dir, fmt.Sprintf("pos-%d.sst", n))
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), db.sstOpts)
	var k, v []byte
	for i := range es {
		k = appendPosKey(k[:0], es[i].loc)
		v = appendPosValue(v[:0], &es[i])
		if err := w.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.pdb.Ingest(context.Background(), []string{path}); err != nil {
		t.Fatal(err)
	}
}

// TestKeydirLoad replays random frames of a pool of keys (items, some
// expired, tombstones and deletes) written over several segments, the
// first ones dead, and compares the keydir and the counts with a model.
func TestKeydirLoad(t *testing.T) {
	fs := vfs.NewMem()
	db := mustOpen(t, testOptions(fs, clock.NewFake(testStart)))
	defer db.Close()
	const segs, perSeg, keys, dead = 6, 500, 300, 2
	now := testStart.Unix()
	rng := rand.New(rand.NewPCG(5, 6))
	type want struct {
		e     kdEntry
		epoch uint32
	}
	model := map[string]want{}
	for s := uint32(1); s <= segs; s++ {
		var es []posEntry
		off := int64(journalHeaderLen)
		for range perSeg {
			key := fmt.Sprintf("key-%d", rng.IntN(keys))
			e := posEntry{loc: JournalLoc{Segment: s, Off: off, Len: uint32(frameOverhead + len(key) + 10 + rng.IntN(100))},
				kind: posKind(1 + rng.IntN(3)), version: Version{HLC: uint64(off)}, key: []byte(key)}
			off += int64(e.loc.Len)
			if e.kind != posDelete && rng.IntN(3) == 0 {
				e.exptime = now - 5 + rng.Int64N(10) // half of them expired
			}
			es = append(es, e)
			if s <= dead {
				continue // dropped: the rebuild must skip it
			}
			switch {
			case e.kind == posDelete || (e.kind == posItem && e.exptime != 0 && e.exptime <= now):
				delete(model, key)
			default:
				model[key] = want{kdEntry{loc: e.loc, exptime: e.exptime, tombstone: e.kind == posTombstone}, s * 10}
			}
		}
		ingestPositions(t, db, fs, "", int(s), es)
	}
	k, err := newKeydir(testKeydirK0, testKeydirK1)
	if err != nil {
		t.Fatal(err)
	}
	defer k.free()
	l := newKeydirLoader(k, now, func(seg uint32) (uint32, bool) { return seg * 10, seg > dead })
	if err := l.loadPositions(db.pdb, ckptPos{}); err != nil {
		t.Fatal(err)
	}
	if err := l.finish(); err != nil {
		t.Fatal(err)
	}
	if l.entries != segs*perSeg || l.skipped != dead*perSeg {
		t.Fatalf("replayed %d, skipped %d", l.entries, l.skipped)
	}
	counts := map[uint32]epochCount{}
	for key, w := range model {
		got, ok := k.get(k.hash([]byte(key)))
		if !ok || got != w.e {
			t.Fatalf("%s: %+v, %v; want %+v", key, got, ok, w.e)
		}
		if !w.e.tombstone {
			c := counts[w.epoch]
			c.items++
			c.bytes += int64(w.e.loc.Len - frameOverhead)
			counts[w.epoch] = c
		}
	}
	if k.len() != len(model) {
		t.Fatalf("keydir has %d entries, model %d", k.len(), len(model))
	}
	got := countKeydir(k, func(seg uint32) (uint32, bool) { return seg * 10, seg > dead })
	if len(got) != len(counts) {
		t.Fatalf("counted epochs %v, want %v", got, counts)
	}
	for e := range counts {
		if got[e] != counts[e] {
			t.Fatalf("epoch %d counted %+v, want %+v", e, got[e], counts[e])
		}
	}
}

// BenchmarkKeydirLoad measures the rebuild at Open: a million position
// entries (1 KiB frames of distinct keys, 32 768 per segment, each
// segment's entries ingested as one sstable) replayed from a real Pebble
// on disk into an empty keydir. It reports the time per entry; run with
// -benchtime 1x.
func BenchmarkKeydirLoad(b *testing.B) {
	const n, perSeg = 1 << 20, 1 << 15
	o := testOptions(vfs.Default, clock.Real{})
	o.Dir = b.TempDir()
	db := mustOpen(b, o)
	defer db.Close()
	dir := b.TempDir()
	es := make([]posEntry, 0, perSeg)
	for i := 0; i < n; {
		seg := uint32(i/perSeg + 1)
		es = es[:0]
		for off := int64(journalHeaderLen); len(es) < perSeg; off += 1100 {
			es = append(es, posEntry{loc: JournalLoc{Segment: seg, Off: off, Len: 1100}, kind: posItem,
				version: Version{HLC: uint64(i)}, key: fmt.Appendf(nil, "memtier-%d", i)})
			i++
		}
		ingestPositions(b, db, vfs.Default, dir, int(seg), es)
	}
	start := time.Now()
	for b.Loop() {
		k, err := newKeydir(testKeydirK0, testKeydirK1)
		if err != nil {
			b.Fatal(err)
		}
		l := newKeydirLoader(k, 0, func(seg uint32) (uint32, bool) { return 1, true })
		if err := l.loadPositions(db.pdb, ckptPos{}); err != nil {
			b.Fatal(err)
		}
		if err := l.finish(); err != nil {
			b.Fatal(err)
		}
		if k.len() != n {
			b.Fatalf("loaded %d keys", k.len())
		}
		k.free()
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*n), "ns/entry")
	_ = filepath.Join
}
