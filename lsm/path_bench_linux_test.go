package lsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func init() {
	pathWriteExtra = append(pathWriteExtra, struct {
		name string
		fn   func(*testing.B, []byte)
	}{"journal-direct", benchPathJournalDirect})
}

// directSegment is the size of benchPathJournalDirect's one preallocated,
// recycled segment file.
const directSegment = 256 << 20

// benchPathJournalDirect is the journal's write without the page cache:
// the same frames appended into a page-aligned 256 KiB buffer that goes to
// a preallocated segment with one O_DIRECT pwrite when full (the device
// reads the buffer; the kernel copies nothing), and the segment is
// rewritten from its start when full instead of a new file being made, as
// Pebble recycles its WAL files. The writes are synchronous here; a
// server would issue them from a goroutine of their own. What a set costs
// with it, against journal's copy into the page cache, is what step 4 of
// docs/disk-tier-next.md's last section weighs.
func benchPathJournalDirect(b *testing.B, value []byte) {
	path := filepath.Join(b.TempDir(), "direct.seg")
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_RDWR|unix.O_DIRECT, 0o644)
	if err != nil {
		b.Skipf("O_DIRECT: %v", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Fallocate(fd, 0, 0, directSegment); err != nil {
		b.Skipf("fallocate: %v", err)
	}
	const chunk = journalWriteChunk
	buf, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // page-aligned
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = unix.Munmap(buf) }()
	rec := (&recordCodec{min: -1}).appendRecord(nil, &Record{Value: value})
	key := make([]byte, 0, 32)
	var frame []byte
	off, n := int64(0), 0
	flush := func() {
		clear(buf[n:]) // a whole chunk: O_DIRECT writes whole blocks
		if _, err := f.WriteAt(buf, off); err != nil {
			if errors.Is(err, unix.EINVAL) {
				b.Skipf("O_DIRECT write: %v", err)
			}
			b.Fatal(err)
		}
		if off += chunk; off >= directSegment {
			off = 0
		}
		n = 0
	}
	var seq uint64
	cpu := startCPU(b)
	for b.Loop() {
		seq++
		key = fmt.Appendf(key[:0], "mixed:%d", seq%100000)
		frame = appendFrame(frame[:0], seq, key, rec)
		if n+len(frame) > chunk {
			flush()
		}
		n += copy(buf[n:], frame)
	}
	flush()
	if err := unix.Fdatasync(fd); err != nil {
		b.Fatal(err)
	}
	cpu.report()
}
