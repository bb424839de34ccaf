package lsm

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/tcache/tcache/internal/pace"
)

// Bounds of one maintenance pass: work is done in chunks of chunkSize keys,
// each applied under the commit mutex, for at most passBudget per kind of
// work, so writers wait at most one chunk.
const (
	chunkSize  = 256
	passBudget = 50 * time.Millisecond
	maxDrops   = 64 // epochs dropped per pass at most
)

// Maintain runs one maintenance pass: it measures the disk, executes a due
// flush_all, drops the oldest epochs above the limit (cache mode), sweeps
// expired records, removes index entries of dead epochs and trims the log.
// A goroutine calls it every Options.MaintenanceInterval; tests call it.
func (db *DB) Maintain() {
	db.maintainMu.Lock()
	defer db.maintainMu.Unlock()
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() || db.failed() != nil {
		return
	}
	now := db.opts.Clock.Now()
	db.refreshUsage()
	db.mu.Lock()
	var err error
	if f := db.mu.flush.OldestLive; !db.opts.Replicated && f > db.mu.flushDone && f <= now.Unix() {
		err = db.executeFlushLocked()
	}
	db.mu.Unlock()
	if err != nil {
		return
	}
	if db.opts.Mode == ModeCache {
		if excess := db.dataUsage() - db.opts.DiskLimit; excess > 0 {
			// Free down to 15/16 of the limit, so drops come in steps.
			db.dropOldest(excess + db.opts.DiskLimit/16)
			db.refreshUsage()
		}
		if excess := db.keydirExcess(); excess > 0 {
			db.dropOldest(excess)
			db.sweepKeydir(now.Unix(), 0) // the entries of the dropped segments go now
		}
	}
	if db.opts.Replicated {
		db.flushPass(now.Unix())
	}
	db.st.sweeperRuns.Add(1)
	db.sweep(now.Unix())
	if db.opts.Replicated {
		db.sweepTombstones(now)
	}
	db.cleanStale()
	db.indexPass()
	db.trimLog(now)
	db.checkpointKeydir()
}

// ckptMinFrames is the fewest frames since the last checkpoint that make
// the maintenance pass write one: replaying them after a crash takes
// about 340 ns each (BenchmarkKeydirLoad), 0.36 s for these.
const ckptMinFrames = 1 << 20

// checkpointDue reports whether the frames appended since the last
// checkpoint are worth one: at least ckptMinFrames and half the keydir's
// keys, so that the replay after a crash stays within about what the
// checkpoint's own load costs, and a checkpoint (24 bytes a slot) is
// written at most every 12 bytes of keydir a frame.
func (db *DB) checkpointDue(frames int64) bool {
	if db.ckptEvery > 0 {
		return frames >= db.ckptEvery
	}
	return frames >= max(ckptMinFrames, int64(db.kd.len())/2)
}

// checkpointKeydir writes a keydir checkpoint from the maintenance pass
// when enough frames came since the last one (checkpointDue), so that a
// crash replays only what follows it instead of every position entry
// since the last clean close. Commits go on while it runs: it records the
// journal position, then copies each shard under its lock, and before the
// checkpoint replaces the old one makes the journal durable up to where
// the copy ended (writeCheckpoint's settle): the checkpoint must not name
// frames a crash could take.
func (db *DB) checkpointKeydir() {
	if db.kd == nil {
		return
	}
	began := time.Now()
	db.mu.Lock()
	frames := db.mu.framesSinceCkpt
	if !db.checkpointDue(frames) {
		db.mu.Unlock()
		return
	}
	pos := ckptPos{Seg: db.j.Segment(), Off: db.j.OpenSize()}
	db.mu.framesSinceCkpt = 0
	db.mu.Unlock()
	if db.ckptAfterPos != nil {
		db.ckptAfterPos()
	}
	err := writeCheckpoint(db.opts.FS, db.checkpointPath(), db.kd, pos, db.syncJournal)
	if err != nil {
		db.mu.Lock()
		db.mu.framesSinceCkpt += frames // try again at the next pass
		db.mu.Unlock()
		db.log.Warn("keydir checkpoint not written", "err", err)
		return
	}
	db.st.checkpoints.Add(1)
	db.log.Info("keydir checkpoint written", "keys", db.kd.len(), "frames_since_last", frames,
		"took", time.Since(began).Round(time.Microsecond).String())
}

