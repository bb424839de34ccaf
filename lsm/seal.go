package lsm

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Sealing: a journal segment's pending index (pending.go) becomes
// sstables that Pebble ingests, without its WAL or memtable: its position
// entries and its log entries, each already in key order. The files also
// carry the indexed marker (metaIndexed): how far the journal is indexed
// in Pebble, so that Open re-indexes only what follows (reindex.go).
// Tables are ingested one at a time, oldest first, by the sealer goroutine
// (at Close, by Close).

// maxHanded is how many sealed tables may wait for ingestion before a
// commit that seals another waits for the oldest: the backpressure that
// keeps the pending index bounded when ingestion falls behind.
const maxHanded = 4

// indexedMarker is the value of metaIndexed: every frame before offset
// Off of segment Seg (and in earlier segments) is indexed in Pebble, and
// so is every log entry up to Seq.
type indexedMarker struct {
	Seg uint32
	Off int64
	Seq uint64
}

func (m indexedMarker) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, m.Seg)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Off))
	return binary.BigEndian.AppendUint64(b, m.Seq)
}

func decodeIndexedMarker(b []byte) (indexedMarker, error) {
	if len(b) != 20 {
		return indexedMarker{}, fmt.Errorf("%w: indexed marker of %d bytes", ErrCorrupt, len(b))
	}
	return indexedMarker{Seg: binary.BigEndian.Uint32(b), Off: int64(binary.BigEndian.Uint64(b[4:])),
		Seq: binary.BigEndian.Uint64(b[12:])}, nil
}

// applyPendingLocked adds b's position and log entries to the pending
// tables of their segments, b being committed. Requires mu.
func (db *DB) applyPendingLocked(b *Batch) {
	if len(b.pact) == 0 {
		return
	}
	p := &db.pend
	p.Lock()
	defer p.Unlock()
	for i := range b.pact {
		a := &b.pact[i]
		t := p.table(a.seg)
		if t == nil {
			continue
		}
		switch a.kind {
		case actPos:
			t.addPos(a.enc.of(b.lbuf))
		case actLog:
			t.addLog(a.seq, a.enc.of(b.lbuf))
		case actApplied:
			t.setApplied(a.applied)
			db.mu.applied[a.applied.Peer] = a.applied
		}
	}
}

// rollLocked seals the open journal segment and its pending table (handed
// to the sealer at the end of the commit: handOffLocked) and opens the
// next segment in the current epoch. Requires mu.
func (db *DB) rollLocked() error {
	prev, prevEpoch, end := db.j.Segment(), db.j.Epoch(), db.j.OpenSize()
	if err := db.j.Roll(prev+1, db.mu.epochs.cur); err != nil {
		return err
	}
	p := &db.pend
	p.Lock()
	t := p.open
	t.end = end
	p.open = newSegIndex(prev + 1)
	// Frozen even when empty: the entries of the commit that rolls, for
	// frames it appended before, are applied to it after the roll.
	p.frozen = append(p.frozen, t)
	db.mu.unhanded = true
	handed := 0
	var oldest *segIndex
	for _, f := range p.frozen {
		if f.handed && !isDone(f) {
			if handed++; oldest == nil {
				oldest = f
			}
		}
	}
	p.Unlock()
	if prevEpoch < db.mu.epochs.lo {
		// Open while its epochs were dropped (a flush_all): it holds
		// nothing live (its table keeps only log entries).
		_ = db.j.Remove(prev)
	}
	if handed >= maxHanded {
		return db.waitTable(oldest)
	}
	return nil
}

// handOffLocked gives the tables sealed by this commit to the sealer.
// Requires mu.
func (db *DB) handOffLocked() {
	if !db.mu.unhanded {
		return
	}
	db.mu.unhanded = false
	p := &db.pend
	kick := false
	p.Lock()
	for _, t := range p.frozen {
		if !t.handed {
			t.handed, kick = true, true
		}
	}
	p.Unlock()
	if kick && db.failed() != nil {
		db.failHanded()
		return
	}
	if kick {
		select {
		case db.sealKick <- struct{}{}:
		default:
		}
	}
}

