package engine

import (
	"errors"
	"fmt"

	"github.com/tcache/tcache/lsm"
)

// This file is the engine's side of replication (docs/replication.md):
// applying a peer's records with the conflict rule, and enumerating the
// items (lru_crawler metadump).
//
// Applied items get a fresh local CAS. memcached clients of this node use
// this node's CAS values in cas commands, so they must stay unique and
// increasing here; the peer's CAS means nothing on this node. The version
// (HLC, origin node) travels unchanged and alone decides conflicts, so all
// nodes converge on the same value, flags, expiry and store time; only the
// CAS differs between nodes.

// ErrNoDisk: the operation needs a disk tier (replication ships and
// applies disk records).
var ErrNoDisk = errors.New("engine: no disk tier")

// ErrBadRecord wraps an applied record that does not decode, or a key that
// memcached would not accept.
var ErrBadRecord = errors.New("engine: bad replicated record")

// ApplyRecord applies raw, a peer's encoded item or tombstone for key
// (lsm's record format, checked with lsm.ParseRecord), with the conflict
// rule: under the key's stripe lock it compares the record's version with
// the key's current one on disk (tombstones included) and commits it only
// when it is higher and not below an effective flush marker. off, when its
// Seq is non-zero, is stored in the same batch whether the record won or
// not. The record is never logged (a node does not re-ship what it
// applied). A winning record replaces the key's RAM copy by dropping it
// (the next read loads it from disk). It reports whether the record won.
// Errors: ErrNoDisk, ErrBadRecord, and the disk's read or commit errors
// (nothing was applied, not even off).
func (e *Engine) ApplyRecord(key, raw []byte, off lsm.Applied) (bool, error) {
	t := e.tier
	if t == nil {
		return false, ErrNoDisk
	}
	h, err := lsm.ParseRecord(raw)
	switch {
	case err != nil:
		return false, fmt.Errorf("%w: key %q: %w", ErrBadRecord, key, err)
	case h.Kind == lsm.KindFlush:
		return false, fmt.Errorf("%w: key %q: a flush marker", ErrBadRecord, key)
	case len(key) == 0 || len(key) > MaxKeyLen:
		return false, fmt.Errorf("%w: key of %d bytes", ErrBadRecord, len(key))
	}
	// Later local writes order after it: the clock follows it up to wall
	// clock + MaxClockSkew, and a record beyond that is remembered in
	// t.ahead (below) so that local writes of its key still follow it.
	beyond := t.clock.observeRemote(h.Version.HLC)
	s, hash := e.shardFor(key)
	st := t.stripeFor(hash)
	st.mu.Lock()
	defer st.mu.Unlock()
	bp, buf := t.scratch()
	defer func() { t.release(bp, buf) }()
	cur, where, err := t.disk.GetRaw(buf, key)
	if err != nil {
		t.readErrors.Add(1)
		return false, err
	}
	if cur != nil {
		buf = cur[:0]
	}
	win := true
	if cur != nil {
		// A local record that does not parse loses (it is never served).
		if ch, err := lsm.ParseRecord(cur); err == nil && !ch.Version.Less(h.Version) {
			win = false
		}
	}
	if win && t.marker.Load().Flushes(h.Version, e.clock.Now().Unix()) {
		win = false
	}
	if !win && off.Seq == 0 {
		return false, nil
	}
	m := t.mutation()
	m.applied = off
	var cas uint64
	if win {
		m.op, m.key, m.raw, m.prev = opRemote, key, raw, where
		if h.Kind == lsm.KindItem {
			cas = e.nextCAS()
			m.remoteCAS = cas
		}
	}
	if err := t.commitErr(m, cas); err != nil {
		return false, err
	}
	if win {
		t.drop(s, hash, key)
		if beyond && !t.ahead.add(key, h.Version.HLC, t.clock.physical()) {
			t.clock.observe(h.Version.HLC) // too many keys ahead: follow it after all
		}
	}
	return win, nil
}

