// Package lsm is tcache's disk tier: a Pebble store (the LSM key-value
// store under data_dir) and, in cache mode, a journal of item mutations
// that a complete index in RAM, the keydir, locates.
//
// # Contract
//
// It owns the record encoding and the key spaces — item data, the key
// index, journal positions, the node's write-ahead log, metadata and the
// expiry index (api.go lists the API). A Batch commits data records and
// their log entries together, with the configured durability: sync
// (acknowledged after the WAL's fsync; concurrent commits share fsyncs),
// interval (a syncer writes and fsyncs the journal, then the WAL, every
// DurabilityInterval) or none (no WAL; Close writes the journal and
// flushes the memtables). A committed record is readable at once. In cache
// mode the disk stays near DiskLimit by dropping the oldest data in whole
// epochs (range deletions, the removal of their journal segments and a
// compaction, so files are freed), and a journal store's keydir within
// IndexMemory the same way (while the caller holds every record in RAM,
// ReleaseJournalPages, the journal is written with O_DIRECT:
// journal_direct.go); in persistent mode nothing is dropped and
// Commit returns ErrDiskFull at the limit. Maintain sweeps expired records
// and turns flush_all into a range deletion. Get applies no memcached rule
// (expiry, flush marker): the engine does. A record that fails its checks
// is never served: Get returns ErrCorrupt, counted.
//
// # Data paths (db.go, useJournal; docs/keydir.md)
//
// A store keeps its records on one of two paths, chosen when it is created
// and recorded in m datapath; Open refuses it to the other one before
// writing anything. A journal store (cache mode, any durability, and
// JournalMin not negative: the default) writes every item
// mutation as a journal frame: sets, plain deletes (as tombstone records),
// replicated tombstones and records from peers. The keydir (below) says
// where each key's current frame is, and Pebble holds no d, k, x or t
// entry for it: only position entries (s), log entries (l) and metadata
// (m). A Pebble store (persistent mode, or JournalMin negative) keeps its records in d, indexed by k, x and t, and the lossy
// location hints (hints.go) in RAM.
//
// # Replication (Options.Replicated; replicate.go, docs/replication.md)
//
// A replicated store keeps what peers need: a delete leaves a tombstone
// (a record of kind 2 with the delete's version and time, indexed in t,
// or in a journal store kept in the keydir with its tombstone bit; counted
// in no item counter) until the log head has passed the time it was
// written (or LogRetentionAge, when the log's only entry is older); a
// flush_all is carried out record by record by Maintain (every record whose
// version is below FlushMarker.Bound goes, those above stay, wherever they
// were written first) instead of by dropping epochs. In a journal store
// that pass removes keydir entries only, and a restart skips the records
// below the bound of the marker in effect. Records from peers enter with
// Batch.PutRemote and FlushRemote, which write no log entry (a node never
// re-ships what it applied), keep the record's version, value bytes and
// times, and give an item a fresh local CAS. Batch.SetApplied stores the
// peer's offset in the same Pebble batch; in a journal store it is a
// journal frame without a key after the peer's records, kept in RAM and
// written to Pebble with its segment's sstables (Pending index, below).
// Readers get each log entry with its record (ReadLogRecords; nil when
// superseded), every record at one point (Snapshot, under the commit
// mutex, with the seq and history of that point; a journal store copies
// the keydir's locations under the mutex, then reads the frames), or
// records in chunks (Scan; a journal store walks s). In cache mode an
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
//	s | segment u32 | offset u32             → position entry  one per journal frame with a key
//	m | name                                 → metadata
//
// A Pebble store uses d, k, x, t, l and m; a journal store s, l and m.
// In a Pebble store a k entry names an epoch only: a write over a record
// of the same epoch leaves it alone (one memtable insert fewer per
// overwrite). Records are the d value itself, those of at least 256 bytes
// in Pebble blob files (value separation, pebble.go), so compactions move
// their keys, not their bytes. A store that format 2 or 3 wrote may also
// hold journal references in d (below), which it keeps reading.
//
// The live epochs are a range [lo, cur]. Writes go to cur. The epoch
// advances every DiskLimit/32 bytes written (cache mode), in a journal
// store also after as many puts as 1/32 of the keys IndexMemory allows the
// keydir, and at a flush_all; dropping epochs is one DeleteRange over their d ranges and,
// in a journal store, over the s span of their segments, which are then
// removed. A k entry naming an epoch outside [lo, cur] is a miss and is
// removed lazily (Get queues it; Maintain's index pass walks k and x in
// chunks after epochs die). A keydir entry naming a removed segment is a
// miss and goes at the sweeper's next walk.
//
// # Record (value of a d key, or of a journal frame)
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
// 3 flush marker (never stored: ReadLogRecords and Snapshot ship it; exptime
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
// reading the record (expiry, version), and where the frame is. Formats 2
// and 3 wrote them; format 4 writes none (a journal store's index is the
// keydir), and a Pebble store upgraded from format 2 or 3 reads those it
// holds. A record read through one must be a frame of the same key with a
// record of the same version, or it is ErrCorrupt.
//
// # Position entry (value of an s key; position.go)
//
//	+------+------+---------+-----------+-----------+-----------+--------+-----+---------+
//	|format| kind |frame len|  exptime  |version HLC| version   | key len| key | CRC-32C |
//	|  =1  |1,2,3 |  u32    |  u64 s    |  u64      | node u64  | uvarint|     | u32     |
//	+------+------+---------+-----------+-----------+-----------+--------+-----+---------+
//
// One entry per frame with a key, keyed by the frame's segment and offset:
// what the frame does to its key when the keydir is rebuilt. kind: 1 item
// (the key's record is this frame), 2 tombstone (Options.Replicated: the
// key's record is this tombstone), 3 delete (a plain delete: the key has
// no record). exptime is an item's expiry (0: none) or a tombstone's time;
// the version is the record's, for a flush marker's bound. Frames are
// appended in order, so a segment's entries are written already sorted.
//
// # Keydir (keydir.go, keydir_path.go, keydir_load.go, keydir_ckpt.go)
//
// A journal store's index, in RAM and complete: SipHash-2-4 of the key
// (under a random key of the store, m keydir-key) → segment, offset,
// length, exptime (a tombstone's time) and a tombstone bit, in a 24-byte
// slot. 256 shards by the hash's top bits, each an open-addressing table
// with Robin Hood probing in its own anonymous mapping, outside the Go
// heap, grown by doubling past 7/8 full and guarded by its own mutex. Two
// keys of one hash share an entry: a read checks the key in the frame, so
// the other one is a miss, never a wrong value. IndexMemory caps it: past
// IndexMemory/54 keys (54 bytes a key at its worst load) Maintain drops
// the oldest epochs, as at DiskLimit. The sweeper walks it in chunks of a
// shard (paced) and removes expired items, the entries of removed segments
// and, replicated, the tombstones the log head has passed; nothing is
// persisted.
//
// Close writes a checkpoint (<Dir>/journal/keydir.ckpt: each shard's table
// as it is, with the journal position it covers). Open loads it, or starts
// empty, replays the s entries after its position (an item or tombstone
// entry puts, a delete entry removes; entries of dead segments, expired
// items and records below the bound of a flush marker in effect are left
// out), then re-indexes the journal frames after the indexed marker
// (Pending index, below). No Pebble lookup is needed: the journal is the
// one ordered stream of item mutations.
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
// record of the same version is the key's current one, in d or in the
// frame the keydir names, until a later write replaces it
// (ReadLogRecords). Sequence numbers start at 1, are assigned at commit
// under the commit mutex in commit order, and have no gaps; retention
// trims the head with a DeleteRange.
//
// # Metadata (m keys)
//
//	m format      "tcache-lsm" u32 version    checked (read-only) before any write
//	m datapath    "journal" or "pebble"       where the records are; checked with the format
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
//	m indexed     seg u32, off u64, seq u64   the journal is indexed in Pebble up to here
//	m keydir-key  k0 u64, k1 u64              the keydir's SipHash key (journal store)
//
// The format is 4 (keys.go). Open upgrades a store of format 1, 2 or 3 in
// place when it keeps its records in Pebble, and refuses one on the
// journal path; an older tcache refuses a newer store.
//
// The per-epoch counters are exact after a clean Close. After a crash
// (clean = 0) a journal store's Open counts them from the keydir as it
// rebuilds it. A Pebble store's background recount rebuilds them from a
// Pebble snapshot of the d ranges while commits record deltas
// (Stats.Recounting meanwhile).
//
// # Concurrency
//
// Commits are serialised by one mutex that assigns sequence numbers and
// enters Pebble's commit pipeline in that order (Apply without a sync;
// with sync durability the fsync is awaited after the mutex is released,
// through a leader that syncs the WAL for every commit applied so far:
// groupsync.go). A journal store's commits append their frames and update
// the keydir under the same mutex. Maintenance works in bounded chunks
// under it. Reads take no commit mutex (a keydir lookup takes its shard's;
// a frame still in the journal's buffer is copied under the journal's
// own).
//
// # Journal (journal.go, in <Dir>/journal; docs/disk-tier-next.md)
//
// Append-only segment files of frames (seq, key, record, CRC-32C), each
// tagged with the newest epoch whose records it may hold. In a journal
// store every item mutation is a frame: a set (an item record), a delete
// (a tombstone record: a plain delete removes its key from the keydir, a
// replicated one stays as the key's tombstone), a record from a peer (seq
// 0: no log entry), and after a commit's records from peers, a frame
// without a key per peer with its applied offset. Commit appends under the
// commit mutex (rolling to a new segment when the epoch advances, the
// segment passes 32 MiB or its pending table MemTableSize) and points the
// keydir at the frame: nothing goes through Pebble's WAL or memtable.
// Frames are written with one write(2) per 256 KiB, per interval, or at
// Close, and read from the buffer until then. A read finds its frame in
// the keydir and does one pread, and no Pebble read at all. Dropping epochs
// (disk limit, flush_all) removes the segments below the oldest live epoch
// after the range deletion of their position entries commits; Open removes
// any a crash left. A Pebble store appends no frame (api.go, JournalMin;
// db.go, useJournal says why).
//
// # Pending index (pending.go, seal.go, reindex.go)
//
// A journal store's frames reach Pebble a segment at a time. A frame's
// position entry and log entry wait in the pending table of its segment
// (RAM: an append-only arena, no map), already in key order since frames
// are appended in order, with the last applied offset of each peer whose
// records the segment holds. When the segment is sealed, the sealer
// goroutine writes the table as sorted sstables, one per key space (s, l,
// and m: the applied offsets and the indexed marker, m indexed: segment,
// offset, seq), and Pebble ingests them in one step, oldest table first.
// Each file's keys follow every older one of its space, so the s and l
// files land in the last level and are never compacted. Reads of keys do
// not look here (the keydir has every key); ReadLog merges the tables'
// log entries with Pebble's. Drops and flush_all wait for the ingestions
// in flight; a snapshot and a full scan seal the open table and wait
// (settleLocked).
//
// A crash loses the pending tables and the frames still in the journal's
// buffer. Open re-indexes the journal from the marker into the keydir and
// into one table that it ingests before answering: every frame of a live
// segment gets its position entry, the frames without a key give the
// peers' later applied offsets, a seq the log does not hold yet gets its
// frame's log entry, and a seq nothing holds any more gets a placeholder
// log entry (a put with no key, which ReadLog skips), so the log stays
// gap-free. Stats.Lost counts reads of frames a crash lost (a miss).
package lsm
