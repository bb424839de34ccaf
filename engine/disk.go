package engine

import (
	"sync"
	"time"

	"github.com/tcache/tcache/lsm"
)

// diskStore is what the engine needs of the disk tier. *lsm.DB provides it
// through lsmDisk; tests substitute an in-memory fake with fault injection.
type diskStore interface {
	NodeID() uint64
	CASHighWater() uint64
	HLCHighWater() uint64
	FlushMarker() lsm.FlushMarker
	// Get returns the record of key with its value appended to dst.
	Get(dst, key []byte) (lsm.Record, error)
	// GetRaw appends the encoded record of key (item or tombstone) to
	// dst; nil when the key has none.
	GetRaw(dst, key []byte) ([]byte, lsm.Location, error)
	// Scan calls fn with up to n encoded records after the cursor and
	// returns the next cursor (nil at the end); see lsm.DB.Scan.
	Scan(after []byte, n int, fn func(key, rec []byte) bool) ([]byte, error)
	// Commit writes m atomically with the configured durability. On
	// success a Put's m.rec.Where tells where the record went when the
	// store knows (zero otherwise).
	Commit(m *mutation) error
	Stats() lsm.Stats
	// ReleaseJournalPages says whether RAM holds a copy of every record
	// committed since open (but for a small allowance: tier.ramIncomplete),
	// so that the store may drop its page cache of them
	// (lsm.DB.ReleaseJournalPages).
	ReleaseJournalPages(on bool)
}

// mutation is one engine write: at most one Put or Delete of a key, a flush
// marker, and a CAS reservation, committed in one batch. Each stripe owns
// one (used under the stripe lock), so building a write allocates nothing.
type mutation struct {
	op         mutationOp
	key        []byte
	rec        lsm.Record      // opPut: the record (Value: the whole value)
	ver        lsm.Version     // opDelete: the version of the tombstone
	prev       lsm.Location    // opPut, opDelete: the key's current record
	wall       time.Time       // opPut, opDelete: the clock reading of the version (the commit's time)
	flush      bool            // write marker
	marker     lsm.FlushMarker // the flush marker
	reserveCAS uint64          // when non-zero: persist this CAS high-water mark

	// Replication (replica.go): opRemote stores raw, a peer's encoded
	// item or tombstone, with remoteCAS as an item's local CAS; remote
	// marks the flush marker as a peer's; applied is stored when its Seq
	// is non-zero. None of them writes a log entry.
	raw       []byte
	remoteCAS uint64
	remote    bool
	applied   lsm.Applied
}

type mutationOp uint8

const (
	opNone mutationOp = iota
	opPut
	opDelete
	opRemote
)

// clear drops the references m holds to caller memory.
func (m *mutation) clear() { *m = mutation{} }

// lsmDisk adapts *lsm.DB to diskStore. Batches are pooled: a commit takes
// one, fills it, commits and resets it.
type lsmDisk struct {
	db      *lsm.DB
	batches sync.Pool // *lsm.Batch
}

func (d *lsmDisk) NodeID() uint64                          { return d.db.NodeID() }
func (d *lsmDisk) CASHighWater() uint64                    { return d.db.CASHighWater() }
func (d *lsmDisk) HLCHighWater() uint64                    { return d.db.HLCHighWater() }
func (d *lsmDisk) FlushMarker() lsm.FlushMarker            { return d.db.FlushMarker() }
func (d *lsmDisk) Get(dst, key []byte) (lsm.Record, error) { return d.db.Get(dst, key) }
func (d *lsmDisk) Stats() lsm.Stats                        { return d.db.Stats() }
func (d *lsmDisk) ReleaseJournalPages(on bool)             { d.db.ReleaseJournalPages(on) }

func (d *lsmDisk) GetRaw(dst, key []byte) ([]byte, lsm.Location, error) { return d.db.GetRaw(dst, key) }

func (d *lsmDisk) Scan(after []byte, n int, fn func(key, rec []byte) bool) ([]byte, error) {
	return d.db.Scan(after, n, fn)
}

func (d *lsmDisk) Commit(m *mutation) error {
	b, _ := d.batches.Get().(*lsm.Batch)
	if b == nil {
		b = d.db.NewBatch()
	}
	switch m.op {
	case opPut:
		b.Put(m.key, &m.rec, m.prev)
		b.SetTime(m.wall)
	case opDelete:
		b.Delete(m.key, m.ver, m.prev)
		b.SetTime(m.wall)
	case opRemote:
		b.PutRemote(m.key, m.raw, m.remoteCAS, m.prev)
	}
	if m.flush {
		if m.remote {
			b.FlushRemote(m.marker)
		} else {
			b.Flush(m.marker)
		}
	}
	if m.applied.Seq != 0 {
		b.SetApplied(m.applied)
	}
	if m.reserveCAS != 0 {
		b.ReserveCAS(m.reserveCAS)
	}
	err := d.db.Commit(b)
	b.Reset()
	d.batches.Put(b)
	return err
}
