package lsm

// This file is the contract between lsm and its callers (engine/, later
// repl/): the types and the methods of *DB and *Batch, documented where they
// are implemented. docs/disk-tier.md explains the design.
//
//	func Open(opts Options) (*DB, error)
//	func (db *DB) Close() error          // flushes memtables (durability none loses nothing on a clean stop)
//	func (db *DB) NodeID() uint64        // persistent random id, created at first open
//	func (db *DB) CASHighWater() uint64  // CAS values handed out before are all below this
//	func (db *DB) HLCHighWater() uint64  // versions written before are all at or below this
//	func (db *DB) FlushMarker() FlushMarker
//	func (db *DB) Get(dst, key []byte) (Record, error)   // Record.Found false on a miss; value appended to dst
//	func (db *DB) NewBatch() *Batch      // reusable: Reset after Commit
//	func (b *Batch) Put(key []byte, rec *Record, prev Location)
//	func (b *Batch) Delete(key []byte, ver Version, prev Location)
//	func (b *Batch) Flush(m FlushMarker)
//	func (b *Batch) ReserveCAS(upTo uint64)  // persist a new CAS high-water mark with this batch
//	func (b *Batch) Reset()
//	func (db *DB) Commit(b *Batch) error // durability per Options; ErrDiskFull, ErrClosed, wrapped I/O errors
//	func (db *DB) Maintain()             // one maintenance pass (tests; a goroutine runs it otherwise)
//	func (db *DB) Stats() Stats
//
// Added with the implementation (issue 5; see the report to the lead):
//
//	func (db *DB) ReadLog(from uint64, fn func(seq uint64, e LogEntry) bool) error
//	Record.Stale, Location.Size, LogOp, LogEntry, ErrFailed, Stats.Recounting
//
// Added for replication (issue 6; replicate.go, docs/replication.md):
//
//	Options.Replicated                   // tombstones, record-by-record flushes
//	Record.Tombstone, Location.Tombstone, FlushMarker.Bound/Flushes
//	func ParseRecord(raw) (RecordHeader, error)        // header + CRC, no decompression
//	func DecodeRecord(dst, raw) (Record, error)
//	func AppendRecord(dst, *Record) []byte
//	func AppendFlushRecord(dst, FlushMarker) []byte; func DecodeFlushRecord(raw) (FlushMarker, error)
//	func (db *DB) GetRaw(dst, key) (raw []byte, where Location, err error)
//	func (db *DB) Histories() []History; func (db *DB) LastSeq() uint64
//	func (db *DB) LogChanged() <-chan struct{} // closed when LastSeq may have advanced (notify.go)
//	func (db *DB) Applied(peer) (Applied, bool, error); func (db *DB) Replicated() bool
//	func (db *DB) ReadLogRecords(from, fn func(seq, LogEntry, rec []byte) bool) (last uint64, err error)
//	func (db *DB) Snapshot(fn func(key, rec []byte) error) (History, uint64, error)
//	func (db *DB) Scan(after []byte, n int, fn func(key, rec []byte) bool) (next []byte, err error)
//	func (b *Batch) PutRemote(key, raw []byte, cas uint64, prev Location) // no log entry
//	func (b *Batch) FlushRemote(m FlushMarker)                            // no log entry
//	func (b *Batch) SetApplied(a Applied)

import (
	"errors"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tcache/tcache/internal/clock"
)

// Mode says what happens when the disk reaches Options.DiskLimit.
type Mode uint8

const (
	// ModeCache drops the oldest epochs of data to stay near the limit.
	ModeCache Mode = iota
	// ModePersistent never drops data: writes fail with ErrDiskFull.
	ModePersistent
)

// Durability says when a commit is acknowledged.
type Durability uint8

const (
	// DurabilityInterval commits without waiting; the WAL is fsynced at
	// least every Options.DurabilityInterval. The default.
	DurabilityInterval Durability = iota
	// DurabilitySync acknowledges after fsync; concurrent commits share
	// fsyncs (Pebble's commit pipeline).
	DurabilitySync
	// DurabilityNone writes no WAL; Close flushes memtables, so only a
	// crash loses recent writes.
	DurabilityNone
)

// Codec is the compression of large values.
type Codec uint8

