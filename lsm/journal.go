package lsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The journal is step 1 of the next data path (docs/disk-tier-next.md):
// append-only segment files that will hold item records outside Pebble,
// each record written once, read back by its location with one ReadAt.
// It is complete on its own (tests, fuzz target, BenchmarkPathWrite) and
// not yet used by DB: step 2 writes the records of local puts here and
// their locations to Pebble.
//
// A segment is a file named by its id (%08d.jnl) in the journal's
// directory: a 16-byte header, then frames.
//
//	header: "tcache-journal\x00" (15 bytes) | version u8 = 1
//	frame:  len u32 | seq u64 | key len u16 | key | record | CRC-32C u32
//
// len counts the bytes from seq to the end of record; the CRC covers len
// and those bytes, so a frame cut short by a crash, or bytes that were
// never a frame, fail it. Integers are big-endian.
//
// Appends are serialized by the caller (DB's commit mutex): Append copies
// a frame into the open segment's buffer and returns its location at
// once; Write hands everything appended to the file with one write(2);
// SyncTo makes a written offset durable, and concurrent callers share one
// fdatasync (group commit). An I/O error is sticky: the segment refuses
// further appends, as DB refuses commits after a failed WAL write.
//
// At open, the newest segment is scanned. When it ends in a valid frame it
// is appended to; otherwise (a torn tail, or damage) it is left as it is,
// readable by location, and appends go to a new segment: nothing that may
// hold a valid frame is truncated.
type journal struct {
	fs  vfs.FS
	dir string

	w atomic.Pointer[segmentWriter] // the open segment; nil after Close

	mu   sync.Mutex
	segs map[uint32]*segmentFile // every segment on disk, by id
}

// JournalLoc is where a frame is: its segment, its offset in the segment
// and its length (the whole frame).
type JournalLoc struct {
	Segment uint32
	Off     int64
	Len     uint32
}

// journalFrame is a decoded frame; Key and Record alias the buffer it was
// read into.
type journalFrame struct {
	Seq    uint64
	Key    []byte
	Record []byte
}

const (
	journalMagic      = "tcache-journal\x00"
	journalVersion    = 1
	journalHeaderLen  = len(journalMagic) + 1
	frameLenSize      = 4
	frameFixed        = 8 + 2 // seq, key length
	frameOverhead     = frameLenSize + frameFixed + 4
	maxJournalKey     = 1<<16 - 1
	maxFrameBody      = frameFixed + maxJournalKey + MaxValueSize + recordOverhead + 64
	journalSuffix     = ".jnl"
	journalWriteChunk = 256 << 10 // Append writes the buffer at this size by itself
)

// ErrJournalFailed is returned by every append after a write or sync of
// the open segment failed.
var ErrJournalFailed = errors.New("lsm: journal write failed")

// appendFrame appends the frame of (seq, key, rec) to dst.
func appendFrame(dst []byte, seq uint64, key, rec []byte) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, uint32(frameFixed+len(key)+len(rec)))
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(key)))
	dst = append(dst, key...)
	dst = append(dst, rec...)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// parseFrame decodes the frame at the start of src and returns it with its
