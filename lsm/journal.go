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

// The journal holds the records of items outside Pebble (cache mode;
// docs/disk-tier-next.md): append-only segment files, each record written
// once and read back by its location with one ReadAt, while Pebble holds
// a reference to it (record.go, journalRef).
//
// A segment is a file named by its id (%08d.jnl) in the journal's
// directory: a 20-byte header, then frames.
//
//	header: "tcache-journal\x00" (15 bytes) | version u8 = 1 | epoch u32
//	frame:  len u32 | seq u64 | key len u16 | key | record | CRC-32C u32
//
// The epoch of a segment is the newest store epoch whose records it may
// hold: DB rolls to a new segment when the epoch advances and removes a
// segment once its epoch is dropped (every reference to it is in an epoch
// at or below its own).
//
// len counts the bytes from seq to the end of record; the CRC covers len
// and those bytes, so a frame cut short by a crash, or bytes that were
// never a frame, fail it. Integers are big-endian.
//
// Appends are serialized by the caller (DB's commit mutex): Append copies
// a frame into the open segment's buffer and returns its location at
// once; Write hands everything appended to the file with one write(2)
// and starts its writeback (so that the next fdatasync, which holds the
// Go scheduler's P while it blocks, is short), and may be called from any
// goroutine (a sync commit, the interval syncer); SyncTo makes a written
// offset durable, and concurrent callers share one fdatasync (group
// commit). A frame appended and not yet written is read from the buffer.
// An I/O error is sticky: the segment refuses further appends, as DB
// refuses commits after a failed WAL write.
//
// At open after a clean close the newest segment is appended to where it
// ends. After a crash it is scanned instead: the frames it holds stay
// readable by location, a location past them is lost (errFrameLost: its
// frame was still in the buffer when the process died) and appends go to
// a new segment, so nothing that may hold a valid frame is truncated or
// overwritten.
type journal struct {
	fs     vfs.FS
	dir    string
	fsyncs *atomic.Uint64 // counts fdatasyncs (nil: not counted)
	rel    pageRelease    // whether synced frames leave the page cache
	// noDirect: the open segment is never written with O_DIRECT
	// (journal_direct.go): turned off, or the file system refused it.
	noDirect    atomic.Bool
	directBytes atomic.Uint64 // written with O_DIRECT

	w atomic.Pointer[segmentWriter] // the open segment; nil after Close
	// wmu guards the open segment's buffer and offset (Append, Write,
	// Read of an unwritten frame) and the change of open segment (Roll).
	wmu sync.Mutex

	mu     sync.RWMutex
	segs   map[uint32]*segmentFile // every segment on disk, by id
	sealed int64                   // bytes of the segments other than the open one
}

// JournalLoc is where a frame is: its segment, its offset in the segment
// and its length (the whole frame).
type JournalLoc struct {
	Off     int64
	Segment uint32
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
	journalHeaderLen  = len(journalMagic) + 1 + 4
	frameLenSize      = 4
	frameFixed        = 8 + 2 // seq, key length
	frameOverhead     = frameLenSize + frameFixed + 4
	maxJournalKey     = 1<<16 - 1
	maxFrameBody      = frameFixed + maxJournalKey + MaxValueSize + recordOverhead + 64
	journalSuffix     = ".jnl"
	journalWriteChunk = 256 << 10 // Append writes the buffer at this size by itself
	maxSegmentSize    = 32 << 20  // DB rolls to a new segment past this size
)

// ErrJournalFailed is returned by every append after a write or sync of
// the open segment failed.
var ErrJournalFailed = errors.New("lsm: journal write failed")

// errNoHeader is a segment shorter than its header: create did not finish.
var errNoHeader = fmt.Errorf("%w: segment shorter than its header", ErrCorrupt)

