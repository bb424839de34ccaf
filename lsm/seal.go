package lsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Sealing: a journal segment's pending index (pending.go) becomes one
// sorted sstable that Pebble ingests, without its WAL or memtable. The
// sstable also carries the indexed marker (metaIndexed): how far the
// journal is indexed in Pebble, so that Open re-indexes only what follows
// (reindex.go). Tables are ingested one at a time, oldest first, by the
// sealer goroutine (at Close, by Close).

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

// segEntry is a key's entry in the pending table of segment seg.
type segEntry struct {
	seg uint32
	e   pendingEntry
}

// pendViewLocked lists key's entries in the tables a commit may still
// change (the open one and those sealed by this commit, not yet handed to
// the sealer), oldest first, as b's earlier actions leave them (b may be
// nil). Requires mu.
func (db *DB) pendViewLocked(b *Batch, key []byte) []segEntry {
	var dst []segEntry
	if b != nil {
		dst = b.view[:0]
	}
	p := &db.pend
	p.RLock()
	for _, t := range p.frozen {
		if e, ok := t.keys[string(key)]; ok && !t.handed {
			dst = append(dst, segEntry{t.seg, e})
		}
	}
	if e, ok := p.open.keys[string(key)]; ok {
		dst = append(dst, segEntry{p.open.seg, e})
	}
	p.RUnlock()
	if b == nil {
		return dst
	}
	for i := range b.pact {
		a := &b.pact[i]
		if a.kind == actLog || !bytes.Equal(a.key.of(b.buf), key) {
			continue
		}
		if a.kind == actRemove {
			dst = dst[:0]
			continue
		}
		at := slices.IndexFunc(dst, func(v segEntry) bool { return v.seg == a.seg })
		if at >= 0 {
			// As segIndex.put: the table's entry keeps its base.
			base := dst[at].e.base
			dst[at].e = a.entry
			dst[at].e.base = base
		} else {
			dst = append(dst, segEntry{a.seg, a.entry}) // seg is the newest table's
		}
	}
	b.view = dst
	return dst
}

// supersedeLocked prepares a Pebble write of key that replaces whatever
// the pending index holds of it. A handed table that holds key must be
// ingested first (its sstable would land over the write): it waits for
// that. The leftovers of the key's base (the state Pebble holds under the
// pending entries) are deleted in pb, before the write's own mutations.
// The caller removes the key's entries once pb is committed. It reports
// whether the key had pending entries: its k entry is then not in Pebble
// (or names the base's epoch), and the write must set it. Requires mu.
func (db *DB) supersedeLocked(b *Batch, pb *pebble.Batch, key []byte) (bool, error) {
	var wait *segIndex
	db.pend.RLock()
	for i := len(db.pend.frozen) - 1; i >= 0 && wait == nil; i-- {
		t := db.pend.frozen[i]
		if _, ok := t.keys[string(key)]; ok && t.handed {
			wait = t
		}
	}
	db.pend.RUnlock()
	if wait != nil {
		if err := db.waitTable(wait); err != nil {
			return false, err
		}
	}
	v := db.pendViewLocked(b, key)
	if len(v) > 0 {
		for _, k := range baseLeftovers(key, v[0].e.base, nil) {
			_ = pb.Delete(k, nil)
		}
	}
	return wait != nil || len(v) > 0, nil
}

// baseLeftovers lists the Pebble keys of base, key's state in Pebble under
// its pending entries: its d record and its x or t entry, except the d
// record and x entry that e (nil: none) writes again.
func baseLeftovers(key []byte, base pendingBase, e *pendingEntry) [][]byte {
	if !base.present {
		return nil
	}
	var dels [][]byte
	if e == nil || base.epoch != e.epoch {
		dels = append(dels, appendDataKey(nil, base.epoch, key))
	}
	switch {
	case base.tomb:
		dels = append(dels, appendTombKey(nil, base.exptime, base.epoch, key))
	case base.exptime > 0 && (e == nil || base.epoch != e.epoch || base.exptime != e.exptime):
		dels = append(dels, appendExpKey(nil, base.exptime, base.epoch, key))
	}
	return dels
}

