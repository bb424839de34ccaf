package lsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Batch collects mutations that commit together: in one Pebble batch, with
// one log entry each, numbered at commit. Records are encoded (and
// compressed) by Put, outside any lock; the Pebble batch is built by Commit
// under the commit mutex, once the sequence numbers and the epoch are
// settled. A Batch is not safe for concurrent use; Reset it to reuse it
// after Commit.
//
// The prev Location of a write says where the key's current record is, so
// that the write removes it and the counters stay exact. Pass the Where of
// the record last read (Get) or written (Put) for that key, unmodified;
// within one batch, pass the Where of the batch's earlier write of the same
// key. When prev is unknown (zero), Put and Delete look the key up through
// the DB (not the batch). At commit, a prev that may have gone stale (its
// epoch was dropped, or the sweeper deleted records since it was read) is
// looked up again.
type Batch struct {
	db    *DB
	ops   []batchOp
	buf   []byte // keys and encoded records of ops
	puts  int
	bytes int64  // bytes of keys and records put
	cas   uint64 // ReserveCAS
	err   error  // first error of a Put or Delete lookup, returned by Commit

	applied []Applied // SetApplied
	now     time.Time // SetTime; zero: Commit reads the clock

	pb     *pebble.Batch
	scr    []byte // key scratch for Commit
	deltas []epochDelta
	// pact is what Commit adds to the pending index once Pebble has the
	// batch, in op order; lbuf holds the encoded entries.
	pact []pendAction
	lbuf []byte
}

// pendAction is an entry a commit adds to the pending table of segment
// seg: a journal frame's position entry, or its log entry.
type pendAction struct {
	kind    pendActionKind
	seg     uint32
	seq     uint64  // log
	enc     span    // in lbuf
	applied Applied // applied
}

type pendActionKind uint8

const (
	actPos     pendActionKind = iota // the position entry enc (s key, then value)
	actLog                           // the log entry enc of seq
	actApplied                       // a peer's applied offset, written with the table
)

type batchOp struct {
	op       LogOp
	key, rec span // in buf
	epoch    uint32
	at       uint32 // the epoch the record went to (set at commit)
	exptime  int64  // items: expiry (x index); tombstones: time (t index)
	version  Version
	prev     Location
	flush    FlushMarker
	tomb     bool       // the record is a tombstone (op LogDelete with Replicated, or a remote one)
	remote   bool       // from a peer: no log entry
	loc      JournalLoc // where Commit appended the record (Segment 0: in Pebble)
	// hash is the key's keydir hash (a journal store; 0 otherwise),
	// computed when the op is added, which also prefetches the lines the
	// commit's keydir update will touch (keydir.prefetch).
	hash uint64
}

type span struct{ off, n int }

func (s span) of(b []byte) []byte { return b[s.off : s.off+s.n] }

type epochDelta struct {
	epoch        uint32
	items, bytes int64
}

// NewBatch returns an empty batch.
func (db *DB) NewBatch() *Batch { return &Batch{db: db} }

// Reset empties b for reuse.
func (b *Batch) Reset() {
	b.ops, b.buf, b.deltas, b.applied = b.ops[:0], b.buf[:0], b.deltas[:0], b.applied[:0]
	b.pact, b.lbuf = b.pact[:0], b.lbuf[:0]
	b.puts, b.bytes, b.cas, b.err = 0, 0, 0, nil
	b.now = time.Time{}
	if b.pb != nil && !b.pb.Empty() {
		b.pb.Reset() // zeroes a few hundred bytes: only when there is something to drop
	}
}

// Len is the number of mutations in b.
func (b *Batch) Len() int { return len(b.ops) }

func (b *Batch) addKey(key []byte) span {
	s := span{len(b.buf), len(key)}
	b.buf = append(b.buf, key...)
	return s
}

// keyHash is key's keydir hash in a journal store (0 in a Pebble store).
// It prefetches the keydir lines of the key, which the commit updates
// after encoding and appending: the misses overlap that work.
func (b *Batch) keyHash(key []byte) uint64 {
	kd := b.db.kd
	if kd == nil {
		return 0
	}
	h := kd.hash(key)
	kd.prefetch(h)
	return h
}

