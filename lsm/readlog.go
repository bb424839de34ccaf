package lsm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// ErrLogTrimmed: ReadLog was asked for entries the log no longer holds
// (retention trimmed them); the reader needs a full resync.
var ErrLogTrimmed = errors.New("lsm: log position trimmed")

// ReadLog calls fn for the log entries from sequence number from on, in
// order, until fn returns false or the end of the durable log. It returns
// only the entries: a shipper reads a put's value with Get(key) and ships
// it when the record's Version equals the entry's (otherwise a later entry
// of the same key carries the newer record; a missing record was deleted
// or expired, also by a later entry or by expiry on every node).
//
// The end is the last entry known to be durable: with DurabilitySync the
// last fsynced commit, with DurabilityInterval the last syncer fsync, with
// DurabilityNone the last commit (a crash may then lose a tail that was
// read: the log's history changes). e.Key is valid during the call only.
// from below LogFirst returns ErrLogTrimmed.
func (db *DB) ReadLog(from uint64, fn func(seq uint64, e LogEntry) bool) error {
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return ErrClosed
	}
	if first := db.logFirst.Load(); from < first {
		return fmt.Errorf("%w: %d is below the first kept %d", ErrLogTrimmed, from, first)
	}
	end := db.durableSeq.Load()
	if db.opts.Durability == DurabilityNone {
		end = db.lastSeq.Load()
	}
	if from > end {
		return nil
	}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: appendLogKey(nil, from), UpperBound: appendLogKey(nil, end+1)})
	if err != nil {
		return fmt.Errorf("lsm: read log: %w", err)
	}
	want := from
	var e LogEntry
	for ok := it.First(); ok; ok = it.Next() {
		seq := binary.BigEndian.Uint64(it.Key()[1:])
		if seq != want {
			_ = it.Close()
			if seq > want && want < db.logFirst.Load() {
				return fmt.Errorf("%w: %d was trimmed while reading", ErrLogTrimmed, want)
			}
			return fmt.Errorf("%w: log gap: found %d, expected %d", ErrCorrupt, seq, want)
		}
		if err := decodeLogEntry(it.Value(), &e); err != nil {
			_ = it.Close()
			return fmt.Errorf("lsm: log entry %d: %w", seq, err)
		}
		if !fn(seq, e) {
			break
		}
		want++
	}
	return errors.Join(it.Error(), it.Close())
}
