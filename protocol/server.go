package protocol

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("protocol: server closed")

// Engine is what the protocol layer needs from the storage engine.
// *engine.Engine satisfies it. Every method must be safe for concurrent use;
// keys and values passed in are borrowed for the duration of the call.
type Engine interface {
	// Get appends the value of key to dst (unless a.NoValue) and returns it.
	Get(dst, key []byte, a *engine.GetArgs) (value []byte, info engine.ItemInfo, found bool)
	// Store stores value under key and returns the new CAS on OK.
	Store(key, value []byte, a *engine.StoreArgs) (engine.Status, uint64)
	// Arith increments or decrements a decimal value.
	Arith(key []byte, a *engine.ArithArgs) (uint64, engine.ItemInfo, engine.Status)
	// Delete removes (or invalidates) key.
	Delete(key []byte, a *engine.DeleteArgs) engine.Status
	// Touch sets the expiry of key (raw memcached exptime).
	Touch(key []byte, exptime int64) engine.Status
	// GetMulti looks several keys up as Get does and calls fn once per key,
	// in order (the value is valid until fn returns); m is reusable state
	// kept by the caller (one per connection).
	GetMulti(m *engine.MultiGet, keys [][]byte, a *engine.GetArgs, fn func(i int, value []byte, info engine.ItemInfo, found bool))
	// Flush invalidates every item stored before now+delay (raw exptime):
	// OK, or DiskFull/DiskError when the disk tier could not persist it.
	Flush(delay int64) engine.Status
	// Stats returns the engine's counters; ResetStats zeroes the resettable ones.
	Stats() engine.Stats
	ResetStats()
	// MaxItemSize is the largest item the engine accepts (memcached -I).
	MaxItemSize() int
}

// itemsStatser is implemented by engines that describe their RAM tier as
// one pseudo slab class (`stats items`, `stats slabs`); *engine.Engine does.
type itemsStatser interface {
	ItemsStats() engine.ItemsStats
}

// itemsStats returns the engine's ItemsStats, or zero values.
func (s *Server) itemsStats() engine.ItemsStats {
	if is, ok := s.eng.(itemsStatser); ok {
		return is.ItemsStats()
	}
	return engine.ItemsStats{}
}

// diskStatser is implemented by engines with a disk tier (*engine.Engine):
// ok is false in memory mode, and `stats` then keeps memcached's keys.
type diskStatser interface {
	DiskStats() (lsm.Stats, bool)
}

// diskStats returns the engine's disk figures, and false without a disk.
func (s *Server) diskStats() (lsm.Stats, bool) {
	if ds, ok := s.eng.(diskStatser); ok {
		return ds.DiskStats()
	}
	return lsm.Stats{}, false
}

// memoryStatser is implemented by engines that report their arena
// (total_malloced in `stats slabs`).
type memoryStatser interface {
	MemoryStats() (reserved, used uint64)
}

// Options configure a Server. Call EnsureDefaults then Validate (NewServer
// does both).
type Options struct {
	// MaxConns is the most client connections served at once (memcached -c).
	// A connection beyond it is answered "ERROR Too many open connections"
	// and closed, as memcached does. Default 1024.
	MaxConns int
	// IdleTimeout closes clients idle this long (memcached -o idle_timeout).
	// Default 0: never.
	IdleTimeout time.Duration
	// Threads is reported as stat `threads` and in `stats settings`
	// (num_threads); tcache runs one goroutine per connection. Default 4.
	Threads int
	// Verbosity is memcached's -v count; the `verbosity` command changes it.
	// Default 0.
	Verbosity int
	// TCPPort is reported in `stats settings` (tcpport). Default 0.
	TCPPort int
	// ListenAddrs are reported in `stats settings` (inter). Default none.
	ListenAddrs []string
	// Version is tcache's own version, reported as stat tcache_version.
	// Default "dev".
	Version string
	// Logger receives connection errors and panics. Default slog.Default().
	Logger *slog.Logger
	// Clock tells the time for uptime and stats. Default clock.Real{}.
	Clock clock.Clock
	// Protocol is the protocol clients may speak (memcached -B): "auto"
	// (text or binary, decided per connection by its first byte: 0x80 is
	// binary), "ascii" (text and meta only; a binary frame is read as text)
	// or "binary" (binary only; anything else closes the connection).
	// Default "auto".
	Protocol string
	// Storage describes the storage configuration for `stats settings`
	// (tcache_mode, tcache_durability, tcache_disk_limit). Informational
	// only. Default: nothing reported.
	Storage StorageSettings
	// ExtraStats, when set, is called at the end of the general `stats`
	// (text and binary protocol) to add figures of components the protocol
	// layer does not know: cmd/tcache adds replication's (repl_*). It runs
	// on the connection's goroutine and must not block. Default none.
	ExtraStats func(w StatWriter)
}

