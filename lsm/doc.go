// Package lsm is tcache's disk tier: everything that touches Pebble, the LSM
// key-value store under data_dir.
//
// # Contract
//
// It owns the record encoding and the key spaces — item data, the key
// index, the node's write-ahead log, metadata and the expiry index (api.go
// lists the API). A Batch commits data records and their log entries
// together, with the configured durability: sync (acknowledged after fsync;
// concurrent commits share fsyncs), interval (a syncer fsyncs the WAL every
// DurabilityInterval) or none (no WAL; Close flushes the memtables). A
// committed record is readable at once. In cache mode the disk stays near
// DiskLimit by dropping the oldest data in whole epochs (range deletions and
// a compaction, so files are freed); in persistent mode nothing is dropped
// and Commit returns ErrDiskFull at the limit. Maintain sweeps expired
// records and turns flush_all into a range deletion. Get applies no
// memcached rule (expiry, flush marker): the engine does. A record that
// fails its checks is never served: Get returns ErrCorrupt, counted.
//
// # Key spaces
//
// One Pebble keyspace split by the first byte. Integers are big-endian, so
// byte order is numeric order.
//
//	d | epoch u32 | user key                 → record          item data, by epoch
//	k | user key                             → epoch u32       where the current record is
//	l | seq u64                              → log entry       this node's log
//	x | exptime u64 | epoch u32 | user key   → (empty)         expiry index, by time
//	m | name                                 → metadata
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
//	|  =1  |  =1  |0,1,2 |      |   u32       |   i64 s    |  i64 s     |
//	+------+------+------+------+-------------+------------+------------+
//	24           32           40           48          52
//	+------------+------------+------------+-----------+----------------+-----------+
//	|    CAS     | version HLC| version    | raw value | value          | CRC-32C   |
//	|    u64     |    u64     | node u64   | len u32   | (codec)        | u32       |
//	+------------+------------+------------+-----------+----------------+-----------+
//
// codec: 0 none, 1 s2 (block format), 2 zstd (one frame with its content
// size). bits: 0x01 the key is binary (base64 meta key), 0x02 stale. The
// CRC-32C (Castagnoli) covers every byte before it. A value of at least
// CompressMin bytes is compressed and kept compressed only when that saves
// at least 1/8. Decoding checks the length, format, kind, codec, bits, CRC
// and the decompressed length; any failure is ErrCorrupt.
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
//	m clean       1 byte                      1 after Close; 0 while open
//
// The per-epoch counters are exact after a clean Close. After a crash
// (clean = 0) a background recount rebuilds them from a Pebble snapshot of
// the d ranges while commits record deltas (Stats.Recounting meanwhile).
//
// # Concurrency
//
// Commits are serialised by one mutex that assigns sequence numbers and
// enters Pebble's commit pipeline in that order (Apply, or ApplyNoSyncWait
// for sync durability, whose fsync is awaited after the mutex is released
// so concurrent commits share fsyncs). Maintenance works in bounded chunks
// under the same mutex. Reads take no mutex.
package lsm
