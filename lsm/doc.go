// Package lsm is tcache's disk tier: a Pebble store (the LSM key-value
// store under data_dir) and, in cache mode, a journal of item records
// that Pebble references.
//
// # Contract
//
// It owns the record encoding and the key spaces — item data, the key
// index, the node's write-ahead log, metadata and the expiry index (api.go
// lists the API). A Batch commits data records and their log entries
// together, with the configured durability: sync (acknowledged after the
// WAL's fsync; concurrent commits share fsyncs), interval (a syncer writes
// and fsyncs the journal, then the WAL, every DurabilityInterval) or none
// (no WAL; Close writes the journal and flushes the memtables). A
// committed record is readable at once. In cache mode the disk stays near
// DiskLimit by dropping the oldest data in whole epochs (range deletions and
// a compaction, so files are freed); in persistent mode nothing is dropped
// and Commit returns ErrDiskFull at the limit. Maintain sweeps expired
// records and turns flush_all into a range deletion. Get applies no
// memcached rule (expiry, flush marker): the engine does. A record that
// fails its checks is never served: Get returns ErrCorrupt, counted.
//
// # Replication (Options.Replicated; replicate.go, docs/replication.md)
//
// A replicated store keeps what peers need: a delete leaves a tombstone
// (a record of kind 2 with the delete's version and time, indexed in t,
// counted in no item counter) until the log head has passed the time it
// was written (or LogRetentionAge, when the log's only entry is older); a
// flush_all is carried out record by record by Maintain (every record whose
// version is below FlushMarker.Bound goes, those above stay, wherever they
// were written first) instead of by dropping epochs. Records from peers
// enter with Batch.PutRemote and FlushRemote, which write no log entry (a
// node never re-ships what it applied), keep the record's version, value
// bytes and times, and give an item a fresh local CAS; Batch.SetApplied
// stores the peer's offset in the same Pebble batch. Readers get each log
// entry with its record (ReadLogRecords; nil when superseded), every
// record at one point (Snapshot, under the commit mutex, with the seq and
// history of that point), or records in chunks (Scan). In cache mode an
// epoch dropped for the disk limit takes its tombstones with it.
//
// Every open after an unclean shutdown (m closed = 0) starts a new log
// history at the last seq + 1 (Histories): the shutdown may have lost a
// tail that peers already applied, and the history tells them.
//
// # Key spaces
//
// One Pebble keyspace split by the first byte. Integers are big-endian, so
// byte order is numeric order.
//
//	d | epoch u32 | user key                 → record or ref   item data, by epoch
//	k | user key                             → epoch u32       where the current record is
//	l | seq u64                              → log entry       this node's log
//	x | exptime u64 | epoch u32 | user key   → (empty)         expiry index, by time
//	t | time u64 | epoch u32 | user key      → (empty)         tombstone index, by time written
//	m | name                                 → metadata
//
// A k entry names an epoch only: a write over a record of the same epoch
// leaves it alone (one memtable insert fewer per overwrite). In cache
// mode, a local item record of at least JournalMin bytes (default 1: all) is
// appended to the journal and its d value is a journal reference (below),
// ingested with the rest of its index entries when its segment is sealed
// (Pending index, below);
// other records are the d value itself, those of at least 256 bytes in
// Pebble blob files (value separation, pebble.go), so compactions move
// their keys, not their bytes.
//
// The live epochs are a range [lo, cur]. Writes go to cur. The epoch
// advances every DiskLimit/32 bytes written (cache mode) and at a flush_all;
// dropping epochs is one DeleteRange over their d ranges. A k entry naming
// an epoch outside [lo, cur] is a miss and is removed lazily (Get queues
// it; Maintain's index pass walks k and x in chunks after epochs die).
//
// # Record (value of a d key)
//
//	 0      1      2      3      4             8            16           24
//	+------+------+------+------+-------------+------------+------------+
//	|format| kind |codec | bits | client flags|  exptime   |    time    |
//	|  =1  |1,2,3 |0,1,2 |      |   u32       |   i64 s    |  i64 s     |
//	+------+------+------+------+-------------+------------+------------+
//	24           32           40           48          52
//	+------------+------------+------------+-----------+----------------+-----------+
//	|    CAS     | version HLC| version    | raw value | value          | CRC-32C   |
//	|    u64     |    u64     | node u64   | len u32   | (codec)        | u32       |
//	+------------+------------+------------+-----------+----------------+-----------+
//
// kind: 1 item, 2 tombstone (no value; time = when written on this node),
// 3 flush marker (never in d: ReadLogRecords and Snapshot ship it; exptime
// = oldest-live, CAS = oldest-CAS; no value). Kinds 2 and 3 have codec 0,
// bits 0, flags 0. codec: 0 none, 1 s2 (block format), 2 zstd (one frame
// with its content size). bits: 0x01 the key is binary (base64 meta key), 0x02 stale. The
// CRC-32C (Castagnoli) covers every byte before it. A value of at least
// CompressMin bytes is compressed and kept compressed only when that saves
// at least 1/8. Decoding checks the length, format, kind, codec, bits, CRC
// and the decompressed length; any failure is ErrCorrupt.
//
// # Journal reference (value of a d key whose record is in the journal)
//
//	+------+-----------+-----------+-----------+---------+---------+---------+---------+
//	|format|  exptime  |version HLC|version    | segment | offset  | length  | CRC-32C |
//	|  =2  |  i64 s    |  u64      | node u64  |  u32    |  u64    | u32     | u32     |
//	+------+-----------+-----------+-----------+---------+---------+---------+---------+
//
// 45 bytes: what the maintenance passes and the write path need without
// reading the record (expiry, version), and where the frame is. A record
// read through it must be a frame of the same key with a record of the
// same version, or it is ErrCorrupt.
//
// # Log entry (value of an l key)
//
//	+------+------+-----------+-----------+-----------+ - - - - - - - - - - - - - +--------+-----+---------+
//	|format|  op  | time i64  | version   | version   | flush only:               | key len| key | CRC-32C |
//	|  =1  |1,2,3 | unix ms   | HLC u64   | node u64  | oldest-live i64, CAS u64  | uvarint|     | u32     |
//	+------+------+-----------+-----------+-----------+ - - - - - - - - - - - - - +--------+-----+---------+
//
// op: 1 put, 2 delete (its version is the delete's: replication turns it
// into a tombstone), 3 flush_all. The entry does not hold the value: the
// data record of the same version is in d (ReadLog). Sequence numbers start
// at 1, are assigned at commit under the commit mutex in commit order, and
// have no gaps; retention trims the head with a DeleteRange.
//
// # Metadata (m keys)
//
//	m format      "tcache-lsm" u32 version    checked (read-only) before any write
//	m node        u64                         random node id, created once
//	m cas         u64                         CAS high-water mark (Batch.ReserveCAS)
//	m hlc         u64                         HLC high-water, reserved 1 s of HLC ahead
//	m flush       4 × u64                     flush marker: oldest-live, oldest-CAS, version
//	m flush-done  i64                         oldest-live of the last executed flush
//	m epochs      lo u32, cur u32, then (items u64, bytes u64) per live epoch
//	m log-first   u64                         first sequence number kept
//	m clean       1 byte                      1 after Close with exact counters; 0 while open
//	m closed      1 byte                      1 after Close; 0 while open (0 at open: new history)
//	m histories   n × (id u64, first seq u64) log histories, oldest first
//	m applied/<peer u64>  history u64, seq u64  a peer's log applied up to seq (Batch.SetApplied)
//
// The per-epoch counters are exact after a clean Close. After a crash
// (clean = 0) a background recount rebuilds them from a Pebble snapshot of
// the d ranges while commits record deltas (Stats.Recounting meanwhile).
//
// # Concurrency
//
// Commits are serialised by one mutex that assigns sequence numbers and
// enters Pebble's commit pipeline in that order (Apply without a sync;
// with sync durability the fsync is awaited after the mutex is released,
// through a leader that syncs the WAL for every commit applied so far:
// groupsync.go). Maintenance
// works in bounded chunks under the same mutex. Reads take no mutex (a
// frame still in the journal's buffer is copied under the journal's own).
//
// # Journal (journal.go, in <Dir>/journal; docs/disk-tier-next.md)
//
// Append-only segment files of frames (seq, key, record, CRC-32C), each
// tagged with the newest epoch whose records it may hold. Commit appends
// under the commit mutex (rolling to a new segment when the epoch advances,
// the segment passes 32 MiB or its pending table MemTableSize) and Pebble
// gets the 45-byte reference instead of the record, by ingestion: that
// takes the value out of the WAL, the memtable and the blob files, and the
// index entries out of the memtable. Frames are written with one write(2) per 256 KiB,
// per interval, or at Close, and read from the buffer until then. A read with a location hint does one pread and no
// Pebble read at all. Dropping epochs (disk limit, flush_all) removes the
// segments below the oldest live epoch after the range deletion of their
// references commits; Open removes any a crash left. Records from peers,
// and every record in persistent mode or under durability sync, stay in
// Pebble (api.go, JournalMin; db.go, useJournal says why).
//
// # Pending index (pending.go, seal.go, reindex.go)
//
// A journaled record's d reference, k epoch, x entry and l log entry are
// not committed to Pebble: they wait in the pending table of the frame's
// segment (RAM; per key the newest record and its base, the key's state in
// Pebble under it). When the segment is sealed, the sealer goroutine
// writes the table as sorted sstables, one per key space, with the indexed
// marker (m indexed: segment, offset, seq), and Pebble ingests them in one
// step, oldest table first. Reads look in the pending tables before
// Pebble; ReadLog merges their log entries with Pebble's. Any Pebble write
// of a pending key deletes its base's leftovers and removes the key from
// the pending index once committed; one of a key held by a sealed table
// waits for that table's ingestion first. Drops and flush_all wait for the
// ingestions in flight; a snapshot, a full scan and the recount seal the
// open table and wait (settleLocked).
//
// A crash loses the pending tables and the frames still in the journal's
// buffer. Open re-indexes the journal from the marker: a frame is indexed
// unless Pebble holds a newer record of its key or a log entry of it after
// the frame's seq, and a seq nothing holds any more gets a placeholder log
// entry (a put with no key, which ReadLog skips), so the log stays
// gap-free. Stats.Lost counts reads of references whose frame is gone,
// which only a format 2 store can hold.
package lsm
