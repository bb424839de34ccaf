package lsm

import (
	"sort"
	"sync"
)

// The pending index (docs/disk-tier.md, "The pending index"). A journaled
// record's index entries (its d reference, k epoch, x expiry entry and l
// log entry) are not committed to Pebble one set at a time: they are kept
// in RAM, in the segIndex of the journal segment that holds the frame, and
// reach Pebble as one sorted sstable, ingested once the segment is sealed
// (seal.go). Reads look here before Pebble; ReadLog merges the log entries
// kept here with Pebble's.
//
// Per key a segIndex holds the newest journaled record of the segment and
// its base: the key's state in Pebble before that record's chain of
// journaled writes began, whose leftovers (a d record in another epoch, an
// x or t entry) the ingestion deletes.
//
// Ownership. The open table (the open segment's) and the frozen ones
// (sealed segments waiting for ingestion, oldest first) change only under
// DB.mu and pendIndex's write lock; readers take the read lock. A frozen
// table is handed to the sealer at the end of the commit that sealed its
// segment, and is immutable from then on: a Pebble write of a key it holds
// waits for its ingestion (DB.supersedeLocked). The sealer retires it
// from the list once Pebble holds it.
type pendIndex struct {
	sync.RWMutex
	open   *segIndex
	frozen []*segIndex // oldest first
}

// pendingEntry is a journaled record's index entry.
type pendingEntry struct {
	loc     JournalLoc
	exptime int64
	ver     Version
	epoch   uint32
	size    uint32 // key and record (Location.Size)
	base    pendingBase
}

// pendingBase is a key's state in Pebble under a chain of pending records.
type pendingBase struct {
	present, tomb bool
	epoch         uint32
	exptime       int64 // an item's expiry, a tombstone's time
}

func baseOf(l Location) pendingBase {
	if !l.Present {
		return pendingBase{}
	}
	return pendingBase{present: true, tomb: l.Tombstone, epoch: l.Epoch, exptime: l.Exptime}
}

// location is the Location of the record e indexes.
func (e *pendingEntry) location(gen uint64) Location {
	return Location{Known: true, Present: true, Epoch: e.epoch, Exptime: e.exptime, Size: e.size, gen: gen, pending: true}
}

// pendingLog is a log entry kept in a segIndex's arena. An entry of zero
// length is a placeholder for one a crash lost (reindex).
type pendingLog struct {
	seq    uint64
	off, n uint32
}

// segIndex is the pending index of one journal segment.
type segIndex struct {
	seg   uint32
	keys  map[string]pendingEntry
	logs  []pendingLog // by seq
	arena []byte       // the encoded log entries
	mem   int64        // approximate bytes of RAM held
	// minExp is at or below the earliest expiry of the entries (0: none
	// expire): the sweeper skips the table until then.
	minExp int64

	// Set when the segment is sealed:
	end    int64         // the segment's length: what the ingestion covers
	handed bool          // given to the sealer (immutable from then on)
	done   chan struct{} // closed once ingested, or when the ingestion failed
	err    error         // why the ingestion failed (set before done is closed)
}

func newSegIndex(seg uint32) *segIndex {
	return &segIndex{seg: seg, keys: make(map[string]pendingEntry), done: make(chan struct{})}
}

// pendingEntrySize approximates the RAM of one key's entry: the map's
// bucket share, the key string and the entry.
const pendingEntrySize = 96

func (t *segIndex) empty() bool { return len(t.keys) == 0 && len(t.logs) == 0 }

// put makes e key's entry. An entry the key had in t stands for a record
// Pebble never held: e keeps its base.
func (t *segIndex) put(key []byte, e pendingEntry) {
	if old, ok := t.keys[string(key)]; ok {
		e.base = old.base
	} else {
		t.mem += int64(pendingEntrySize + len(key))
	}
	t.keys[string(key)] = e
	if e.exptime > 0 && (t.minExp == 0 || e.exptime < t.minExp) {
		t.minExp = e.exptime
	}
}

