package repl

import (
	"errors"
	"fmt"

	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/lsm"
)

// engineLocal is the production Local: this node's engine and its disk
// store. Records cross links in lsm's record encoding (with its CRC), values
// in their stored (possibly compressed) form; applying goes through the
// engine, which takes the key's stripe lock, compares versions and keeps
// the RAM tier coherent.
type engineLocal struct {
	eng *engine.Engine
	db  *lsm.DB
}

// ErrNotReplicated: NewLocal was given a store opened without
// lsm.Options.Replicated (deletes would leave no tombstones, and flushes
// would drop records written after them on peers).
var ErrNotReplicated = errors.New("repl: the disk store was not opened with Replicated")

// NewLocal returns the Local of a node whose engine eng runs over db (eng
// was created with engine.Options.Disk = db). db must have been opened
// with lsm.Options.Replicated.
func NewLocal(eng *engine.Engine, db *lsm.DB) (Local, error) {
	if eng == nil || db == nil {
		return nil, errors.New("repl: NewLocal needs an engine and its disk store")
	}
	if !db.Replicated() {
		return nil, ErrNotReplicated
	}
	return &engineLocal{eng: eng, db: db}, nil
}

func (l *engineLocal) NodeID() uint64 { return l.db.NodeID() }

func (l *engineLocal) Histories() []History {
	hs := l.db.Histories()
	out := make([]History, len(hs))
	for i, h := range hs {
		out[i] = History{ID: h.ID, FirstSeq: h.FirstSeq}
	}
	return out
}

func (l *engineLocal) LastSeq() uint64 { return l.db.LastSeq() }

func (l *engineLocal) LogChanged() <-chan struct{} { return l.db.LogChanged() }

func (l *engineLocal) ReadLog(from uint64, fn func(e Entry) bool) (uint64, error) {
	if from == 0 {
		from = 1
	}
	last, err := l.db.ReadLogRecords(from, func(seq uint64, le lsm.LogEntry, rec []byte) bool {
		return fn(Entry{Seq: seq, Op: opOf(le.Op), Key: le.Key, Record: rec, Millis: le.Version.HLC >> 16})
	})
	if errors.Is(err, lsm.ErrLogTrimmed) {
		err = fmt.Errorf("%w: %w", ErrLogTrimmed, err)
	}
	return last, err
}

func opOf(op lsm.LogOp) Op {
	switch op {
	case lsm.LogDelete:
		return OpDelete
	case lsm.LogFlush:
		return OpFlush
	}
	return OpPut
}

func (l *engineLocal) Snapshot(fn func(e Entry) error) (History, uint64, error) {
	h, seq, err := l.db.Snapshot(func(key, rec []byte) error {
		hd, err := lsm.ParseRecord(rec)
		if err != nil {
			return nil // a corrupt record is never served, nor shipped
		}
		e := Entry{Key: key, Record: rec, Millis: hd.Version.HLC >> 16}
		switch hd.Kind {
		case lsm.KindItem:
			e.Op = OpPut
		case lsm.KindTombstone:
			e.Op = OpDelete
		case lsm.KindFlush:
			e.Op, e.Key = OpFlush, nil
		}
		return fn(e)
	})
	return History{ID: h.ID, FirstSeq: h.FirstSeq}, seq, err
}

func (l *engineLocal) Apply(peer, hist uint64, e Entry) error {
	off := lsm.Applied{Peer: peer, History: hist, Seq: e.Seq}
	if e.Record == nil {
		if e.Seq == 0 {
			return nil
		}
		return l.SetApplied(peer, hist, e.Seq)
	}
	var err error
	switch e.Op {
	case OpPut, OpDelete:
		var h lsm.RecordHeader
		if h, err = lsm.ParseRecord(e.Record); err == nil && (h.Kind == lsm.KindTombstone) != (e.Op == OpDelete) {
			err = fmt.Errorf("%w: op %d with a %v record", engine.ErrBadRecord, e.Op, h.Kind)
		}
		if err == nil {
			_, err = l.eng.ApplyRecord(e.Key, e.Record, off)
		}
	case OpFlush:
		_, err = l.eng.ApplyFlush(e.Record, off)
	default:
		err = fmt.Errorf("%w: op %d", engine.ErrBadRecord, e.Op)
	}
	if err != nil {
		return fmt.Errorf("repl: apply seq %d from %016x: %w", e.Seq, peer, err)
	}
	return nil
}

func (l *engineLocal) SetApplied(peer, hist, seq uint64) error {
	b := l.db.NewBatch()
	b.SetApplied(lsm.Applied{Peer: peer, History: hist, Seq: seq})
	if err := l.db.Commit(b); err != nil {
		return fmt.Errorf("repl: store applied offset of %016x: %w", peer, err)
	}
	return nil
}

// Applied reads the stored offset; a read error is reported as no offset
// (the link then pulls from seq 1, which the conflict rule makes harmless:
// applying a record twice changes nothing).
func (l *engineLocal) Applied(peer uint64) (hist, seq uint64, ok bool) {
	a, ok, err := l.db.Applied(peer)
	if err != nil || !ok {
		return 0, 0, false
	}
	return a.History, a.Seq, true
}