// errFrameLost is a location past the frames a segment held when the
// process died: the frame was appended and never written. It is a miss,
// not damage.
var errFrameLost = errors.New("lsm: journal frame lost in a crash")

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
	f      vfs.File
	epoch  uint32
	size   int64 // bytes when sealed (0 for the open segment)
	lostAt int64 // > 0: frames at or past this offset were lost in a crash
	// refs counts the journal's own reference (dropped when the segment
	// is removed) and one per read in flight; the file closes at zero.
	refs atomic.Int32
}

func newSegmentFile(f vfs.File, epoch uint32, size int64) *segmentFile {
	s := &segmentFile{f: f, epoch: epoch, size: size}
	s.refs.Store(1)
	return s
}

// SegmentInfo describes a segment on disk.
type SegmentInfo struct {
	ID    uint32
	Epoch uint32
}

// openJournal opens (creating it if needed) the journal in dir. After a
// clean close (clean) appends continue in the newest segment when its
// epoch is epoch; otherwise, and after a crash, they go to a new segment
// of epoch. fsyncs (may be nil) counts the journal's fdatasyncs.
func openJournal(fs vfs.FS, dir string, epoch uint32, clean bool, fsyncs *atomic.Uint64) (*journal, error) {
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lsm: journal: %w", err)
	}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("lsm: journal: %w", err)
	}
	j := &journal{fs: fs, dir: dir, fsyncs: fsyncs, segs: map[uint32]*segmentFile{}}
	// The directory's own entry must survive a crash too.
	if err := syncDir(fs, fs.PathDir(dir)); err != nil {
		return nil, err
	}
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
	for i, id := range ids {
		path := fs.PathJoin(dir, segmentName(id))
		s, err := openSegmentFile(fs, path)
		if errors.Is(err, errNoHeader) && i == len(ids)-1 {
			// A crash (or a failed write) inside create: the header is
			// synced before any append, so the segment holds no frame.
			if err := fs.Remove(path); err != nil {
				j.closeFiles()
				return nil, fmt.Errorf("lsm: journal: %w", err)
			}
			ids = ids[:i]
			break
		}
		if err != nil {
			j.closeFiles()
			return nil, fmt.Errorf("lsm: journal: segment %d: %w", id, err)
		}
		j.segs[id] = s
		j.sealed += s.size
	}
	next := uint32(1)
	if len(ids) > 0 {
		last := ids[len(ids)-1]
		next = last + 1
		s := j.segs[last]
		if clean && s.epoch == epoch {
			w, err := reopenSegment(fs, fs.PathJoin(dir, segmentName(last)), last, epoch, s.size, j)
			if err != nil {
				j.closeFiles()
				return nil, err
			}
			j.sealed -= s.size
			s.size = 0
			j.w.Store(w)
			return j, nil
		}
		if !clean {
			end, err := j.Scan(last, func(JournalLoc, journalFrame) bool { return true })
			if err != nil && !errors.Is(err, ErrCorrupt) {
				j.closeFiles()
				return nil, err
			}
			s.lostAt = max(end, int64(journalHeaderLen))
			// What a process crash left may still be in the page cache
			// only: make it durable before the re-index makes Pebble
			// name it, or a power loss would leave names of frames that
			// are gone.
			if err := s.f.Sync(); err != nil {
				j.closeFiles()
				return nil, fmt.Errorf("lsm: journal: sync segment %d after a crash: %w", last, err)
			}
		}
	}
	if err := j.create(next, epoch); err != nil {
		j.closeFiles()
		return nil, err
	}
	return j, nil
}

// openSegmentFile opens a segment for reading and reads its header.
func openSegmentFile(fs vfs.FS, path string) (*segmentFile, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	hdr := make([]byte, journalHeaderLen)
	if st.Size() < int64(journalHeaderLen) {
		_ = f.Close()
		return nil, fmt.Errorf("%w (%d bytes)", errNoHeader, st.Size())
	}
	if _, err := f.ReadAt(hdr, 0); err != nil || string(hdr[:len(journalMagic)]) != journalMagic {
		_ = f.Close()
		return nil, fmt.Errorf("%w: not a journal segment header", ErrCorrupt)
	}
	if v := hdr[len(journalMagic)]; v != journalVersion {
		_ = f.Close()
		return nil, fmt.Errorf("%w: journal version %d, this tcache reads %d", ErrCorrupt, v, journalVersion)
	}
	return newSegmentFile(f, binary.BigEndian.Uint32(hdr[len(journalMagic)+1:]), st.Size()), nil
}

