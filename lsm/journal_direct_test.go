package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// openDirectJournal opens a journal on the real file system (direct I/O
// needs a descriptor) with the page release policy on, so that its
// writes go direct; it skips the test, saying so, when the file system
// refuses O_DIRECT.
func openDirectJournal(t *testing.T, dir string, clean bool) *journal {
	t.Helper()
	j, err := openJournal(vfs.Default, dir, 1, clean, nil)
	if err != nil {
		t.Fatal(err)
	}
	j.rel.on.Store(true)
	if _, err := j.Write(); err != nil {
		t.Fatal(err)
	}
	if j.w.Load().d == nil {
		_ = j.Close()
		t.Skipf("the file system of %s takes no O_DIRECT: direct journal writes not tested", dir)
	}
	return j
}

// Frames written with O_DIRECT read back from the buffers, the device
// writer's queue and the file; a clean close leaves the file ending at
// its last frame, and the reopened segment is appended to (in direct mode
// again) and scans back whole.
func TestJournalDirect(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j := openDirectJournal(t, dir, true)
	var es []journalEntry
	for round := range 6 {
		more := appendEntries(t, j, uint64(len(es))+1, 200)
		checkEntries(t, j, more) // some from the buffer, some queued
		es = append(es, more...)
		if round%2 == 0 {
			end, err := j.Write()
			if err != nil {
				t.Fatal(err)
			}
			if w := j.w.Load(); w.written.Load() < end {
				t.Fatalf("Write returned %d with %d written", end, w.written.Load())
			}
			if err := j.SyncTo(end); err != nil {
				t.Fatal(err)
			}
		}
		checkEntries(t, j, es)
	}
	end := es[len(es)-1].loc.Off + int64(es[len(es)-1].loc.Len)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, segmentName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != end {
		t.Fatalf("segment of %d bytes after a clean close, want %d (the last frame's end)", st.Size(), end)
	}

	j = openDirectJournal(t, dir, true)
	defer j.Close()
	if j.Segment() != 1 {
		t.Fatalf("reopened at segment %d, want 1", j.Segment())
	}
	more := appendEntries(t, j, uint64(len(es))+1, 50)
	if more[0].loc.Off != end {
		t.Fatalf("append after reopen at %d, want %d", more[0].loc.Off, end)
	}
	es = append(es, more...)
	if _, err := j.Write(); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, j, es)
	i := 0
	got, err := j.Scan(1, func(loc JournalLoc, fr journalFrame) bool {
		if loc != es[i].loc || fr.Seq != es[i].seq || !bytes.Equal(fr.Record, es[i].rec) {
			t.Fatalf("scan frame %d: %+v seq %d, want %+v seq %d", i, loc, fr.Seq, es[i].loc, es[i].seq)
		}
		i++
		return true
	})
	if err != nil || i != len(es) {
		t.Fatalf("scan: end %d, %v after %d frames, want nil after %d", got, err, i, len(es))
	}
}