// ApplyFlush applies raw, a peer's encoded flush marker
// (lsm.AppendFlushRecord), when its version is higher than the current
// marker's, storing off (when its Seq is non-zero) in the same batch either
// way. From then on the disk rule flushes the records below its bound once
// its time has passed, on this node as on the peer; the RAM tier's
// memcached pre-check is set as a local flush_all would set it. It holds
// every stripe lock, like a local flush. It reports whether the marker won.
func (e *Engine) ApplyFlush(raw []byte, off lsm.Applied) (bool, error) {
	t := e.tier
	if t == nil {
		return false, ErrNoDisk
	}
	fm, err := lsm.DecodeFlushRecord(raw)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	t.lockAll()
	defer t.unlockAll()
	win := t.marker.Load().Version.Less(fm.Version)
	if !win && off.Seq == 0 {
		return false, nil
	}
	absNow := e.clock.Now().Unix()
	effective := fm.OldestLive > 0 && fm.OldestLive <= absNow
	m := t.mutation()
	m.applied = off
	var cas uint64
	if win {
		m.flush, m.remote, m.marker = true, true, fm
		if effective {
			cas = e.nextCAS()
		}
	}
	if err := t.commitErr(m, cas); err != nil {
		return false, err
	}
	if !win {
		return false, nil
	}
	t.marker.Store(&fm)
	if effective {
		// Local writes from now on order after the flush. This one
		// moves the clock even beyond MaxClockSkew (counted): writes
		// made after a flush must survive it, and a marker's bound
		// covers every key, so no per-key rule can order them.
		t.clock.observeRemote(fm.Version.HLC)
		t.clock.observe(fm.Version.HLC)
		e.oldestCAS.Store(cas)
	}
	e.oldestLive.Store(max(fm.OldestLive-e.started, 1))
	return true, nil
}

// commitErr is commit returning the disk's error rather than a Status.
func (t *tier) commitErr(m *mutation, cas uint64) error {
	if cas != 0 && cas >= t.casReserved.Load() {
		m.reserveCAS = cas + casBlock
	}
	err := t.disk.Commit(m)
	reserved := m.reserveCAS
	m.clear()
	t.muts.Put(m)
	if err != nil {
		t.failed(err)
		return err
	}
	for reserved != 0 {
		r := t.casReserved.Load()
		if reserved <= r || t.casReserved.CompareAndSwap(r, reserved) {
			break
		}
	}
	return nil
}

// DumpItem describes one live item for lru_crawler metadump. Key is valid
// during the callback only.
type DumpItem struct {
	Key        []byte
	Exptime    int64 // absolute unix seconds; 0 = never (memcached prints exp=-1)
	LastAccess int64 // unix seconds of the last access (the store time when not in RAM)
	CAS        uint64
	Fetched    bool // fetched since stored (RAM-only state: false when not in RAM)
	Flags      uint32
	Size       int  // value bytes
	ItemSize   int  // the RAM record's size: 28 + key + value (memcached's size= is its item size)
	KeyBinary  bool // stored with a base64 (binary) meta key
}

// dumpChunk is how many items Dump gathers per lock hold (RAM) or disk
// read.
const dumpChunk = 256

// Dump calls fn for every live item (not expired, not flushed) until fn
// returns false, in bounded chunks: no lock is held while fn runs. With a
// disk tier it walks the disk, which holds every item (the RAM tier adds
// last access and the fetched bit of the items it holds); in memory mode it
// walks the RAM tier's logs. Items written during the walk may or may not
// be reported; with a disk tier an item is reported at most once (in
// memory mode an item moved within RAM during the walk can be reported
// twice, as memcached's crawler can). Errors come from the disk.
func (e *Engine) Dump(fn func(it *DumpItem) bool) error {
	if e.tier != nil {
		return e.tier.dump(fn)
	}
	var b dumpBatch
	for i := range e.shards {
		s := &e.shards[i]
		for ri := range 2 {
			var cur, end uint64
			first := true
			for {
				b.reset()
				now := e.now()
				s.mu.Lock()
				if s.mu.index.slots == nil { // closed
					s.mu.Unlock()
					return nil
				}
				r := s.ringByIndex(ri)
				if first {
					cur, end, first = r.head, r.tail, false
				}
				cur = max(cur, r.head)
				stop := min(end, r.tail)
				var it item
				it.r = r
				for len(b.items) < dumpChunk && cur < stop {
					it.pos = cur
					r.readHeader(cur, &it.hdr)
					cur += it.hdr.size()
					if it.hdr.bits&bitDead != 0 || e.flushed(&it.hdr, now) ||
						(it.hdr.exptime != 0 && int64(it.hdr.exptime) <= now) {
						continue
					}
					it.h = s.hashAt(e, r, it.pos, &it.hdr)
					if !s.indexed(&it) {
						continue
					}
					k0 := len(b.keys)
					b.keys = r.appendTo(b.keys, it.keyPos(), int(it.hdr.keyLen))
					b.add(e.ramDumpItem(&it.hdr), k0)
				}
				done := cur >= stop
				s.mu.Unlock()
				if !b.emit(fn) {
					return nil
				}
				if done {
					break
				}
			}
		}
	}
	return nil
}

