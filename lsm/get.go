package lsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/cockroachdb/pebble/v2"
)

// Get reads the current record of key. On a hit Record.Found is true and
// the value is appended to dst (Record.Value; the caller owns it). On a miss
// Record.Found is false and Record.Where says the key has no record. A
// record that fails its checks returns ErrCorrupt (counted in BadCRC,
// logged at most once a second) with Found false and Record.Where still
// locating it, so that an overwrite removes it.
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
	var rec Record
	where, v, closer, err := db.find(bp, key)
	rec.Where = where
	if err != nil || v == nil {
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

// find reads the current record of key: where it is and its encoded bytes
// (v, valid until closer is closed), or v nil when the key has no record
// (where says so). It tries the key's location hint first and falls back
// to the k index (locate). bp is scratch.
func (db *DB) find(bp *[]byte, key []byte) (where Location, v []byte, closer io.Closer, err error) {
	gen := db.sweepGen.Load()
	var seen uint64
	if db.hints != nil {
		epoch, ok, s := db.hints.get(key)
		seen = s
		if ok && db.epochLive(epoch) {
			*bp = appendDataKey((*bp)[:0], epoch, key)
			v, closer, err = db.pdb.Get(*bp)
			switch {
			case err == nil:
				db.st.hintHits.Add(1)
				where = Location{Known: true, Present: true, Epoch: epoch, Size: uint32(len(key) + len(v)), gen: gen}
				return where, v, closer, nil
			case !errors.Is(err, pebble.ErrNotFound):
				return Location{}, nil, nil, fmt.Errorf("lsm: get: %w", err)
			}
			db.st.hintMisses.Add(1)
		}
	}
	// k then d are two reads, not one snapshot: a commit that moves the
	// key to a newer epoch between them deletes the record k named. A
	// record missing where k pointed is therefore read again through k,
	// until k names the same place twice (then the key really has no
	// record: it was deleted, and possibly written again in the same
	// epoch after the second read). Epochs only grow, so each retry
	// follows a newer write; the bound only guards against a writer that
	// moves the key on every read.
	for attempt := 0; ; attempt++ {
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
	if db.hints != nil {
		db.hints.install(key, where.Epoch, seen)
	}
	where.Size = uint32(len(key) + len(v))
	return where, v, closer, nil
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

// lookupOpen is lookup for a caller that holds closeMu.
func (db *DB) lookupOpen(key []byte) (Location, error) {
	bp := db.keyBufs.Get().(*[]byte)
	defer db.keyBufs.Put(bp)
	where, v, closer, err := db.find(bp, key)
	if err != nil || v == nil {
		return where, err
	}
	defer closer.Close()
	if h, _, err := parseRecordHeader(v); err == nil {
		where.Exptime = h.exptime
		if h.kind == KindTombstone {
			where.Tombstone, where.Exptime = true, h.time
		}
	}
	return where, nil
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
	where, v, closer, err := db.find(bp, key)
	if err != nil || v == nil {
		return nil, where, err
	}
	defer closer.Close()
	if h, _, err := parseRecordHeader(v); err == nil {
		where.Exptime = h.exptime
		if h.kind == KindTombstone {
			where.Tombstone, where.Exptime = true, h.time
		}
	}
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