// create starts segment id of epoch, makes it the open segment and syncs
// the directory, so that a durable frame is never in a file a crash
// forgets. Requires wmu (or exclusive access during open).
func (j *journal) create(id, epoch uint32) error {
	path := j.fs.PathJoin(j.dir, segmentName(id))
	f, err := j.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("lsm: journal: %w", err)
	}
	hdr := binary.BigEndian.AppendUint32(append([]byte(journalMagic), journalVersion), epoch)
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
	j.segs[id] = newSegmentFile(r, epoch, 0)
	j.mu.Unlock()
	j.w.Store(newSegmentWriter(f, id, epoch, int64(len(hdr)), j))
	return nil
}

func (j *journal) syncDir() error { return syncDir(j.fs, j.dir) }

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("lsm: journal: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lsm: journal: sync %s: %w", dir, err)
	}
	return nil
}

// reopenSegment opens segment id of epoch of journal j for appending at
// end.
func reopenSegment(fs vfs.FS, path string, id, epoch uint32, end int64, j *journal) (*segmentWriter, error) {
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("lsm: journal: %w", err)
	}
	return newSegmentWriter(f, id, epoch, end, j), nil
}

// newSegmentWriter is the writer of journal j's segment id, whose file f
// holds end bytes, all of them durable.
func newSegmentWriter(f vfs.File, id, epoch uint32, end int64, j *journal) *segmentWriter {
	w := &segmentWriter{f: f, id: id, epoch: epoch, off: end, fsyncs: j.fsyncs, rel: &j.rel,
		noDirect: &j.noDirect, directBytes: &j.directBytes, fd: -1, handed: end}
	if fd := f.Fd(); fd != vfs.InvalidFd {
		w.fd = int(fd)
	}
	w.appended.Store(end)
	w.written.Store(end)
	w.synced.Store(end)
	w.released = end &^ (pageSize - 1)
	w.wbStart = w.released
	return w
}

// Segment is the id of the open segment.
func (j *journal) Segment() uint32 { return j.w.Load().id }

// Epoch is the epoch of the open segment.
func (j *journal) Epoch() uint32 { return j.w.Load().epoch }

// OpenSize is the open segment's length, appended frames included (0
// after Close). It takes no lock: exact for a caller that serializes it
// with Append and Roll (the commit path), a moment old for others.
func (j *journal) OpenSize() int64 {
	w := j.w.Load()
	if w == nil {
		return 0
	}
	return w.appended.Load()
}

// Size is the bytes of every segment, appended frames included.
func (j *journal) Size() int64 {
	open := j.OpenSize()
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.sealed + open
}

// Append adds the frame of (seq, key, rec) to the open segment and returns
// its location. The frame is in the file after the next Write (Append
// writes by itself every journalWriteChunk bytes) and readable at once.
// Callers serialize Append and Roll.
func (j *journal) Append(seq uint64, key, rec []byte) (JournalLoc, error) {
	if len(key) > maxJournalKey {
		return JournalLoc{}, fmt.Errorf("lsm: journal: key of %d bytes", len(key))
	}
	j.wmu.Lock()
	defer j.wmu.Unlock()
	w := j.w.Load()
	if err := w.failure(); err != nil {
		return JournalLoc{}, err
	}
	at := w.off + int64(len(w.buf))
	if w.d != nil {
		// An aligned buffer is handed over whole, not grown (Go's
		// append would move it to an unaligned one).
		n := frameOverhead + len(key) + len(rec)
		if len(w.buf)+n > cap(w.buf) {
			w.handOver()
			w.reserveDirect(n) // a frame larger than a buffer
		}
	}
	w.buf = appendFrame(w.buf, seq, key, rec)
	end := w.off + int64(len(w.buf))
	w.appended.Store(end)
	loc := JournalLoc{Segment: w.id, Off: at, Len: uint32(end - at)}
	if len(w.buf) >= w.chunk() {
		if _, err := w.write(); err != nil {
			return JournalLoc{}, err
		}
	}
	return loc, nil
}