// StatWriter receives stats from Options.ExtraStats, one name and value at
// a time; names are written as given ("repl_node_id").
type StatWriter interface {
	Str(name, value string)
	Uint(name string, v uint64)
	Int(name string, v int64)
}

// StorageSettings are the storage settings `stats settings` reports.
type StorageSettings struct {
	Mode       string // memory, cache or persistent; "" = not reported
	Durability string // sync, interval or none (disk modes)
	DiskLimit  int64  // bytes (disk modes)
}

// EnsureDefaults fills unset fields with their defaults.
func (o *Options) EnsureDefaults() {
	if o.MaxConns == 0 {
		o.MaxConns = 1024
	}
	if o.Threads == 0 {
		o.Threads = 4
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Protocol == "" {
		o.Protocol = ProtocolAuto
	}
}

// Validate reports the first invalid field.
func (o *Options) Validate() error {
	switch {
	case o.MaxConns < 1:
		return fmt.Errorf("protocol: MaxConns must be at least 1, got %d", o.MaxConns)
	case o.IdleTimeout < 0:
		return fmt.Errorf("protocol: IdleTimeout must not be negative, got %v", o.IdleTimeout)
	case o.Threads < 1:
		return fmt.Errorf("protocol: Threads must be at least 1, got %d", o.Threads)
	case o.Verbosity < 0:
		return fmt.Errorf("protocol: Verbosity must not be negative, got %d", o.Verbosity)
	case o.TCPPort < 0 || o.TCPPort > 65535:
		return fmt.Errorf("protocol: TCPPort must be in 0..65535, got %d", o.TCPPort)
	case o.Protocol != ProtocolAuto && o.Protocol != ProtocolASCII && o.Protocol != ProtocolBinary:
		return fmt.Errorf("protocol: Protocol must be auto, ascii or binary, got %q", o.Protocol)
	}
	return nil
}

// Server serves the memcached protocols to TCP clients, one goroutine per
// connection.
type Server struct {
	opts    Options
	eng     Engine
	log     *slog.Logger
	started time.Time    // for uptime
	seconds func() int64 // the unix second: clock.Seconds(opts.Clock), read by every command
	pid     int

	verbosity atomic.Int32
	closing   atomic.Bool
	nextID    atomic.Uint64

	// Counters of `stats` that belong to the connection layer.
	currConns      atomic.Int64
	totalConns     atomic.Uint64
	rejectedConns  atomic.Uint64
	connStructs    atomic.Int64 // high-water mark of connections + listeners
	bytesRead      atomic.Uint64
	bytesWritten   atomic.Uint64
	listenersCount atomic.Int64
	// storeTooLarge counts data blocks refused before reaching the engine
	// (longer than the item size limit); the engine counts the others.
	storeTooLarge atomic.Uint64
	// cmdMeta counts meta commands (stat cmd_meta); dispatch bumps it.
	cmdMeta atomic.Uint64
	// crawlerOff is set by `lru_crawler disable` (memcached's
	// settings.lru_crawler, inverted so the zero value is enabled).
	crawlerOff atomic.Bool

	// sasl authenticates binary-protocol clients; nil: SASL off (the only
	// mode today; see saslAuthenticator).
	sasl saslAuthenticator

	readers sync.Pool // *bufio.Reader
	writers sync.Pool // *bufio.Writer

	mu struct {
		sync.Mutex
		listeners map[net.Listener]uint64 // id for stats conns; guarded by mu
		conns     map[*conn]struct{}      // guarded by mu
	}
	done chan struct{} // closed when the last conn has gone after Shutdown
}

const (
	readBufSize  = 16 << 10
	writeBufSize = 16 << 10
)

// NewServer returns a server over eng. It does not listen: call Serve.
func NewServer(opts Options, eng Engine) (*Server, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if eng == nil {
		return nil, errors.New("protocol: nil engine")
	}
	s := &Server{opts: opts, eng: eng, log: opts.Logger, started: opts.Clock.Now(), pid: os.Getpid(),
		seconds: clock.Seconds(opts.Clock)}
	s.verbosity.Store(int32(opts.Verbosity))
	s.mu.listeners = map[net.Listener]uint64{}
	s.mu.conns = map[*conn]struct{}{}
	s.readers.New = func() any { return bufio.NewReaderSize(nil, readBufSize) }
	s.writers.New = func() any { return bufio.NewWriterSize(nil, writeBufSize) }
	return s, nil
}

// Serve accepts connections on ln until Shutdown, and then returns
// ErrServerClosed. It may run for several listeners at once. Temporary accept
// errors are retried with backoff.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.mu.listeners[ln] = s.nextID.Add(1)
	s.mu.Unlock()
	s.listenersCount.Add(1)
	s.bumpConnStructs()
	defer func() {
		s.mu.Lock()
		delete(s.mu.listeners, ln)
		s.mu.Unlock()
		s.listenersCount.Add(-1)
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("protocol: accept error; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("protocol: accept: %w", err)
		}
		backoff = 0
		if s.currConns.Load() >= int64(s.opts.MaxConns) {
			// memcached 1.6 (maxconns_fast): answer and close at once.
			s.rejectedConns.Add(1)
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write(errTooManyConns)
			nc.Close()
			continue
		}
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			return ErrServerClosed
		}
		s.totalConns.Add(1)
		go c.serve()
	}
}

