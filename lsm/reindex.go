package lsm

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// reindex indexes, at Open, the journal frames that Pebble does not: those
// after the indexed marker, whose pending index a crash (or a failed
// ingestion) lost. It replays them in order into one table, as the
// commits that wrote them did, and ingests it before the store answers.
//
// A frame is indexed unless something newer of its key is in Pebble: a
// record of a higher version, or a log entry after the frame's seq (a
// delete or another write that went to Pebble). Every frame's log entry is
// kept, and a seq that neither the journal nor Pebble holds any more (a
// frame still in the journal's buffer when the process died, whose seq a
// later Pebble write already passed) gets a placeholder, so the log stays
// gap-free. The ingested table carries the new marker; when nothing needs
// indexing, b (Open's metadata batch) does. Requires exclusive access
// (Open).
func (db *DB) reindex(b *pebble.Batch) error {
	v, err := db.getMeta(metaIndexed)
	if err != nil {
		return err
	}
	if v == nil {
		// A new store, or one from before the pending index, whose
		// frames all have their reference in d: everything is indexed.
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
	segs := db.j.Segments()
	if n := len(segs); n == 0 || (segs[n-1].ID == ix.Seg && db.j.OpenSize() <= ix.Off) {
		return nil
	}

	// Pebble's log after the marker: the seqs it holds, and the last seq
	// at which each key was written there.
	// (Entries below logFirst were trimmed: the log starts there.)
	from := max(ix.Seq+1, db.logFirst.Load())
	inPebble := make(map[uint64]bool)
	later := make(map[string]uint64)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: appendLogKey(nil, from), UpperBound: []byte{prefixLog + 1}})
	if err != nil {
		return fmt.Errorf("lsm: reindex: %w", err)
	}
	var e LogEntry
	for ok := it.First(); ok; ok = it.Next() {
		seq := binary.BigEndian.Uint64(it.Key()[1:])
		inPebble[seq] = true
		if decodeLogEntry(it.Value(), &e) == nil && len(e.Key) > 0 {
			later[string(e.Key)] = seq
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("lsm: reindex: %w", err)
	}

	t := newSegIndex(0)
	seen := make(map[uint64]bool)
	var logs []pendingLog
	var arena []byte
	hi, maxHLC, maxCAS := db.mu.seq, uint64(0), uint64(0)
	bp := db.keyBufs.Get().(*[]byte)
	defer db.keyBufs.Put(bp)
	indexed := 0
	for _, s := range segs {
		if s.ID < ix.Seg {
			continue
		}
		epoch := min(s.Epoch, db.mu.epochs.cur)
		live := db.mu.epochs.live(epoch)
		var ferr error
		_, serr := db.j.Scan(s.ID, func(loc JournalLoc, fr journalFrame) bool {
			if (s.ID == ix.Seg && loc.Off < ix.Off) || fr.Seq <= ix.Seq || inPebble[fr.Seq] || seen[fr.Seq] {
				return true // indexed, or the frame of a commit that failed
			}
			seen[fr.Seq] = true
			hi = max(hi, fr.Seq)
			h, _, herr := parseRecordHeader(fr.Record)
			if fr.Seq >= from {
				start := len(arena)
				arena = appendLogEntry(arena, &LogEntry{Op: LogPut, Time: h.time * 1000, Version: h.version, Key: fr.Key})
				logs = append(logs, pendingLog{seq: fr.Seq, off: uint32(start), n: uint32(len(arena) - start)})
			}
			if herr != nil || h.kind != KindItem || !live || later[string(fr.Key)] > fr.Seq {
				return true
			}
			maxHLC, maxCAS = max(maxHLC, h.version.HLC), max(maxCAS, h.cas)
			entry := pendingEntry{loc: loc, exptime: h.exptime, ver: h.version, epoch: epoch,
				size: uint32(len(fr.Key) + len(fr.Record))}
			// A key replayed already keeps its base (segIndex.put);
			// otherwise Pebble's record is the base, unless it is newer.
			if _, ok := t.keys[string(fr.Key)]; !ok {
				where, v, closer, err := db.find(bp, nil, fr.Key, findStored)
				if err != nil {
					ferr = err
					return false
				}
				if v != nil {
					ph, _, _, perr := parseStored(v)
					setHeader(&where, v)
					closer.Close()
					if perr == nil && !ph.version.Less(h.version) {
						return true // Pebble has a newer record
					}
					entry.base = baseOf(where)
				}
			}
			t.put(fr.Key, entry)
			indexed++
			return true
		})
		if ferr != nil {
			return fmt.Errorf("lsm: reindex: %w", ferr)
		}
		if serr != nil && !errors.Is(serr, ErrCorrupt) {
			return fmt.Errorf("lsm: reindex: %w", serr)
		}
		// ErrCorrupt: a torn tail, the end of what the crash left.
	}
	lost := 0
	for seq := from; seq <= hi; seq++ {
		if !inPebble[seq] && !seen[seq] {
			start := len(arena)
			arena = appendLogEntry(arena, &LogEntry{Op: LogPut, Time: db.opts.Clock.Now().UnixMilli()})
			logs = append(logs, pendingLog{seq: seq, off: uint32(start), n: uint32(len(arena) - start)})
			lost++
		}
	}
	slices.SortFunc(logs, func(a, b pendingLog) int { return cmp.Compare(a.seq, b.seq) })
	t.logs, t.arena = logs, arena
	t.seg, t.end = db.j.Segment(), db.j.OpenSize()
	if len(logs) > 0 {
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
	db.log.Info("journal re-indexed after an unclean shutdown", "frames", len(seen), "indexed", indexed,
		"lost_log_entries", lost, "from_segment", ix.Seg)
	return nil
}