func isDone(t *segIndex) bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// waitTable waits until t is ingested (nil) or its ingestion failed. It
// gives up with ErrClosed when the DB closes (Close ingests what is left).
func (db *DB) waitTable(t *segIndex) error {
	select {
	case <-t.done:
		if t.err == nil {
			// Retired here too (the sealer may not have yet): once a
			// caller writes over its keys, t must not be read.
			db.pend.retire(t)
		}
		return t.err
	case <-db.bg.stop:
		return ErrClosed
	}
}

// waitHandedLocked waits until every handed table is ingested. Requires mu.
func (db *DB) waitHandedLocked() error {
	db.pend.RLock()
	frozen := slices.Clone(db.pend.frozen)
	db.pend.RUnlock()
	for _, t := range frozen {
		if t.handed {
			if err := db.waitTable(t); err != nil {
				return err
			}
		}
	}
	return nil
}

// settleLocked seals the open table (when it holds anything) and waits
// until Pebble holds every pending entry: for a reader that wants
// Pebble's view whole (a snapshot, a recount, a scan). Requires mu.
func (db *DB) settleLocked() error {
	if !db.pend.open.empty() {
		if err := db.rollLocked(); err != nil {
			return err
		}
		db.handOffLocked()
	}
	return db.waitHandedLocked()
}

// sealer ingests handed tables, oldest first, until the DB closes.
func (db *DB) sealer() {
	for {
		select {
		case <-db.bg.stop:
			return
		case <-db.sealKick:
		}
		for {
			t := db.nextHanded()
			if t == nil {
				break
			}
			db.seal(t)
		}
	}
}

// sealAll ingests every table left at Close, the open one (of segment
// seg, end bytes long) last.
func (db *DB) sealAll(seg uint32, end int64) error {
	db.pend.Lock()
	t := db.pend.open
	t.seg, t.end = seg, end
	if !t.empty() {
		db.pend.frozen = append(db.pend.frozen, t)
	}
	db.pend.open = newSegIndex(seg)
	for _, f := range db.pend.frozen {
		f.handed = true
	}
	db.pend.Unlock()
	for t := db.nextHanded(); t != nil; t = db.nextHanded() {
		db.seal(t)
	}
	return db.failed()
}

// nextHanded is the oldest handed table not yet ingested (nil if none).
func (db *DB) nextHanded() *segIndex {
	db.pend.RLock()
	defer db.pend.RUnlock()
	for _, t := range db.pend.frozen {
		switch {
		case !t.handed || t.err != nil:
			return nil // the ones after it wait (ingestion keeps seal order)
		case !isDone(t):
			return t
		}
	}
	return nil
}

// seal ingests t and retires it; a failure fails the DB (reads of t's
// keys keep working from RAM; Open re-indexes the journal).
func (db *DB) seal(t *segIndex) {
	err := db.failed()
	if err == nil && !t.empty() {
		err = db.ingestTable(t)
	}
	if err != nil {
		db.st.writeErrors.Add(1)
		db.log.Error("journal index ingestion failed: refusing writes", "segment", t.seg, "err", err)
		db.fail(err)
		db.failHanded()
		return
	}
	db.pend.Lock()
	if !isDone(t) { // failHanded may have ended it meanwhile (a commit saw the DB fail)
		close(t.done)
	}
	db.pend.Unlock()
	db.pend.retire(t)
	db.st.ingests.Add(1)
}

// failHanded ends, with the DB's failure, every handed table not yet
// ingested: none will be (ingestion keeps seal order), and a commit
// waiting for one must not wait until Close. Their entries stay readable.
func (db *DB) failHanded() {
	err := fmt.Errorf("lsm: journal index: %w", db.failed())
	db.pend.Lock()
	defer db.pend.Unlock()
	for _, t := range db.pend.frozen {
		if t.handed && t.err == nil && !isDone(t) {
			t.err = err
			close(t.done)
		}
	}
}

// ingestSeq numbers the sstable files written for ingestion, named
// ingestFilePrefix + number in the store's directory.
var ingestSeq atomic.Uint64

const ingestFilePrefix = "journal-index-"

