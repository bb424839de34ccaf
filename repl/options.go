package repl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/tcache/tcache/internal/clock"
)

// Defaults of Options.
const (
	DefaultListen            = ":11212"
	DefaultHeartbeatInterval = time.Second
	DefaultTimeout           = 5 * time.Second
	DefaultBackoffMin        = 100 * time.Millisecond
	DefaultBackoffMax        = 5 * time.Second
	DefaultAckInterval       = 100 * time.Millisecond
	DefaultAckEntries        = 1000
	DefaultProgressInterval  = 100 * time.Millisecond
	DefaultChunkBytes        = 256 << 10
	DefaultMaxRecordSize     = 4 << 20
	DefaultMaxClockSkew      = 500 * time.Millisecond
)

// ErrInvalidOptions is wrapped by Options.Validate's errors.
var ErrInvalidOptions = errors.New("repl: invalid options")

// Options configure a Node (and its Server and Links). The zero value of a
// field means its default; call EnsureDefaults then Validate (New does both).
type Options struct {
	// Listen is the replication address Node.Start listens on when it is not
	// given a listener (repcached's -X). Default ":11212".
	Listen string
	// Peers are the addresses (host:port) of the nodes this node pulls
	// from, one Link each. Default none (the node only serves).
	Peers []string
	// Secret, when set, must be the same on every node: each side of a link
	// proves it knows it (HMAC-SHA256 over both nonces and node ids) before
	// any data flows. Both sides must have one or neither. Default none.
	Secret []byte
	// TLS, when set, wraps every link: the Server uses it as a server
	// config (it needs a certificate; set ClientAuth and ClientCAs to
	// require client certificates), Links use a clone as a client config
	// with ServerName set from the peer address when empty. Default nil:
	// plain TCP.
	TLS *tls.Config
	// HeartbeatInterval is how often each side sends a HEARTBEAT. Default 1s.
	// It is also the source's fallback wake-up: a source that has shipped
	// its whole log waits for Local.LogChanged and otherwise sleeps until
	// its next HEARTBEAT, when it re-reads LastSeq, so a missed
	// notification delays shipping by at most this long.
	HeartbeatInterval time.Duration
	// Timeout closes a link that was silent this long; it also bounds a
	// dial, a handshake and a blocked write. Default 5s. Must exceed
	// HeartbeatInterval.
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential delay
	// before a Link redials. Defaults 100ms and 5s.
	BackoffMin, BackoffMax time.Duration
	// AckInterval and AckEntries: a puller sends an ACK with its applied
	// seq at least this often while it applies, and after this many
	// entries. Defaults 100ms and 1000.
	AckInterval time.Duration
	AckEntries  int
	// ProgressInterval coalesces the offsets a puller stores for PROGRESS
	// frames (skipped entries): at most one SetApplied per interval.
	// Default 100ms.
	ProgressInterval time.Duration
	// ChunkBytes bounds what a source reads from its log (or snapshot)
	// before writing it to the socket: a slow puller makes it wait on TCP,
	// never buffer more than about one chunk. Default 256 KiB.
	ChunkBytes int
	// MaxRecordSize is the largest record a link ships or accepts; a frame
	// may be this plus 64 KiB + 64 bytes. It must be the same on every
	// node and at least the largest stored record (the engine's item size
	// limit, -I). Default 4 MiB.
	MaxRecordSize int
	// MaxClockSkew is the largest offset between this node's wall clock
	// and a peer's that a link accepts: at the handshake a Link estimates
	// the peer's offset from the clock in its HELLO (bounded by the
	// handshake's round trip) and refuses the peer when it is beyond, and
	// while streaming it closes the link when a peer's HEARTBEAT shows its
	// clock ahead by more (a refused link retries with the usual backoff).
	// A peer far ahead would otherwise win every last-writer-wins conflict
	// and drag every node's HLC along. Default 500ms (CockroachDB's
	// default max offset); negative: no check.
	MaxClockSkew time.Duration
	// Dial opens a connection to a peer. Default a net.Dialer bounded by
	// Timeout. Tests substitute an in-memory network.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Logger receives link events (connects, drops, refusals). Default:
	// discard.
	Logger *slog.Logger
	// Clock is the wall clock of HELLO and HEARTBEAT times, of the clock
	// skew check and of lag in milliseconds (timers and deadlines use real
	// time). Default clock.Real.
	Clock clock.Clock
}

// EnsureDefaults fills every zero field with its default and returns o.
func (o *Options) EnsureDefaults() *Options {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.BackoffMin == 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.AckInterval == 0 {
		o.AckInterval = DefaultAckInterval
	}
	if o.AckEntries == 0 {
		o.AckEntries = DefaultAckEntries
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.ChunkBytes == 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	if o.MaxRecordSize == 0 {
		o.MaxRecordSize = DefaultMaxRecordSize
	}
	if o.MaxClockSkew == 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}
	if o.Dial == nil {
		timeout := o.Timeout
		o.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	return o
}

// Validate reports the first invalid field.
func (o *Options) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, a...)...)
	}
	seen := make(map[string]bool, len(o.Peers))
	for _, p := range o.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return bad("peer %q is not host:port: %v", p, err)
		}
		if seen[p] {
			return bad("peer %q is listed twice", p)
		}
		seen[p] = true
	}
	switch {
	case o.HeartbeatInterval <= 0:
		return bad("HeartbeatInterval %v must be positive", o.HeartbeatInterval)
	case o.Timeout <= o.HeartbeatInterval:
		return bad("Timeout %v must exceed HeartbeatInterval %v", o.Timeout, o.HeartbeatInterval)
	case o.BackoffMin <= 0 || o.BackoffMax < o.BackoffMin:
		return bad("backoff bounds %v..%v", o.BackoffMin, o.BackoffMax)
	case o.AckInterval <= 0 || o.AckEntries <= 0:
		return bad("AckInterval %v and AckEntries %d must be positive", o.AckInterval, o.AckEntries)
	case o.ProgressInterval <= 0:
		return bad("ProgressInterval %v must be positive", o.ProgressInterval)
	case o.ChunkBytes < 4<<10:
		return bad("ChunkBytes %d is below 4 KiB", o.ChunkBytes)
	case o.MaxRecordSize < 1<<10 || o.MaxRecordSize > 1<<31-1-frameOverhead:
		return bad("MaxRecordSize %d out of range", o.MaxRecordSize)
	case o.Dial == nil || o.Logger == nil || o.Clock == nil:
		return bad("Dial, Logger and Clock must be set (call EnsureDefaults)")
	case o.TLS != nil && o.TLS.Certificates == nil && o.TLS.GetCertificate == nil && o.Listen != "":
		return bad("TLS has no server certificate")
	}
	return nil
}
