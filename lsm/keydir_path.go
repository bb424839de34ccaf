package lsm

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/tcache/tcache/internal/pace"
)

// The data path of a journal store (docs/keydir.md): every item mutation
// is a journal frame, the keydir says where each key's current frame is,
// and Pebble gets the frames' position and log entries a segment at a
// time (pending.go, seal.go).

// writeJournalLocked appends o's frame (an item, a tombstone, or a plain
// delete's tombstone record) to the journal as the frame of seq, points
// the keydir at it (a plain delete removes the key), queues its position
// entry and adds the counter deltas to b. Nothing goes to pb. Requires mu.
func (db *DB) writeJournalLocked(_ *pebble.Batch, b *Batch, o *batchOp, key []byte, seq uint64) error {
	o.at = db.mu.epochs.cur // a segment holds records of its epoch only
	if n := frameOverhead + len(key) + o.rec.n; !fitsKeydir(JournalLoc{Len: uint32(n)}) {
		return fmt.Errorf("lsm: a journal frame of %d bytes is out of the keydir's range", n)
	}
	loc, err := db.appendJournalLocked(seq, key, o.rec.of(b.buf))
	if err != nil {
		return err
	}
	o.loc = loc
	h := o.hash // Batch.keyHash
	kind := posItem
	var old kdEntry
	var had bool
	switch {
	case o.op == LogDelete && !o.tomb:
		kind = posDelete
		old, had = db.kd.remove(h)
	default:
		if o.tomb {
			kind = posTombstone
			db.st.tombstones.Add(1)
		}
		if old, had, err = db.kd.put(h, kdEntry{loc: loc, exptime: o.exptime, tombstone: o.tomb}); err != nil {
			// The frame is in the journal with a seq the next commit
			// would reuse: refuse writes until a restart re-indexes it.
			db.fail(err)
			return err
		}
	}
	if had && !old.tombstone {
		// An overwrite within the open segment (the common one) knows its
		// epoch: the open segment's is the current one.
		e, ok := o.at, old.loc.Segment == loc.Segment
		if !ok {
			e, ok = db.j.SegmentEpoch(old.loc.Segment)
		}
		if ok {
			b.deltas = append(b.deltas, epochDelta{e, -1, -int64(old.loc.Len - frameOverhead)})
		}
	}
	if kind == posItem {
		b.deltas = append(b.deltas, epochDelta{o.at, 1, int64(loc.Len - frameOverhead)})
	}
	start := len(b.lbuf)
	b.lbuf = appendPosKey(b.lbuf, loc)
	b.lbuf = appendPosValue(b.lbuf, &posEntry{loc: loc, kind: kind, exptime: o.exptime, version: o.version, key: key})
	b.pact = append(b.pact, pendAction{kind: actPos, seg: loc.Segment, enc: span{start, len(b.lbuf) - start}})
	return nil
}

// findJournal is find for a journal store: the keydir names the key's
// frame, which is read and checked to be the key's (two keys of one
// hash share an entry: the other one is a miss). A key without an entry,
// or whose segment is gone with its epoch, has no record.
func (db *DB) findJournal(bp, fb *[]byte, key []byte, mode findMode) (where Location, v []byte, closer io.Closer, err error) {
	gen := db.sweepGen.Load()
	none := Location{Known: true, gen: gen}
	e, ok := db.kd.get(db.kd.hash(key))
	if !ok {
		return none, nil, nil, nil
	}
	epoch, ok := db.j.SegmentEpoch(e.loc.Segment)
	if !ok || !db.epochLive(epoch) {
		return none, nil, nil, nil
	}
	where = Location{Known: true, Present: true, Epoch: epoch, Exptime: e.exptime, Tombstone: e.tombstone,
		Size: e.loc.Len - frameOverhead, gen: gen}
	if mode == findHeader {
		ok, buf, err := db.j.HasKey(*bp, e.loc, key)
		*bp = buf
		if err == nil && !ok {
			return none, nil, nil, nil
		}
		if err == nil {
			return where, nil, nil, nil
		}
		// An unreadable frame: read it whole below for the error.
	}
	fr, buf, err := db.j.Read(*fb, e.loc)
	*fb = buf
	switch {
	case err == nil && string(fr.Key) != string(key):
		return none, nil, nil, nil
	case err == nil:
		return where, fr.Record, nopCloser{}, nil
	case errors.Is(err, os.ErrNotExist), errors.Is(err, errFrameLost):
		// Removed with its epoch meanwhile, or lost in a crash.
		if errors.Is(err, errFrameLost) {
			db.st.lost.Add(1)
		}
		return none, nil, nil, nil
	}
	return where, nil, nil, err
}

