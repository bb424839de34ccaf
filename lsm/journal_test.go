package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// openTestJournal opens the journal in /j at epoch 1, as after a clean
// close.
func openTestJournal(t *testing.T, fs vfs.FS) *journal {
	t.Helper()
	return openTestJournalAt(t, fs, 1, true)
}

func openTestJournalAt(t *testing.T, fs vfs.FS, epoch uint32, clean bool) *journal {
	t.Helper()
	j, err := openJournal(fs, "/j", epoch, clean, nil)
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	return j
}

type journalEntry struct {
	loc      JournalLoc
	seq      uint64
	key, rec []byte
}

// appendEntries appends n frames with values of varied sizes (some larger
// than the write chunk) and returns them.
func appendEntries(t *testing.T, j *journal, first uint64, n int) []journalEntry {
	t.Helper()
	var out []journalEntry
	for i := range n {
		seq := first + uint64(i)
		size := (i * 997) % 5000
		if i%50 == 7 {
			size = journalWriteChunk + 100 // forces a write inside Append
		}
		e := journalEntry{seq: seq, key: fmt.Appendf(nil, "key-%d", seq), rec: randomValue(fmt.Sprint(seq), size)}
		loc, err := j.Append(e.seq, e.key, e.rec)
		if err != nil {
			t.Fatalf("append %d: %v", seq, err)
		}
		e.loc = loc
		out = append(out, e)
	}
	return out
}

func checkEntries(t *testing.T, j *journal, es []journalEntry) {
	t.Helper()
	var buf []byte
	for _, e := range es {
		var fr journalFrame
		var err error
		fr, buf, err = j.Read(buf, e.loc)
		if err != nil {
			t.Fatalf("read %+v: %v", e.loc, err)
		}
		if fr.Seq != e.seq || !bytes.Equal(fr.Key, e.key) || !bytes.Equal(fr.Record, e.rec) {
			t.Fatalf("read %+v: seq %d key %q (%d record bytes), want %d %q (%d)", e.loc, fr.Seq, fr.Key, len(fr.Record), e.seq, e.key, len(e.rec))
		}
	}
}

func TestJournalRoundTrip(t *testing.T) {
	fs := vfs.NewMem()
	j := openTestJournal(t, fs)
	es := appendEntries(t, j, 1, 300)
	end, err := j.Write()
	if err != nil {
		t.Fatal(err)
	}
	if err := j.SyncTo(end); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, j, es)

	// Scan yields the same frames, in order, and ends at the written end.
	i := 0
	got, err := j.Scan(j.Segment(), func(loc JournalLoc, fr journalFrame) bool {
		if loc != es[i].loc || fr.Seq != es[i].seq || !bytes.Equal(fr.Record, es[i].rec) {
			t.Fatalf("scan frame %d: %+v seq %d, want %+v seq %d", i, loc, fr.Seq, es[i].loc, es[i].seq)
		}
		i++
		return true
	})
	if err != nil || got != end || i != len(es) {
		t.Fatalf("scan: end %d err %v after %d frames, want %d, nil, %d", got, err, i, end, len(es))
	}
	// ScanFrom a frame's offset yields the frames from it on (the scan
	// reads in chunks: frames cross their boundaries).
	i = 150
	got, err = j.ScanFrom(j.Segment(), es[150].loc.Off, func(loc JournalLoc, fr journalFrame) bool {
		if loc != es[i].loc || fr.Seq != es[i].seq || !bytes.Equal(fr.Record, es[i].rec) {
			t.Fatalf("scan from %d, frame %d: %+v seq %d, want %+v seq %d", es[150].loc.Off, i, loc, fr.Seq, es[i].loc, es[i].seq)
		}
		i++
		return true
	})
	if err != nil || got != end || i != len(es) {
		t.Fatalf("scan from %d: end %d err %v at frame %d, want %d, nil, %d", es[150].loc.Off, got, err, i, end, len(es))
	}

	// Reopen: the clean segment is appended to, and everything reads back.
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openTestJournal(t, fs)
	defer j.Close()
	if j.Segment() != 1 {
		t.Fatalf("reopened at segment %d, want 1 (clean tail)", j.Segment())
	}
	more := appendEntries(t, j, 301, 20)
	if _, err := j.Write(); err != nil {
		t.Fatal(err)
	}
	if more[0].loc.Off != end {
		t.Fatalf("append after reopen at %d, want %d", more[0].loc.Off, end)
	}
	checkEntries(t, j, append(es, more...))
}

