package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Protocol names, as memtier_benchmark spells them.
const (
	ProtocolText   = "memcache_text"
	ProtocolMeta   = "memcache_meta"
	ProtocolBinary = "memcache_binary"
)

// ErrInvalidOptions is wrapped by every error Validate returns.
var ErrInvalidOptions = errors.New("bench: invalid options")

// Pattern is a key pattern: how a connection picks the next key.
type Pattern byte

// Key patterns (memtier's letters, plus Z).
const (
	// Random picks keys uniformly in [KeyMinimum, KeyMaximum].
	Random Pattern = 'R'
	// Sequential walks KeyMinimum, KeyMinimum+1, … KeyMaximum and wraps;
	// every connection walks the whole range from the start.
	Sequential Pattern = 'S'
	// Gaussian draws keys from a normal distribution around KeyMedian with
	// KeyStddev, redrawing values outside the range.
	Gaussian Pattern = 'G'
	// Parallel splits the range into one contiguous part per connection; each
	// connection walks its own part sequentially and wraps.
	Parallel Pattern = 'P'
	// Zipfian gives key KeyMinimum+r-1 the probability ∝ 1/r^KeyZipfExp: the
	// smallest keys are the hottest.
	Zipfian Pattern = 'Z'
)

// Options describe one load run. The zero value of a field means its default
// (DefaultOptions holds them all); Validate checks the whole.
type Options struct {
	// Servers are the host:port addresses to load. With more than one, keys are
	// placed with ketama consistent hashing and every client opens one
	// connection per server. Default ["127.0.0.1:11211"].
	Servers []string
	// Protocol is ProtocolText (default), ProtocolMeta or ProtocolBinary.
	Protocol string
	// Threads × Clients is the number of clients (connections per server).
	// Threads default 4, Clients default 50 (memtier's defaults).
	Threads int
	Clients int
	// SetRatio:GetRatio is the command mix, scheduled deterministically per
	// connection: of every SetRatio+GetRatio requests the first SetRatio are
	// sets. Default 1:10.
	SetRatio, GetRatio int
	// Pipeline is the number of requests in flight per connection. Default 1.
	Pipeline int
	// DataSizeMin..DataSizeMax is the value size of sets in bytes (uniform);
	// equal for a fixed size. Default 32..32.
	DataSizeMin, DataSizeMax int
	// SetPattern and GetPattern pick the keys of sets and gets. Default R:R.
	SetPattern, GetPattern Pattern
	// KeyPrefix is prepended to the decimal key number. Default "memtier-".
	KeyPrefix string
	// KeyMinimum..KeyMaximum is the key number range. Default 0..10000000.
	KeyMinimum, KeyMaximum uint64
	// KeyMedian and KeyStddev shape the Gaussian pattern. Defaults: the middle
	// of the range and a sixth of its width.
	KeyMedian, KeyStddev float64
	// KeyZipfExp is the exponent of the Zipfian pattern (> 0). Default 1.
	KeyZipfExp float64
	// Requests is the number of requests per connection; 0 with TestTime
	// set means run for TestTime. Default 10000 when TestTime is 0.
	Requests int64
	// TestTime bounds the run by time instead of a request count.
	TestTime time.Duration
	// MultiKeyGet > 1 makes every get ask for that many keys at once (one
	// command; hits and misses count keys). 0 or 1: single-key gets.
	MultiKeyGet int
	// CompressibleData makes every set send the same bytes, a repeated
	// "abc…z" (memtier without --random-data). The default (false) sends
	// incompressible values: random bytes sliced at a random offset from a
	// pool filled once per run from Seed (randomValues), so that a server
	// that compresses values or disk blocks stores what was sent.
	CompressibleData bool
	// ExpiryMin..ExpiryMax is the exptime of sets in seconds (uniform).
	// Default 0..0 (no expiry).
	ExpiryMin, ExpiryMax int
	// Seed seeds the key and size generators. With DistinctClientSeed every
	// connection derives its own seed from it; otherwise all connections draw
	// the same sequence (as memtier does).
	Seed               uint64
	DistinctClientSeed bool
	// RunCount repeats the whole run. Default 1.
	RunCount int
	// Percentiles are printed (and exported) for every command type. Default
	// 50, 99, 99.9.
	Percentiles []float64
	// HideHistogram leaves the latency distribution out of the text report.
	HideHistogram bool
	// DialTimeout bounds connecting to each server. Default 5s.
	DialTimeout time.Duration
	// IOTimeout fails a connection that gets no reply for this long.
	// Default 30s.
	IOTimeout time.Duration
	// Progress, when not nil, receives a progress line ("\r…") once a
	// second. cmd/tcache sets it when stderr is a terminal.
	Progress io.Writer
}

