// Package engine implements memcached 1.6.18 semantics over a bounded RAM
// tier that holds no Go pointer per item, optionally as a write-through
// cache over a disk tier (package lsm) that is then the system of record.
//
// # Contract
//
// The operations are methods of *Engine (Get, Store, Arith, Delete, Touch,
// FlushAll, Stats, ...), safe for concurrent use, with the argument and
// result types of api.go. Keys and values passed in are borrowed for the
// call; Get appends the value to a caller buffer. Get hits, Get misses and
// Store(ModeSet) do not allocate in the steady state.
//
// The rules are memcached's, verified against Debian's memcached 1.6.18:
// 32-bit client flags; one global CAS counter advanced exactly where
// memcached calls get_cas_id (every stored item, incr/decr, md I, mg/ma
// auto-vivify, and flush_all when it takes effect within a second); raw
// exptimes converted as realtime() does (0 never, up to 30 days relative,
// larger absolute, negative or past absolute already expired); flush_all
// with memcached's oldest_live/oldest_cas rule; incr/decr over
// safe_strtoull with in-place, space-padded updates; the meta win/stale
// tokens of mg/ms/md/ma (ItemInfo reports the TTL before and after a
// call's touch or vivify, whether the call created the item, and the
// binary-key mark, so that mg and ma can answer in flag order); and
// memcached's counting of cmd_get, get_expired, get_flushed, touch, cas,
// incr/decr and delete counters (every operation
// that meets an expired or flushed item counts get_expired/get_flushed, as
// do_item_get does). Time is memcached's relative time: seconds since
// "process start", 62 seconds before New, taken from Options.Clock.
//
// # Disk tier
//
// Options.Disk nil is memory mode: the RAM tier alone, memcached's
// behaviour exactly. With a Disk (docs/disk-tier.md; tier.go):
//
//   - Write path: every mutation (set/add/replace/append/prepend/cas,
//     incr/decr, touch, gat, mg T/N, md and md I, ms I, flush_all) takes
//     its key's stripe lock (1024 padded mutexes indexed by the low hash
//     bits), reads the current item from RAM or else the disk, computes the
//     result with memory mode's rules (rules.go), assigns the CAS and a
//     version (hlc.go: 48 bits of unix ms, 16 of logical counter, seeded
//     above the disk's high-water mark; node = Disk.NodeID()), commits one
//     lsm batch, then updates RAM and answers. A failed commit leaves RAM
//     untouched and answers DiskFull or DiskError. No shard lock is held
//     during I/O. The CAS counter restarts above Disk.CASHighWater() and
//     reserves blocks of 65536 values with the batch that crosses one.
//   - Read path: a RAM hit takes no stripe lock and costs what it costs in
//     memory mode. A miss reads the disk under the stripe lock, applies
//     the expiry and flush rules (persisted times are absolute unix
//     seconds; the flush marker is loaded at New, and the process start is
//     moved before it so that relative times stay positive), and promotes
//     the item into RAM when its shard's live data leaves room for it
//     (shard.roomFor: dead records do not count, makeRoom reclaims them;
//     warm-up after a restart) or when it is read from disk a second time while its
//     fingerprint is still in a small direct-mapped table (pointer-free,
//     one uint32 per slot), so a scan does not push the hot set out.
//     GetMulti serves RAM hits first and reads the misses in key order.
//   - RAM-only state: win tokens, fetched/active bits, last access and the
//     S3-FIFO frequency. An item evicted from RAM forgets them. The stale
//     mark, flags, expiry, CAS and binary-key mark are persisted.
//   - Each RAM record carries its disk location (epoch and on-disk size,
//     8 bytes after the header, marked by extLoc in its ext field), so an
//     overwrite of a RAM-resident key passes the location to the batch and
//     reads nothing. Locations are rebuilt without the lsm's sweep
//     generation, so after a sweep the batch re-checks them itself.
//   - flush_all with a disk: the marker's version is the command's HLC
//     and it flushes, once its time has passed, every disk record whose
//     version is below its bound, the HLC of the flush time
//     (lsm.FlushMarker.Bound; the command's own HLC for an immediate
//     flush). A local flush holds every stripe lock, so versions order
//     exactly as memcached's oldest_live/oldest_cas would; the RAM tier,
//     which has no versions, keeps memcached's rule as a conservative
//     pre-check (an item it flags is dropped and the disk decides). The
//     same rule applies to a peer's marker (ApplyFlush), so a replicated
//     flush removes the same items on every node.
//   - Replication (replica.go): ApplyRecord and ApplyFlush apply a peer's
//     records under the stripe lock with the conflict rule (higher
//     version wins, tombstones included, nothing below an effective flush
//     marker), with the applied offset in the same batch, never logged;
//     the winner's RAM copy is dropped. Applied items get a fresh local
//     CAS (clients of this node compare this node's CAS values); the
//     version travels unchanged and the HLC observes it, so a local write
//     after an applied one orders after it. The HLC follows a peer's
//     version only up to wall clock + Options.MaxClockSkew; a record
//     stamped further ahead keeps its version (counted in
//     Stats.ClockAhead) and its key is remembered (tier.go, aheadKeys) so
//     that a local write of that key still gets a higher version, or the
//     nodes would diverge. An effective peer flush marker still moves the
//     clock all the way (writes after a flush must survive it). Dump enumerates the live
//     items for lru_crawler metadump (the disk, plus RAM-only state).
//   - Stats: curr_items is the disk's item count, bytes the RAM tier's,
//     evictions the items the disk dropped (cache mode), RAMEvictions the
//     RAM copies dropped, plus disk reads, misses and promotions.
//
// # RAM tier
//
// The tier is split into 2^k shards (up to 256, each able to hold at least
// eight maximum-size items), each with one mutex. A key is hashed with
// hash/maphash (random per-engine seed); the top bits choose the shard.
//
// The shard's index (index.go) is an open-addressing hash table of 8-byte
// slots in its own anonymous mmap, outside the Go heap:
//
//	 63   62                    p+1  p                          0
//	+----+-------------------------+----+-------------------------+
//	| 1  | tag: low 62-p hash bits |main| record position mod 2^p |
//	+----+-------------------------+----+-------------------------+
//
// where 2^p exceeds the shard's bytes, so the full position is the one
// within 2^p bytes before the ring's tail. The tag's low bits are the home
// bucket; probing is linear in Robin Hood order (a lookup stops at the
// first slot nearer its home than the probe is far), deletion shifts the
// following entries back (no tombstones), and past a load of 0.8 the table
// is rehashed from the tags alone into a mapping twice the size and the old
// one is unmapped at once. The empty table is 1024 slots (8 KiB) per
// shard. A tag match is a candidate only: the key stored in the record is
// compared and probing goes on, so keys with equal 64-bit hashes are all
// cached. The Go heap holds a constant number of objects whatever the item
// count.
//
// Records live in one anonymous mmap of MemoryLimit bytes (rounded down to
// whole chunks), outside the Go heap; pages become resident as they are
// first written, as transparent huge pages where the kernel allows them
// (MADV_HUGEPAGE: a get touches a record at a random place). Each shard
// owns a range of fixed-size chunks (about 128 per shard, 4 KiB to 64 KiB)
// and two append-only logs over them, the S3-FIFO small and main queues.
// A log is a deque of chunks addressed by a monotonically increasing
// logical position; a chunk returns to the shard's free list when the log's
// head passes it, so the two queues share the shard's memory. A record may
// straddle chunks. A reference is the record's position (mod 2^p, above)
// and a bit for the main log; a record is live only while the index refers
// to it, and then it lies in [head, tail) of its log.
//
// Record layout (little endian; the record size counted against the limit
// and in stat bytes is 28 + key + value):
//
//	 0               4       5       6               8
//	+---------------+-------+-------+---------------+
//	| value length  |keylen | bits  |  ext (u16)    |
//	+---------------+-------+-------+---------------+
//	 8              12              16              20
//	+---------------+---------------+---------------+
//	| client flags  |   exptime     | last access   |
//	+---------------+---------------+---------------+
//	20                              28
//	+-------------------------------+--------- - - -+---------- - - -+
//	|            CAS (u64)          | key (keylen)  | value          |
//	+-------------------------------+--------- - - -+---------- - - -+
//
//	In disk mode the header may be followed by an 8-byte location (epoch
//	u32, on-disk size u32), before the key: present when bit 0 of the u16
//	at offset 6 (ext, reserved in memory mode) is set; it counts in the
//	size. Next to the header, an overwrite reads it without a cache miss
//	of its own.
//
//	bits: 0-1 S3-FIFO frequency (0..3)  2 fetched  3 active
//	      4 stale  5 win token sent  6 dead (unlinked)
//	      7 binary key (stored by ms with b; memcached ITEM_KEY_BINARY)
//	exptime and last access are memcached relative seconds; exptime 0 = never.
//
// # Eviction: S3-FIFO
//
// Eviction follows S3-FIFO (Yang et al., SOSP'23). New items enter the
// small queue, or main when their hash is in the ghost table (a direct-
// mapped array of 32-bit fingerprints of hashes recently evicted from
// small, one slot per 128 bytes of shard) or they are larger than the small
// queue's target (10% of the shard). A hit raises the record's frequency
// (at most 3) in place. When a store needs chunks, eviction takes from
// small while it holds more than its target, else from main: dead records
// at a head are skipped, expired or flushed ones reclaimed; a small record
// that was hit moves to main (frequency reset), one that was not is evicted
// and remembered in the ghost; a main record that was hit is re-appended
// with its frequency decremented, one that was not is evicted.
//
// Evicting is only right when live data does not fit. Overwritten and
// deleted records are dead space in the logs until a head passes them, so
// a shard can run out of chunks with far less live data than its budget.
// Therefore a record that was not hit (or one past the cap below) is moved
// to the tail of main too instead of evicted while the shard's live bytes
// plus the incoming record stay within its budget less a cleaning headroom
// of 1/8 of the budget and seven chunks (the reserve, and the partly used
// chunks at the ends of the logs): memcached, which frees the old slot on
// overwrite, does not evict then either. A working set of up to about 70%
// of MemoryLimit (the headroom less the imbalance between shards) is not
// evicted however often it is overwritten (overwrite_test.go). A
// move frees no room by itself; the room comes from the dead records the
// head passes next, and the headroom guarantees at least 1 dead byte per 7
// live ones, so these moves are amortised O(1) (shard.go, makeRoom). When
// the live data does not fit, nothing differs from S3-FIFO.
//
// The bytes moved per store are bounded: for records that were hit
// max(4 x record, 64 KiB), as S3-FIFO has it; in all, four times the
// larger of the record and a chunk (room is freed in whole chunks), at
// least as much. Beyond that, and for records larger than a chunk, records
// are evicted whatever their frequency. Three chunks
// per shard are kept free so that moves always find room. Overwrites keep the
// key's frequency and queue. In the trace-driven simulation (sim_test.go)
// this beats a model of memcached's segmented LRU with the same byte budget
// on Zipf and scan-polluted traces.
//
// Expired items are reclaimed lazily when met and by the crawler, a
// goroutine started by New (Options.CrawlerInterval) that walks every log
// in batches of 256 records per lock hold; Crawl runs one pass
// synchronously.
//
// # stats items / stats slabs
//
// tcache has no slab classes. ItemsStats describes the whole RAM tier as
// one pseudo class with id 1; MemoryStats gives the mapped and the used
// arena bytes (total_malloced).
//
// # Differences from memcached
//
//   - Item size: records cost 28 bytes plus key and value (memcached: 48 or
//     56 bytes plus key+1, value+2, and slab rounding), so more items fit in
//     the same -m; the maximum item size check itself uses memcached's
//     formula, so the same values are accepted and refused.
//   - "last access" (mg l) and the fetched/active bits follow do_item_bump,
//     but tcache has no HOT/WARM/COLD moves that would refresh the access
//     time otherwise; ms N (auto-vivify on append) is ignored, as in
//     memcached 1.6.18.
//   - The ghost table and the index are not counted against MemoryLimit
//     (neither is memcached's hash table). The index costs 8 bytes per slot
//     at a load of 0.4 to 0.8: 10 to 20 bytes per item.
package engine