// A crash can leave a frame cut short, or bytes that were never a frame:
// the segment is kept as it is (every frame before the damage reads back,
// a location past it is lost), and appends go to a new segment.
func TestJournalTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail func(frame []byte) []byte
	}{
		{"cut frame", func(f []byte) []byte { return f[:len(f)/2] }},
		{"zeros", func([]byte) []byte { return make([]byte, 4096) }},
		{"bad checksum", func(f []byte) []byte { g := bytes.Clone(f); g[len(g)-1] ^= 1; return g }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			j := openTestJournal(t, fs)
			es := appendEntries(t, j, 1, 40)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := fs.OpenReadWrite("/j/"+segmentName(1), vfs.WriteCategoryUnspecified)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			tail := tc.tail(appendFrame(nil, 99, []byte("torn"), randomValue("t", 300)))
			if _, err := f.WriteAt(tail, st.Size()); err != nil {
				t.Fatal(err)
			}
			_ = f.Close()

			j = openTestJournalAt(t, fs, 1, false)
			defer j.Close()
			if j.Segment() != 2 {
				t.Fatalf("open segment %d after a torn tail, want a new one (2)", j.Segment())
			}
			checkEntries(t, j, es)
			lost := JournalLoc{Segment: 1, Off: st.Size(), Len: uint32(frameOverhead + 4 + 300)}
			if _, _, err := j.Read(nil, lost); !errors.Is(err, errFrameLost) {
				t.Fatalf("read past the torn tail: %v, want errFrameLost", err)
			}
			end, err := j.Scan(1, func(JournalLoc, journalFrame) bool { return true })
			if !errors.Is(err, ErrCorrupt) || end != st.Size() {
				t.Fatalf("scan of the torn segment: end %d, %v; want %d and ErrCorrupt", end, err, st.Size())
			}
			// A scan that would start past the tear reads nothing.
			past := st.Size() + int64(len(tail))
			if end, err := j.ScanFrom(1, past, func(JournalLoc, journalFrame) bool {
				t.Fatal("a frame past the torn tail")
				return true
			}); !errors.Is(err, ErrCorrupt) || end != past {
				t.Fatalf("scan from past the torn tail: end %d, %v; want %d and ErrCorrupt", end, err, past)
			}
			more := appendEntries(t, j, 41, 5)
			if _, err := j.Write(); err != nil {
				t.Fatal(err)
			}
			checkEntries(t, j, more)
		})
	}
}

func TestJournalReadChecks(t *testing.T) {
	fs := vfs.NewMem()
	j := openTestJournal(t, fs)
	defer j.Close()
	es := appendEntries(t, j, 1, 3)
	// Appended but not written: read from the buffer.
	checkEntries(t, j, es[2:])
	if _, err := j.Write(); err != nil {
		t.Fatal(err)
	}
	for _, loc := range []JournalLoc{
		{Segment: 1, Off: es[0].loc.Off + 1, Len: es[0].loc.Len}, // not at a frame
		{Segment: 1, Off: es[0].loc.Off, Len: es[0].loc.Len + 1}, // wrong length
		{Segment: 1, Off: 0, Len: 100},                           // the header
		{Segment: 1, Off: es[1].loc.Off, Len: 3},                 // too short
	} {
		if _, _, err := j.Read(nil, loc); !errors.Is(err, ErrCorrupt) {
			t.Errorf("read %+v: %v, want ErrCorrupt", loc, err)
		}
	}
	if _, _, err := j.Read(nil, JournalLoc{Segment: 9, Off: int64(journalHeaderLen), Len: 20}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read of a missing segment: %v, want ErrNotExist", err)
	}
}

func TestJournalRollRemove(t *testing.T) {
	fs := vfs.NewMem()
	j := openTestJournal(t, fs)
	defer j.Close()
	first := appendEntries(t, j, 1, 10)
	if err := j.Roll(5, 1); err != nil {
		t.Fatal(err)
	}
	if err := j.Roll(5, 1); err == nil {
		t.Fatal("roll to the same segment accepted")
	}
	second := appendEntries(t, j, 11, 10)
	if _, err := j.Write(); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, j, append(first, second...))
	if err := j.Remove(5); err == nil {
		t.Fatal("removing the open segment accepted")
	}
	if err := j.Remove(1); err != nil {
		t.Fatal(err)
	}
	if got := j.Segments(); len(got) != 1 || got[0].ID != 5 {
		t.Fatalf("segments %v, want [5]", got)
	}
	if _, _, err := j.Read(nil, first[0].loc); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read from a removed segment: %v", err)
	}
	if _, err := fs.Stat("/j/" + segmentName(1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("removed segment still on disk: %v", err)
	}
	checkEntries(t, j, second)
}

