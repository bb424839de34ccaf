package engine

import (
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

// Options configure an Engine. Every field documents its default; call
// EnsureDefaults then Validate (New does both).
type Options struct {
	// MemoryLimit is the RAM tier budget in bytes (memcached -m), counting
	// key, value and per-item header. Default 64 MiB.
	MemoryLimit int64
	// MaxItemSize is the largest item accepted (memcached -I), counted as
	// memcached counts it. Default 1 MiB.
	MaxItemSize int
	// CrawlerInterval is how often the background crawler looks for expired
	// items. Default 1s; negative disables the crawler (tests drive it).
	CrawlerInterval time.Duration
	// Clock tells the time. Default the wall clock.
	Clock clock.Clock
	// Logger receives operational messages. Default slog.Default().
	Logger *slog.Logger
	// Disk is the disk tier, the system of record: every mutation is
	// committed to it before the RAM tier is updated, and RAM misses read
	// it (docs/disk-tier.md). The caller opens it before New and closes it
	// after Close. Default nil: memory mode, memcached's behaviour exactly.
	Disk *lsm.DB
	// MaxClockSkew bounds how far ahead of this node's wall clock a peer's
	// version may move the hybrid logical clock (ApplyRecord, ApplyFlush):
	// a version further ahead still applies with its own version, but this
	// node's later versions do not follow it beyond now + MaxClockSkew
	// (Stats.ClockAhead counts them). Default 500ms (DefaultMaxClockSkew);
	// negative: no bound.
	MaxClockSkew time.Duration
}

// Defaults and limits of Options.
const (
	DefaultMemoryLimit     = 64 << 20
	DefaultMaxItemSize     = 1 << 20
	DefaultCrawlerInterval = time.Second
	DefaultMaxClockSkew    = 500 * time.Millisecond

	minMaxItemSize = 1024    // memcached: "Item max size cannot be less than 1024 bytes."
	maxMaxItemSize = 1 << 30 // memcached: "Cannot set item size limit higher than 1 GB."
	minMemoryLimit = 64 << 10
)

// EnsureDefaults fills zero fields with their defaults.
func (o *Options) EnsureDefaults() {
	if o.MemoryLimit == 0 {
		o.MemoryLimit = DefaultMemoryLimit
	}
	if o.MaxItemSize == 0 {
		o.MaxItemSize = DefaultMaxItemSize
	}
	if o.CrawlerInterval == 0 {
		o.CrawlerInterval = DefaultCrawlerInterval
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxClockSkew == 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}
}

// ErrInvalidOptions is wrapped by every error Validate returns.
var ErrInvalidOptions = errors.New("engine: invalid options")

// Validate reports the first field with a value the engine cannot use.
func (o *Options) Validate() error {
	switch {
	case o.MemoryLimit < minMemoryLimit:
		return fmt.Errorf("%w: MemoryLimit %d is below the minimum of %d bytes", ErrInvalidOptions, o.MemoryLimit, minMemoryLimit)
	case o.MaxItemSize < minMaxItemSize:
		return fmt.Errorf("%w: MaxItemSize %d is below the minimum of %d bytes", ErrInvalidOptions, o.MaxItemSize, minMaxItemSize)
	case o.MaxItemSize > maxMaxItemSize:
		return fmt.Errorf("%w: MaxItemSize %d is above the maximum of 1 GiB", ErrInvalidOptions, o.MaxItemSize)
	case int64(o.MaxItemSize) > o.MemoryLimit/2:
		return fmt.Errorf("%w: MaxItemSize %d is more than half of MemoryLimit %d", ErrInvalidOptions, o.MaxItemSize, o.MemoryLimit)
	case o.Clock == nil:
		return fmt.Errorf("%w: Clock is nil", ErrInvalidOptions)
	case o.Logger == nil:
		return fmt.Errorf("%w: Logger is nil", ErrInvalidOptions)
	}
	return nil
}

// memcached constants that shape the time rules.
const (
	realtimeMaxDelta   = 60 * 60 * 24 * 30 // REALTIME_MAXDELTA: larger exptimes are absolute
	itemUpdateInterval = 60                // ITEM_UPDATE_INTERVAL
	maxShards          = 256
	// itemsPerShardMax: a shard is sized to hold at least this many
	// max-size items, so that a max-size item never crowds out a shard.
	itemsPerShardMax = 8
	// ghostBytesPerEntry sizes the S3-FIFO ghost table: one fingerprint per
	// this many bytes of shard capacity.
	ghostBytesPerEntry = 128

	maxChunkSize   = 64 << 10
	minChunkSize   = 4 << 10
	chunksPerShard = 128
)

// Engine is the memcached-semantics store over the RAM tier. All methods are
// safe for concurrent use.
type Engine struct {
	opts       Options
	clock      clock.Clock
	seconds    func() int64 // the unix second: clock.Seconds(clock)
	log        *slog.Logger
	seed       maphash.Seed
	shardShift uint // shard index = hash >> shardShift
	shards     []shard
	arena      *arena

	// started is memcached's process_started: the unix second that relative
	// time 0 stands for, 62 seconds before New, so that relative times are
	// never 0 (0 means "never" for exptimes and "off" for oldestLive).
	started int64

	casID      atomic.Uint64 // last CAS handed out (memcached get_cas_id)
	oldestLive atomic.Int64  // settings.oldest_live, relative seconds; 0 = no flush
	oldestCAS  atomic.Uint64 // settings.oldest_cas
	cmdFlush   atomic.Uint64

	scratch sync.Pool // *[]byte for append/prepend and disk reads

	// tier is the disk tier's state; nil in memory mode.
	tier *tier

	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// New validates opts, maps the arena and starts the crawler (unless
// opts.CrawlerInterval < 0). The caller must Close the engine.
func New(opts Options) (*Engine, error) {
	var d diskStore
	if opts.Disk != nil {
		d = &lsmDisk{db: opts.Disk}
	}
	return newEngine(opts, d)
}

// newEngine is New over any diskStore (nil: memory mode); tests pass fakes.
func newEngine(opts Options, d diskStore) (*Engine, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		opts:    opts,
		clock:   opts.Clock,
		seconds: clock.Seconds(opts.Clock),
		log:     opts.Logger,
		seed:    maphash.MakeSeed(),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	e.started = e.clock.Now().Unix() - itemUpdateInterval - 2
	if d != nil {
		e.tier = newTier(e, d)
	}

	n := opts.MemoryLimit / (itemsPerShardMax * int64(opts.MaxItemSize))
	n = min(max(n, 1), maxShards)
	nshards := 1 << (bits.Len64(uint64(n)) - 1) // round down to a power of two
	e.shardShift = uint(64 - (bits.Len64(uint64(nshards)) - 1))

	// Chunks: about 128 per shard, between 4 KiB and 64 KiB.
	per := opts.MemoryLimit / int64(nshards)
	cs := int64(maxChunkSize)
	for cs > minChunkSize && per/cs < chunksPerShard {
		cs >>= 1
	}
	perChunks := int(per / cs)
	a, err := newArena(int64(perChunks*nshards) * cs)
	if err != nil {
		return nil, err
	}
	e.arena = a
	e.shards = make([]shard, nshards)
	for i := range e.shards {
		if err := e.shards[i].init(a.mem, uint64(cs), i*perChunks, perChunks); err != nil {
			for j := range i {
				e.shards[j].mu.index.free()
			}
			a.free()
			return nil, err
		}
	}
	if opts.CrawlerInterval > 0 {
		go e.crawlLoop(opts.CrawlerInterval)
	} else {
		close(e.done)
	}
	return e, nil
}

// Close stops the crawler and unmaps the arena. The engine must not be used
// afterwards.
func (e *Engine) Close() error {
	var err error
	e.closeOnce.Do(func() {
		close(e.stop)
		<-e.done
		for i := range e.shards {
			s := &e.shards[i]
			s.mu.Lock()
			s.mu.small.mem, s.mu.main.mem = nil, nil
			err = errors.Join(err, s.mu.index.free())
			s.mu.Unlock()
		}
		err = errors.Join(err, e.arena.free())
	})
	return err
}

// MaxItemSize is the largest item accepted (memcached -I).
func (e *Engine) MaxItemSize() int { return e.opts.MaxItemSize }

// now is memcached's current_time: seconds since e.started. With the real
// clock it is read from a second kept by a timer, as memcached's is: every
// request needs it, and a clock read costs about 50 ns on a VM.
func (e *Engine) now() int64 { return e.seconds() - e.started }

// realtime converts a raw client exptime to relative seconds exactly as
// memcached's realtime(EXPTIME_TO_POSITIVE_TIME(raw)) does: 0 stays 0 (never),
// a negative exptime becomes relative time 1 (long past), values up to 30
// days are relative to now, larger ones are absolute unix times (at or
// before the process start: relative 1).
func (e *Engine) realtime(raw, now int64) int64 {
	if raw < 0 {
		raw = realtimeMaxDelta + 1
	}
	if raw == 0 {
		return 0
	}
	var rel int64
	if raw > realtimeMaxDelta {
		if raw <= e.started {
			return 1
		}
		rel = raw - e.started
	} else {
		rel = raw + now
	}
	return min(rel, 1<<32-1) // rel_time_t is 32 bits
}

// AbsExptime converts a raw client exptime to absolute unix seconds with
// memcached's rules: 0 = never; a result at or before now means the item is
// already expired.
func (e *Engine) AbsExptime(raw int64) int64 { return e.abs(e.realtime(raw, e.now())) }

// abs converts relative seconds to unix seconds, keeping 0 as 0.
func (e *Engine) abs(rel int64) int64 {
	if rel == 0 {
		return 0
	}
	return rel + e.started
}

// FlushAll invalidates every item stored before the flush time: now when
// delay <= 0, else the raw memcached exptime delay. As in memcached, items
// whose last store or bump is at or before one second before that time are
// invalidated once it is reached, and a flush that takes effect at once also
// invalidates every item with a smaller CAS than the next one (so items
// stored later in the same second survive). A flush consumes a CAS value
// when it takes effect within a second, as memcached's does.
//
// With a disk tier the flush marker is committed first (so a delayed flush
// still happens after a restart); FlushAll ignores a commit failure (it is
// logged and counted), Flush reports it.
func (e *Engine) FlushAll(delay int64) { e.Flush(delay) }

// Flush is FlushAll returning its outcome: OK, or DiskFull / DiskError
// when the disk tier could not persist the marker (nothing is flushed).
func (e *Engine) Flush(delay int64) Status {
	e.cmdFlush.Add(1)
	now := e.now()
	newOldest := now
	if delay > 0 {
		newOldest = e.realtime(delay, now)
	}
	oldest := newOldest - 1
	if e.tier != nil {
		return e.tier.flush(oldest, now)
	}
	e.oldestLive.Store(oldest)
	if oldest <= now {
		e.oldestCAS.Store(e.casID.Add(1))
	}
	return OK
}

// flushMark is a flush_all marker: oldestLive and oldestCAS as Flush set
// them.
type flushMark struct {
	oldestLive int64
	oldestCAS  uint64
}

// flushMark returns the current marker and whether it is in effect at now
// (a flush_all was given and its delay has passed).
func (e *Engine) flushMark(now int64) (flushMark, bool) {
	m := flushMark{e.oldestLive.Load(), e.oldestCAS.Load()}
	return m, m.oldestLive != 0 && m.oldestLive <= now
}

// flushed is memcached's item_is_flushed.
func (e *Engine) flushed(h *header, now int64) bool {
	ol := e.oldestLive.Load()
	if ol == 0 || ol > now {
		return false
	}
	oc := e.oldestCAS.Load()
	return int64(h.time) <= ol || (oc != 0 && h.cas != 0 && h.cas < oc)
}

// nextCAS is memcached's get_cas_id.
func (e *Engine) nextCAS() uint64 { return e.casID.Add(1) }

func (e *Engine) shardFor(key []byte) (*shard, uint64) {
	h := maphash.Bytes(e.seed, key)
	return &e.shards[h>>e.shardShift], h
}