// setEpochsLocked persists t (with extra mutations) and installs it.
// Requires mu.
func (db *DB) setEpochsLocked(t epochTable, extra func(pb *pebble.Batch)) error {
	pb := db.pdb.NewBatch()
	defer pb.Close()
	if extra != nil {
		extra(pb)
	}
	_ = pb.Set(metaEpochs, t.encode(), nil)
	if err := db.pdb.Apply(pb, db.wo); err != nil {
		return err
	}
	if err := db.failed(); err != nil {
		return err
	}
	db.mu.epochs = t
	db.mu.sinceAdvance, db.mu.putsSinceAdvance = 0, 0
	db.mu.indexDirty = true
	db.publishEpochs()
	return nil
}

// executeFlushLocked carries out the pending flush marker: the epoch
// advances (later writes go to the new one) and every older epoch's data
// goes in one range deletion. Their k and x entries now point at dead
// epochs, read as misses, and are removed by the index pass. Requires mu.
func (db *DB) executeFlushLocked() error {
	old := db.mu.epochs
	t := epochTable{lo: old.cur + 1, cur: old.cur + 1, stat: make([]epochStat, 1)}
	done := db.mu.flush.OldestLive
	// Sealed tables land before the range deletion, or they would bring
	// back what it deletes.
	if err := db.waitHandedLocked(); err != nil {
		return err
	}
	err := db.setEpochsLocked(t, func(pb *pebble.Batch) {
		_ = pb.DeleteRange(dataPrefix(old.lo), dataPrefix(t.lo), nil)
		db.deleteDeadPositions(pb, t.lo)
		_ = pb.Set(metaFlushDone, u64(uint64(done)), nil)
	})
	if err != nil {
		db.st.writeErrors.Add(1)
		db.log.Error("flush_all: range deletion failed", "err", err)
		return err
	}
	db.mu.flushDone = done
	db.dropDeadPositionsLocked(t.lo)
	db.removeSegments(t.lo)
	db.log.Info("flush_all executed", "oldest_live", done, "epochs_removed", old.cur-old.lo+1)
	return nil
}

// removeSegments deletes the journal segments of epochs below lo, once
// the range deletion of their references is committed. A crash before
// leaves them to the next open (which removes segments below lo too).
func (db *DB) removeSegments(lo uint32) {
	if db.kd != nil {
		db.kd.drops.Add(1) // their keydir entries are dead: the sweeper walks every shard
	}
	if n, err := db.j.RemoveBelow(lo); err != nil {
		db.st.writeErrors.Add(1)
		db.log.Warn("removing journal segments of dropped epochs failed", "below_epoch", lo, "removed", n, "err", err)
	}
}

// dropOldest drops the oldest epochs (cache mode, above the limit) until
// their live bytes cover excess (at least one), with one range deletion,
// and compacts their span so that the space really comes back. With one
// live epoch it advances first, so that the drop empties the store.
func (db *DB) dropOldest(excess int64) {
	db.mu.Lock()
	if db.mu.epochs.lo == db.mu.epochs.cur {
		t := db.mu.epochs.clone()
		t.advance()
		if err := db.setEpochsLocked(t, nil); err != nil {
			db.mu.Unlock()
			return
		}
	}
	old := db.mu.epochs
	var freed epochStat
	// At most half of the older epochs per pass: the usage measured lags
	// (unflushed WAL, files not yet deleted), and the next pass measures
	// again.
	limit := max(1, min(maxDrops, (len(old.stat)-1)/2))
	n := 0
	for n < limit && (n == 0 || freed.bytes < excess) {
		freed.items += max(old.stat[n].items, 0)
		freed.bytes += max(old.stat[n].bytes, 0)
		n++
	}
	from, to := old.lo, old.lo+uint32(n)
	t := epochTable{lo: to, cur: old.cur, stat: append([]epochStat(nil), old.stat[n:]...)}
	if err := db.waitHandedLocked(); err != nil {
		db.mu.Unlock()
		return
	}
	err := db.setEpochsLocked(t, func(pb *pebble.Batch) {
		_ = pb.DeleteRange(dataPrefix(from), dataPrefix(to), nil)
		db.deleteDeadPositions(pb, to)
	})
	if err == nil {
		db.dropDeadPositionsLocked(to)
	}
	db.mu.Unlock()
	if err != nil {
		return
	}
	db.removeSegments(to)
	db.st.drops.Add(uint64(n))
	db.st.droppedItems.Add(uint64(freed.items))
	db.st.droppedBytes.Add(uint64(freed.bytes))
	db.log.Debug("dropped epochs for the disk limit", "from", from, "to", to, "items", freed.items, "bytes", freed.bytes)
	// The range deletion hides the data at once; compacting the span makes
	// Pebble delete (or rewrite to nothing) the files now rather than when
	// its table statistics schedule a delete-only compaction.
	if err := db.pdb.Compact(context.Background(), dataPrefix(from), dataPrefix(to), false); err != nil {
		db.log.Warn("compaction of dropped epochs failed", "from", from, "to", to, "err", err)
	}
}