// ramDumpItem describes a RAM record (without its key).
func (e *Engine) ramDumpItem(hd *header) DumpItem {
	return DumpItem{
		Exptime:    e.abs(int64(hd.exptime)),
		LastAccess: e.abs(int64(hd.time)),
		CAS:        hd.cas,
		Fetched:    hd.bits&bitFetched != 0,
		Flags:      hd.flags,
		Size:       int(hd.valueLen),
		ItemSize:   int(hdrSize) + int(hd.keyLen) + int(hd.valueLen),
		KeyBinary:  hd.bits&bitKeyBinary != 0,
	}
}

// dumpBatch is one chunk of Dump: items with their keys in one buffer.
type dumpBatch struct {
	items []DumpItem
	offs  []int // key of items[i] is keys[offs[i]:offs[i+1]] (or to the end)
	keys  []byte
}

func (b *dumpBatch) reset() { b.items, b.offs, b.keys = b.items[:0], b.offs[:0], b.keys[:0] }

func (b *dumpBatch) add(it DumpItem, keyStart int) {
	b.items = append(b.items, it)
	b.offs = append(b.offs, keyStart)
}

// emit calls fn for each item and reports whether fn wanted more.
func (b *dumpBatch) emit(fn func(*DumpItem) bool) bool {
	for i := range b.items {
		end := len(b.keys)
		if i+1 < len(b.offs) {
			end = b.offs[i+1]
		}
		b.items[i].Key = b.keys[b.offs[i]:end]
		if !fn(&b.items[i]) {
			return false
		}
	}
	return true
}

// dump is Dump with a disk tier: the disk in chunks, each item's RAM
// state looked up under its shard lock.
func (t *tier) dump(fn func(it *DumpItem) bool) error {
	e := t.e
	var b dumpBatch
	var cursor []byte
	for {
		b.reset()
		now := e.now()
		absNow := now + e.started
		marker := t.marker.Load()
		next, err := t.disk.Scan(cursor, dumpChunk, func(key, raw []byte) bool {
			h, err := lsm.ParseRecord(raw)
			if err != nil || h.Kind != lsm.KindItem || marker.Flushes(h.Version, absNow) ||
				(h.Exptime != 0 && h.Exptime <= absNow) || len(key) > MaxKeyLen {
				return true
			}
			k0 := len(b.keys)
			b.keys = append(b.keys, key...)
			b.add(DumpItem{
				Exptime:    h.Exptime,
				LastAccess: h.Time,
				CAS:        h.CAS,
				Flags:      h.Flags,
				Size:       h.ValueLen,
				ItemSize:   int(hdrSize) + len(key) + h.ValueLen,
				KeyBinary:  h.KeyBinary,
			}, k0)
			return true
		})
		if err != nil {
			return err
		}
		cursor = append(cursor[:0], next...)
		// RAM-only state, for the items RAM holds.
		for i := range b.items {
			end := len(b.keys)
			if i+1 < len(b.offs) {
				end = b.offs[i+1]
			}
			key := b.keys[b.offs[i]:end]
			s, h := e.shardFor(key)
			var it item
			s.mu.Lock()
			if s.find(h, key, &it) && !e.flushed(&it.hdr, now) {
				b.items[i].LastAccess = e.abs(int64(it.hdr.time))
				b.items[i].Fetched = it.hdr.bits&bitFetched != 0
			}
			s.mu.Unlock()
		}
		if !b.emit(fn) || next == nil {
			return nil
		}
	}
}