func (b *Batch) resolve(key []byte, prev Location) Location {
	if b.db.kd != nil {
		return prev // Commit asks the keydir
	}
	if prev.Known && (!prev.Present || b.db.epochLive(prev.Epoch)) {
		return prev
	}
	where, err := b.db.lookup(key)
	if err != nil && b.err == nil {
		b.err = err
	}
	return where
}

// Put stores rec (with rec.Value) under key, replacing the record at prev,
// and sets rec.Where to the new record's location.
func (b *Batch) Put(key []byte, rec *Record, prev Location) {
	prev = b.resolve(key, prev)
	gen := b.db.sweepGen.Load()
	o := batchOp{op: LogPut, key: b.addKey(key), epoch: b.db.curEpoch(), exptime: rec.Exptime, version: rec.Version, prev: prev, hash: b.keyHash(key)}
	start := len(b.buf)
	b.buf = b.db.codec.appendRecord(b.buf, rec)
	o.rec = span{start, len(b.buf) - start}
	b.ops = append(b.ops, o)
	b.puts++
	b.bytes += int64(len(key) + o.rec.n)
	rec.Where = Location{Known: true, Present: true, Epoch: o.epoch, Exptime: rec.Exptime, Size: uint32(len(key) + o.rec.n), gen: gen}
}

// Delete removes key's record at prev and logs the delete with its version.
// With Options.Replicated the record is replaced by a tombstone of that
// version instead (Get: not found, Record.Tombstone), kept until the log
// head has passed the time it was written.
func (b *Batch) Delete(key []byte, ver Version, prev Location) {
	prev = b.resolve(key, prev)
	o := batchOp{op: LogDelete, key: b.addKey(key), version: ver, prev: prev, hash: b.keyHash(key)}
	if b.db.opts.Replicated || b.db.kd != nil {
		// A tombstone record: the record kept (Replicated), or the
		// delete's journal frame.
		o.tomb, o.epoch = b.db.opts.Replicated, b.db.curEpoch()
		o.exptime = b.db.opts.Clock.Now().Unix()
		start := len(b.buf)
		b.buf = appendBareRecord(b.buf, KindTombstone, 0, o.exptime, 0, ver)
		o.rec = span{start, len(b.buf) - start}
	}
	b.ops = append(b.ops, o)
}

// PutRemote stores raw, an encoded item or tombstone that a peer shipped
// (ParseRecord must accept it), under key, replacing the record at prev,
// without a log entry: a node never re-ships what it applied. The record
// keeps its version, value bytes (in the peer's compression) and times;
// an item's CAS is replaced by cas (a fresh local CAS, so that CAS values
// stay unique on this node: the caller reserves it with ReserveCAS), a
// tombstone's time by now (it is kept for this node's log retention). It
// returns where the record goes. A raw that does not parse fails Commit.
func (b *Batch) PutRemote(key, raw []byte, cas uint64, prev Location) Location {
	h, _, err := parseRecordHeader(raw)
	if err == nil && h.kind == KindFlush {
		err = fmt.Errorf("%w: a flush marker stored as a record", ErrCorrupt)
	}
	if err != nil {
		if b.err == nil {
			b.err = fmt.Errorf("lsm: remote record for %q: %w", key, err)
		}
		return Location{}
	}
	prev = b.resolve(key, prev)
	gen := b.db.sweepGen.Load()
	o := batchOp{op: LogPut, key: b.addKey(key), epoch: b.db.curEpoch(), exptime: h.exptime,
		version: h.version, prev: prev, remote: true, tomb: h.kind == KindTombstone, hash: b.keyHash(key)}
	if o.tomb {
		o.op, o.exptime = LogDelete, b.db.opts.Clock.Now().Unix()
	}
	start := len(b.buf)
	b.buf = append(b.buf, raw...)
	patchRecord(b.buf[start:], h.kind, cas, o.exptime)
	o.rec = span{start, len(b.buf) - start}
	b.ops = append(b.ops, o)
	if !o.tomb {
		b.puts++
	}
	b.bytes += int64(len(key) + o.rec.n)
	return Location{Known: true, Present: true, Epoch: o.epoch, Exptime: o.exptime, Tombstone: o.tomb,
		Size: uint32(len(key) + o.rec.n), gen: gen}
}