// Reads racing with Remove either read the frame or get ErrNotExist,
// never another file's bytes (run with -race).
func TestJournalRemoveWhileReading(t *testing.T) {
	fs := vfs.NewMem()
	j := openTestJournal(t, fs)
	defer j.Close()
	es := appendEntries(t, j, 1, 50)
	if err := j.Roll(2, 1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var bad atomic.Value
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := range 500 {
				e := es[(i*7+r)%len(es)]
				fr, b, err := j.Read(buf, e.loc)
				buf = b
				switch {
				case errors.Is(err, os.ErrNotExist):
					return
				case err != nil:
					bad.Store(err)
					return
				case !bytes.Equal(fr.Record, e.rec):
					bad.Store(fmt.Errorf("frame %d read wrong bytes", e.seq))
					return
				}
			}
		}()
	}
	if err := j.Remove(1); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err, _ := bad.Load().(error); err != nil {
		t.Fatal(err)
	}
}

// Concurrent SyncTo callers share fdatasyncs: N waiters behind one sync
// need far fewer than N syncs, and each returns only once its end is
// durable.
func TestJournalSharedSync(t *testing.T) {
	var syncs atomic.Int64
	fs := errorfs.Wrap(vfs.NewMem(), errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpFileSyncData {
			syncs.Add(1)
			time.Sleep(time.Millisecond) // a disk's fsync: writers pile up behind it
		}
		return nil
	}))
	j := openTestJournal(t, fs)
	defer j.Close()
	before := syncs.Load()
	var mu sync.Mutex // the commit mutex: appends and writes are serialized
	var wg sync.WaitGroup
	const writers, each = 8, 50
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mu.Lock()
				_, err := j.Append(uint64(w*each+i), []byte("k"), []byte("v"))
				var end int64
				if err == nil {
					end, err = j.Write()
				}
				mu.Unlock()
				if err == nil {
					err = j.SyncTo(end)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if s := j.w.Load().synced.Load(); s < end {
					t.Errorf("SyncTo(%d) returned with %d synced", end, s)
					return
				}
			}
		}()
	}
	wg.Wait()
	n := syncs.Load() - before
	if n >= writers*each {
		t.Fatalf("%d fsyncs for %d synced appends", n, writers*each)
	}
	t.Logf("%d fsyncs for %d synced appends by %d writers", n, writers*each, writers)
}

// A failed write or sync is sticky: appends stop, and nothing written
// before the failure is damaged.
func TestJournalWriteErrors(t *testing.T) {
	for _, fault := range []struct {
		name  string
		kinds []errorfs.OpKind
	}{
		{"write", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}},
		{"sync", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData}},
	} {
		t.Run(fault.name, func(t *testing.T) {
			var on atomic.Bool
			mem := vfs.NewMem()
			fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
				if on.Load() && slices.Contains(fault.kinds, op.Kind) {
					return errors.New("injected: no space left on device")
				}
				return nil
			}))
			j := openTestJournal(t, fs)
			good := appendEntries(t, j, 1, 10)
			end, err := j.Write()
			if err == nil {
				err = j.SyncTo(end)
			}
			if err != nil {
				t.Fatal(err)
			}
			on.Store(true)
			_, err = j.Append(11, []byte("k"), []byte("v"))
			if err == nil {
				end, err = j.Write()
			}
			if err == nil {
				err = j.SyncTo(end)
			}
			if !errors.Is(err, ErrJournalFailed) {
				t.Fatalf("write under a %s fault: %v, want ErrJournalFailed", fault.name, err)
			}
			if _, err := j.Append(12, []byte("k"), []byte("v")); !errors.Is(err, ErrJournalFailed) {
				t.Fatalf("append after a failure: %v, want ErrJournalFailed", err)
			}
			on.Store(false)
			checkEntries(t, j, good)
			_ = j.Close()
			// Reopened, the frames written before the fault are intact.
			j = openTestJournal(t, mem)
			defer j.Close()
			checkEntries(t, j, good)
		})
	}
}

// A crash inside create (or a failed header write) leaves the newest
// segment shorter than its header: it held no frame, and is removed at
// open. An older segment without a header is damage, and is refused.
func TestJournalUnfinishedCreate(t *testing.T) {
	for _, size := range []int{0, journalHeaderLen - 1} {
		fs := vfs.NewMem()
		j := openTestJournal(t, fs)
		es := appendEntries(t, j, 1, 5)
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		f, _ := fs.Create("/j/"+segmentName(2), vfs.WriteCategoryUnspecified)
		_, _ = f.Write([]byte(journalMagic + "\x01\x00\x00\x00\x01")[:size])
		_ = f.Close()
		j = openTestJournalAt(t, fs, 1, false)
		checkEntries(t, j, es)
		if got := j.Segments(); len(got) != 2 || got[0].ID != 1 || got[1].ID != 2 || j.Segment() != 2 {
			t.Fatalf("%d-byte newest segment: segments %v, open %d; want [1 2] with 2 new", size, got, j.Segment())
		}
		_ = j.Close()
	}
	fs := vfs.NewMem()
	j := openTestJournal(t, fs)
	if err := j.Roll(2, 1); err != nil {
		t.Fatal(err)
	}
	_ = j.Close()
	f, _ := fs.Create("/j/"+segmentName(1), vfs.WriteCategoryUnspecified)
	_ = f.Close()
	if _, err := openJournal(fs, "/j", 1, false, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("an older segment without a header: %v, want ErrCorrupt", err)
	}
}