// ingestTable writes t as sstables, one per key space (its position
// entries, its log entries, the indexed marker), and has Pebble ingest
// them in one atomic step. Each key space's keys follow every older one,
// so the position and log files land in the last level and are never
// compacted. Every log entry up to t's last is made durable in Pebble
// first, so that the marker the files carry never runs ahead of an entry
// a crash could still lose.
func (db *DB) ingestTable(t *segIndex) error {
	fs := db.opts.FS
	var paths []string
	defer func() {
		for _, p := range paths {
			_ = fs.Remove(p) // Pebble removed those it ingested
		}
	}()
	marker := indexedMarker{Seg: t.seg, Off: t.end, Seq: t.lastSeq()}
	applied := slices.SortedFunc(maps.Values(t.applied), func(a, b Applied) int { return cmp.Compare(a.Peer, b.Peer) })
	var kb []byte
	files := []struct {
		o   *sstable.WriterOptions
		n   int
		set func(w *sstable.Writer, i int) error
	}{
		{&db.seqOpts, len(t.pos), func(w *sstable.Writer, i int) error {
			p := t.pos[i]
			kv := t.entry(p.off, p.n)
			return w.Set(kv[:posKeyLen], kv[posKeyLen:])
		}},
		{&db.seqOpts, len(t.logs), func(w *sstable.Writer, i int) error {
			l := t.logs[i]
			kb = appendLogKey(kb[:0], l.seq)
			return w.Set(kb, t.entry(l.off, l.n))
		}},
		{&db.sstOpts, 1 + len(applied), func(w *sstable.Writer, i int) error {
			if i < len(applied) { // "m applied/..." sorts before "m indexed"
				a := applied[i]
				return w.Set(appliedKey(a.Peer), encodeApplied(a))
			}
			return w.Set(metaIndexed, marker.encode())
		}},
	}
	for _, f := range files {
		if f.n == 0 {
			continue
		}
		path := fs.PathJoin(db.opts.Dir, fmt.Sprintf("%s%06d.sst", ingestFilePrefix, ingestSeq.Add(1)))
		paths = append(paths, path)
		if err := writeSSTable(fs, path, *f.o, f.n, f.set); err != nil {
			return err
		}
	}
	var err error
	if db.opts.disableWAL() {
		err = db.pdb.Flush()
	} else {
		err = db.pdb.LogData(nil, pebble.Sync)
	}
	if err == nil {
		err = db.pdb.Ingest(context.Background(), paths)
	}
	if err != nil {
		return fmt.Errorf("lsm: ingest journal index of segment %d: %w", t.seg, err)
	}
	return nil
}

// dropOnClose is an ingested table's file: its page cache is dropped
// when the sstable writer closes it, which it does after its fsync, so
// every page is clean and goes. Nothing reads these tables soon (a
// restart's replay, a lagging peer's ReadLog; Pebble reads the footer and
// index once at the ingestion, from the device), and writing them into
// fresh page-cache pages is what they cost most on a VM: the kernel hands
// the dropped pages, still backed by the host, to the next tables, as it
// does for the journal's (pagecache.go).
type dropOnClose struct{ vfs.File }

func (f dropOnClose) Close() error {
	dropPageCache(f.File, 0, 0) // 0: to the end of the file
	return f.File.Close()
}

// newSeqWriterOptions returns o for the s and l tables of an ingestion.
// Those are read in key order only (a restart's replay of s, ReadLog's
// walk of l; the one point lookup, of the log's head entry by the
// tombstone sweep, runs once per maintenance pass), so a bloom filter is
// never consulted, and their entries are small and already
// prefix-encoded by the columnar blocks: building the filters and
// compressing the blocks cost the sealer about a third of its CPU for
// little. Tables Pebble writes itself (flushes, compactions) keep the
// level options.
func newSeqWriterOptions(o sstable.WriterOptions) sstable.WriterOptions {
	o.FilterPolicy = nil
	o.Compression = sstable.NoCompression
	return o
}

// writeSSTable writes n keys, in order, to a new sstable at path: set
// adds the i-th.
func writeSSTable(fs vfs.FS, path string, o sstable.WriterOptions, n int, set func(w *sstable.Writer, i int) error) error {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("lsm: journal index: %w", err)
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(dropOnClose{f}), o)
	for i := range n {
		if err := set(w, i); err != nil {
			_ = w.Close()
			return fmt.Errorf("lsm: journal index: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("lsm: journal index: %w", err)
	}
	return nil
}