// applyPendingLocked carries out b's pending-index actions, b being
// committed. Requires mu.
func (db *DB) applyPendingLocked(b *Batch) {
	if len(b.pact) == 0 {
		return
	}
	p := &db.pend
	p.Lock()
	defer p.Unlock()
	for i := range b.pact {
		a := &b.pact[i]
		switch a.kind {
		case actPut:
			if t := p.table(a.seg); t != nil {
				t.put(a.key.of(b.buf), a.entry)
			}
		case actRemove:
			key := a.key.of(b.buf)
			p.open.remove(key)
			for _, t := range p.frozen {
				if !t.handed {
					t.remove(key)
				}
			}
		case actLog:
			if t := p.table(a.seg); t != nil {
				t.addLog(a.seq, a.log.of(b.lbuf))
			}
		}
	}
}

// dropPendingLocked removes from the open table the entries of epochs
// below lo (all of them: lo 0), once Pebble's records of those epochs are
// gone (a drop or a flush); their log entries stay. Requires mu and no
// handed table waiting.
func (db *DB) dropPendingLocked(lo uint32) {
	db.pend.Lock()
	defer db.pend.Unlock()
	t := db.pend.open
	for k, e := range t.keys {
		if lo == 0 || e.epoch < lo {
			t.remove([]byte(k))
		}
	}
}