// FlushRemote persists m, a peer's flush marker, without a log entry. The
// caller has checked that it is newer than the current marker.
func (b *Batch) FlushRemote(m FlushMarker) {
	b.ops = append(b.ops, batchOp{op: LogFlush, version: m.Version, flush: m, remote: true})
}

// SetApplied stores a (peer, history, seq) applied offset in the same
// Pebble batch as the rest of b (DB.Applied reads it back).
func (b *Batch) SetApplied(a Applied) { b.applied = append(b.applied, a) }

// Flush persists m as the flush marker and logs it. Records stored before
// m take effect are removed once m.OldestLive has passed (Maintain, or the
// next Commit).
func (b *Batch) Flush(m FlushMarker) {
	b.ops = append(b.ops, batchOp{op: LogFlush, version: m.Version, flush: m})
}

// SetTime gives Commit the time of b's mutations, a reading of the
// store's clock that the caller has just made (the engine's, for the
// versions it stamped): the log entries' time, and the time a delayed
// flush_all is due against. Without it Commit reads the clock itself; a
// time.Now costs about 50 ns on a VM, a few percent of a small set.
func (b *Batch) SetTime(t time.Time) { b.now = t }

// ReserveCAS persists upTo as the CAS high-water mark with this batch (if
// it is above the current one).
func (b *Batch) ReserveCAS(upTo uint64) { b.cas = max(b.cas, upTo) }

