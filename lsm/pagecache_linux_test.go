package lsm

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
	"golang.org/x/sys/unix"
)

// residentPages reports, for each page of path, whether it is in the page
// cache. The mapping is gone before it returns: a mapped page cannot be
// dropped.
func residentPages(t *testing.T, path string) []bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (int64(len(m))+pageSize-1)/pageSize)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}

// probePageRelease skips the test unless dir's file system keeps written
// pages cached and drops synced ones on request, as a local disk file
// system does (tmpfs cannot drop them; some network file systems do not
// cache them).
func probePageRelease(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, "probe")
	if err := os.WriteFile(path, make([]byte, 4*pageSize), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	cached := residentPages(t, path)
	if err := unix.Fadvise(int(f.Fd()), 0, 4*pageSize, unix.FADV_DONTNEED); err != nil {
		t.Skipf("posix_fadvise in %s: %v", dir, err)
	}
	dropped := residentPages(t, path)
	if !cached[0] || dropped[0] {
		t.Skipf("%s does not keep written pages cached and drop them on request (cached %v, after the drop %v): "+
			"set TMPDIR to a local disk file system", dir, cached[0], dropped[0])
	}
}

// While the caller says RAM holds everything, each interval sync drops
// the page cache of the frames the previous sync made durable (and only
// those); the records still read back, from the device. Turned off, the
// journal leaves its pages alone.
func TestReleaseJournalPages(t *testing.T) {
	dir := t.TempDir()
	probePageRelease(t, dir)
	o := testOptions(vfs.Default, clock.NewFake(testStart))
	o.Dir = dir
	o.DurabilityInterval = time.Hour // the test runs the syncer itself
	o.BufferedJournal = true         // direct writes leave no pages: TestDirectJournalDB
	db := mustOpen(t, o)
	defer db.Close()
	seg := filepath.Join(dir, journalDirName, segmentName(db.j.Segment()))

	n := 0
	write := func(count int) {
		for range count {
			put(t, db, fmt.Sprint("k", n), string(randomValue(fmt.Sprint(n), 3000)), 0, uint64(n+1))
			n++
		}
	}
	syncNow := func() int64 {
		db.syncWAL()
		return db.j.w.Load().synced.Load()
	}
	pageOf := func(off int64) int { return int(off / pageSize) }

	db.ReleaseJournalPages(true)
	write(300) // about 900 KB
	first := syncNow()
	if got := db.Stats().JournalReleased; got != 0 {
		t.Fatalf("released %d bytes at the first sync: nothing was durable before it", got)
	}
	write(300)
	second := syncNow()
	st := db.Stats()
	if want := uint64(first &^ (pageSize - 1)); st.JournalReleased != want || st.JournalReleasing != 1 {
		t.Fatalf("released %d bytes (releasing %d), want %d", st.JournalReleased, st.JournalReleasing, want)
	}
	res := residentPages(t, seg)
	for p := range pageOf(first) {
		if res[p] {
			t.Fatalf("page %d of the first sync's frames still cached", p)
		}
	}
	for p := pageOf(first) + 1; p < pageOf(second); p++ {
		if !res[p] {
			t.Fatalf("page %d of the second sync's frames was dropped", p)
		}
	}

	db.ReleaseJournalPages(false)
	write(300)
	syncNow()
	write(10)
	syncNow()
	if st := db.Stats(); st.JournalReleased != uint64(int64(pageOf(first))*pageSize) || st.JournalReleasing != 0 {
		t.Fatalf("released %d bytes (releasing %d) while off", st.JournalReleased, st.JournalReleasing)
	}
	if res := residentPages(t, seg); !res[pageOf(second)+1] {
		t.Fatal("a page written while off is not cached (dropped by the journal, or evicted by memory pressure)")
	}
	for i := range n {
		if v, ok := get(t, db, fmt.Sprint("k", i)); !ok || v != string(randomValue(fmt.Sprint(i), 3000)) {
			t.Fatalf("k%d: %d bytes, found %v", i, len(v), ok)
		}
	}
}

// While the caller says RAM holds everything, the journal's frames go to
// the device with O_DIRECT: they leave no pages in the page cache, read
// back (from the writer's buffers, then the device), survive a clean
// close and a reopen, and the mode ends when the caller turns the release
// off. BufferedJournal keeps the page cache.
func TestDirectJournalDB(t *testing.T) {
	dir := t.TempDir()
	probePageRelease(t, dir)
	o := testOptions(vfs.Default, clock.NewFake(testStart))
	o.Dir = dir
	o.DurabilityInterval = time.Hour // the test runs the syncer itself
	db := mustOpen(t, o)
	seg := filepath.Join(dir, journalDirName, segmentName(db.j.Segment()))
	n := 0
	write := func(count int) {
		for range count {
			put(t, db, fmt.Sprint("k", n), string(randomValue(fmt.Sprint(n), 3000)), 0, uint64(n+1))
			n++
		}
	}
	check := func(db *DB) {
		t.Helper()
		for i := range n {
			if v, ok := get(t, db, fmt.Sprint("k", i)); !ok || v != string(randomValue(fmt.Sprint(i), 3000)) {
				t.Fatalf("k%d: %d bytes, found %v", i, len(v), ok)
			}
		}
	}

	write(10) // before the release: through the page cache
	db.ReleaseJournalPages(true)
	write(1000) // about 3 MB: direct once the first write switched
	db.syncWAL()
	if db.j.w.Load().d == nil {
		t.Skipf("%s takes no O_DIRECT: the journal stayed in the page cache", dir)
	}
	st := db.Stats()
	if st.JournalDirectBytes < 2<<20 {
		t.Fatalf("%d bytes written direct, want about 3 MB", st.JournalDirectBytes)
	}
	res := residentPages(t, seg)
	cached := 0
	for _, r := range res[1:] {
		if r {
			cached++
		}
	}
	if cached > len(res)/10 {
		t.Fatalf("%d of %d pages of a directly written segment cached", cached, len(res))
	}
	check(db)

	db.ReleaseJournalPages(false)
	write(300)
	db.syncWAL()
	if db.j.w.Load().d != nil {
		t.Fatal("still direct after the release was turned off")
	}
	if res := residentPages(t, seg); !res[len(res)-2] {
		t.Fatal("a page written after the release was turned off is not cached")
	}
	check(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = mustOpen(t, o)
	defer db.Close()
	check(db)
}