// checkpointPath is where Close writes the keydir's checkpoint: next to
// the journal's segments, whose positions it names.
func (db *DB) checkpointPath() string {
	return db.opts.FS.PathJoin(db.opts.Dir, journalDirName, "keydir.ckpt")
}

// liveSegmentEpoch returns the epoch of segment seg while it is live.
// Requires mu or exclusive access (Open).
func (db *DB) liveSegmentEpoch(seg uint32) (uint32, bool) {
	e, ok := db.j.SegmentEpoch(seg)
	return e, ok && db.mu.epochs.live(e)
}

// loadKeydir rebuilds the keydir at Open: the checkpoint Close wrote (or
// an empty table), then the position entries Pebble holds from the
// checkpoint's position on, then the journal frames after the indexed
// marker (reindex). After an unclean shutdown (recount) it also counts
// the items per epoch, whose persisted counters are not exact. b is
// Open's metadata batch. Requires exclusive access.
func (db *DB) loadKeydir(b *pebble.Batch, recount bool) error {
	began := time.Now()
	k0, k1, err := db.keydirKey(b)
	if err != nil {
		return err
	}
	kd, pos, err := loadCheckpoint(db.opts.FS, db.checkpointPath(), k0, k1)
	switch {
	case err == nil:
	case errors.Is(err, errNoCheckpoint), errors.Is(err, ErrCorrupt):
		if errors.Is(err, ErrCorrupt) {
			db.log.Warn("keydir checkpoint unreadable: rebuilding from the position entries", "err", err)
		}
		if kd, err = newKeydir(k0, k1); err != nil {
			return err
		}
		pos = ckptPos{}
	default:
		return err
	}
	db.kd = kd
	fromCkpt := time.Since(began)
	now := db.opts.Clock.Now().Unix()
	l := newKeydirLoader(kd, now, db.liveSegmentEpoch)
	if f := db.mu.flush; db.opts.Replicated && f.OldestLive != 0 && f.OldestLive <= now {
		l.bound = f.Bound()
	}
	if err := l.loadPositions(db.pdb, pos); err != nil {
		return err
	}
	if err := db.reindex(b, l); err != nil {
		return err
	}
	if err := l.finish(); err != nil {
		return err
	}
	if recount {
		// The checkpoint may predate a replicated flush pass that ended
		// before the crash: its entries below the bound are back, so the
		// pass runs again (RAM only: it records itself done again).
		db.mu.flushDone = 0
		counts := countKeydir(kd, db.liveSegmentEpoch)
		for e := db.mu.epochs.lo; e <= db.mu.epochs.cur; e++ {
			c := counts[e]
			*db.mu.epochs.at(e) = epochStat{items: c.items, bytes: c.bytes}
		}
	}
	// What this open replayed, a crash would replay again: it counts
	// toward the next checkpoint.
	db.mu.framesSinceCkpt = int64(l.entries)
	db.log.Info("keydir loaded", "keys", kd.len(), "checkpoint", pos != ckptPos{}, "checkpoint_took",
		fromCkpt.Round(time.Microsecond).String(), "positions_replayed", l.entries,
		"took", time.Since(began).Round(time.Microsecond).String())
	return nil
}