// Commit writes b with the configured durability. Sequence numbers are
// assigned here, under the commit mutex, in commit order; the Pebble batch
// enters Pebble's commit pipeline in that same order, so the log is
// gap-free and ordered in the WAL. With DurabilitySync the fsync is awaited
// after the mutex is released: concurrent commits share fsyncs
// (groupsync.go).
//
// Errors: ErrClosed; ErrDiskFull (persistent mode, at the limit; batches
// without Puts are still accepted); ErrFailed (wrapping the cause) when
// Pebble failed; wrapped I/O errors. After an error nothing of b may be
// assumed written, except that with ErrFailed a record may be visible to
// reads until restart without being durable.
func (db *DB) Commit(b *Batch) error {
	if b.err != nil {
		return b.err
	}
	if len(b.ops) == 0 && b.cas == 0 && len(b.applied) == 0 {
		return nil
	}
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return ErrClosed
	}
	if err := db.failed(); err != nil {
		db.st.writeErrors.Add(1)
		return err
	}
	if b.puts > 0 && db.opts.Mode == ModePersistent && db.dataUsage() >= db.opts.DiskLimit {
		db.st.diskFull.Add(1)
		return ErrDiskFull
	}
	if b.pb == nil {
		b.pb = db.pdb.NewBatch()
	}
	pb := b.pb
	if !pb.Empty() {
		pb.Reset()
	}
	now := b.now
	if now.IsZero() {
		now = db.opts.Clock.Now()
	}

	db.mu.Lock()
	if f := db.mu.flush.OldestLive; !db.opts.Replicated && f > db.mu.flushDone && f <= now.Unix() {
		if err := db.executeFlushLocked(); err != nil {
			db.mu.Unlock()
			return err
		}
	}
	seq, hlc, flush := db.mu.seq, db.mu.hlcMax, FlushMarker{}
	haveFlush := false
	b.deltas, b.pact, b.lbuf = b.deltas[:0], b.pact[:0], b.lbuf[:0]
	var entry LogEntry
	appended := false // a frame of b is in the journal
	var scr [64]byte
	lbuf := scr[:0]
	for i := range b.ops {
		o := &b.ops[i]
		key := o.key.of(b.buf)
		if o.op != LogFlush && db.kd == nil {
			o.prev = db.recheckLocked(key, o.prev)
		}
		if o.op == LogFlush {
			_ = pb.Set(metaFlush, encodeFlushMarker(o.flush), nil)
			flush, haveFlush = o.flush, true
			// A delayed flush's version may lie ahead of the clock:
			// the HLC high-water follows the clock, not it.
			hlc = max(hlc, min(o.version.HLC, uint64(max(now.UnixMilli(), 0))<<16))
		} else {
			fseq := seq + 1 // the log entry's seq, written below
			if o.remote {
				fseq = 0
			}
			write := db.writeRecordLocked
			if db.kd != nil {
				write = db.writeJournalLocked
			}
			if err := write(pb, b, o, key, fseq); err != nil {
				if appended {
					// A frame of this batch is in the journal with a seq
					// the next commit would reuse: re-indexing could
					// not tell them apart.
					db.fail(err)
				}
				db.handOffLocked()
				db.mu.Unlock()
				db.st.writeErrors.Add(1)
				return fmt.Errorf("lsm: commit: %w", err)
			}
			appended = appended || o.loc.Segment != 0
			hlc = max(hlc, o.version.HLC)
		}
		if o.remote {
			continue
		}
		seq++
		entry = LogEntry{Op: o.op, Time: now.UnixMilli(), Version: o.version, Key: key, Flush: o.flush}
		if o.op == LogFlush {
			entry.Key = nil
		}
		if o.loc.Segment != 0 {
			// A journal frame's log entry waits with its position entry
			// in the pending index (the frame holds the seq too).
			start := len(b.lbuf)
			b.lbuf = appendLogEntry(b.lbuf, &entry)
			b.pact = append(b.pact, pendAction{kind: actLog, seg: o.loc.Segment, seq: seq, enc: span{start, len(b.lbuf) - start}})
			db.mu.logBytes += int64(9 + len(b.lbuf) - start)
			continue
		}
		b.scr = appendLogEntry(b.scr[:0], &entry)
		_ = pb.Set(appendLogKey(lbuf[:0], seq), b.scr, nil)
		db.mu.logBytes += int64(9 + len(b.scr))
	}
	for _, a := range b.applied {
		if db.kd != nil {
			// After the frames it covers, in the same stream: a crash
			// keeps it only with them (appliedFrameLocked).
			if err := db.appliedFrameLocked(b, a); err != nil {
				db.fail(err) // frames of this batch may be in the journal
				db.handOffLocked()
				db.mu.Unlock()
				db.st.writeErrors.Add(1)
				return fmt.Errorf("lsm: commit: %w", err)
			}
			continue
		}
		_ = pb.Set(appliedKey(a.Peer), encodeApplied(a), nil)
	}
	if hlc > db.mu.hlcReserved {
		_ = pb.Set(metaHLC, u64(hlc+hlcMargin), nil)
	}
	if b.cas > db.mu.cas {
		_ = pb.Set(metaCAS, u64(b.cas), nil)
	}
	// Cache mode: advance the epoch every DiskLimit/32 bytes, or every
	// 1/32 of the keys the keydir may hold (so that a drop for either
	// limit takes 1/32 of the data), persisted in this batch (before any
	// write lands in the new epoch).
	var next *epochTable
	if db.opts.Mode == ModeCache && (db.mu.sinceAdvance+b.bytes >= db.opts.DiskLimit/32 ||
		db.kd != nil && db.mu.putsSinceAdvance+int64(b.puts) >= db.keydirKeyLimit()/32) {
		t := db.mu.epochs.clone()
		t.apply(b.deltas)
		t.advance()
		_ = pb.Set(metaEpochs, t.encode(), nil)
		next = &t
	}

	// Sync commits share their fsync through db.gsync (groupsync.go). A
	// journal store's commit usually has nothing for Pebble: its frames,
	// position and log entries are in the journal and the pending index.
	var err error
	if !pb.Empty() {
		err = db.pdb.Apply(pb, pebble.NoSync)
	}
	if err == nil {
		err = db.failed()
	}
	if err != nil {
		db.handOffLocked()
		db.mu.Unlock()
		b.pb = nil // Pebble forbids reusing a batch whose commit failed
		db.st.writeErrors.Add(1)
		if !errors.Is(err, ErrFailed) {
			// Pebble's commit pipeline is not usable after a failed
			// commit (a WAL write error): refuse writes until restart.
			db.fail(err)
		}
		return fmt.Errorf("lsm: commit: %w", db.failed())
	}
	// Committed (visible): install the new state.
	logged := seq != db.mu.seq
	db.mu.seq = seq
	db.mu.hlcMax = hlc
	if hlc > db.mu.hlcReserved {
		db.mu.hlcReserved = hlc + hlcMargin
	}
	db.mu.cas = max(db.mu.cas, b.cas)
	if haveFlush {
		db.mu.flush = flush
	}
	if next != nil {
		db.mu.epochs = *next
		db.mu.sinceAdvance, db.mu.putsSinceAdvance = 0, 0
		db.publishEpochs()
	} else {
		db.mu.epochs.apply(b.deltas)
		db.mu.sinceAdvance += b.bytes
		db.mu.putsSinceAdvance += int64(b.puts)
	}
	db.applyPendingLocked(b)
	db.lastSeq.Store(seq)
	var ticket uint64
	if db.opts.Durability == DurabilitySync {
		if !pb.Empty() {
			db.walDirty.Store(true) // the group's sync must include the WAL
		}
		ticket = db.gsync.ticket()
	}
	if db.hints != nil {
		db.updateHintsLocked(b)
	}
	db.handOffLocked()
	db.mu.Unlock()
	if logged && db.opts.Durability == DurabilityNone {
		db.logWait.wake() // LastSeq is the committed seq
	}

	db.usage.Add(b.bytes)
	db.st.commits.Add(1)
	db.st.writes.Add(uint64(b.puts))
	db.st.bytesWritten.Add(uint64(b.bytes))
	switch db.opts.Durability {
	case DurabilitySync:
		if err := db.gsync.wait(db.groupSyncFn, ticket); err != nil {
			db.st.writeErrors.Add(1)
			db.fail(err)
			return fmt.Errorf("lsm: commit: %w", db.failed())
		}
		if err := db.failed(); err != nil {
			return err
		}
		db.advanceDurable(seq)
	case DurabilityInterval:
		db.pendingSyn.Store(true)
	}
	return nil
}