// Write writes every appended frame to the file and returns the open
// segment's written end (the offset to pass to SyncTo). In direct mode
// it waits for the device without holding up appends.
func (j *journal) Write() (int64, error) {
	j.wmu.Lock()
	w := j.w.Load()
	end, err := w.write()
	d := w.d
	j.wmu.Unlock()
	if err == nil && d != nil {
		err = d.waitFor(w, end)
	}
	return end, err
}

// SyncTo makes the open segment durable up to end (from Write). Callers
// need not be serialized: one fdatasync covers every caller waiting for
// an offset it has written, so concurrent commits share fsyncs. When the
// segment was rolled since Write, Roll has synced it.
func (j *journal) SyncTo(end int64) error { return j.w.Load().syncTo(end) }

// Roll seals the open segment (written and synced) and opens segment id
// of epoch; id must be above the open segment's.
func (j *journal) Roll(id, epoch uint32) error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	w := j.w.Load()
	if id <= w.id {
		return fmt.Errorf("lsm: journal: roll to segment %d after %d", id, w.id)
	}
	end, err := w.finish()
	if err == nil {
		err = w.syncTo(end)
	}
	if err != nil {
		return err
	}
	if j.rel.on.Load() {
		w.syncMu.Lock()
		w.releasePages(w.synced.Load())
		w.syncMu.Unlock()
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("lsm: journal: %w", err)
	}
	j.mu.Lock()
	if s := j.segs[w.id]; s != nil {
		s.size = end
		j.sealed += end
	}
	j.mu.Unlock()
	return j.create(id, epoch)
}

// Read reads the frame at loc into dst (grown as needed) and decodes it.
// A segment that was removed reads as os.ErrNotExist; a location past
// what a crash left of a segment, as errFrameLost; a frame that fails its
// checks, as ErrCorrupt. A frame appended and not yet written is copied
// from the buffer.
func (j *journal) Read(dst []byte, loc JournalLoc) (journalFrame, []byte, error) {
	dst, err := j.readPrefix(dst, loc, int(loc.Len))
	if err != nil {
		return journalFrame{}, dst, err
	}
	return j.check(dst, loc)
}

// HasKey reports whether the frame at loc is key's: it reads only the
// frame's head (length, seq, key), so the frame's checksum is not
// verified; Read does that. Errors are Read's.
func (j *journal) HasKey(dst []byte, loc JournalLoc, key []byte) (bool, []byte, error) {
	n := frameLenSize + frameFixed + len(key)
	if n > int(loc.Len)-4 {
		return false, dst, nil
	}
	dst, err := j.readPrefix(dst, loc, n)
	if err != nil {
		return false, dst, err
	}
	ok := binary.BigEndian.Uint32(dst) == loc.Len-frameLenSize-4 &&
		int(binary.BigEndian.Uint16(dst[frameLenSize+8:])) == len(key) &&
		string(dst[frameLenSize+frameFixed:n]) == string(key)
	return ok, dst, nil
}