// DefaultOptions returns the options with every default filled in.
func DefaultOptions() Options {
	var o Options
	o.EnsureDefaults()
	return o
}

// EnsureDefaults replaces zero fields with their defaults.
func (o *Options) EnsureDefaults() {
	if len(o.Servers) == 0 {
		o.Servers = []string{"127.0.0.1:11211"}
	}
	if o.Protocol == "" {
		o.Protocol = ProtocolText
	}
	if o.Threads == 0 {
		o.Threads = 4
	}
	if o.Clients == 0 {
		o.Clients = 50
	}
	if o.SetRatio == 0 && o.GetRatio == 0 {
		o.SetRatio, o.GetRatio = 1, 10
	}
	if o.Pipeline == 0 {
		o.Pipeline = 1
	}
	if o.DataSizeMin == 0 && o.DataSizeMax == 0 {
		o.DataSizeMin, o.DataSizeMax = 32, 32
	}
	if o.SetPattern == 0 {
		o.SetPattern = Random
	}
	if o.GetPattern == 0 {
		o.GetPattern = Random
	}
	if o.KeyMaximum == 0 && o.KeyMinimum == 0 {
		o.KeyMaximum = 10_000_000
	}
	if o.KeyMedian == 0 {
		o.KeyMedian = float64(o.KeyMinimum) + float64(o.KeyMaximum-o.KeyMinimum)/2
	}
	if o.KeyStddev == 0 {
		o.KeyStddev = float64(o.KeyMaximum-o.KeyMinimum) / 6
	}
	if o.KeyZipfExp == 0 {
		o.KeyZipfExp = 1
	}
	if o.Requests == 0 && o.TestTime == 0 {
		o.Requests = 10_000
	}
	if o.RunCount == 0 {
		o.RunCount = 1
	}
	if len(o.Percentiles) == 0 {
		o.Percentiles = []float64{50, 99, 99.9}
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.IOTimeout == 0 {
		o.IOTimeout = 30 * time.Second
	}
}

// maxValueSize is the largest value a set may carry: memcached's largest
// item limit (-I 1024m) would be absurd for a load generator; 64 MiB is
// plenty and bounds the per-connection value buffer.
const maxValueSize = 64 << 20

// Validate reports the first impossible setting, wrapping ErrInvalidOptions.
// Call it after EnsureDefaults.
func (o *Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	for _, s := range o.Servers {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			return bad("server %q is not host:port", s)
		}
	}
	switch o.Protocol {
	case ProtocolText, ProtocolMeta, ProtocolBinary:
	default:
		return bad("protocol %q: want %s, %s or %s", o.Protocol, ProtocolText, ProtocolMeta, ProtocolBinary)
	}
	switch {
	case o.Threads < 1:
		return bad("threads %d: want at least 1", o.Threads)
	case o.Clients < 1:
		return bad("clients %d: want at least 1", o.Clients)
	case o.SetRatio < 0 || o.GetRatio < 0 || o.SetRatio+o.GetRatio == 0:
		return bad("ratio %d:%d: want SET:GET with non-negative numbers, not both 0", o.SetRatio, o.GetRatio)
	case o.Pipeline < 1:
		return bad("pipeline %d: want at least 1", o.Pipeline)
	case o.DataSizeMin < 1 || o.DataSizeMax < o.DataSizeMin:
		return bad("data size range %d-%d: want 1 <= min <= max", o.DataSizeMin, o.DataSizeMax)
	case o.DataSizeMax > maxValueSize:
		return bad("data size %d: at most %d", o.DataSizeMax, maxValueSize)
	case o.KeyMaximum < o.KeyMinimum:
		return bad("key-maximum %d is below key-minimum %d", o.KeyMaximum, o.KeyMinimum)
	case o.KeyStddev <= 0 || math.IsNaN(o.KeyStddev) || math.IsInf(o.KeyStddev, 0):
		return bad("key-stddev %v: want > 0", o.KeyStddev)
	case o.KeyMedian < float64(o.KeyMinimum) || o.KeyMedian > float64(o.KeyMaximum):
		return bad("key-median %v is outside the key range %d-%d", o.KeyMedian, o.KeyMinimum, o.KeyMaximum)
	case !(o.KeyZipfExp > 0) || o.KeyZipfExp > 10:
		return bad("key-zipf-exp %v: want 0 < exp <= 10", o.KeyZipfExp)
	case o.Requests < 0:
		return bad("requests %d: want >= 0", o.Requests)
	case o.TestTime < 0:
		return bad("test-time %v: want >= 0", o.TestTime)
	case o.Requests == 0 && o.TestTime == 0:
		return bad("neither requests nor test-time is set")
	case o.MultiKeyGet < 0 || o.MultiKeyGet > 1000:
		return bad("multi-key-get %d: want 0..1000", o.MultiKeyGet)
	case o.ExpiryMin < 0 || o.ExpiryMax < o.ExpiryMin:
		return bad("expiry range %d-%d: want 0 <= min <= max", o.ExpiryMin, o.ExpiryMax)
	case o.RunCount < 1:
		return bad("run-count %d: want at least 1", o.RunCount)
	case o.DialTimeout <= 0 || o.IOTimeout <= 0:
		return bad("timeouts must be positive")
	}
	for _, p := range []Pattern{o.SetPattern, o.GetPattern} {
		switch p {
		case Random, Sequential, Gaussian, Parallel, Zipfian:
		default:
			return bad("key pattern %q: want R, S, G, P or Z", string(rune(p)))
		}
	}
	for _, p := range o.Percentiles {
		if !(p > 0 && p <= 100) {
			return bad("percentile %v: want 0 < p <= 100", p)
		}
	}
	if o.connections() > 100_000 {
		return bad("%d connections (threads × clients × servers): at most 100000", o.connections())
	}
	if o.MultiKeyGet > 1 && o.KeyMaximum-o.KeyMinimum < uint64(o.MultiKeyGet-1) {
		return bad("multi-key-get %d asks for more keys than the range %d-%d holds", o.MultiKeyGet, o.KeyMinimum, o.KeyMaximum)
	}
	return nil
}

