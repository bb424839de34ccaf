package lsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/cockroachdb/pebble/v2"
)

// Get reads the current record of key. On a hit Record.Found is true and
// the value is appended to dst (Record.Value; the caller owns it). On a miss
// Record.Found is false and Record.Where says the key has no record. A
// record that fails its checks returns ErrCorrupt (counted in BadCRC,
// logged at most once a second) with Found false and Record.Where still
// locating it, so that an overwrite removes it; so does, without an error,
// a record whose journal frame a crash lost (counted in Lost).
//
// Get does not apply expiry or the flush marker: those are memcached's rules
// and the engine's job. It does not allocate on a hit when dst has room for
// the value.
func (db *DB) Get(dst, key []byte) (Record, error) {
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return Record{}, ErrClosed
	}
	bp := db.keyBufs.Get().(*[]byte)
	defer db.keyBufs.Put(bp)
	fb := db.frameBufs.Get().(*[]byte)
	defer db.frameBufs.Put(fb)
	var rec Record
	where, v, closer, err := db.find(bp, fb, key, findRecord)
	rec.Where = where
	if err != nil || v == nil {
		if errors.Is(err, ErrCorrupt) {
			db.corrupt(key, where.Epoch, err)
		}
		return rec, err
	}
	err = db.codec.decodeRecord(dst, v, &rec)
	closer.Close()
	if err != nil {
		db.corrupt(key, where.Epoch, err)
		rec.Found, rec.Value = false, dst
		return rec, err
	}
	rec.Where.Exptime = rec.Exptime
	if rec.Tombstone {
		rec.Where.Tombstone, rec.Where.Exptime = true, rec.Time
		rec.Value = dst
		return rec, nil
	}
	db.st.reads.Add(1)
	db.st.bytesRead.Add(uint64(len(rec.Value) - len(dst)))
	return rec, nil
}

// nopCloser closes a value that needs no closing (a journal frame read
// into a scratch buffer).
type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// findMode is what find reads of a record.
type findMode uint8

const (
	findRecord findMode = iota // the record itself, read from the journal when d holds a reference
	findStored                 // what d holds (for a pending record, its reference)
	findHeader                 // as findStored, or only where, complete, when the pending index or the hint gives it
)