// sweep deletes expired records through the x index (or the keydir), up
// to now, in chunks.
func (db *DB) sweep(now int64) {
	if db.kd != nil {
		db.sweepKeydir(now, 0)
		return
	}
	upper := binary.BigEndian.AppendUint64([]byte{prefixExp}, uint64(now)+1)
	db.sweepIndex(prefixExp, upper, time.Now().Add(passBudget), &db.st.swept)
}

// sweepIndex walks the x or t index (prefix) below upper in chunks until
// deadline, deleting each entry and, while the entry names the key's
// current record, that record too (deleteChunk); n counts the records.
func (db *DB) sweepIndex(prefix byte, upper []byte, deadline time.Time, n *atomic.Uint64) {
	for time.Now().Before(deadline) {
		keys, err := db.scan([]byte{prefix}, upper, chunkSize)
		if err != nil || len(keys) == 0 {
			return
		}
		db.deleteChunk(keys, prefix == prefixTomb, n)
		if len(keys) < chunkSize {
			return
		}
	}
}

// scan returns copies of up to n keys in [lower, upper).
func (db *DB) scan(lower, upper []byte, n int) ([][]byte, error) {
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for ok := it.First(); ok && len(keys) < n; ok = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	return keys, errors.Join(it.Error(), it.Close())
}

// cleanStale removes the k entries Get found pointing at dead epochs.
func (db *DB) cleanStale() {
	db.stale.Lock()
	keys := db.stale.keys
	db.stale.keys = nil
	db.stale.Unlock()
	if len(keys) > 0 {
		db.deleteDeadIndex(keys)
	}
}

// deleteDeadIndex deletes the k keys that (still) point at dead epochs.
func (db *DB) deleteDeadIndex(kkeys [][]byte) {
	pb := db.pdb.NewBatch()
	defer pb.Close()
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, k := range kkeys {
		v, closer, err := db.pdb.Get(k)
		if err != nil {
			continue
		}
		dead := len(v) != 4 || !db.mu.epochs.live(binary.BigEndian.Uint32(v))
		closer.Close()
		if dead {
			_ = pb.Delete(k, nil)
		}
	}
	if !pb.Empty() {
		_ = db.pdb.Apply(pb, pebble.NoSync)
	}
}

// indexPass walks k and x once after epochs died, in chunks, removing the
// entries that point at dead epochs.
func (db *DB) indexPass() {
	db.mu.Lock()
	dirty := db.mu.indexDirty
	db.mu.indexDirty = false
	db.mu.Unlock()
	c := &db.maintainMu
	if dirty && c.indexCursor == nil {
		c.indexCursor, c.expCursor = []byte{prefixIndex}, []byte{prefixExp}
	}
	deadline := time.Now().Add(passBudget)
	for c.indexCursor != nil && time.Now().Before(deadline) {
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: c.indexCursor, UpperBound: []byte{prefixIndex + 1}})
		if err != nil {
			return
		}
		var dead [][]byte
		n := 0
		ok := it.First()
		for ; ok && n < 4*chunkSize; ok = it.Next() {
			n++
			if v := it.Value(); len(v) != 4 || !db.epochLive(binary.BigEndian.Uint32(v)) {
				dead = append(dead, append([]byte(nil), it.Key()...))
			}
		}
		if ok {
			c.indexCursor = append([]byte(nil), it.Key()...)
		} else {
			c.indexCursor = nil
		}
		_ = it.Close()
		if len(dead) > 0 {
			db.deleteDeadIndex(dead)
		}
	}
	for c.expCursor != nil && time.Now().Before(deadline) {
		keys, err := db.scan(c.expCursor, []byte{prefixExp + 1}, 4*chunkSize)
		if err != nil {
			return
		}
		pb := db.pdb.NewBatch()
		for _, k := range keys {
			// An x entry of a dead epoch can never become live again.
			if _, e, _, ok := parseExpKey(k); !ok || !db.epochLive(e) {
				_ = pb.Delete(k, nil)
			}
		}
		if !pb.Empty() {
			_ = db.pdb.Apply(pb, pebble.NoSync)
		}
		_ = pb.Close()
		if len(keys) < 4*chunkSize {
			c.expCursor = nil
		} else {
			c.expCursor = append(keys[len(keys)-1], 0)
		}
	}
}