const (
	CodecNone Codec = iota
	CodecS2
	CodecZstd
)

// Options configure a DB. Every field documents its default; Open calls
// EnsureDefaults and Validate.
type Options struct {
	Dir string // directory of the Pebble store; required
	FS  vfs.FS // filesystem; default vfs.Default (tests inject faults)

	Mode      Mode
	DiskLimit int64 // bytes; default 10 GiB

	Durability         Durability
	DurabilityInterval time.Duration // default 100ms

	BlockCacheSize int64 // bytes; default 8 MiB
	MemTableSize   int64 // bytes per memtable; default 4 MiB
	// IndexMemory is the RAM, in bytes, of the index of what is on disk.
	// A journal store's keydir (keydir.go) is complete and grows with the
	// keys; when it would hold more than IndexMemory allows at its worst
	// load (54 bytes a key), the maintenance pass drops the oldest epochs,
	// as at DiskLimit. A store that keeps its records in Pebble uses it
	// for its table of location hints (lossy; hints.go), which a negative
	// value leaves out. Default 64 MiB.
	IndexMemory int64

	// JournalMin chooses the data path of a cache-mode store: not
	// negative (the default), every item mutation is a journal frame and
	// the keydir indexes them (docs/keydir.md); negative, records are kept
	// in Pebble. (Before format 4 it was a size threshold; any value not
	// negative now means the journal.) Persistent mode
	// keeps records in Pebble whatever it says. A store stays on the path it
	// was created with: Open refuses it to the other one.
	JournalMin int

	// BufferedJournal writes the journal through the page cache always.
	// By default, while RAM holds a copy of every record
	// (ReleaseJournalPages), the open segment is written with O_DIRECT
	// where the file system takes it (journal_direct.go).
	BufferedJournal bool

	// Codec compresses values of at least CompressMin bytes (default 256)
	// when that saves at least 1/8. The zero Codec means the default,
	// CodecS2; a negative CompressMin switches compression off (the
	// configuration's "none"), whatever Codec says.
	Codec       Codec
	CompressMin int

	LogRetentionBytes int64         // default 1 GiB
	LogRetentionAge   time.Duration // default 24h

	// MaintenanceInterval is how often the background pass runs (epochs,
	// drops, sweeper, log trim, pending flush). Default 1s; negative
	// disables the goroutine (tests call Maintain).
	MaintenanceInterval time.Duration

	// Replicated prepares the store for replication (docs/replication.md):
	// Batch.Delete leaves a tombstone (a record of kind tombstone with the
	// delete's version and time, counted in no item counter) instead of
	// removing the key, kept until the log head has passed the time it was
	// written (at most LogRetentionAge); and a flush_all is executed record
	// by record (records at or above the marker's bound survive) instead of
	// by dropping whole epochs, because records written after the flush on
	// another node may arrive before it. Costs: a deleted key occupies
	// about its key plus 56 bytes for the log's retention (its log entry
	// costs as much already), and a flush of a large store writes one
	// point deletion per record. Default false (a single node).
	Replicated bool

	Clock  clock.Clock  // default clock.Real{}
	Logger *slog.Logger // default slog.Default()
}

// Version orders writes across nodes: the higher HLC wins, then the higher
// node id.
type Version struct {
	HLC  uint64 // 48 bits of unix milliseconds, 16 bits of logical counter
	Node uint64 // id of the node that made the write
}

// Less reports whether v orders before w.
func (v Version) Less(w Version) bool {
	return v.HLC < w.HLC || (v.HLC == w.HLC && v.Node < w.Node)
}

// Record is an item as stored on disk.
type Record struct {
	Found   bool
	Flags   uint32
	Exptime int64 // absolute unix seconds; 0 = never
	Time    int64 // unix seconds when stored (flush_all rules)
	CAS     uint64
	Version Version
	// Tombstone: the key's current record is a tombstone (a versioned
	// delete, Options.Replicated). Found is false; Version and Time are
	// the delete's.
	Tombstone bool
	KeyBinary bool   // stored with a base64 (binary) meta key
	Stale     bool   // marked stale (meta protocol invalidation)
	Value     []byte // Get: the dst passed in with the value appended

	// Where is the record's location; pass it back as prev when the key
	// is next written or deleted.
	Where Location
}