// readPrefix reads the first n bytes of the frame at loc (n at most
// loc.Len) into dst, grown as needed; errors are Read's.
func (j *journal) readPrefix(dst []byte, loc JournalLoc, n int) ([]byte, error) {
	if loc.Len < frameOverhead || loc.Len > frameLenSize+maxFrameBody+4 || loc.Off < int64(journalHeaderLen) || n > int(loc.Len) {
		return dst, fmt.Errorf("%w: journal location %+v", ErrCorrupt, loc)
	}
	dst = slices.Grow(dst[:0], n)[:n]
	if w := j.w.Load(); w != nil && w.id == loc.Segment && loc.Off+int64(loc.Len) > w.written.Load() {
		j.wmu.Lock()
		if w = j.w.Load(); w != nil && w.id == loc.Segment && loc.Off >= w.off {
			ok := loc.Off-w.off+int64(loc.Len) <= int64(len(w.buf))
			if ok {
				copy(dst, w.buf[loc.Off-w.off:])
			}
			j.wmu.Unlock()
			if !ok {
				return dst, errPastEnd(loc)
			}
			return dst, nil
		}
		if w != nil && w.id == loc.Segment && w.d != nil && w.d.copyQueued(dst, loc.Off, int64(loc.Len)) {
			j.wmu.Unlock() // handed to the device writer, not yet written
			return dst, nil
		}
		j.wmu.Unlock() // written meanwhile: read the file
	}
	s, err := j.acquire(loc.Segment, loc.Off+int64(loc.Len))
	if err != nil {
		return dst, err
	}
	defer j.release(s)
	if _, err := s.f.ReadAt(dst, loc.Off); err != nil {
		if errors.Is(err, io.EOF) {
			return dst, errPastEnd(loc)
		}
		return dst, fmt.Errorf("lsm: journal: %w", err)
	}
	return dst, nil
}

func errPastEnd(loc JournalLoc) error {
	return fmt.Errorf("%w: journal location %+v past the end", ErrCorrupt, loc)
}

// acquire takes a reference to segment id's file, for a read of the bytes
// below end (0: no check), that release gives back: a removed segment is
// closed when its last reader is done. A removed segment is
// os.ErrNotExist; bytes past what a crash left of it are errFrameLost.
func (j *journal) acquire(id uint32, end int64) (*segmentFile, error) {
	j.mu.RLock()
	defer j.mu.RUnlock()
	s := j.segs[id]
	if s == nil {
		return nil, fmt.Errorf("lsm: journal segment %d: %w", id, os.ErrNotExist)
	}
	if s.lostAt > 0 && end > s.lostAt {
		return nil, fmt.Errorf("segment %d: bytes up to %d, past what a crash left (%d): %w", id, end, s.lostAt, errFrameLost)
	}
	s.refs.Add(1) // the journal's reference is held: refs > 1 now
	return s, nil
}

// check decodes the frame read for loc.
func (j *journal) check(dst []byte, loc JournalLoc) (journalFrame, []byte, error) {
	fr, n, err := parseFrame(dst)
	if err == nil && n != int(loc.Len) {
		err = fmt.Errorf("%w: journal frame of %d bytes at a %d-byte location", ErrCorrupt, n, loc.Len)
	}
	return fr, dst, err
}

func (j *journal) release(s *segmentFile) {
	if s.refs.Add(-1) == 0 {
		_ = s.f.Close()
	}
}

// Scan calls fn with every frame of segment id in order, until fn returns
// false, and returns the offset after the last valid frame it read. It
// stops with an error wrapping ErrCorrupt at the first bytes that are not
// a valid frame (a torn tail after a crash). The open segment is scanned
// up to what was written. The frame fn gets is valid only during the
// call.
func (j *journal) Scan(id uint32, fn func(JournalLoc, journalFrame) bool) (int64, error) {
	return j.ScanFrom(id, 0, fn)
}

// scanChunk is how much ScanFrom reads at a time.
const scanChunk = 1 << 20