// trimLog drops the head of the log beyond LogRetentionBytes or older than
// LogRetentionAge, with one range deletion per pass. The newest entry is
// always kept.
func (db *DB) trimLog(now time.Time) {
	// bounds is the log's head and the end of what Pebble holds of it:
	// entries from the pending tables' first on are not all in Pebble yet.
	bounds := func() (first, last uint64) {
		first, last = db.logFirst.Load(), db.lastSeq.Load()
		if m := db.pend.minSeq(); m != 0 {
			last = min(last, m)
		}
		return first, last
	}
	first, last := bounds()
	cutoff := now.Add(-db.opts.LogRetentionAge).UnixMilli()
	db.mu.Lock()
	excess := db.mu.logBytes - db.opts.LogRetentionBytes
	var sealed *segIndex
	if open := db.pend.open; open.logDue(cutoff) || excess > 0 && first >= last && len(open.logs) > 0 {
		// The log is trimmed in Pebble only, and the open table's entries
		// are due: seal it, and trim them once it is ingested.
		if db.failed() == nil && db.rollLocked() == nil {
			sealed = open
			db.handOffLocked()
		}
	}
	db.mu.Unlock()
	if sealed != nil {
		if db.waitTable(sealed) != nil {
			return
		}
		first, last = bounds()
	}
	if first >= last {
		return
	}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: appendLogKey(nil, first), UpperBound: appendLogKey(nil, last)})
	if err != nil {
		return
	}
	newFirst, removed := first, int64(0)
	var e LogEntry
	deadline := time.Now().Add(passBudget)
	for ok := it.First(); ok && time.Now().Before(deadline); ok = it.Next() {
		old := decodeLogEntry(it.Value(), &e) == nil && e.Time < cutoff
		if !old && removed >= excess {
			break
		}
		newFirst = binary.BigEndian.Uint64(it.Key()[1:]) + 1
		removed += int64(len(it.Key()) + len(it.Value()))
	}
	_ = it.Close()
	if newFirst == first {
		return
	}
	pb := db.pdb.NewBatch()
	defer pb.Close()
	_ = pb.DeleteRange(appendLogKey(nil, first), appendLogKey(nil, newFirst), nil)
	_ = pb.Set(metaLogFirst, u64(newFirst), nil)
	db.mu.Lock()
	defer db.mu.Unlock()
	if err := db.pdb.Apply(pb, pebble.NoSync); err != nil || db.failed() != nil {
		return
	}
	db.logFirst.Store(newFirst)
	db.mu.logBytes -= removed
}