// Location identifies the current record of a key on disk, so that a write
// can remove it without reading the key index again. The zero value means
// "unknown": the batch looks the key up itself.
type Location struct {
	Known   bool   // Known && !Present: the key has no record
	Present bool   // there is a record
	Epoch   uint32 // its epoch
	// Exptime is the record's expiry (to delete its expiry-index entry);
	// for a tombstone, the time of its tombstone-index entry.
	Exptime int64
	// Tombstone: the record is a tombstone (it counts as no item).
	Tombstone bool
	// Size is the record's size on disk (key and encoded record), so that
	// the item byte counters stay exact. Filled by Get and Put; pass the
	// Location back unmodified.
	Size uint32

	gen uint64 // the sweeper generation when this was read (see Batch)
}

// FlushMarker is a persisted flush_all. Once OldestLive (unix seconds) has
// passed, every record whose version is below Bound() is flushed (the
// engine applies the rule on reads; Maintain removes the records). Version
// is the version of the flush_all command itself: between two markers the
// higher Version wins (a later flush_all replaces an earlier one, as
// memcached's settings.oldest_live does). OldestCAS is memcached's
// oldest_cas of the node that issued it (informational on other nodes).
type FlushMarker struct {
	OldestLive int64
	OldestCAS  uint64
	Version    Version
}

// Bound is the version below which m flushes records: the start of the
// second after OldestLive as an HLC value (memcached flushes items stored
// at or before oldest_live), or m.Version when that is higher (a flush_all
// that took effect at once: items stored earlier in the same second are
// below it, later ones above).
func (m FlushMarker) Bound() Version {
	if m.OldestLive <= 0 {
		return Version{}
	}
	b := uint64(m.OldestLive+1) * 1000 << 16
	if b > m.Version.HLC {
		return Version{HLC: b}
	}
	return m.Version
}

// Flushes reports whether m, at unix second now, flushes a record of
// version v.
func (m FlushMarker) Flushes(v Version, now int64) bool {
	return m.OldestLive > 0 && m.OldestLive <= now && v.Less(m.Bound())
}

// History is one stretch of this node's log: a store that opens after an
// unclean shutdown starts a new history (a random non-zero ID) at its last
// sequence number + 1, because the shutdown may have lost a tail that
// peers already applied.
type History struct {
	ID       uint64
	FirstSeq uint64
}

// Applied is a replication offset: Peer's log history History applied up
// to and including Seq. Batch.SetApplied stores it with the data it
// applied; DB.Applied reads it back.
type Applied struct {
	Peer, History, Seq uint64
}

// Errors. Callers test them with errors.Is.
var (
	ErrDiskFull     = errors.New("lsm: disk limit reached")
	ErrCorrupt      = errors.New("lsm: corrupt record")
	ErrIncompatible = errors.New("lsm: data directory written by an incompatible format")
	ErrClosed       = errors.New("lsm: closed")
	// ErrFailed: Pebble reported a fatal error (a WAL or MANIFEST write
	// failed). Commits fail from then on; reads keep working. Reopen to
	// recover: everything committed before the failure is intact.
	ErrFailed = errors.New("lsm: disk tier failed")
)

// LogOp is the operation of a log entry.
type LogOp uint8

const (
	LogPut    LogOp = 1 // a record was stored; its data is in d under Key
	LogDelete LogOp = 2 // Key was deleted (Version is the delete's version)
	LogFlush  LogOp = 3 // a flush_all (Flush holds the marker)
)

// LogEntry is one entry of this node's log (key space l). It does not hold
// the value: the data record of the same version is in d (see ReadLog).
type LogEntry struct {
	Op      LogOp
	Time    int64 // unix milliseconds of the commit (log retention by age)
	Version Version
	Key     []byte      // LogPut, LogDelete; valid during the ReadLog callback only
	Flush   FlushMarker // LogFlush
}