// A crash leaves the last block padded with zeros, or a block not yet
// written: the scan after it keeps every frame written and finds no frame
// in the padding, even where a reused buffer held older frames.
func TestJournalDirectCrash(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j := openDirectJournal(t, dir, true)
	// Frames of 256 bytes, many buffers: every buffer is reused several
	// times, and frames start at the same places in each, so the last
	// one's bytes past its frames once held a frame starting right there.
	var es []journalEntry
	for i := range 30001 {
		key := fmt.Appendf(nil, "k%06d", i)
		e := journalEntry{seq: uint64(i + 1), key: key, rec: randomValue(fmt.Sprint(i), 256-frameOverhead-len(key))}
		loc, err := j.Append(e.seq, e.key, e.rec)
		if err != nil {
			t.Fatal(err)
		}
		e.loc = loc
		es = append(es, e)
	}
	end, err := j.Write()
	if err != nil {
		t.Fatal(err)
	}
	if err := j.SyncTo(end); err != nil {
		t.Fatal(err)
	}
	// The process dies here: copy the segment as the device has it.
	crashed := filepath.Join(t.TempDir(), "j")
	if err := os.MkdirAll(crashed, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != alignUp(end) {
		t.Fatalf("segment of %d bytes with frames to %d, want the block padded (%d)", len(b), end, alignUp(end))
	}
	if err := os.WriteFile(filepath.Join(crashed, segmentName(1)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j2, err := openJournal(vfs.Default, crashed, 1, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	checkEntries(t, j2, es)
	n := 0
	got, err := j2.Scan(1, func(JournalLoc, journalFrame) bool { n++; return true })
	if got != end || n != len(es) {
		t.Fatalf("scan after the crash: %d frames to %d (%v), want %d to %d", n, got, err, len(es), end)
	}
}

// The mode follows the page release policy at each write, both ways, and
// nothing appended in either mode is lost.
func TestJournalDirectToggle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j := openDirectJournal(t, dir, true)
	defer j.Close()
	var es []journalEntry
	for round := range 8 {
		j.rel.on.Store(round%2 == 0)
		more := appendEntries(t, j, uint64(len(es))+1, 60)
		if _, err := j.Write(); err != nil {
			t.Fatal(err)
		}
		if direct := j.w.Load().d != nil; direct != (round%2 == 0) {
			t.Fatalf("round %d: direct %v with the policy %v", round, direct, round%2 == 0)
		}
		es = append(es, append(more, appendEntries(t, j, uint64(len(es)+len(more))+1, 10)...)...)
		checkEntries(t, j, es)
		if round == 5 {
			if err := j.Roll(2, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := j.Write(); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, j, es)
}

// Reads of frames while the device writer works: a reader never sees a
// frame that is not the one appended at its location.
func TestJournalDirectConcurrentReads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j := openDirectJournal(t, dir, true)
	defer j.Close()
	var mu sync.Mutex
	var es []journalEntry
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				n := len(es)
				var e journalEntry
				if n > 0 {
					e = es[(k*7919+r)%n]
				}
				mu.Unlock()
				if n == 0 {
					continue
				}
				var fr journalFrame
				var err error
				fr, buf, err = j.Read(buf, e.loc)
				if err == nil && (fr.Seq != e.seq || !bytes.Equal(fr.Record, e.rec)) {
					err = fmt.Errorf("read %+v: seq %d, want %d", e.loc, fr.Seq, e.seq)
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for i := range 20000 {
		e := journalEntry{seq: uint64(i + 1), key: fmt.Appendf(nil, "k%d", i), rec: randomValue(fmt.Sprint(i), 100+i%2000)}
		loc, err := j.Append(e.seq, e.key, e.rec)
		if err != nil {
			t.Fatal(err)
		}
		e.loc = loc
		mu.Lock()
		es = append(es, e)
		mu.Unlock()
		if i%3000 == 0 {
			if _, err := j.Write(); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}

// A failed device write stops the segment as a failed buffered write
// does: later appends and Write return ErrJournalFailed.
func TestJournalDirectWriteError(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j := openDirectJournal(t, dir, true)
	defer j.Close()
	appendEntries(t, j, 1, 10)
	if _, err := j.Write(); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("injected device error")
	directPwrite = func(int, []byte, int64) error { return boom }
	defer func() { directPwrite = pwriteDirect }()
	if _, err := j.Append(11, []byte("k"), randomValue("v", 100)); err != nil {
		t.Fatal(err) // handed over later: the append itself succeeds
	}
	if _, err := j.Write(); !errors.Is(err, ErrJournalFailed) || !errors.Is(err, boom) {
		t.Fatalf("Write after a failed device write: %v, want ErrJournalFailed wrapping the cause", err)
	}
	if _, err := j.Append(12, []byte("k"), randomValue("v", 100)); !errors.Is(err, ErrJournalFailed) {
		t.Fatalf("append after a failed device write: %v, want ErrJournalFailed", err)
	}
}

// With direct writes turned off, the segment stays in the page cache.
func TestJournalDirectOff(t *testing.T) {
	j, err := openJournal(vfs.Default, filepath.Join(t.TempDir(), "j"), 1, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	j.noDirect.Store(true)
	j.rel.on.Store(true)
	es := appendEntries(t, j, 1, 100)
	if _, err := j.Write(); err != nil {
		t.Fatal(err)
	}
	if j.w.Load().d != nil {
		t.Fatal("direct mode although turned off")
	}
	checkEntries(t, j, es)
}

// When direct mode ends inside a segment (the policy turned off, then a
// few bytes through the page cache before a clean close), the zeros that
// padded the last direct write are cut: the reopened segment's frames
// follow the old ones without a gap, and a scan after a crash finds all.
func TestJournalDirectEndsCut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j := openDirectJournal(t, dir, true)
	es := appendEntries(t, j, 1, 30)
	if _, err := j.Write(); err != nil { // padded to a whole block
		t.Fatal(err)
	}
	j.rel.on.Store(false)
	es = append(es, appendEntries(t, j, 31, 1)...)
	if _, err := j.Write(); err != nil { // back to the page cache
		t.Fatal(err)
	}
	es = append(es, appendEntries(t, j, 32, 1)...)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	last := es[len(es)-1]
	end := last.loc.Off + int64(last.loc.Len)
	path := filepath.Join(dir, segmentName(1))
	if st, err := os.Stat(path); err != nil || st.Size() != end {
		t.Fatalf("segment after a clean close: %v, want %d bytes", err, end)
	}

	j, err := openJournal(vfs.Default, dir, 1, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	more := appendEntries(t, j, 33, 5)
	if more[0].loc.Off != end {
		t.Fatalf("append after the reopen at %d, want %d", more[0].loc.Off, end)
	}
	es = append(es, more...)
	wend, err := j.Write()
	if err == nil {
		err = j.SyncTo(wend)
	}
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(t.TempDir(), "j")
	if err := os.MkdirAll(crashed, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(crashed, segmentName(1)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_ = j.Close()
	j2, err := openJournal(vfs.Default, crashed, 1, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	checkEntries(t, j2, es)
}
