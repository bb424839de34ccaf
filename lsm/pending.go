package lsm

import (
	"sort"
	"sync"
)

// The pending index (docs/keydir.md). A journal frame's index entries,
// its position entry (s) and its log entry (l), are not committed to
// Pebble one frame at a time: they wait in RAM, in the segIndex of the
// journal segment that holds the frame, and reach Pebble as sstables,
// ingested once the segment is sealed (seal.go). Frames are appended in
// order, so both lists are in key order as they grow: a seal sorts
// nothing. Reads of keys do not look here (the keydir has every key);
// ReadLog merges the log entries kept here with Pebble's.
//
// Ownership. The open table (the open segment's) and the frozen ones
// (sealed segments waiting for ingestion, oldest first) change only under
// DB.mu and pendIndex's write lock; readers take the read lock. A frozen
// table is handed to the sealer at the end of the commit that sealed its
// segment, and is immutable from then on. The sealer retires it from the
// list once Pebble holds it.
type pendIndex struct {
	sync.RWMutex
	open   *segIndex
	frozen []*segIndex // oldest first
}

// pendingLog is a log entry kept in a segIndex's arena. An entry of zero
// length is a placeholder for one a crash lost (reindex).
type pendingLog struct {
	seq    uint64
	off, n uint32
}

// pendingPos is a position entry kept in a segIndex's arena: its s key
// (posKeyLen bytes) followed by its value, n bytes in all, at arena
// reference off.
type pendingPos struct{ off, n uint32 }

// The arena of a pending table is a list of chunks of arenaChunk bytes,
// each filled once and never moved: a table grows to MemTableSize (32 MiB
// at -m 1024) under the commit mutex, and one growing slice would copy
// itself there each time it outgrew its capacity (by a quarter, once
// large: about four times its final size copied in all, 24 MiB at once
// near the end). An entry's reference is its chunk's index (the high
// bits) and its offset in the chunk (the low arenaShift bits).
const (
	arenaShift = 18
	arenaChunk = 1 << arenaShift // 256 KiB; every entry is far smaller
	// arenaMaxChunks is where a table's arena stops taking entries
	// (arenaFull): 2^14 chunks is 4 GiB, the reach of a 32-bit
	// reference; the margin is for the entries of the commit that sees
	// it full.
	arenaMaxChunks = 1<<(32-arenaShift) - 256
)

// arenaEntry returns the n bytes at reference ref of chunks.
func arenaEntry(chunks [][]byte, ref, n uint32) []byte {
	c := chunks[ref>>arenaShift]
	o := ref & (arenaChunk - 1)
	return c[o : o+n]
}

// segIndex is the pending index of one journal segment.
type segIndex struct {
	seg    uint32
	pos    []pendingPos // by position
	logs   []pendingLog // by seq
	chunks [][]byte     // the arena: the encoded entries, in chunks of arenaChunk bytes
	used   int          // bytes of the last chunk filled
	mem    int64        // approximate bytes of RAM held
	// applied is the last applied offset of each peer whose records are
	// in the segment (journal stores: appliedFrameLocked).
	applied map[uint64]Applied

	// Set when the segment is sealed:
	end    int64         // the segment's length: what the ingestion covers
	handed bool          // given to the sealer (immutable from then on)
	done   chan struct{} // closed once ingested, or when the ingestion failed
	err    error         // why the ingestion failed (set before done is closed)
}

func newSegIndex(seg uint32) *segIndex {
	return &segIndex{seg: seg, done: make(chan struct{})}
}

func (t *segIndex) empty() bool { return len(t.pos) == 0 && len(t.logs) == 0 && len(t.applied) == 0 }

// setApplied records a as its peer's latest applied offset in t.
func (t *segIndex) setApplied(a Applied) {
	if t.applied == nil {
		t.applied = make(map[uint64]Applied)
	}
	t.applied[a.Peer] = a
}

// store copies b into the arena and returns its reference. A chunk's
// slice is never changed once made (its bytes are filled in place), so a
// log cursor may read the chunks without the lock while entries are
// added; a reference's offset is always inside its chunk (below
// arenaChunk), an empty entry's too.
func (t *segIndex) store(b []byte) uint32 {
	if len(t.chunks) == 0 || t.used+len(b) >= arenaChunk {
		t.chunks = append(t.chunks, make([]byte, arenaChunk))
		t.used = 0
	}
	ref := uint32(len(t.chunks)-1)<<arenaShift | uint32(t.used)
	t.used += copy(t.chunks[len(t.chunks)-1][t.used:], b)
	return ref
}

// entry returns the n bytes at reference ref.
func (t *segIndex) entry(ref, n uint32) []byte { return arenaEntry(t.chunks, ref, n) }

// arenaFull reports whether t's arena is at the reach of its references:
// the table must be sealed before it takes more.
func (t *segIndex) arenaFull() bool { return len(t.chunks) >= arenaMaxChunks }

// addPos appends the position entry kv (its s key, then its value), whose
// frame follows every frame t has an entry for.
func (t *segIndex) addPos(kv []byte) {
	t.pos = append(t.pos, pendingPos{off: t.store(kv), n: uint32(len(kv))})
	t.mem += int64(8 + len(kv))
}

// addLog appends the log entry enc (encoded, or nil for a placeholder) of
// seq, which is above every seq t holds.
func (t *segIndex) addLog(seq uint64, enc []byte) {
	t.logs = append(t.logs, pendingLog{seq: seq, off: t.store(enc), n: uint32(len(enc))})
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
	return decodeLogEntry(t.entry(l.off, l.n), &e) == nil && e.Time < cutoff
}

// lastSeq is the highest seq t holds (0 if none).
func (t *segIndex) lastSeq() uint64 {
	if len(t.logs) == 0 {
		return 0
	}
	return t.logs[len(t.logs)-1].seq
}

// logsFrom is t's log entries from seq from on (a slice that stays valid:
// appends never move the entries it holds) and the arena's chunks they
// are in.
func (t *segIndex) logsFrom(from uint64) ([]pendingLog, [][]byte) {
	i := sort.Search(len(t.logs), func(i int) bool { return t.logs[i].seq >= from })
	return t.logs[i:len(t.logs):len(t.logs)], t.chunks[:len(t.chunks):len(t.chunks)]
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

// stats counts the position entries and log entries held.
func (p *pendIndex) stats() (pos, logs int, mem int64) {
	p.RLock()
	defer p.RUnlock()
	for _, t := range p.allLocked() {
		pos += len(t.pos)
		logs += len(t.logs)
		mem += t.mem
	}
	return pos, logs, mem
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