// find reads the current record of key: where it is and its stored bytes
// (v, valid until closer is closed, and while fb is not reused), or v nil
// when the key has no record (where says so). It tries the key's location
// hint first, then the pending index (whose entries are newer than what
// Pebble holds of their keys), and falls back to the k index (locate).
// With findRecord, v is the record itself, read from the journal when d
// holds a reference to it (a lost frame is a miss with where still
// locating it; a frame that is not the key's record is ErrCorrupt, also
// with where); with findStored, v is what d holds (for a pending record,
// its reference, in bp). findHeader is findStored, except that for a
// pending record, or when the key's hint knows the record's exptime and
// the frame it names is key's, v is nil and where (then complete: epoch,
// exptime, size) is the answer, without reading Pebble. bp and fb are
// scratch.
func (db *DB) find(bp, fb *[]byte, key []byte, mode findMode) (where Location, v []byte, closer io.Closer, err error) {
	if db.kd != nil {
		return db.findJournal(bp, fb, key, mode)
	}
	resolve := mode == findRecord
	gen := db.sweepGen.Load()
	var seen uint64
	var hn hint
	hinted, found := false, false
	if db.hints != nil {
		h, ok, s := db.hints.get(key)
		seen, hn, hinted = s, h, ok && db.epochLive(h.epoch)
		if hinted && resolve && hn.loc.Segment != 0 {
			fr, buf, err := db.j.Read(*fb, hn.loc)
			*fb = buf
			if err == nil && string(fr.Key) == string(key) {
				db.st.hintHits.Add(1)
				where = Location{Known: true, Present: true, Epoch: hn.epoch, Size: uint32(len(key) + len(fr.Record)), gen: gen}
				return where, fr.Record, nopCloser{}, nil
			}
		}
	}
	if hinted && mode == findHeader && hn.exptimeKnown && hn.loc.Segment != 0 {
		ok, buf, err := db.j.HasKey(*bp, hn.loc, key)
		*bp = buf
		if err == nil && ok {
			db.st.hintHits.Add(1)
			return Location{Known: true, Present: true, Epoch: hn.epoch, Exptime: hn.exptime,
				Size: hn.loc.Len - frameOverhead, gen: gen}, nil, nil, nil
		}
	}
	if hinted {
		*bp = appendDataKey((*bp)[:0], hn.epoch, key)
		v, closer, err = db.pdb.Get(*bp)
		switch {
		case err == nil:
			db.st.hintHits.Add(1)
			where = Location{Known: true, Present: true, Epoch: hn.epoch, gen: gen}
			found = true
		case !errors.Is(err, pebble.ErrNotFound):
			return Location{}, nil, nil, fmt.Errorf("lsm: get: %w", err)
		default:
			db.st.hintMisses.Add(1)
		}
	}
	if !found {
		db.st.indexReads.Add(1)
	}
	// k then d are two reads, not one snapshot: a commit that moves the
	// key to a newer epoch between them deletes the record k named. A
	// record missing where k pointed is therefore read again through k,
	// until k names the same place twice (then the key really has no
	// record: it was deleted, and possibly written again in the same
	// epoch after the second read). Epochs only grow, so each retry
	// follows a newer write; the bound only guards against a writer that
	// moves the key on every read.
	for attempt := 0; !found; attempt++ {
		prev := where
		where, err = db.locate(bp, key)
		where.gen = gen
		if err != nil || !where.Present {
			return where, nil, nil, err
		}
		if attempt > 0 && where.Epoch == prev.Epoch {
			return Location{Known: true, gen: gen}, nil, nil, nil
		}
		*bp = appendDataKey((*bp)[:0], where.Epoch, key)
		v, closer, err = db.pdb.Get(*bp)
		if err == nil {
			break
		}
		if !errors.Is(err, pebble.ErrNotFound) {
			return Location{}, nil, nil, fmt.Errorf("lsm: get: %w", err)
		}
		if attempt == maxFindRetries {
			return Location{Known: true, gen: gen}, nil, nil, nil
		}
	}
	where.Size = uint32(storedSize(key, v))
	hn = hint{epoch: where.Epoch}
	var ver Version
	var perr error
	ref := isRef(v)
	if ref {
		hn.exptime, ver, hn.loc, perr = parseRef(v)
	}
	if db.hints != nil && perr == nil {
		db.hints.install(key, hn, seen)
	}
	if !resolve || !ref {
		return where, v, closer, nil
	}
	closer.Close()
	if perr != nil {
		return where, nil, nil, perr
	}
	return db.resolveFrame(fb, key, where, ver, hn.loc)
}

// resolveFrame is find's read of the journal frame at loc, the record of
// key (version ver) at where.
func (db *DB) resolveFrame(fb *[]byte, key []byte, where Location, ver Version, loc JournalLoc) (Location, []byte, io.Closer, error) {
	rec, err := db.readFrame(fb, key, ver, loc)
	if err == nil {
		return where, rec, nopCloser{}, nil
	}
	dropped, err := db.frameMiss(err, where.Epoch)
	if dropped {
		return Location{Known: true, gen: where.gen}, nil, nil, nil
	}
	return where, nil, nil, err
}

// frameMiss sorts a failed read of the journal frame of a record of epoch
// (readFrame): a frame a crash lost is counted and is a miss (nil error);
// a segment removed with its epoch since the reference was read is a miss
// too (dropped); anything else is returned, ErrCorrupt for a segment gone
// from a live epoch.
func (db *DB) frameMiss(err error, epoch uint32) (dropped bool, _ error) {
	switch {
	case errors.Is(err, errFrameLost):
		db.st.lost.Add(1)
		return false, nil
	case errors.Is(err, os.ErrNotExist) && !db.epochLive(epoch):
		return true, nil
	}
	return false, err
}

// readRef reads the record that ref, key's d value, names from the
// journal into fb and returns it. It must be key's frame and hold a
// record of the reference's version; otherwise, and when the segment is
// gone from a live epoch, the result is ErrCorrupt.
func (db *DB) readRef(fb *[]byte, key, ref []byte) ([]byte, error) {
	_, ver, loc, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	return db.readFrame(fb, key, ver, loc)
}

