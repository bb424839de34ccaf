// Package engine implements memcached 1.6.18 semantics over a bounded RAM
// tier that holds no Go pointer per item.
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
// first written. Each shard owns a range of fixed-size chunks (about 128
// per shard, 4 KiB to 64 KiB) and two append-only logs over them, the
// S3-FIFO small and main queues. A log is a deque of chunks addressed by a
// monotonically increasing logical position; a chunk returns to the shard's
// free list when the log's head passes it, so the two queues share the
// shard's memory. A record may straddle chunks. A reference is the record's
// position (mod 2^p, above) and a bit for the main log; a record is live
// only while the index refers to it, and then it lies in [head, tail) of
// its log.
//
// Record layout (little endian; the record size counted against the limit
// and in stat bytes is 28 + key + value):
//
//	 0               4       5       6               8
//	+---------------+-------+-------+---------------+
//	| value length  |keylen | bits  |   reserved    |
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
// with its frequency decremented, one that was not is evicted. The bytes
// moved per store are bounded (max(4 x record, 64 KiB)); beyond that, and
// for records larger than a chunk, records are evicted whatever their
// frequency. Two chunks per shard are kept free so that moves find room.
// Overwrites keep the key's frequency and queue. In the trace-driven
// simulation (sim_test.go) this beats a model of memcached's segmented LRU
// with the same byte budget on Zipf and scan-polluted traces.
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