func TestJournalRefusesStrayFiles(t *testing.T) {
	fs := vfs.NewMem()
	if err := fs.MkdirAll("/j", 0o755); err != nil {
		t.Fatal(err)
	}
	f, _ := fs.Create("/j/1.jnl", vfs.WriteCategoryUnspecified)
	_ = f.Close()
	if _, err := openJournal(fs, "/j", 1, true, nil); err == nil {
		t.Fatal("a journal with a misnamed segment opened")
	}
}

// FuzzJournalFrame: any bytes parse to an error or to a frame that
// re-encodes to the same bytes; nothing panics.
func FuzzJournalFrame(f *testing.F) {
	f.Add(appendFrame(nil, 1, []byte("key"), []byte("record")))
	f.Add(appendFrame(nil, 0, nil, nil))
	f.Add([]byte{0, 0, 0, 10})
	f.Add(append(appendFrame(nil, 7, []byte("k"), randomValue("f", 100)), 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := parseFrame(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not wrapping ErrCorrupt: %v", err)
			}
			return
		}
		if again := appendFrame(nil, fr.Seq, fr.Key, fr.Record); !bytes.Equal(again, b[:n]) {
			t.Fatalf("frame of %d bytes re-encodes differently", n)
		}
	})
}

// FuzzJournalScan: a segment whose valid frames are followed by any bytes
// (a torn or damaged tail) opens after a crash, and its scans stop at the
// first bytes that are not a frame: every frame they yield is the file's
// bytes at its location, a scan from a yielded frame's offset yields the
// rest of the same frames, and nothing past the tear reads back.
func FuzzJournalScan(f *testing.F) {
	f.Add([]byte{}, uint8(3))
	f.Add(appendFrame(nil, 9, []byte("k"), []byte("v")), uint8(1))
	f.Add(append(appendFrame(nil, 9, []byte("k"), []byte("v")), 0, 0), uint8(2))
	f.Add([]byte{0, 0, 0, 200, 1, 2, 3}, uint8(0))
	f.Fuzz(func(t *testing.T, tail []byte, valid uint8) {
		fs := vfs.NewMem()
		j, err := openJournal(fs, "/j", 1, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range int(valid % 8) {
			if _, err := j.Append(uint64(i+1), fmt.Appendf(nil, "key-%d", i), randomValue(fmt.Sprint(i), i*300)); err != nil {
				t.Fatal(err)
			}
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		path := "/j/" + segmentName(1)
		file, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := file.Stat()
		if _, err := file.WriteAt(tail, st.Size()); err != nil {
			t.Fatal(err)
		}
		_ = file.Close()
		raw := readAll(t, fs, path)

		j, err = openJournal(fs, "/j", 1, false, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v", err)
			}
			return
		}
		defer j.Close()
		var locs []JournalLoc
		end, err := j.Scan(1, func(loc JournalLoc, fr journalFrame) bool {
			if loc.Off < int64(journalHeaderLen) || loc.Off+int64(loc.Len) > int64(len(raw)) {
				t.Fatalf("frame at %+v outside the %d-byte file", loc, len(raw))
			}
			if again := appendFrame(nil, fr.Seq, fr.Key, fr.Record); !bytes.Equal(again, raw[loc.Off:loc.Off+int64(loc.Len)]) {
				t.Fatalf("frame at %+v is not the file's bytes", loc)
			}
			locs = append(locs, loc)
			return true
		})
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("scan: %v", err)
		}
		if len(locs) < int(valid%8) {
			t.Fatalf("scan yielded %d frames, fewer than the %d valid ones", len(locs), valid%8)
		}
		if len(locs) > 0 {
			k := len(locs) / 2
			i := k
			end2, err2 := j.ScanFrom(1, locs[k].Off, func(loc JournalLoc, _ journalFrame) bool {
				if i >= len(locs) || loc != locs[i] {
					t.Fatalf("scan from %d: frame %+v, want frame %d of the full scan", locs[k].Off, loc, i)
				}
				i++
				return true
			})
			if end2 != end || (err2 == nil) != (err == nil) || i != len(locs) {
				t.Fatalf("scan from %d: end %d %v after %d frames; the full scan: %d %v, %d", locs[k].Off, end2, err2, i, end, err, len(locs))
			}
		}
		if _, _, err := j.Read(nil, JournalLoc{Segment: 1, Off: end, Len: frameOverhead + 8}); err == nil {
			t.Fatalf("a frame read back past the end of the valid ones (%d)", end)
		}
	})
}

func readAll(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