// readFrame reads the record at loc, which must be key's frame holding a
// record of version ver (readRef).
func (db *DB) readFrame(fb *[]byte, key []byte, ver Version, loc JournalLoc) ([]byte, error) {
	fr, buf, err := db.j.Read(*fb, loc)
	*fb = buf
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	case err != nil:
		return nil, err
	case string(fr.Key) != string(key):
		return nil, fmt.Errorf("%w: journal frame at %+v holds another key", ErrCorrupt, loc)
	case recordVersion(fr.Record) != ver:
		return nil, fmt.Errorf("%w: journal frame at %+v holds version %v, want %v", ErrCorrupt, loc, recordVersion(fr.Record), ver)
	}
	return fr.Record, nil
}

// maxFindRetries bounds find's rereads of k after a record moved.
const maxFindRetries = 8

// locate reads the k index of key: where its record is, without its
// exptime and size. A k entry pointing at a dead epoch is a miss and is
// queued for deletion. bp is scratch.
func (db *DB) locate(bp *[]byte, key []byte) (Location, error) {
	*bp = appendIndexKey((*bp)[:0], key)
	v, closer, err := db.pdb.Get(*bp)
	if errors.Is(err, pebble.ErrNotFound) {
		return Location{Known: true}, nil
	}
	if err != nil {
		return Location{}, fmt.Errorf("lsm: get: %w", err)
	}
	ok := len(v) == 4
	var epoch uint32
	if ok {
		epoch = binary.BigEndian.Uint32(v)
	}
	closer.Close()
	if !ok || !db.epochLive(epoch) {
		db.queueStale(*bp)
		return Location{Known: true}, nil
	}
	return Location{Known: true, Present: true, Epoch: epoch}, nil
}

// lookup is locate plus the record's exptime and size: a full prev
// Location for a write that was given none.
func (db *DB) lookup(key []byte) (Location, error) {
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return Location{}, ErrClosed
	}
	return db.lookupOpen(key)
}

// lookupOpen is lookup for a caller that holds closeMu. It reads Pebble
// only: a journal reference carries the record's exptime.
func (db *DB) lookupOpen(key []byte) (Location, error) {
	bp := db.keyBufs.Get().(*[]byte)
	defer db.keyBufs.Put(bp)
	where, v, closer, err := db.find(bp, nil, key, findHeader)
	if err != nil || v == nil {
		return where, err
	}
	defer closer.Close()
	setHeader(&where, v)
	return where, nil
}

// setHeader copies the expiry (or a tombstone's time) of the stored value
// v (a record or a journal reference) into where.
func setHeader(where *Location, v []byte) {
	if h, _, _, err := parseStored(v); err == nil {
		where.Exptime = h.exptime
		if h.kind == KindTombstone {
			where.Tombstone, where.Exptime = true, h.time
		}
	}
}

// GetRaw appends the encoded current record of key (an item, with its
// value in stored, possibly compressed form, or a tombstone) to dst, for
// shipping to a peer; raw is nil when the key has no record. The record is
// not verified (ParseRecord does that). where is as Record.Where of Get.
func (db *DB) GetRaw(dst, key []byte) (raw []byte, where Location, err error) {
	db.closeMu.RLock()
	defer db.closeMu.RUnlock()
	if db.closed.Load() {
		return nil, Location{}, ErrClosed
	}
	return db.getRawOpen(dst, key)
}

// getRawOpen is GetRaw for a caller that holds closeMu.
func (db *DB) getRawOpen(dst, key []byte) ([]byte, Location, error) {
	bp := db.keyBufs.Get().(*[]byte)
	defer db.keyBufs.Put(bp)
	fb := db.frameBufs.Get().(*[]byte)
	defer db.frameBufs.Put(fb)
	where, v, closer, err := db.find(bp, fb, key, findRecord)
	if err != nil || v == nil {
		return nil, where, err
	}
	defer closer.Close()
	setHeader(&where, v)
	return append(dst, v...), where, nil
}

func (db *DB) queueStale(k []byte) {
	db.stale.Lock()
	if len(db.stale.keys) < 4096 {
		db.stale.keys = append(db.stale.keys, append([]byte(nil), k...))
	}
	db.stale.Unlock()
}

// corrupt counts and (rate-limited) logs a record that failed its checks.
func (db *DB) corrupt(key []byte, epoch uint32, err error) {
	db.st.badCRC.Add(1)
	if ok, suppressed := db.corruptLog.allow(db.opts.Clock.Now().Unix()); ok {
		db.log.Error("corrupt record treated as a miss", "key", strconv.Quote(string(key)), "epoch", epoch,
			"err", err, "suppressed", suppressed)
	}
}