// keydirKey returns the store's SipHash key, creating it (in b) for a new
// journal store.
func (db *DB) keydirKey(b *pebble.Batch) (k0, k1 uint64, err error) {
	v, err := db.getMeta(metaKeydirKey)
	if err != nil {
		return 0, 0, err
	}
	if v == nil {
		var r [16]byte
		if _, err := rand.Read(r[:]); err != nil {
			return 0, 0, fmt.Errorf("lsm: keydir key: %w", err)
		}
		_ = b.Set(metaKeydirKey, r[:], nil)
		v = r[:]
	}
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("%w: keydir key of %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), nil
}

// deleteDeadPositions adds to pb the range deletion of the position
// entries of every segment below the first one whose epoch is at least
// lo: the segments a drop or a flush_all removes. Pebble holds position
// entries only of sealed segments, all ingested here (the caller waited
// for the sealer), so one range from the start of s covers them.
func (db *DB) deleteDeadPositions(pb *pebble.Batch, lo uint32) {
	if db.kd == nil {
		return
	}
	first := db.j.Segment()
	for _, s := range db.j.Segments() {
		if s.Epoch >= lo {
			first = min(first, s.ID)
			break
		}
	}
	_ = pb.DeleteRange([]byte{prefixPos}, posSegmentPrefix(first), nil)
}

// dropDeadPositionsLocked empties the open table's position entries when
// its segment's epoch is below lo (a flush_all made it dead: the next
// append rolls to a new segment); its log entries stay. Requires mu.
func (db *DB) dropDeadPositionsLocked(lo uint32) {
	if db.kd == nil || db.j.Epoch() >= lo {
		return
	}
	db.pend.Lock()
	db.pend.open.pos = db.pend.open.pos[:0]
	db.pend.Unlock()
}

// sweepKeydir walks the keydir's shards that may hold something to
// remove (keydir.sweepDue), a chunk of a shard (sweepChunk slots) at a
// time under the commit mutex, paced: it removes the entries of removed
// segments, items whose exptime has come (counted as swept), and, when
// tombCut is set (Replicated), the tombstones older than it. Nothing is persisted: a restart skips
// expired entries, and a removed segment's position entries are gone.
func (db *DB) sweepKeydir(now, tombCut int64) {
	var pc pace.Pacer
	var deltas []epochDelta
	for i := range keydirShards {
		if !db.kd.sweepDue(i, now, tombCut) {
			continue
		}
		var swept, tombs int
		sweep := func(_ uint64, e kdEntry) bool {
			epoch, live := db.liveSegmentEpoch(e.loc.Segment)
			switch {
			case !live:
				return true
			case e.tombstone:
				if tombCut != 0 && e.exptime < tombCut {
					tombs++
					return true
				}
			case e.exptime != 0 && e.exptime <= now:
				deltas = append(deltas, epochDelta{epoch, -1, -int64(e.loc.Len - frameOverhead)})
				swept++
				return true
			}
			return false
		}
		c := db.kd.sweepBegin(i)
		for done := false; !done; {
			swept, tombs = 0, 0
			deltas = deltas[:0]
			var n int
			db.mu.Lock()
			held := time.Now()
			n, done = db.kd.sweepStep(&c, sweep)
			db.mu.epochs.apply(deltas)
			if n > 0 {
				db.sweepGen.Add(1) // Locations read before may name removed records
			}
			db.sweepHold = max(db.sweepHold, time.Since(held))
			db.mu.Unlock()
			db.st.swept.Add(uint64(swept))
			db.st.tombSwept.Add(uint64(tombs))
			pc.Step(sweepChunk)
		}
	}
}

// snapshotJournal is Snapshot for a journal store: under the commit mutex
// it copies where every key's frame is, then reads the frames. A frame
// whose segment a drop removed meanwhile is left out, as the drop would
// have left it out of a later snapshot.
func (db *DB) snapshotJournal(fn func(key, rec []byte) error) (History, uint64, error) {
	db.mu.Lock()
	if err := db.settleLocked(); err != nil { // ReadLog from seq needs the log in Pebble
		db.mu.Unlock()
		return History{}, 0, fmt.Errorf("lsm: snapshot: %w", err)
	}
	seq, marker := db.mu.seq, db.mu.flush
	locs := db.kd.locations()
	db.mu.Unlock()
	h := db.hists[len(db.hists)-1]
	if db.opts.Durability != DurabilityNone && db.durableSeq.Load() < seq {
		if err := db.syncJournal(); err != nil {
			return History{}, 0, fmt.Errorf("lsm: snapshot: sync: %w", err)
		}
		if err := db.pdb.LogData(nil, pebble.Sync); err != nil {
			return History{}, 0, fmt.Errorf("lsm: snapshot: sync: %w", err)
		}
		db.advanceDurable(seq)
	}
	fb := db.frameBufs.Get().(*[]byte)
	defer db.frameBufs.Put(fb)
	for _, loc := range locs {
		fr, buf, err := db.j.Read(*fb, loc)
		*fb = buf
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, errFrameLost):
			continue // dropped with its epoch since the copy, or lost in a crash
		case errors.Is(err, ErrCorrupt):
			db.corrupt(nil, 0, err)
			continue
		case err != nil:
			return History{}, 0, fmt.Errorf("lsm: snapshot: %w", err)
		}
		if err := fn(fr.Key, fr.Record); err != nil {
			return History{}, 0, err
		}
	}
	if marker.OldestLive != 0 {
		if err := fn(nil, AppendFlushRecord(nil, marker)); err != nil {
			return History{}, 0, err
		}
	}
	return h, seq, nil
}