// recount rebuilds the item and byte counters after an unclean shutdown.
// Under the commit mutex it takes a Pebble snapshot and zeroes the
// counters, which from then on hold the deltas of later commits and sweeps;
// it scans the d ranges of the snapshot and adds the counts of each epoch
// still live at the end. Scanned(snapshot) + deltas(after it) is exact.
func (db *DB) recount() {
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return
	}
	db.mu.Lock()
	if err := db.settleLocked(); err != nil {
		db.mu.Unlock()
		db.log.Error("recount failed", "err", err)
		return
	}
	snap := db.pdb.NewSnapshot()
	lo, cur := db.mu.epochs.lo, db.mu.epochs.cur
	for i := range db.mu.epochs.stat {
		db.mu.epochs.stat[i] = epochStat{}
	}
	db.mu.Unlock()
	defer snap.Close()
	counts := make([]epochStat, cur-lo+1)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: dataPrefix(lo), UpperBound: dataPrefix(cur + 1)})
	if err != nil {
		db.log.Error("recount failed", "err", err)
		return
	}
	// A scan of every item right after open: unpaced, under one P (-t 1)
	// it held up the first requests by 10-20 ms (the netpoller starved).
	var pc pace.Pacer
	for ok := it.First(); ok; ok = it.Next() {
		if db.closed.Load() {
			_ = it.Close()
			return // counts stay partial; the next open recounts (clean stays 0)
		}
		pc.Step(1)
		e, key, ok := parseDataKey(it.Key())
		if !ok || e < lo || e > cur {
			continue
		}
		if v := it.Value(); !isRef(v) && len(v) > 1 && RecordKind(v[1]) == KindTombstone {
			continue // tombstones count as no item
		}
		counts[e-lo].items++
		counts[e-lo].bytes += storedSize(key, it.Value())
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		db.log.Error("recount failed", "err", err)
		return
	}
	db.mu.Lock()
	for i, c := range counts {
		if e := lo + uint32(i); db.mu.epochs.live(e) {
			s := db.mu.epochs.at(e)
			s.items += c.items
			s.bytes += c.bytes
		}
	}
	db.recounting.Store(false)
	db.mu.Unlock()
	db.log.Info("disk item counters rebuilt after an unclean shutdown")
}

// sweepTombstones removes the tombstones (Options.Replicated) written
// before the log's head: a peer that needs them to order an older write
// could still read that write from this log, so they live at least as long
// as it. The cut is the head entry's time, or now less LogRetentionAge when
// that is later (the log always keeps its newest entry, however old) or
// the log is empty.
func (db *DB) sweepTombstones(now time.Time) {
	cut := now.Add(-db.opts.LogRetentionAge).Unix()
	if first := db.logFirst.Load(); first <= db.lastSeq.Load() {
		v, closer, err := db.pdb.Get(appendLogKey(nil, first))
		if err != nil {
			return
		}
		var e LogEntry
		derr := decodeLogEntry(v, &e)
		closer.Close()
		if derr == nil {
			cut = max(cut, e.Time/1000)
		}
	}
	if db.kd != nil {
		db.sweepKeydir(now.Unix(), cut)
		return
	}
	upper := binary.BigEndian.AppendUint64([]byte{prefixTomb}, uint64(max(cut, 0)))
	db.sweepIndex(prefixTomb, upper, time.Now().Add(passBudget), &db.st.tombSwept)
}

// deleteChunk deletes, under the commit mutex, the index keys ikeys (x
// keys of items, or t keys of tombstones) and the records they name while
// the key's current record is the one indexed (same kind, epoch and time);
// otherwise the entry alone is stale and goes. n counts the records.
func (db *DB) deleteChunk(ikeys [][]byte, tombstones bool, n *atomic.Uint64) {
	pb := db.pdb.NewBatch()
	defer pb.Close()
	var deltas []epochDelta
	var gone [][]byte // keys whose record was deleted
	var scr []byte
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, ik := range ikeys {
		when, epoch, key, ok := parseExpKey(ik)
		_ = pb.Delete(ik, nil)
		if !ok || !db.mu.epochs.live(epoch) {
			continue
		}
		where, err := db.lookupOpen(key)
		if err != nil || !where.Present || where.Tombstone != tombstones || where.Epoch != epoch || where.Exptime != when {
			continue
		}
		scr = appendDataKey(scr[:0], epoch, key)
		_ = pb.Delete(scr, nil)
		scr = appendIndexKey(scr[:0], key)
		_ = pb.Delete(scr, nil)
		if !where.Tombstone {
			deltas = append(deltas, epochDelta{epoch, -1, -int64(where.Size)})
		}
		gone = append(gone, key)
	}
	if err := db.pdb.Apply(pb, pebble.NoSync); err != nil || db.failed() != nil {
		return
	}
	db.mu.epochs.apply(deltas)
	db.forgetLocked(gone)
	if len(gone) > 0 {
		n.Add(uint64(len(gone)))
	}
}

// forgetLocked clears the location hints of deleted records, whose
// journal frames may outlive them, and bumps the sweeper generation:
// Locations read before may name deleted records (see Batch). Requires mu.
func (db *DB) forgetLocked(keys [][]byte) {
	if len(keys) == 0 {
		return
	}
	if db.hints != nil {
		for _, k := range keys {
			db.hints.clear(k)
		}
	}
	db.sweepGen.Add(1)
}