func (t *segIndex) remove(key []byte) {
	if _, ok := t.keys[string(key)]; ok {
		delete(t.keys, string(key))
		t.mem -= int64(pendingEntrySize + len(key))
	}
}

// addLog appends the log entry enc (encoded, or nil for a placeholder) of
// seq, which is above every seq t holds.
func (t *segIndex) addLog(seq uint64, enc []byte) {
	t.logs = append(t.logs, pendingLog{seq: seq, off: uint32(len(t.arena)), n: uint32(len(enc))})
	t.arena = append(t.arena, enc...)
	t.mem += int64(24 + len(enc))
}

// logDue reports whether t's oldest log entry was written before cutoff
// (unix milliseconds): the log's retention age has passed for it.
func (t *segIndex) logDue(cutoff int64) bool {
	if len(t.logs) == 0 {
		return false
	}
	l := t.logs[0]
	var e LogEntry
	return decodeLogEntry(t.arena[l.off:l.off+l.n], &e) == nil && e.Time < cutoff
}

// lastSeq is the highest seq t holds (0 if none).
func (t *segIndex) lastSeq() uint64 {
	if len(t.logs) == 0 {
		return 0
	}
	return t.logs[len(t.logs)-1].seq
}

// logsFrom is t's log entries from seq from on (a slice that stays valid:
// appends never move the entries it holds) and the arena they are in.
func (t *segIndex) logsFrom(from uint64) ([]pendingLog, []byte) {
	i := sort.Search(len(t.logs), func(i int) bool { return t.logs[i].seq >= from })
	return t.logs[i:len(t.logs):len(t.logs)], t.arena[:len(t.arena):len(t.arena)]
}

// get finds key's newest pending entry: in the open table, then the frozen
// ones, newest first.
func (p *pendIndex) get(key []byte) (pendingEntry, bool) {
	p.RLock()
	defer p.RUnlock()
	if e, ok := p.open.keys[string(key)]; ok {
		return e, true
	}
	for i := len(p.frozen) - 1; i >= 0; i-- {
		if e, ok := p.frozen[i].keys[string(key)]; ok {
			return e, true
		}
	}
	return pendingEntry{}, false
}

// allLocked lists the frozen tables and the open one, oldest first.
// Requires the lock (read or write).
func (p *pendIndex) allLocked() []*segIndex {
	return append(p.frozen[:len(p.frozen):len(p.frozen)], p.open)
}

// table is the open or an unhanded frozen table of segment seg (nil when
// there is none). Requires DB.mu.
func (p *pendIndex) table(seg uint32) *segIndex {
	if p.open.seg == seg {
		return p.open
	}
	for i := len(p.frozen) - 1; i >= 0 && !p.frozen[i].handed; i-- {
		if p.frozen[i].seg == seg {
			return p.frozen[i]
		}
	}
	return nil
}

// stats counts the entries and log entries held.
func (p *pendIndex) stats() (keys, logs int, mem int64) {
	p.RLock()
	defer p.RUnlock()
	for _, t := range p.allLocked() {
		keys += len(t.keys)
		logs += len(t.logs)
		mem += t.mem
	}
	return keys, logs, mem
}

// minSeq is the lowest log seq the tables hold (0 if none).
func (p *pendIndex) minSeq() uint64 {
	p.RLock()
	defer p.RUnlock()
	for _, t := range p.allLocked() {
		if len(t.logs) > 0 {
			return t.logs[0].seq
		}
	}
	return 0
}

// retire removes t, ingested, from the frozen list.
func (p *pendIndex) retire(t *segIndex) {
	p.Lock()
	defer p.Unlock()
	for i, f := range p.frozen {
		if f == t {
			p.frozen = append(p.frozen[:i:i], p.frozen[i+1:]...)
			return
		}
	}
}