// ScanFrom is Scan from offset from, which must be the start of a frame
// (or at most the header's length: the first frame).
func (j *journal) ScanFrom(id uint32, from int64, fn func(JournalLoc, journalFrame) bool) (int64, error) {
	s, err := j.acquire(id, 0)
	if err != nil {
		return 0, err
	}
	defer j.release(s)
	if s.lostAt > 0 && from > s.lostAt {
		// Bytes before from were lost (a torn tail): what follows them
		// cannot be trusted to be frames of this segment.
		return from, fmt.Errorf("%w: segment %d: scan from %d, past what a crash left (%d)", ErrCorrupt, id, from, s.lostAt)
	}
	st, err := s.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("lsm: journal: %w", err)
	}
	size := st.Size()
	if w := j.w.Load(); w != nil && w.id == id {
		size = min(size, w.written.Load())
	}
	// The header was checked when the segment was opened or created.
	// buf holds the file's bytes from bufOff on, read a chunk at a time.
	var buf []byte
	bufOff := int64(0)
	bytesAt := func(off, n int64) ([]byte, error) {
		if off < bufOff || off+n > bufOff+int64(len(buf)) {
			want := min(max(n, scanChunk), size-off)
			buf = slices.Grow(buf[:0], int(want))[:want]
			if _, err := s.f.ReadAt(buf, off); err != nil {
				buf = buf[:0]
				return nil, err
			}
			bufOff = off
		}
		return buf[off-bufOff : off-bufOff+n], nil
	}
	off := max(from, int64(journalHeaderLen))
	for off < size {
		if size-off < frameLenSize {
			return off, fmt.Errorf("%w: segment %d: %d bytes at %d are not a frame", ErrCorrupt, id, size-off, off)
		}
		lenb, err := bytesAt(off, frameLenSize)
		if err != nil {
			return off, fmt.Errorf("lsm: journal: %w", err)
		}
		n := int64(frameLenSize) + int64(binary.BigEndian.Uint32(lenb)) + 4
		if n > size-off {
			return off, fmt.Errorf("%w: segment %d: frame of %d bytes at %d runs past the end (%d)", ErrCorrupt, id, n, off, size)
		}
		b, err := bytesAt(off, n)
		if err != nil {
			return off, fmt.Errorf("lsm: journal: %w", err)
		}
		fr, _, err := parseFrame(b)
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
	j.sealed -= s.size
	j.mu.Unlock()
	j.release(s) // the journal's reference
	if err := j.fs.Remove(j.fs.PathJoin(j.dir, segmentName(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lsm: journal: %w", err)
	}
	return nil
}

// RemoveBelow deletes every segment whose epoch is below epoch, except
// the open one, and returns how many it removed.
func (j *journal) RemoveBelow(epoch uint32) (int, error) {
	n := 0
	for _, s := range j.Segments() {
		if s.Epoch >= epoch || s.ID == j.Segment() {
			continue
		}
		if err := j.Remove(s.ID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// SegmentEpoch returns the epoch of segment id, ok false when it is not
// on disk (removed with its epoch, or never written).
func (j *journal) SegmentEpoch(id uint32) (epoch uint32, ok bool) {
	j.mu.RLock()
	s := j.segs[id]
	j.mu.RUnlock()
	if s == nil {
		return 0, false
	}
	return s.epoch, true
}

// Segments lists the segments on disk, in order.
func (j *journal) Segments() []SegmentInfo {
	j.mu.RLock()
	defer j.mu.RUnlock()
	out := make([]SegmentInfo, 0, len(j.segs))
	for _, id := range slices.Sorted(maps.Keys(j.segs)) {
		out = append(out, SegmentInfo{ID: id, Epoch: j.segs[id].epoch})
	}
	return out
}

// Close writes and syncs the open segment and closes every file.
func (j *journal) Close() error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	var err error
	if w := j.w.Load(); w != nil {
		var end int64
		if end, err = w.finish(); err == nil {
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
		j.release(s) // the journal's reference
		delete(j.segs, id)
	}
}

// segmentWriter is the open segment.
type segmentWriter struct {
	f      vfs.File
	id     uint32
	epoch  uint32
	fsyncs *atomic.Uint64
	buf    []byte // appended frames not yet written (journal.wmu)
	off    int64  // bytes in the file: the offset of buf[0] (journal.wmu)
	err    error  // sticky: the first failed write (journal.wmu)
	// wbStart: the device write of the pages below it was started
	// (journal.wmu).
	wbStart int64

	appended atomic.Int64 // off + len(buf), set by Append: OpenSize without wmu
	written  atomic.Int64 // off as of the last write, for SyncTo, Scan and Read
	syncMu   sync.Mutex   // one fdatasync at a time
	synced   atomic.Int64 // bytes known durable
	syncErr  error        // under syncMu: sticky
	failed   atomic.Bool  // a sync failed: appends stop too

	rel      *pageRelease
	released int64 // under syncMu: the page cache below it was released

	// Direct mode (journal_direct.go): d is the device writer while the
	// segment is written with O_DIRECT (journal.wmu); buf then starts at
	// the block-aligned off, and handed is the end of the frames handed
	// to d.
	d           *directWriter
	fd          int // the file's descriptor, -1 when it has none
	handed      int64
	noDirect    *atomic.Bool
	directBytes *atomic.Uint64
}

// chunk is the size at which Append writes by itself. Requires
// journal.wmu.
func (w *segmentWriter) chunk() int {
	if w.d != nil {
		return directChunk
	}
	return journalWriteChunk
}

// write writes buf to the file, or in direct mode hands it to the device
// writer, and returns the end of the frames it covers. Requires
// journal.wmu.
func (w *segmentWriter) write() (int64, error) {
	if err := w.failure(); err != nil {
		return 0, err
	}
	direct := w.rel != nil && w.rel.on.Load() && !w.noDirect.Load()
	if w.d != nil && !direct {
		if err := w.setDirect(false); err != nil {
			return 0, err
		}
	}
	if w.d != nil {
		return w.handOver(), nil
	}
	end, err := w.writeBuffered()
	if err == nil && direct {
		err = w.setDirect(true)
	}
	return end, err
}

// writeBuffered writes buf through the page cache. Requires journal.wmu.
func (w *segmentWriter) writeBuffered() (int64, error) {
	if len(w.buf) > 0 {
		n, err := w.f.WriteAt(w.buf, w.off) // at off: a reopened file's position is 0
		w.off += int64(n)
		if end := w.off &^ (pageSize - 1); err == nil && end > w.wbStart {
			// Whole pages only: the page the next write fills stays out
			// of writeback (a device with stable pages would make that
			// write wait for it).
			startWriteback(w.f, w.wbStart, end-w.wbStart)
			w.wbStart = end
		}
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
	w.handed = w.off
	return w.off, nil
}

// finish writes every appended frame, ends direct mode (truncating the
// zeros of the last block's padding) and returns the end of the frames:
// the segment is ready to sync and close. A segment in the page cache
// stays there (write would switch it to direct mode, only to end it).
// Requires journal.wmu.
func (w *segmentWriter) finish() (int64, error) {
	err := w.failure()
	if w.d == nil {
		if err != nil {
			return 0, err
		}
		return w.writeBuffered()
	}
	end := w.handOver()
	if derr := w.endDirect(); err == nil {
		err = derr
	}
	if err != nil {
		return 0, err
	}
	return end, nil
}

// failure is the error that stops appends: a failed write or sync.
func (w *segmentWriter) failure() error {
	if w.err != nil {
		return w.err
	}
	if w.d != nil && w.d.failed.Load() {
		return w.d.failure()
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
	if w.fsyncs != nil {
		w.fsyncs.Add(1)
	}
	prev := w.synced.Load()
	w.synced.Store(target)
	if w.rel != nil && w.rel.on.Load() {
		// Up to the previous fsync's end: what this one made durable
		// stays cached for one more interval, for a reader close behind
		// the writer (a replication shipper).
		w.releasePages(prev)
	}
	return nil
}

// releasePages drops the page cache of the segment below end (rounded
// down to a page: the page the writer is filling stays). The pages are
// clean (synced), so nothing is lost; a later read of them reads the
// device. Requires syncMu.
func (w *segmentWriter) releasePages(end int64) {
	end &^= pageSize - 1
	if end <= w.released {
		return
	}
	if dropPageCache(w.f, w.released, end-w.released) {
		w.rel.bytes.Add(uint64(end - w.released))
	}
	w.released = end
}