// flushPass carries out an effective flush marker record by record
// (Options.Replicated): it walks the d ranges in chunks and deletes every
// current record (items and tombstones) whose version is below the
// marker's bound, leaving those written after the flush, wherever they
// were written first. Reads apply the same rule meanwhile (the engine), so
// the pass only gives the space back. Its cursor survives between passes;
// when it reaches the end the marker is recorded as done.
func (db *DB) flushPass(now int64) {
	db.mu.Lock()
	m, done := db.mu.flush, db.mu.flushDone
	db.mu.Unlock()
	if m.OldestLive == 0 || m.OldestLive > now || done >= m.OldestLive {
		return
	}
	if db.kd != nil {
		db.flushPassJournal(m)
		return
	}
	c := &db.maintainMu
	if c.flushCursor == nil || c.flushOf != m.Version {
		// Pebble holds every record written before the pass begins.
		db.mu.Lock()
		err := db.settleLocked()
		db.mu.Unlock()
		if err != nil {
			return
		}
		c.flushCursor, c.flushOf = []byte{prefixData}, m.Version
	}
	bound := m.Bound()
	deadline := time.Now().Add(passBudget)
	for time.Now().Before(deadline) {
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: c.flushCursor, UpperBound: []byte{prefixData + 1}})
		if err != nil {
			return
		}
		var victims [][]byte // d keys
		n := 0
		ok := it.First()
		for ; ok && n < 4*chunkSize; ok = it.Next() {
			n++
			if h, _, _, err := parseStored(it.Value()); err == nil && h.version.Less(bound) {
				victims = append(victims, append([]byte(nil), it.Key()...))
			}
		}
		if ok {
			c.flushCursor = append(c.flushCursor[:0], it.Key()...)
		}
		_ = it.Close()
		if len(victims) > 0 {
			db.flushChunk(victims, bound)
		}
		if !ok {
			c.flushCursor = nil
			db.flushPassDone(m)
			return
		}
	}
}

// flushPassDone records that the pass of marker m is complete, unless a
// newer marker replaced it meanwhile.
func (db *DB) flushPassDone(m FlushMarker) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.flush.Version == m.Version {
		if err := db.pdb.Set(metaFlushDone, u64(uint64(m.OldestLive)), pebble.NoSync); err == nil {
			db.mu.flushDone = m.OldestLive
		}
	}
	db.log.Info("flush_all executed record by record", "oldest_live", m.OldestLive)
}

// flushChunk deletes the records at the d keys dkeys that are still their
// key's current record and still below bound. Requires maintainMu.
func (db *DB) flushChunk(dkeys [][]byte, bound Version) {
	pb := db.pdb.NewBatch()
	defer pb.Close()
	var deltas []epochDelta
	var gone [][]byte // keys whose record was deleted
	var scr []byte
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, dk := range dkeys {
		epoch, key, ok := parseDataKey(dk)
		if !ok || !db.mu.epochs.live(epoch) {
			continue
		}
		v, closer, err := db.pdb.Get(dk)
		if err != nil {
			continue
		}
		h, _, _, perr := parseStored(v)
		size := storedSize(key, v)
		closer.Close()
		if perr != nil || !h.version.Less(bound) {
			continue // rewritten since the scan
		}
		where, err := db.lookupOpen(key)
		if err != nil || !where.Present || where.Epoch != epoch {
			_ = pb.Delete(dk, nil) // not the current record: garbage
			continue
		}
		_ = pb.Delete(dk, nil)
		scr = appendIndexKey(scr[:0], key)
		_ = pb.Delete(scr, nil)
		if h.kind == KindTombstone {
			scr = appendTombKey(scr[:0], h.time, epoch, key)
			_ = pb.Delete(scr, nil)
		} else {
			if h.exptime > 0 {
				scr = appendExpKey(scr[:0], h.exptime, epoch, key)
				_ = pb.Delete(scr, nil)
			}
			deltas = append(deltas, epochDelta{epoch, -1, -size})
		}
		gone = append(gone, key)
	}
	if err := db.pdb.Apply(pb, pebble.NoSync); err != nil || db.failed() != nil {
		return
	}
	db.mu.epochs.apply(deltas)
	db.forgetLocked(gone)
}