// scanJournal is Scan for a journal store: it walks the position entries
// in order, from after the cursor after (an s key), and passes on the
// records that are still their key's current one.
func (db *DB) scanJournal(after []byte, n int, fn func(key, rec []byte) bool) (next []byte, err error) {
	lower := []byte{prefixPos}
	if after != nil {
		lower = append(append([]byte(nil), after...), 0)
	}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{prefixPos + 1}})
	if err != nil {
		return nil, fmt.Errorf("lsm: scan: %w", err)
	}
	fb := db.frameBufs.Get().(*[]byte)
	defer db.frameBufs.Put(fb)
	var e posEntry
	k := 0
	ok := it.First()
	for ; ok && k < n; ok = it.Next() {
		k++
		next = append(next[:0], it.Key()...)
		if decodePos(it.Key(), it.Value(), &e) != nil || e.kind == posDelete {
			continue
		}
		if cur, found := db.kd.get(db.kd.hash(e.key)); !found || cur.loc != e.loc {
			continue // overwritten or deleted since
		}
		fr, buf, err := db.j.Read(*fb, e.loc)
		*fb = buf
		if err != nil || string(fr.Key) != string(e.key) {
			continue
		}
		if !fn(fr.Key, fr.Record) {
			break
		}
	}
	if !ok {
		next = nil
	}
	return next, errors.Join(it.Error(), it.Close())
}