// length. It fails (wrapping ErrCorrupt) when src is shorter than the
// frame it announces or the frame's checksum or lengths are wrong; the
// record inside is not checked (the record codec does that).
func parseFrame(src []byte) (journalFrame, int, error) {
	var fr journalFrame
	if len(src) < frameLenSize {
		return fr, 0, fmt.Errorf("%w: journal frame of %d bytes", ErrCorrupt, len(src))
	}
	body := binary.BigEndian.Uint32(src)
	if body < frameFixed || body > maxFrameBody {
		return fr, 0, fmt.Errorf("%w: journal frame length %d", ErrCorrupt, body)
	}
	n := frameLenSize + int(body) + 4
	if len(src) < n {
		return fr, 0, fmt.Errorf("%w: journal frame of %d bytes cut at %d", ErrCorrupt, n, len(src))
	}
	if got, want := crc32.Checksum(src[:n-4], castagnoli), binary.BigEndian.Uint32(src[n-4:]); got != want {
		return fr, 0, fmt.Errorf("%w: journal frame checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	fr.Seq = binary.BigEndian.Uint64(src[frameLenSize:])
	klen := int(binary.BigEndian.Uint16(src[frameLenSize+8:]))
	if frameFixed+klen > int(body) {
		return fr, 0, fmt.Errorf("%w: journal key of %d bytes in a %d-byte frame", ErrCorrupt, klen, body)
	}
	at := frameLenSize + frameFixed
	fr.Key = src[at : at+klen]
	fr.Record = src[at+klen : n-4]
	return fr, n, nil
}

func segmentName(id uint32) string { return fmt.Sprintf("%08d%s", id, journalSuffix) }

// segmentFile is a segment open for reading. Readers hold a reference so
// that Remove closes the file only after their ReadAt is done (a closed
// descriptor's number may be reused by another file).
type segmentFile struct {
	f       vfs.File
	refs    int // under journal.mu
	removed bool
}

// openJournal opens (creating it if needed) the journal in dir.
func openJournal(fs vfs.FS, dir string) (*journal, error) {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lsm: journal: %w", err)
	}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("lsm: journal: %w", err)
	}
	j := &journal{fs: fs, dir: dir, segs: map[uint32]*segmentFile{}}
	var ids []uint32
	for _, name := range names {
		base, ok := strings.CutSuffix(name, journalSuffix)
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(base, 10, 32)
		if err != nil || segmentName(uint32(id)) != name {
			return nil, fmt.Errorf("lsm: journal: unexpected file %s in %s", name, dir)
		}
		ids = append(ids, uint32(id))
	}
	slices.Sort(ids)
	for _, id := range ids {
		f, err := fs.Open(fs.PathJoin(dir, segmentName(id)))
		if err != nil {
			j.closeFiles()
			return nil, fmt.Errorf("lsm: journal: %w", err)
		}
		j.segs[id] = &segmentFile{f: f}
	}
	next := uint32(1)
	if len(ids) > 0 {
		last := ids[len(ids)-1]
		next = last + 1
		end, clean, err := j.scanEnd(last)
		if err != nil {
			j.closeFiles()
			return nil, err
		}
		if clean {
			w, err := reopenSegment(fs, fs.PathJoin(dir, segmentName(last)), last, end)
			if err != nil {
				j.closeFiles()
				return nil, err
			}
			j.w.Store(w)
			return j, nil
		}
	}
	if err := j.create(next); err != nil {
		j.closeFiles()
		return nil, err
	}
	return j, nil
}

// scanEnd reports where the frames of segment id end and whether the file
// ends there (no torn or damaged bytes after them).
func (j *journal) scanEnd(id uint32) (end int64, clean bool, err error) {
	end, err = j.Scan(id, func(JournalLoc, journalFrame) bool { return true })
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return 0, false, err
	}
	st, serr := j.segs[id].f.Stat()
	if serr != nil {
		return 0, false, fmt.Errorf("lsm: journal: %w", serr)
	}
	return end, err == nil && end == st.Size(), nil
}

// create starts segment id, makes it the open segment and syncs the
// directory, so that a durable frame is never in a file a crash forgets.
func (j *journal) create(id uint32) error {
	path := j.fs.PathJoin(j.dir, segmentName(id))
	f, err := j.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("lsm: journal: %w", err)
	}
	hdr := append([]byte(journalMagic), journalVersion)
	if _, err := f.Write(hdr); err != nil {
		_ = f.Close()
		return fmt.Errorf("lsm: journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("lsm: journal: %w", err)
	}
	if err := j.syncDir(); err != nil {
		_ = f.Close()
		return err
	}
	r, err := j.fs.Open(path)
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("lsm: journal: %w", err)
	}
	j.mu.Lock()
	j.segs[id] = &segmentFile{f: r}
	j.mu.Unlock()
	w := &segmentWriter{f: f, id: id, off: int64(len(hdr))}
	w.written.Store(w.off)
	w.synced.Store(w.off)
	j.w.Store(w)
	return nil
}

func (j *journal) syncDir() error {
	d, err := j.fs.OpenDir(j.dir)
	if err != nil {
		return fmt.Errorf("lsm: journal: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lsm: journal: sync %s: %w", j.dir, err)
	}
	return nil
}

// reopenSegment opens segment id for appending at end.
func reopenSegment(fs vfs.FS, path string, id uint32, end int64) (*segmentWriter, error) {
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("lsm: journal: %w", err)
	}
	w := &segmentWriter{f: f, id: id, off: end}
	w.written.Store(end)
	w.synced.Store(end)
	return w, nil
}

// Segment is the id of the open segment.
func (j *journal) Segment() uint32 { return j.w.Load().id }

// Append adds the frame of (seq, key, rec) to the open segment and returns
// its location. The frame is in the file after the next Write (Append
// writes by itself every journalWriteChunk bytes). Callers serialize
// Append, Write and Roll.
func (j *journal) Append(seq uint64, key, rec []byte) (JournalLoc, error) {
	if len(key) > maxJournalKey {
		return JournalLoc{}, fmt.Errorf("lsm: journal: key of %d bytes", len(key))
	}
	w := j.w.Load()
	if err := w.failure(); err != nil {
		return JournalLoc{}, err
	}
	at := w.off + int64(len(w.buf))
	w.buf = appendFrame(w.buf, seq, key, rec)
	loc := JournalLoc{Segment: w.id, Off: at, Len: uint32(w.off + int64(len(w.buf)) - at)}
	if len(w.buf) >= journalWriteChunk {
		if _, err := j.Write(); err != nil {
			return JournalLoc{}, err
		}
	}
	return loc, nil
}