// removePendingLocked removes keys, whose state a committed Pebble write
// (the sweeper's) now holds, from the open table. Requires mu.
func (db *DB) removePendingLocked(keys [][]byte) {
	if len(keys) == 0 {
		return
	}
	db.pend.Lock()
	for _, k := range keys {
		db.pend.open.remove(k)
	}
	db.pend.Unlock()
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

// ingestTable writes t as sorted sstables, one per key space, and has
// Pebble ingest them in one atomic step. One file per key space lets each
// land as low in the LSM as it can: the log's entries follow every older
// one, so their file usually goes to the last level and is never
// compacted; only the d, k and x files overlap older data. Every log
// entry up to t's last is made durable in Pebble first, so that the
// marker the files carry never runs ahead of an entry a crash could still
// lose.
func (db *DB) ingestTable(t *segIndex) error {
	fs := db.opts.FS
	var paths []string
	defer func() {
		for _, p := range paths {
			_ = fs.Remove(p) // Pebble removed those it ingested
		}
	}()
	// One indexWriter for the life of the DB: its buffers (megabytes for a
	// segment's table) stay mapped, where fresh ones cost a page fault per
	// page each time (about a third of the sealer's CPU).
	db.iw.Lock()
	defer db.iw.Unlock()
	w := &db.iw.w
	// Emptied after each table (dropping its key strings now, not at the
	// next one), its buffers kept up to a few times a table: a table is at
	// most MemTableSize of pending entries (pending.go).
	defer w.reset(4 * db.opts.MemTableSize)
	w.build(t)
	for _, g := range w.groups {
		if len(g) == 0 {
			continue
		}
		path := fs.PathJoin(db.opts.Dir, fmt.Sprintf("%s%06d.sst", ingestFilePrefix, ingestSeq.Add(1)))
		paths = append(paths, path)
		if err := w.write(fs, path, g, db.sstOpts); err != nil {
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

// indexWriter lays out a table's sstable keys: in one arena, grouped by
// key space (each group sorted, the groups in key order).
type indexWriter struct {
	arena  []byte
	groups [6][]indexKV // d k l m t x

	names       []string // build's scratch: the table's keys, sorted
	key, kb, vb []byte
}

// reset empties w for the next table, keeping its buffers while they
// hold at most keep bytes.
func (w *indexWriter) reset(keep int64) {
	held := int64(cap(w.arena)) + int64(cap(w.names))*int64(unsafe.Sizeof(""))
	for _, g := range w.groups {
		held += int64(cap(g)) * int64(unsafe.Sizeof(indexKV{}))
	}
	if held > keep {
		*w = indexWriter{}
		return
	}
	w.arena = w.arena[:0]
	for i := range w.groups {
		w.groups[i] = w.groups[i][:0]
	}
	clear(w.names[:cap(w.names)]) // let the key strings go
	w.names = w.names[:0]
}

// indexKV is one key of an index sstable, in indexWriter.arena (del: a
// deletion).
type indexKV struct {
	k, v span
	del  bool
}

const (
	groupD = iota
	groupK
	groupL
	groupM
	groupT
	groupX
)

func (w *indexWriter) add(g int, k []byte, v []byte, del bool) {
	kv := indexKV{k: span{len(w.arena), len(k)}, del: del}
	w.arena = append(w.arena, k...)
	kv.v = span{len(w.arena), len(v)}
	w.arena = append(w.arena, v...)
	w.groups[g] = append(w.groups[g], kv)
}

// build lays out t's entries (d references, k epochs, x entries, the
// deletions of the bases' leftovers), log entries and indexed marker.
func (w *indexWriter) build(t *segIndex) {
	for k := range t.keys {
		w.names = append(w.names, k)
	}
	slices.Sort(w.names) // k is then in order, d nearly (by epoch, then key)
	kb, vb := w.kb, w.vb
	for _, key := range w.names {
		e := t.keys[key]
		w.key = append(w.key[:0], key...)
		k := w.key
		kb = appendDataKey(kb[:0], e.epoch, k)
		vb = appendRef(vb[:0], e.exptime, e.ver, e.loc)
		w.add(groupD, kb, vb, false)
		// k already names the epoch when the base is in it.
		if !e.base.present || e.base.epoch != e.epoch {
			kb = appendIndexKey(kb[:0], k)
			w.add(groupK, kb, binary.BigEndian.AppendUint32(vb[:0], e.epoch), false)
		}
		if e.exptime > 0 {
			w.add(groupX, appendExpKey(kb[:0], e.exptime, e.epoch, k), nil, false)
		}
		for _, d := range baseLeftovers(k, e.base, &e) {
			g := groupD
			switch d[0] {
			case prefixTomb:
				g = groupT
			case prefixExp:
				g = groupX
			}
			w.add(g, d, nil, true)
		}
	}
	for _, l := range t.logs {
		w.add(groupL, appendLogKey(kb[:0], l.seq), t.arena[l.off:l.off+l.n], false)
	}
	w.kb, w.vb = kb, vb
	w.add(groupM, metaIndexed, indexedMarker{Seg: t.seg, Off: t.end, Seq: t.lastSeq()}.encode(), false)
	for _, g := range []int{groupD, groupT, groupX} {
		// Keys are unique by construction (baseLeftovers leaves out what
		// the entry writes); should two meet, write's is kept.
		slices.SortFunc(w.groups[g], func(a, b indexKV) int {
			if c := bytes.Compare(a.k.of(w.arena), b.k.of(w.arena)); c != 0 {
				return c
			}
			return cmpBool(a.del, b.del)
		})
	}
}

// write writes the sorted keys kvs to a new sstable at path.
func (w *indexWriter) write(fs vfs.FS, path string, kvs []indexKV, o sstable.WriterOptions) error {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("lsm: journal index: %w", err)
	}
	sw := sstable.NewWriter(objstorageprovider.NewFileWritable(f), o)
	for i, kv := range kvs {
		k := kv.k.of(w.arena)
		if i > 0 && bytes.Equal(k, kvs[i-1].k.of(w.arena)) {
			continue
		}
		if kv.del {
			err = sw.Delete(k)
		} else {
			err = sw.Set(k, kv.v.of(w.arena))
		}
		if err != nil {
			_ = sw.Close()
			return fmt.Errorf("lsm: journal index: %w", err)
		}
	}
	if err := sw.Close(); err != nil {
		return fmt.Errorf("lsm: journal index: %w", err)
	}
	return nil
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}
