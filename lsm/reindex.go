package lsm

import (
	"bytes"
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
	began := time.Now()
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

	// The frames to index, in journal order. Whether Pebble holds a newer
	// record of a key, and the base a key's first frame takes, are read
	// afterwards for all keys at once, in key order (bases).
	var cands []reindexFrame
	var keys []byte // the candidates' keys, end to end
	seen := make(map[uint64]bool)
	var logs []pendingLog
	var arena []byte
	hi, maxHLC, maxCAS := db.mu.seq, uint64(0), uint64(0)
	for _, s := range segs {
		if s.ID < ix.Seg {
			continue
		}
		epoch := min(s.Epoch, db.mu.epochs.cur)
		live := db.mu.epochs.live(epoch)
		start := int64(0)
		if s.ID == ix.Seg {
			start = ix.Off // a frame boundary: the frames before it are indexed
		}
		_, serr := db.j.ScanFrom(s.ID, start, func(loc JournalLoc, fr journalFrame) bool {
			if fr.Seq <= ix.Seq || inPebble[fr.Seq] || seen[fr.Seq] {
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
			cands = append(cands, reindexFrame{key: uint32(len(keys)), keyLen: uint32(len(fr.Key)),
				entry: pendingEntry{loc: loc, exptime: h.exptime, ver: h.version, epoch: epoch,
					size: uint32(len(fr.Key) + len(fr.Record))}})
			keys = append(keys, fr.Key...)
			return true
		})
		if serr != nil && !errors.Is(serr, ErrCorrupt) {
			return fmt.Errorf("lsm: reindex: %w", serr)
		}
		// ErrCorrupt: a torn tail, the end of what the crash left.
	}
	stored, err := db.storedRecords(cands, keys)
	if err != nil {
		return fmt.Errorf("lsm: reindex: %w", err)
	}
	t := newSegIndex(0)
	indexed := 0
	for i := range cands {
		c := &cands[i]
		key := keys[c.key : c.key+c.keyLen]
		// A key replayed already keeps its base (segIndex.put);
		// otherwise Pebble's record is the base, unless it is newer.
		if _, ok := t.keys[string(key)]; !ok {
			if st := stored[string(key)]; st.where.Present {
				if st.parsed && !st.ver.Less(c.entry.ver) {
					continue // Pebble has a newer record
				}
				c.entry.base = baseOf(st.where)
			}
		}
		t.put(key, c.entry)
		indexed++
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
	db.reindexTook = time.Since(began)
	db.log.Info("journal re-indexed after an unclean shutdown", "frames", len(seen), "indexed", indexed,
		"lost_log_entries", lost, "from_segment", ix.Seg, "took", db.reindexTook.Round(time.Microsecond).String())
	return nil
}

// reindexFrame is a journal frame reindex may index: its entry, and its
// key's place in reindex's key buffer.
type reindexFrame struct {
	key, keyLen uint32
	entry       pendingEntry
}

// storedRecord is what Pebble holds of a key: where its record is, and
// the record's version when its header parsed.
type storedRecord struct {
	where  Location
	ver    Version
	parsed bool
}

// storedRecords reads what Pebble holds of each candidate's key, as find
// does for one key, but for all of them in key order through two
// iterators (k, then d by epoch): thousands of point reads against a cold
// block cache made the re-index most of a restart's time after a crash.
// Requires exclusive access (Open).
func (db *DB) storedRecords(cands []reindexFrame, keys []byte) (map[string]storedRecord, error) {
	out := make(map[string]storedRecord, len(cands))
	uniq := make([]string, 0, len(cands))
	for _, c := range cands {
		k := string(keys[c.key : c.key+c.keyLen])
		if _, ok := out[k]; !ok {
			out[k] = storedRecord{}
			uniq = append(uniq, k)
		}
	}
	if len(uniq) == 0 {
		return out, nil
	}
	slices.Sort(uniq)

	// k: each key's epoch.
	type located struct {
		key   string
		epoch uint32
	}
	var present []located
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixIndex}, UpperBound: []byte{prefixIndex + 1}})
	if err != nil {
		return nil, err
	}
	var kb []byte
	for _, k := range uniq {
		kb = appendIndexKey(kb[:0], []byte(k))
		if !it.SeekGE(kb) || !bytes.Equal(it.Key(), kb) {
			continue
		}
		v := it.Value()
		if len(v) != 4 || !db.epochLive(binary.BigEndian.Uint32(v)) {
			db.queueStale(kb)
			continue
		}
		present = append(present, located{key: k, epoch: binary.BigEndian.Uint32(v)})
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}

	// d: the records, in d's order (epoch, then key).
	slices.SortFunc(present, func(a, b located) int {
		return cmp.Or(cmp.Compare(a.epoch, b.epoch), strings.Compare(a.key, b.key))
	})
	it, err = db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixData}, UpperBound: []byte{prefixData + 1}})
	if err != nil {
		return nil, err
	}
	for _, p := range present {
		kb = appendDataKey(kb[:0], p.epoch, []byte(p.key))
		if !it.SeekGE(kb) || !bytes.Equal(it.Key(), kb) {
			continue // k names a record that is gone: no record
		}
		v := it.Value()
		st := storedRecord{where: Location{Known: true, Present: true, Epoch: p.epoch}}
		setHeader(&st.where, v)
		if h, _, _, perr := parseStored(v); perr == nil {
			st.ver, st.parsed = h.version, true
		}
		out[p.key] = st
	}
	return out, errors.Join(it.Error(), it.Close())
}