// isTemporary reports accept errors worth retrying (EMFILE, ECONNABORTED...).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) bumpConnStructs() {
	n := s.currConns.Load() + s.listenersCount.Load()
	for {
		old := s.connStructs.Load()
		if n <= old || s.connStructs.CompareAndSwap(old, n) {
			return
		}
	}
}

// newConn registers a connection; nil if the server is shutting down.
func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{srv: s, eng: s.eng, nc: nc, id: s.nextID.Add(1)}
	c.lastCmd.Store(s.seconds())
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return nil
	}
	s.mu.conns[c] = struct{}{}
	s.mu.Unlock()
	s.currConns.Add(1)
	s.bumpConnStructs()
	c.r = s.readers.Get().(*bufio.Reader)
	c.r.Reset(c)
	c.w = s.writers.Get().(*bufio.Writer)
	c.w.Reset(connWriter{c})
	return c
}

// removeConn unregisters c and returns its buffers to the pools.
func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.mu.conns, c)
	last := len(s.mu.conns) == 0
	done := s.done
	s.mu.Unlock()
	s.currConns.Add(-1)
	c.r.Reset(nil)
	s.readers.Put(c.r)
	c.w.Reset(nil)
	s.writers.Put(c.w)
	if last && done != nil {
		select {
		case <-done:
		default:
			close(done)
		}
	}
}

// Shutdown stops accepting, lets every connection answer the requests
// already in its read buffer, flushes and closes it. At ctx's deadline the
// remaining connections are closed by force and ctx.Err() is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	if s.done == nil {
		s.done = make(chan struct{})
		if len(s.mu.conns) == 0 {
			close(s.done)
		}
	}
	done := s.done
	for ln := range s.mu.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.mu.conns))
	for c := range s.mu.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.interrupt()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.mu.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// logPanic logs a recovered panic with its stack.
func (s *Server) logPanic(c *conn, v any) {
	s.log.Error("protocol: panic serving connection", "conn", c.id, "remote", c.remoteAddr(), "panic", v, "stack", string(debug.Stack()))
}