// connections is the number of TCP connections a run opens.
func (o *Options) connections() int { return o.Threads * o.Clients * len(o.Servers) }

// ParseRange parses "min-max" (two non-negative integers, min <= max), as
// --data-size-range and --expiry-range take them. It is exported for
// cmd/tcache, which owns the flags.
func ParseRange(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if ok {
		lo, err = strconv.Atoi(strings.TrimSpace(a))
		if err == nil {
			hi, err = strconv.Atoi(strings.TrimSpace(b))
		}
	}
	if !ok || err != nil || lo < 0 || hi < lo {
		return 0, 0, fmt.Errorf("%w: range %q: want MIN-MAX with 0 <= MIN <= MAX", ErrInvalidOptions, s)
	}
	return lo, hi, nil
}

// ParseRatio parses "SET:GET" (memtier's --ratio).
func ParseRatio(s string) (set, get int, err error) {
	a, b, ok := strings.Cut(s, ":")
	if ok {
		set, err = strconv.Atoi(a)
		if err == nil {
			get, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || set < 0 || get < 0 || set+get == 0 {
		return 0, 0, fmt.Errorf("%w: ratio %q: want SET:GET, e.g. 1:10, not 0:0", ErrInvalidOptions, s)
	}
	return set, get, nil
}

// ParsePatterns parses "S:G" key patterns (memtier's --key-pattern), each
// one of R, S, G, P, Z.
func ParsePatterns(s string) (set, get Pattern, err error) {
	a, b, ok := strings.Cut(s, ":")
	valid := func(x string) bool { return len(x) == 1 && strings.Contains("RSGPZ", x) }
	if !ok || !valid(a) || !valid(b) {
		return 0, 0, fmt.Errorf("%w: key pattern %q: want SET:GET with each one of R, S, G, P, Z", ErrInvalidOptions, s)
	}
	return Pattern(a[0]), Pattern(b[0]), nil
}

// ParsePercentiles parses "50,99,99.9".
func ParsePercentiles(s string) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		p, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(p > 0 && p <= 100) {
			return nil, fmt.Errorf("%w: percentiles %q: want a comma-separated list of numbers in (0, 100]", ErrInvalidOptions, s)
		}
		out = append(out, p)
	}
	return out, nil
}
