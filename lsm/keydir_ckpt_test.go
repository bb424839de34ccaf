package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
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
	if err := writeCheckpoint(fs, "keydir.ckpt", k, pos, nil); err != nil {
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
	if err := writeCheckpointTo(&buf, k, pos, false); err != nil {
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
	if err := writeCheckpointTo(&buf, k, ckptPos{Seg: 1, Off: 99}, false); err != nil {
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
		if err := writeCheckpoint(vfs.Default, path, k, ckptPos{Seg: 1}, nil); err != nil {
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

// The maintenance pass writes a checkpoint once enough frames came since
// the last one; a crash after it replays only the frames that follow it,
// and the store reads back as it was: overwrites, deletes and expiries
// after the checkpoint applied over it.
func TestKeydirPeriodicCheckpoint(t *testing.T) {
	clk := clock.NewFake(testStart)
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clk)
	db := mustOpen(t, o)
	db.ckptEvery = 500
	val := func(k, gen int) string { return string(randomValue(fmt.Sprint(k, "/", gen), 100+k%300)) }
	for k := range 2000 {
		put(t, db, fmt.Sprint("k", k), val(k, 1), 0, uint64(k+1))
	}
	settleIndex(t, db) // their position entries in Pebble: a replay without the checkpoint would read them
	db.Maintain()
	if n := db.Stats().KeydirCheckpoints; n != 1 {
		t.Fatalf("%d checkpoints after 2000 frames, want 1", n)
	}
	db.Maintain()
	if n := db.Stats().KeydirCheckpoints; n != 1 {
		t.Fatalf("%d checkpoints after a pass with no frames since the last, want 1", n)
	}
	exp := testStart.Unix() + 10
	for k := range 300 {
		put(t, db, fmt.Sprint("k", k), val(k, 2), 0, uint64(3000+k))
	}
	for k := 300; k < 400; k++ {
		del(t, db, fmt.Sprint("k", k), uint64(4000+k))
	}
	for k := 400; k < 500; k++ {
		put(t, db, fmt.Sprint("k", k), val(k, 2), exp, uint64(5000+k))
	}
	for k := 2000; k < 2200; k++ {
		put(t, db, fmt.Sprint("k", k), val(k, 1), 0, uint64(k+1))
	}
	settleIndex(t, db)
	for k := 2200; k < 2250; k++ { // left in the journal's tail: re-indexed after the crash
		put(t, db, fmt.Sprint("k", k), val(k, 1), 0, uint64(k+1))
	}
	syncNow(db)
	clk.Advance(time.Minute)
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{})
	defer db.Close()
	db.mu.Lock()
	replayed := db.mu.framesSinceCkpt
	db.mu.Unlock()
	if replayed != 750 {
		t.Fatalf("the open after the crash replayed %d frames, want the 750 after the checkpoint", replayed)
	}
	for k := range 2250 {
		v, ok := get(t, db, fmt.Sprint("k", k))
		var want string
		switch {
		case k < 300:
			want = val(k, 2)
		case k < 500:
			want = "" // deleted, or expired
		default:
			want = val(k, 1)
		}
		if ok != (want != "") || v != want {
			t.Fatalf("k%d after the crash: found %v (%d bytes), want %d bytes", k, ok, len(v), len(want))
		}
	}
}

// A checkpoint written while commits go on (each shard copied under its
// lock, at a different moment) still gives back, after a crash, the last
// acknowledged value of every key: the replay from the checkpoint's
// position applies again, in order, what some shards already held.
func TestKeydirLiveCheckpoint(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.NewFake(testStart))
	db := mustOpen(t, o)
	db.ckptEvery = 300
	const writers, keys = 4, 400
	last := make([][]int, writers) // last[w][i]: the generation acknowledged for key w+writers*i
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		last[w] = make([]int, keys)
		wg.Go(func() {
			b := db.NewBatch()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (n * 7) % keys
				gen := last[w][i] + 1
				key := fmt.Sprint("k", w+writers*i)
				rec := Record{Value: randomValue(fmt.Sprint(key, "/", gen), 50+i%200), Version: Version{HLC: uint64(n + 1), Node: db.NodeID()}}
				b.Put([]byte(key), &rec, Location{})
				if err := db.Commit(b); err != nil {
					t.Error(err)
					return
				}
				last[w][i] = gen
				b.Reset()
			}
		})
	}
	for db.Stats().KeydirCheckpoints < 5 {
		db.Maintain()
		runtimeGosched()
	}
	close(stop)
	wg.Wait()
	syncNow(db)
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{})
	defer db.Close()
	for w := range writers {
		for i, gen := range last[w] {
			key := fmt.Sprint("k", w+writers*i)
			v, ok := get(t, db, key)
			if gen == 0 {
				if ok {
					t.Fatalf("%s found, never written", key)
				}
				continue
			}
			if want := string(randomValue(fmt.Sprint(key, "/", gen), 50+i%200)); !ok || v != want {
				t.Fatalf("%s after the crash: found %v, not generation %d", key, ok, gen)
			}
		}
	}
}

// A shard copied after the checkpoint's position may hold an entry of a
// frame appended after it: the checkpoint is renamed into place only once
// that frame is durable, or a crash would leave the entry naming a lost
// frame in place of the durable one it replaced.
func TestKeydirCheckpointNamesDurableFrames(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testOptions(fs, clock.NewFake(testStart))
	db := mustOpen(t, o)
	put(t, db, "k", "old", 0, 1)
	syncNow(db)
	db.ckptEvery = 1
	db.ckptAfterPos = func() { put(t, db, "k", "new", 0, 2) } // not synced by the test
	db.Maintain()
	if n := db.Stats().KeydirCheckpoints; n != 1 {
		t.Fatalf("%d checkpoints, want 1", n)
	}
	db = crashReopen(t, db, fs, &o, vfs.CrashCloneCfg{}) // only what was synced survives
	defer db.Close()
	if v, ok := get(t, db, "k"); !ok || v != "new" {
		t.Fatalf("k after the crash: %q, %v; want the value the checkpoint names", v, ok)
	}
}
