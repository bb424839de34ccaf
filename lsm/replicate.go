package lsm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// This file is what replication reads from the store (docs/replication.md):
// applied offsets, the log with the record of each entry, a consistent
// snapshot, and a chunked scan of the records.

// Applied returns the stored offset for peer (Batch.SetApplied); ok is
// false when none was ever stored.
func (db *DB) Applied(peer uint64) (a Applied, ok bool, err error) {
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return Applied{}, false, ErrClosed
	}
	if db.kd != nil {
		db.mu.Lock()
		a, ok = db.mu.applied[peer]
		db.mu.Unlock()
		if ok {
			return a, true, nil
		}
	}
	v, err := db.getMeta(appliedKey(peer))
	if err != nil || v == nil {
		return Applied{}, false, err
	}
	a, err = decodeApplied(peer, v)
	return a, err == nil, err
}

func encodeApplied(a Applied) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, a.History), a.Seq)
}

func decodeApplied(peer uint64, v []byte) (Applied, error) {
	if len(v) != 16 {
		return Applied{}, fmt.Errorf("%w: applied offset of %d bytes", ErrCorrupt, len(v))
	}
	return Applied{Peer: peer, History: binary.BigEndian.Uint64(v), Seq: binary.BigEndian.Uint64(v[8:])}, nil
}

// ReadLogRecords is ReadLog passing each entry with the encoded record of
// its version, for shipping: a put's item and a delete's tombstone as they
// are in d now (rec nil when the key has since been overwritten, swept or
// dropped: a later entry or expiry covers it), a flush's marker as a flush
// record (AppendFlushRecord). It returns the last sequence number it
// passed (from-1 when none; the entry on which fn returned false counts).
// rec and e.Key are valid during fn only.
func (db *DB) ReadLogRecords(from uint64, fn func(seq uint64, e LogEntry, rec []byte) bool) (uint64, error) {
	last := from - 1
	var buf []byte
	err := db.ReadLog(from, func(seq uint64, e LogEntry) bool {
		last = seq
		var rec []byte
		switch e.Op {
		case LogFlush:
			buf = AppendFlushRecord(buf[:0], e.Flush)
			rec = buf
		default:
			// ReadLog holds closeMu.
			raw, _, err := db.getRawOpen(buf[:0], e.Key)
			if err == nil && raw != nil {
				buf = raw
				if h, _, err := parseRecordHeader(raw); err == nil && h.version == e.Version &&
					(h.kind == KindTombstone) == (e.Op == LogDelete) {
					rec = raw
				}
			}
		}
		return fn(seq, e, rec)
	})
	return last, err
}

// Snapshot calls fn with every record in the store (items and tombstones,
// expired or not) and then, when one is set, the flush marker as a flush
// record with a nil key, all read from one Pebble snapshot taken under the
// commit mutex. It returns the log history and sequence number of that
// point (the data holds every log entry up to seq and none after), having
// made seq durable first. fn may block (it writes to a network): Snapshot
// holds no lock writers need, only the close lock (stop replication before
// Close). key and rec are valid during fn only; an error from fn aborts and
// is returned.
func (db *DB) Snapshot(fn func(key, rec []byte) error) (History, uint64, error) {
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return History{}, 0, ErrClosed
	}
	if db.kd != nil {
		return db.snapshotJournal(fn)
	}
	db.mu.Lock()
	if err := db.settleLocked(); err != nil {
		db.mu.Unlock()
		return History{}, 0, fmt.Errorf("lsm: snapshot: %w", err)
	}
	snap := db.pdb.NewSnapshot()
	seq, lo, cur, marker := db.mu.seq, db.mu.epochs.lo, db.mu.epochs.cur, db.mu.flush
	db.mu.Unlock()
	defer snap.Close()
	h := db.hists[len(db.hists)-1]
	if db.opts.Durability != DurabilityNone && db.durableSeq.Load() < seq {
		if err := db.pdb.LogData(nil, pebble.Sync); err != nil {
			return History{}, 0, fmt.Errorf("lsm: snapshot: sync: %w", err)
		}
		db.advanceDurable(seq)
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: dataPrefix(lo), UpperBound: dataPrefix(cur + 1)})
	if err != nil {
		return History{}, 0, fmt.Errorf("lsm: snapshot: %w", err)
	}
	fb := db.frameBufs.Get().(*[]byte)
	defer db.frameBufs.Put(fb)
	for ok := it.First(); ok; ok = it.Next() {
		epoch, key, ok := parseDataKey(it.Key())
		if !ok {
			continue
		}
		rec, ok := db.storedRecord(fb, epoch, key, it.Value())
		if !ok {
			continue
		}
		if err := fn(key, rec); err != nil {
			_ = it.Close()
			return History{}, 0, err
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return History{}, 0, fmt.Errorf("lsm: snapshot: %w", err)
	}
	if marker.OldestLive != 0 {
		if err := fn(nil, AppendFlushRecord(nil, marker)); err != nil {
			return History{}, 0, err
		}
	}
	return h, seq, nil
}

// Scan calls fn with up to n records (items and tombstones; the caller
// applies expiry and the flush marker) in the order of the live epochs and
// then keys, starting after the cursor after (nil: from the start), and
// returns the cursor to pass next (nil when the scan is complete). fn runs
// with an iterator open and must not call into the DB; key and rec
// are valid during fn only; fn returning false stops early (next is then
// the cursor after that record).
func (db *DB) Scan(after []byte, n int, fn func(key, rec []byte) bool) (next []byte, err error) {
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return nil, ErrClosed
	}
	if after == nil {
		// Pebble holds every record (or, in a journal store, the
		// position of every frame) written before the scan begins.
		db.mu.Lock()
		err := db.settleLocked()
		db.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("lsm: scan: %w", err)
		}
	}
	if db.kd != nil {
		return db.scanJournal(after, n, fn)
	}
	v := db.liveEpochs.Load()
	lower := dataPrefix(uint32(v >> 32))
	if after != nil {
		lower = append(append([]byte(nil), after...), 0)
	}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: dataPrefix(uint32(v) + 1)})
	if err != nil {
		return nil, fmt.Errorf("lsm: scan: %w", err)
	}
	fb := db.frameBufs.Get().(*[]byte)
	defer db.frameBufs.Put(fb)
	k := 0
	ok := it.First()
	for ; ok && k < n; ok = it.Next() {
		k++
		epoch, key, _ := parseDataKey(it.Key())
		next = append(next[:0], it.Key()...)
		rec, found := db.storedRecord(fb, epoch, key, it.Value())
		if !found {
			continue
		}
		if !fn(key, rec) {
			break
		}
	}
	if !ok {
		next = nil
	}
	return next, errors.Join(it.Error(), it.Close())
}

// storedRecord is the record that the d value v of key (in epoch) stands
// for: v itself, or the journal frame it references, read into fb. A
// frame that is lost, dropped or damaged is skipped (ok false): a damaged
// one is counted and logged, as Get does.
func (db *DB) storedRecord(fb *[]byte, epoch uint32, key, v []byte) (rec []byte, ok bool) {
	if !isRef(v) {
		return v, true
	}
	rec, err := db.readRef(fb, key, v)
	if err == nil {
		return rec, true
	}
	if _, err = db.frameMiss(err, epoch); errors.Is(err, ErrCorrupt) {
		db.corrupt(key, 0, err)
	}
	return nil, false
}

// Replicated reports Options.Replicated.
func (db *DB) Replicated() bool { return db.opts.Replicated }
