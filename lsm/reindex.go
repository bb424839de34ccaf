package lsm

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// reindex indexes, at Open, the journal frames that Pebble does not: those
// after the indexed marker, whose pending table a crash (or a failed
// ingestion) lost. It replays them in order into the keydir (through l,
// the loader that also replays Pebble's position entries) and into one
// table of position and log entries, as the commits that wrote them did,
// and ingests that table before the store answers. The journal is the one
// stream of item mutations, so no frame needs comparing with Pebble.
//
// Every frame's log entry is kept, and a seq that neither the journal nor
// Pebble holds any more (a frame still in the journal's buffer when the
// process died, whose seq a later log entry in Pebble, a flush_all's,
// already passed) gets a placeholder, so the log stays gap-free. The
// ingested table carries the new marker; when nothing needs indexing, b
// (Open's metadata batch) does. Requires exclusive access (Open).
func (db *DB) reindex(b *pebble.Batch, l *keydirLoader) error {
	v, err := db.getMeta(metaIndexed)
	if err != nil {
		return err
	}
	if v == nil {
		// A new store: everything is indexed.
		m := indexedMarker{Seg: db.j.Segment(), Off: db.j.OpenSize(), Seq: db.mu.seq}
		_ = b.Set(metaIndexed, m.encode(), nil)
		return nil
	}
	ix, err := decodeIndexedMarker(v)
	if err != nil {
		return fmt.Errorf("lsm: metadata %q: %w", metaIndexed[1:], err)
	}
	// Files of an ingestion a crash interrupted (Pebble removes those it
	// ingested).
	if names, err := db.opts.FS.List(db.opts.Dir); err == nil {
		for _, n := range names {
			if strings.HasPrefix(n, ingestFilePrefix) {
				_ = db.opts.FS.Remove(db.opts.FS.PathJoin(db.opts.Dir, n))
			}
		}
	}
	began := time.Now()
	segs := db.j.Segments()
	if n := len(segs); n == 0 || (segs[n-1].ID == ix.Seg && db.j.OpenSize() <= ix.Off) {
		return nil
	}

	// The seqs Pebble's log holds after the marker (flush_all's entries).
	// (Entries below logFirst were trimmed: the log starts there.)
	from := max(ix.Seq+1, db.logFirst.Load())
	inPebble := make(map[uint64]bool)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: appendLogKey(nil, from), UpperBound: []byte{prefixLog + 1}})
	if err != nil {
		return fmt.Errorf("lsm: reindex: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		inPebble[binary.BigEndian.Uint64(it.Key()[1:])] = true
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("lsm: reindex: %w", err)
	}

	t := newSegIndex(db.j.Segment())
	seen := make(map[uint64]bool)
	hi, maxHLC, maxCAS := db.mu.seq, uint64(0), uint64(0)
	frames := 0
	var kv []byte
	for _, s := range segs {
		if s.ID < ix.Seg {
			continue
		}
		_, live := l.epochOf(s.ID) // a dead segment's frames keep only their log entries
		start := int64(0)
		if s.ID == ix.Seg {
			start = ix.Off // a frame boundary: the frames before it are indexed
		}
		_, serr := db.j.ScanFrom(s.ID, start, func(loc JournalLoc, fr journalFrame) bool {
			frames++
			if len(fr.Key) == 0 { // a peer's applied offset (appliedFrameLocked)
				if a, err := decodeAppliedFrame(fr.Record); err == nil {
					db.mu.applied[a.Peer] = a
					t.setApplied(a)
				}
				return true
			}
			h, _, herr := parseRecordHeader(fr.Record)
			if herr != nil || (h.kind != KindItem && h.kind != KindTombstone) || !fitsKeydir(loc) {
				return true // not a record the commits write: skip it
			}
			e := posEntry{loc: loc, kind: posItem, exptime: h.exptime, version: h.version, key: fr.Key}
			if h.kind == KindTombstone {
				e.kind, e.exptime = posDelete, h.time
				if db.opts.Replicated {
					e.kind = posTombstone
				}
			}
			if live {
				l.add(&e)
				kv = appendPosValue(appendPosKey(kv[:0], loc), &e)
				t.addPos(kv)
			}
			maxHLC, maxCAS = max(maxHLC, h.version.HLC), max(maxCAS, h.cas)
			if fr.Seq == 0 || fr.Seq <= ix.Seq || inPebble[fr.Seq] || seen[fr.Seq] {
				return true // a peer's record (no log entry), or logged already
			}
			seen[fr.Seq] = true
			hi = max(hi, fr.Seq)
			if fr.Seq >= from {
				op := LogPut
				if h.kind == KindTombstone {
					op = LogDelete
				}
				kv = appendLogEntry(kv[:0], &LogEntry{Op: op, Time: h.time * 1000, Version: h.version, Key: fr.Key})
				t.addLog(fr.Seq, kv) // sorted below
			}
			return true
		})
		if serr != nil && !errors.Is(serr, ErrCorrupt) {
			return fmt.Errorf("lsm: reindex: %w", serr)
		}
		// ErrCorrupt: a torn tail, the end of what the crash left.
	}
	lost := 0
	for seq := from; seq <= hi; seq++ {
		if !inPebble[seq] && !seen[seq] {
			kv = appendLogEntry(kv[:0], &LogEntry{Op: LogPut, Time: db.opts.Clock.Now().UnixMilli()})
			t.addLog(seq, kv)
			lost++
		}
	}
	slices.SortFunc(t.logs, func(a, b pendingLog) int { return cmp.Compare(a.seq, b.seq) })
	t.end = db.j.OpenSize()
	if !t.empty() {
		// The marker's seq is the log's end, placeholders included.
		if err := db.ingestTable(t); err != nil {
			return err
		}
	} else {
		_ = b.Set(metaIndexed, indexedMarker{Seg: t.seg, Off: t.end, Seq: ix.Seq}.encode(), nil)
	}
	db.mu.seq = max(db.mu.seq, hi)
	db.mu.hlcMax = max(db.mu.hlcMax, maxHLC)
	if maxCAS > db.mu.cas {
		db.mu.cas = maxCAS
		_ = b.Set(metaCAS, u64(maxCAS), nil)
	}
	db.reindexTook = time.Since(began)
	db.log.Info("journal re-indexed after an unclean shutdown", "frames", frames, "log_entries", len(seen),
		"lost_log_entries", lost, "from_segment", ix.Seg, "took", db.reindexTook.Round(time.Microsecond).String())
	return nil
}