// updateHintsLocked points the location hints of b's keys at the records
// b wrote, once they are visible (hints.go). Requires mu.
func (db *DB) updateHintsLocked(b *Batch) {
	for i := range b.ops {
		o := &b.ops[i]
		switch {
		case o.op == LogFlush:
		case o.op == LogDelete && !o.tomb:
			db.hints.clear(o.key.of(b.buf))
		default:
			db.hints.set(o.key.of(b.buf), hint{epoch: o.at, loc: o.loc, exptime: o.exptime})
		}
	}
}

// writeRecordLocked adds to pb the Pebble mutations of o, a record (item
// or tombstone) or a plain delete, over its prev, and the counter deltas
// to b: the data path of a store that keeps its records in Pebble
// (persistent mode; a journal store uses
// writeJournalLocked). Requires mu.
func (db *DB) writeRecordLocked(pb *pebble.Batch, b *Batch, o *batchOp, key []byte, _ uint64) error {
	var scr [4]byte
	p := o.prev
	o.loc = JournalLoc{}
	if o.op == LogDelete && !o.tomb {
		if p.Present {
			db.unindexPrevLocked(pb, b, p, key, nil, 0)
			b.scr = appendDataKey(b.scr[:0], p.Epoch, key)
			_ = pb.Delete(b.scr, nil)
		}
		b.scr = appendIndexKey(b.scr[:0], key)
		_ = pb.Delete(b.scr, nil)
		return nil
	}
	e := o.epoch
	if !db.mu.epochs.live(e) {
		e = db.mu.epochs.cur // the epoch died since Put: write to the current one
	}
	o.at = e
	if p.Present {
		if p.Epoch != e {
			b.scr = appendDataKey(b.scr[:0], p.Epoch, key)
			_ = pb.Delete(b.scr, nil)
		}
		db.unindexPrevLocked(pb, b, p, key, o, e)
	}
	b.scr = appendDataKey(b.scr[:0], e, key)
	_ = pb.Set(b.scr, o.rec.of(b.buf), nil)
	// The k entry names the epoch only: an overwrite within the epoch of
	// the record it replaces leaves it as it is (one memtable insert, WAL
	// and compaction entry fewer for the common overwrite of a hot key).
	// prev has been rechecked under mu, so its k entry is there.
	if !p.Present || p.Epoch != e {
		b.scr = appendIndexKey(b.scr[:0], key)
		_ = pb.Set(b.scr, binary.BigEndian.AppendUint32(scr[:0], e), nil)
	}
	switch {
	case o.tomb:
		b.scr = appendTombKey(b.scr[:0], o.exptime, e, key)
		_ = pb.Set(b.scr, nil, nil)
		db.st.tombstones.Add(1)
	default:
		if o.exptime > 0 {
			b.scr = appendExpKey(b.scr[:0], o.exptime, e, key)
			_ = pb.Set(b.scr, nil, nil)
		}
		b.deltas = append(b.deltas, epochDelta{e, 1, int64(len(key) + o.rec.n)})
	}
	return nil
}