// flushPassJournal is flushPass for a journal store: it walks the keydir a
// shard at a time, reads the version of each entry's frame, and removes
// the entries below the marker's bound that are still their key's current
// ones. A restart does not bring them back: the loader skips entries
// below the bound of a marker in effect (and the engine's reads apply the
// same rule). Its cursor (a shard) survives between passes.
func (db *DB) flushPassJournal(m FlushMarker) {
	c := &db.maintainMu
	if c.flushShard == 0 || c.flushOf != m.Version {
		c.flushShard, c.flushOf = 1, m.Version
	}
	bound := m.Bound()
	fb := db.frameBufs.Get().(*[]byte)
	defer db.frameBufs.Put(fb)
	deadline := time.Now().Add(passBudget)
	var victims []kdVictim
	var deltas []epochDelta
	for ; c.flushShard <= keydirShards; c.flushShard++ {
		if time.Now().After(deadline) {
			return
		}
		victims = victims[:0]
		for _, v := range db.kd.shardEntries(c.flushShard-1, nil) {
			fr, buf, err := db.j.Read(*fb, v.e.loc)
			*fb = buf
			if err == nil && recordVersion(fr.Record).Less(bound) {
				victims = append(victims, v)
			}
		}
		deltas = deltas[:0]
		db.mu.Lock()
		if db.mu.flush.Version != m.Version {
			db.mu.Unlock()
			return // a newer marker: its pass starts over
		}
		for _, v := range victims {
			if !db.kd.removeAt(v.h, v.e.loc) || v.e.tombstone {
				continue
			}
			if epoch, ok := db.liveSegmentEpoch(v.e.loc.Segment); ok {
				deltas = append(deltas, epochDelta{epoch, -1, -int64(v.e.loc.Len - frameOverhead)})
			}
		}
		db.mu.epochs.apply(deltas)
		if len(victims) > 0 {
			db.sweepGen.Add(1)
		}
		db.mu.Unlock()
	}
	c.flushShard = 0
	db.flushPassDone(m)
}

// appliedFrameLocked appends a's applied offset to the journal as a frame
// without a key (after the peer's records of the same commit), keeps it as
// the peer's offset in RAM (DB.Applied) and in the open table, whose
// ingestion writes it to Pebble once the segment is sealed, and so synced.
// Pebble never holds an offset past a record the journal could still
// lose; after a crash the re-index takes the later offsets from the tail's
// frames. Requires mu.
func (db *DB) appliedFrameLocked(b *Batch, a Applied) error {
	var rec [24]byte
	binary.BigEndian.PutUint64(rec[:], a.Peer)
	copy(rec[8:], encodeApplied(a))
	loc, err := db.appendJournalLocked(0, nil, rec[:])
	if err != nil {
		return err
	}
	b.pact = append(b.pact, pendAction{kind: actApplied, seg: loc.Segment, applied: a})
	return nil
}

// decodeAppliedFrame decodes the record of a frame without a key.
func decodeAppliedFrame(rec []byte) (Applied, error) {
	if len(rec) != 24 {
		return Applied{}, fmt.Errorf("%w: applied frame of %d bytes", ErrCorrupt, len(rec))
	}
	return decodeApplied(binary.BigEndian.Uint64(rec), rec[8:])
}

// kdBytesPerKey is the keydir's RAM per key at its worst load: a 24-byte
// slot in a table just doubled (7/16 full).
const kdBytesPerKey = kdSlotSize * kdLoadDen * 2 / kdLoadNum

// keydirKeyLimit is the keys the keydir may hold within
// Options.IndexMemory at its worst load; no limit when IndexMemory is not
// positive.
func (db *DB) keydirKeyLimit() int64 {
	if db.opts.IndexMemory <= 0 {
		return math.MaxInt64
	}
	return db.opts.IndexMemory / int64(kdBytesPerKey)
}

// keydirExcess is how many bytes of the oldest data to drop so that the
// keydir keeps within Options.IndexMemory (at its worst load, with 1/16
// to spare, so that drops come in steps): 0 when it is within, or the
// store has no keydir.
func (db *DB) keydirExcess() int64 {
	if db.kd == nil {
		return 0
	}
	limit := db.keydirKeyLimit()
	keys := int64(db.kd.len())
	if keys <= limit {
		return 0
	}
	st := db.Stats()
	perItem := int64(1)
	if st.Items > 0 {
		perItem = max(int64(st.ItemBytes/st.Items), 1)
	}
	return (keys - limit + limit/16) * perItem
}