// Write writes every appended frame to the file and returns the open
// segment's written end (the offset to pass to SyncTo).
func (j *journal) Write() (int64, error) {
	w := j.w.Load()
	if err := w.failure(); err != nil {
		return 0, err
	}
	if len(w.buf) > 0 {
		n, err := w.f.WriteAt(w.buf, w.off) // at off: a reopened file's position is 0
		w.off += int64(n)
		if err == nil && n < len(w.buf) {
			err = io.ErrShortWrite
		}
		if err != nil {
			w.err = fmt.Errorf("%w: segment %d: %w", ErrJournalFailed, w.id, err)
			return 0, w.err
		}
		if cap(w.buf) > 4*journalWriteChunk {
			w.buf = nil // a large value passed: do not keep its buffer
		} else {
			w.buf = w.buf[:0]
		}
	}
	w.written.Store(w.off)
	return w.off, nil
}

// SyncTo makes the open segment durable up to end (from Write). Callers
// need not be serialized: one fdatasync covers every caller waiting for
// an offset it has written, so concurrent commits share fsyncs.
func (j *journal) SyncTo(end int64) error { return j.w.Load().syncTo(end) }

// Roll seals the open segment (written and synced) and opens segment id,
// which must be above it.
func (j *journal) Roll(id uint32) error {
	w := j.w.Load()
	if id <= w.id {
		return fmt.Errorf("lsm: journal: roll to segment %d after %d", id, w.id)
	}
	end, err := j.Write()
	if err == nil {
		err = w.syncTo(end)
	}
	if err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("lsm: journal: %w", err)
	}
	return j.create(id)
}

// Read reads the frame at loc into dst (grown as needed) and decodes it.
// A segment that was removed reads as os.ErrNotExist; a frame that fails
// its checks, as ErrCorrupt. A frame still in the open segment's buffer
// (appended, not written) is not readable.
func (j *journal) Read(dst []byte, loc JournalLoc) (journalFrame, []byte, error) {
	j.mu.Lock()
	s := j.segs[loc.Segment]
	if s == nil || s.removed {
		j.mu.Unlock()
		return journalFrame{}, dst, fmt.Errorf("lsm: journal segment %d: %w", loc.Segment, os.ErrNotExist)
	}
	s.refs++
	j.mu.Unlock()
	defer j.release(s)
	if loc.Len < frameOverhead || loc.Len > frameLenSize+maxFrameBody+4 || loc.Off < int64(journalHeaderLen) {
		return journalFrame{}, dst, fmt.Errorf("%w: journal location %+v", ErrCorrupt, loc)
	}
	dst = slices.Grow(dst[:0], int(loc.Len))[:loc.Len]
	if _, err := s.f.ReadAt(dst, loc.Off); err != nil {
		if errors.Is(err, io.EOF) {
			return journalFrame{}, dst, fmt.Errorf("%w: journal location %+v past the end", ErrCorrupt, loc)
		}
		return journalFrame{}, dst, fmt.Errorf("lsm: journal: %w", err)
	}
	fr, n, err := parseFrame(dst)
	if err == nil && n != int(loc.Len) {
		err = fmt.Errorf("%w: journal frame of %d bytes at a %d-byte location", ErrCorrupt, n, loc.Len)
	}
	return fr, dst, err
}

func (j *journal) release(s *segmentFile) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if s.refs--; s.refs == 0 && s.removed {
		_ = s.f.Close()
	}
}