// appendJournalLocked appends the frame of (seq, key, rec) to the journal.
// The open segment always has the current epoch (a segment only holds
// records of its epoch: it is removed when its epoch is dropped), at most
// maxSegmentSize bytes and a pending table within Options.MemTableSize.
// Requires mu.
func (db *DB) appendJournalLocked(seq uint64, key, rec []byte) (JournalLoc, error) {
	if db.j.Epoch() < db.mu.epochs.cur || db.j.OpenSize() >= maxSegmentSize ||
		db.pend.open.mem >= db.opts.MemTableSize || db.pend.open.arenaFull() {
		if err := db.rollLocked(); err != nil {
			return JournalLoc{}, err
		}
	}
	db.mu.framesSinceCkpt++
	return db.j.Append(seq, key, rec)
}

// unindexPrevLocked deletes the x or t entry of the previous record p of
// key, unless o (nil for a plain delete) writes the same entry again, and
// takes p out of the counters.
func (db *DB) unindexPrevLocked(pb *pebble.Batch, b *Batch, p Location, key []byte, o *batchOp, e uint32) {
	same := o != nil && p.Epoch == e && p.Tombstone == o.tomb && p.Exptime == o.exptime
	switch {
	case p.Tombstone:
		if !same {
			b.scr = appendTombKey(b.scr[:0], p.Exptime, p.Epoch, key)
			_ = pb.Delete(b.scr, nil)
		}
	default:
		if p.Exptime > 0 && !same {
			b.scr = appendExpKey(b.scr[:0], p.Exptime, p.Epoch, key)
			_ = pb.Delete(b.scr, nil)
		}
		b.deltas = append(b.deltas, epochDelta{p.Epoch, -1, -int64(p.Size)})
	}
}

// recheckLocked returns where key's record really is when prev may be
// stale: unknown, in a dead epoch, or read before the sweeper last deleted
// records. Requires mu (no commit or sweep can interleave).
func (db *DB) recheckLocked(key []byte, prev Location) Location {
	if prev.Known && prev.gen == db.sweepGen.Load() && (!prev.Present || db.mu.epochs.live(prev.Epoch)) {
		return prev
	}
	where, err := db.lookupOpen(key) // Commit holds closeMu
	if err != nil {
		return Location{Known: true}
	}
	return where
}

func (t *epochTable) clone() epochTable {
	return epochTable{lo: t.lo, cur: t.cur, stat: append([]epochStat(nil), t.stat...)}
}

// apply adds deltas to live epochs (deltas of dead epochs are dropped).
func (t *epochTable) apply(ds []epochDelta) {
	for _, d := range ds {
		if t.live(d.epoch) {
			s := t.at(d.epoch)
			s.items += d.items
			s.bytes += d.bytes
		}
	}
}

func (t *epochTable) advance() {
	t.cur++
	t.stat = append(t.stat, epochStat{})
}