// Stats are the disk tier's figures. Names follow memcached's extstore stats
// where the meaning matches (prometheus memcached_exporter reads extstore_*)
// and are tcache_disk_* otherwise; protocol/stats.go prints them.
type Stats struct {
	LimitBytes   uint64 // extstore_limit_maxbytes
	BytesUsed    uint64 // extstore_bytes_used: Pebble's and the journal's disk space usage
	Items        uint64 // tcache_disk_items (extstore_objects_used)
	ItemBytes    uint64 // tcache_disk_item_bytes: logical bytes of live records
	Reads        uint64 // extstore_objects_read
	BytesRead    uint64 // extstore_bytes_read
	Writes       uint64 // extstore_objects_written
	BytesWritten uint64 // extstore_bytes_written
	BadCRC       uint64 // badcrc_from_extstore
	// Lost counts reads of records whose journal frame a crash lost (it
	// was acknowledged within the last durability interval, or under
	// durability none): tcache_disk_lost_records. A miss, not damage.
	Lost            uint64
	JournalBytes    uint64 // tcache_disk_journal_bytes: bytes of the journal's segments
	JournalSegments uint64 // tcache_disk_journal_segments
	// JournalReleasing is 1 while the journal drops the page cache of its
	// durable frames (DB.ReleaseJournalPages; tcache_disk_journal_releasing),
	// JournalReleased the bytes it dropped (tcache_disk_journal_released_bytes).
	JournalReleasing uint64
	JournalReleased  uint64
	// JournalDirectBytes counts the bytes written to the journal with
	// O_DIRECT, padding included (tcache_disk_journal_direct_bytes).
	JournalDirectBytes uint64
	// CompressSkipped counts values stored uncompressed without an
	// attempt, during a pause after a run of values that did not compress
	// (record.go; tcache_disk_compress_skipped).
	CompressSkipped uint64
	// IndexPending is the journal frames whose position entries wait in
	// RAM for their segment's sstables (tcache_disk_index_pending);
	// IndexPendingBytes the RAM they and the log entries waiting with them
	// hold (tcache_disk_index_pending_bytes); IndexIngests the segments
	// ingested (tcache_disk_index_ingests).
	IndexPending      uint64
	IndexPendingBytes uint64
	IndexIngests      uint64
	// KeydirKeys is the keys the keydir holds (tcache_disk_keydir_keys),
	// KeydirBytes the RAM its tables take (tcache_disk_keydir_bytes):
	// docs/keydir.md. Zero for a store that keeps its records in Pebble.
	KeydirKeys  uint64
	KeydirBytes uint64
	// KeydirCheckpoints counts the checkpoints the maintenance pass wrote
	// (tcache_disk_keydir_checkpoints); Close writes one more.
	KeydirCheckpoints uint64
	HintHits          uint64 // tcache_disk_hint_hits: reads that went straight to the record
	HintMisses        uint64 // tcache_disk_hint_misses: hinted reads that fell back to the k index
	IndexReads        uint64 // tcache_disk_index_reads: lookups that read the k index (no usable hint)
	Drops             uint64 // tcache_disk_drops: epochs dropped for the limit (cache mode)
	DroppedItems      uint64 // extstore_objects_evicted
	DroppedBytes      uint64 // extstore_bytes_evicted
	Epochs            uint64 // tcache_disk_epochs: live epochs
	DiskFull          uint64 // tcache_disk_full_errors: writes refused (persistent mode)
	WriteErrors       uint64 // tcache_disk_write_errors
	SweeperRuns       uint64 // tcache_disk_sweeper_runs
	Swept             uint64 // tcache_disk_swept: expired records deleted by the sweeper
	Fsyncs            uint64 // tcache_disk_fsyncs: WAL and journal fsyncs
	Commits           uint64 // tcache_disk_commits
	CompactDebt       uint64 // tcache_disk_compaction_debt (bytes)
	LogFirst          uint64 // tcache_log_first_seq
	LogLast           uint64 // tcache_log_last_seq
	Tombstones        uint64 // tcache_disk_tombstones: tombstones written (Options.Replicated)
	TombSwept         uint64 // tcache_disk_tombstones_swept: tombstones removed once the log passed them
	History           uint64 // tcache_log_history: the current log history id
	// Recounting is 1 while the item and byte counters are being rebuilt
	// after an unclean shutdown (tcache_disk_recounting); Items and
	// ItemBytes are then partial.
	Recounting uint64
}