// Scan calls fn with every frame of segment id in order, until fn returns
// false, and returns the offset after the last valid frame it read. It
// stops with an error wrapping ErrCorrupt at the first bytes that are not
// a valid frame (a torn tail after a crash), and at the header if it is
// not a journal's. The open segment is scanned up to what was written.
func (j *journal) Scan(id uint32, fn func(JournalLoc, journalFrame) bool) (int64, error) {
	j.mu.Lock()
	s := j.segs[id]
	if s == nil || s.removed {
		j.mu.Unlock()
		return 0, fmt.Errorf("lsm: journal segment %d: %w", id, os.ErrNotExist)
	}
	s.refs++
	j.mu.Unlock()
	defer j.release(s)
	st, err := s.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("lsm: journal: %w", err)
	}
	size := st.Size()
	if w := j.w.Load(); w != nil && w.id == id {
		size = min(size, w.written.Load())
	}
	r := io.NewSectionReader(s.f, 0, size)
	hdr := make([]byte, journalHeaderLen)
	if _, err := io.ReadFull(r, hdr); err != nil || string(hdr[:len(journalMagic)]) != journalMagic {
		return 0, fmt.Errorf("%w: segment %d has no journal header", ErrCorrupt, id)
	}
	if hdr[len(journalMagic)] != journalVersion {
		return 0, fmt.Errorf("%w: segment %d is journal version %d, this tcache reads %d", ErrCorrupt, id, hdr[len(journalMagic)], journalVersion)
	}
	off := int64(journalHeaderLen)
	buf := make([]byte, 64<<10)
	for off < size {
		var lenb [frameLenSize]byte
		if _, err := r.ReadAt(lenb[:], off); err != nil {
			return off, fmt.Errorf("%w: segment %d: %d bytes at %d are not a frame", ErrCorrupt, id, size-off, off)
		}
		n := int64(frameLenSize) + int64(binary.BigEndian.Uint32(lenb[:])) + 4
		if n > size-off {
			return off, fmt.Errorf("%w: segment %d: frame of %d bytes at %d runs past the end (%d)", ErrCorrupt, id, n, off, size)
		}
		buf = slices.Grow(buf[:0], int(n))[:n]
		if _, err := r.ReadAt(buf, off); err != nil {
			return off, fmt.Errorf("lsm: journal: %w", err)
		}
		fr, _, err := parseFrame(buf)
		if err != nil {
			return off, fmt.Errorf("segment %d at %d: %w", id, off, err)
		}
		if !fn(JournalLoc{Segment: id, Off: off, Len: uint32(n)}, fr) {
			return off + n, nil
		}
		off += n
	}
	return off, nil
}

// Remove deletes segment id, which must not be the open one. Reads of it
// in flight finish first; later ones get os.ErrNotExist.
func (j *journal) Remove(id uint32) error {
	if w := j.w.Load(); w != nil && id == w.id {
		return fmt.Errorf("lsm: journal: remove the open segment %d", id)
	}
	j.mu.Lock()
	s := j.segs[id]
	if s == nil {
		j.mu.Unlock()
		return nil
	}
	delete(j.segs, id)
	s.removed = true
	if s.refs == 0 {
		_ = s.f.Close()
	}
	j.mu.Unlock()
	if err := j.fs.Remove(j.fs.PathJoin(j.dir, segmentName(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lsm: journal: %w", err)
	}
	return nil
}

// Segments lists the ids of the segments on disk, in order.
func (j *journal) Segments() []uint32 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Sorted(maps.Keys(j.segs))
}

// Close writes and syncs the open segment and closes every file.
func (j *journal) Close() error {
	var err error
	if w := j.w.Load(); w != nil {
		var end int64
		if end, err = j.Write(); err == nil {
			err = w.syncTo(end)
		}
		if cerr := w.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("lsm: journal: %w", cerr)
		}
		j.w.Store(nil)
	}
	j.closeFiles()
	return err
}

func (j *journal) closeFiles() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for id, s := range j.segs {
		s.removed = true
		if s.refs == 0 {
			_ = s.f.Close()
		}
		delete(j.segs, id)
	}
}

// segmentWriter is the open segment.
type segmentWriter struct {
	f   vfs.File
	id  uint32
	buf []byte // appended frames not yet written
	off int64  // bytes in the file: the offset of buf[0]
	err error  // sticky: the first failed write or sync

	written atomic.Int64 // off as of the last Write, for SyncTo and Scan
	syncMu  sync.Mutex   // one fdatasync at a time
	synced  atomic.Int64 // bytes known durable
	syncErr error        // under syncMu: sticky
	failed  atomic.Bool  // a sync failed: appends stop too
}

// failure is the error that stops appends: a failed write or sync.
func (w *segmentWriter) failure() error {
	if w.err != nil {
		return w.err
	}
	if w.failed.Load() {
		w.syncMu.Lock()
		defer w.syncMu.Unlock()
		return w.syncErr
	}
	return nil
}

func (w *segmentWriter) syncTo(end int64) error {
	if w.synced.Load() >= end {
		return nil
	}
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	if w.syncErr != nil {
		return w.syncErr
	}
	if w.synced.Load() >= end {
		return nil // another caller's fdatasync covered end
	}
	target := w.written.Load() // everything written so far: waiters behind us share it
	if err := w.f.SyncData(); err != nil {
		w.syncErr = fmt.Errorf("%w: segment %d: sync: %w", ErrJournalFailed, w.id, err)
		w.failed.Store(true)
		return w.syncErr
	}
	w.synced.Store(target)
	return nil
}
