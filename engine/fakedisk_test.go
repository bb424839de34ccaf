package engine

import (
	"fmt"
	"slices"
	"sync"

	"github.com/tcache/tcache/lsm"
)

// fakeDisk is an in-memory diskStore with the lsm contract's semantics,
// for testing the tier's logic without Pebble: records by key, a flush
// marker, high-water marks, and injected commit failures. It checks the
// locations the engine passes back (a Known location must match the key's
// record) and reports mismatches in bad.
type fakeDisk struct {
	mu struct {
		sync.Mutex
		recs    map[string]lsm.Record // guarded by mu
		marker  lsm.FlushMarker
		casHW   uint64
		hlcHW   uint64
		epoch   uint32
		fail    error // returned by every Commit while set
		commits uint64
		gets    uint64
		bad     []string
		release bool // the last ReleaseJournalPages
	}
	node uint64
}

func newFakeDisk() *fakeDisk {
	d := &fakeDisk{node: 42}
	d.mu.recs = map[string]lsm.Record{}
	d.mu.epoch = 1
	return d
}

func (d *fakeDisk) NodeID() uint64 { return d.node }

func (d *fakeDisk) CASHighWater() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.casHW
}

func (d *fakeDisk) HLCHighWater() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.hlcHW
}

func (d *fakeDisk) FlushMarker() lsm.FlushMarker {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.marker
}

func (d *fakeDisk) setFail(err error) {
	d.mu.Lock()
	d.mu.fail = err
	d.mu.Unlock()
}

func (d *fakeDisk) where(key string) lsm.Location {
	r, ok := d.mu.recs[key]
	if !ok {
		return lsm.Location{Known: true}
	}
	return r.Where
}

func (d *fakeDisk) Get(dst, key []byte) (lsm.Record, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.gets++
	r, ok := d.mu.recs[string(key)]
	if !ok {
		return lsm.Record{Value: dst, Where: lsm.Location{Known: true}}, nil
	}
	r.Value = append(dst, r.Value...)
	return r, nil
}

func (d *fakeDisk) GetRaw(dst, key []byte) ([]byte, lsm.Location, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.mu.recs[string(key)]
	if !ok {
		return nil, lsm.Location{Known: true}, nil
	}
	return lsm.AppendRecord(dst, &r), r.Where, nil
}

func (d *fakeDisk) Scan(after []byte, n int, fn func(key, rec []byte) bool) ([]byte, error) {
	d.mu.Lock()
	keys := make([]string, 0, len(d.mu.recs))
	for k := range d.mu.recs {
		if after == nil || k > string(after) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if len(keys) > n {
		keys = keys[:n]
	}
	recs := make([][]byte, len(keys))
	for i, k := range keys {
		r := d.mu.recs[k]
		recs[i] = lsm.AppendRecord(nil, &r)
	}
	d.mu.Unlock()
	for i, k := range keys {
		if !fn([]byte(k), recs[i]) {
			return []byte(k), nil
		}
	}
	if len(keys) < n {
		return nil, nil
	}
	return []byte(keys[len(keys)-1]), nil
}

func (d *fakeDisk) checkPrev(key []byte, prev lsm.Location) {
	if !prev.Known {
		return
	}
	if w := d.where(string(key)); w != prev {
		d.mu.bad = append(d.mu.bad, fmt.Sprintf("key %q: prev %+v, record at %+v", key, prev, w))
	}
}

func (d *fakeDisk) Commit(m *mutation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.fail != nil {
		return d.mu.fail
	}
	d.mu.commits++
	if m.reserveCAS != 0 {
		d.mu.casHW = max(d.mu.casHW, m.reserveCAS)
	}
	switch m.op {
	case opPut:
		d.checkPrev(m.key, m.prev)
		r := m.rec
		r.Found = true
		r.Value = append([]byte(nil), m.rec.Value...)
		r.Where = lsm.Location{Known: true, Present: true, Epoch: d.mu.epoch, Exptime: r.Exptime,
			Size: uint32(len(m.key) + len(r.Value) + 40)}
		d.mu.recs[string(m.key)] = r
		m.rec.Where = r.Where
		d.mu.hlcHW = max(d.mu.hlcHW, r.Version.HLC)
		if r.CAS >= d.mu.casHW {
			d.mu.bad = append(d.mu.bad, fmt.Sprintf("key %q: CAS %d not reserved (high-water %d, reserving %d)", m.key, r.CAS, d.mu.casHW, m.reserveCAS))
		}
	case opDelete:
		d.checkPrev(m.key, m.prev)
		delete(d.mu.recs, string(m.key))
		d.mu.hlcHW = max(d.mu.hlcHW, m.ver.HLC)
	case opRemote:
		r, err := lsm.DecodeRecord(nil, m.raw)
		if err != nil {
			return err
		}
		if r.Tombstone {
			delete(d.mu.recs, string(m.key))
			break
		}
		r.CAS = m.remoteCAS
		r.Where = lsm.Location{Known: true, Present: true, Epoch: d.mu.epoch, Exptime: r.Exptime,
			Size: uint32(len(m.key) + len(r.Value) + 40)}
		d.mu.recs[string(m.key)] = r
		d.mu.hlcHW = max(d.mu.hlcHW, r.Version.HLC)
	}
	if m.flush {
		d.mu.marker = m.marker
		d.mu.hlcHW = max(d.mu.hlcHW, m.marker.Version.HLC)
		d.mu.epoch++
	}
	return nil
}

// ReleaseJournalPages records the engine's last word on its RAM copies.
func (d *fakeDisk) ReleaseJournalPages(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.release = on
}

func (d *fakeDisk) releasing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.release
}

func (d *fakeDisk) Stats() lsm.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return lsm.Stats{Items: uint64(len(d.mu.recs)), Commits: d.mu.commits, Reads: d.mu.gets}
}

func (d *fakeDisk) problems() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.mu.bad...)
}
