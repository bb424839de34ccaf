package engine

import (
	"log/slog"
	"time"

	"github.com/tcache/tcache/internal/clock"
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
}

// Stats are the engine's counters, named after memcached's `stats` keys.
type Stats struct {
	CmdGet, GetHits, GetMisses, GetExpired, GetFlushed uint64
	CmdSet                                             uint64
	CmdTouch, TouchHits, TouchMisses                   uint64
	DeleteHits, DeleteMisses                           uint64
	IncrHits, IncrMisses, DecrHits, DecrMisses         uint64
	CasHits, CasMisses, CasBadval                      uint64
	CmdFlush                                           uint64
	CurrItems, TotalItems                              uint64
	Bytes, LimitMaxbytes                               uint64
	Evictions, Reclaimed                               uint64
	ExpiredUnfetched, EvictedUnfetched                 uint64
	CrawlerReclaimed                                   uint64
}
