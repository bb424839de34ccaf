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
	// The pending tables' entries are collected before Pebble's iterator
	// is opened: a table ingested in between is then read twice (once),
	// never missed.
	pending := db.pendingLogs(from, end)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: appendLogKey(nil, from), UpperBound: appendLogKey(nil, end+1)})
	if err != nil {
		return fmt.Errorf("lsm: read log: %w", err)
	}
	want := from
	var e LogEntry
	ok := it.First()
	for ok || pending.valid() {
		var seq uint64
		var enc []byte
		fromPebble := ok && (!pending.valid() || binary.BigEndian.Uint64(it.Key()[1:]) <= pending.seq())
		if fromPebble {
			seq, enc = binary.BigEndian.Uint64(it.Key()[1:]), it.Value()
		} else {
			seq, enc = pending.seq(), pending.value()
		}
		if seq != want {
			_ = it.Close()
			if seq > want && want < db.logFirst.Load() {
				return fmt.Errorf("%w: %d was trimmed while reading", ErrLogTrimmed, want)
			}
			return fmt.Errorf("%w: log gap: found %d, expected %d", ErrCorrupt, seq, want)
		}
		if err := decodeLogEntry(enc, &e); err != nil {
			_ = it.Close()
			return fmt.Errorf("lsm: log entry %d: %w", seq, err)
		}
		want++
		// The placeholder of an entry a crash lost (reindex) is skipped.
		if (e.Op != LogPut || len(e.Key) > 0) && !fn(seq, e) {
			break
		}
		// e.Key aliases the source: advance only after fn.
		if pending.valid() && pending.seq() == seq {
			pending.next()
		}
		if fromPebble {
			ok = it.Next()
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// pendingLogCursor walks the pending index's log entries in [from, end]
// by seq. It holds the tables' entries as they were when it was made
// (appends never move them), so it needs no lock while it is read.
type pendingLogCursor struct {
	end   uint64
	parts []pendingLogPart // oldest table first: disjoint, increasing seqs
}

type pendingLogPart struct {
	logs   []pendingLog
	chunks [][]byte
}

func (db *DB) pendingLogs(from, end uint64) pendingLogCursor {
	c := pendingLogCursor{end: end}
	db.pend.RLock()
	defer db.pend.RUnlock()
	for _, t := range db.pend.allLocked() {
		if logs, chunks := t.logsFrom(from); len(logs) > 0 {
			c.parts = append(c.parts, pendingLogPart{logs, chunks})
		}
	}
	c.skip()
	return c
}

// skip drops exhausted parts, and everything once past end.
func (c *pendingLogCursor) skip() {
	for len(c.parts) > 0 && len(c.parts[0].logs) == 0 {
		c.parts = c.parts[1:]
	}
	if len(c.parts) > 0 && c.parts[0].logs[0].seq > c.end {
		c.parts = nil
	}
}

func (c *pendingLogCursor) valid() bool { return len(c.parts) > 0 }

func (c *pendingLogCursor) seq() uint64 { return c.parts[0].logs[0].seq }

func (c *pendingLogCursor) value() []byte {
	p := &c.parts[0]
	l := p.logs[0]
	return arenaEntry(p.chunks, l.off, l.n)
}

func (c *pendingLogCursor) next() {
	c.parts[0].logs = c.parts[0].logs[1:]
	c.skip()
}
