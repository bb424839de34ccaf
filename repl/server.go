package repl

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("repl: server closed")

// Server is the source side of links: it serves this node's log to the
// peers that pull it. One goroutine streams per connection; a second one
// reads the puller's ACKs and heartbeats. Safe for concurrent use.
type Server struct {
	local Local
	opts  Options
	log   *slog.Logger

	refused  atomic.Uint64 // connections closed before streaming began
	panics   atomic.Uint64 // sessions that ended in a recovered panic
	sessions sync.WaitGroup

	mu struct {
		sync.Mutex
		closed    bool
		listeners map[net.Listener]struct{}
		conns     map[net.Conn]struct{}
		pullers   map[uint64]*pullerStats // by node id
	}
}

// pullerStats is what the server knows of one peer pulling this node's log.
type pullerStats struct {
	acked     atomic.Uint64 // the peer's applied seq of our log, from its ACKs
	bytesOut  atomic.Uint64
	bytesIn   atomic.Uint64
	sessions  atomic.Uint64
	resyncs   atomic.Uint64 // full resyncs served
	active    atomic.Int32
	bufferMax atomic.Int64 // high-water mark of a session's chunk buffer
}

// NewServer returns a server of local's log. opts gets its defaults.
func NewServer(local Local, opts Options) (*Server, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Server{local: local, opts: opts, log: opts.Logger.With("component", "repl-server")}
	s.mu.listeners = make(map[net.Listener]struct{})
	s.mu.conns = make(map[net.Conn]struct{})
	s.mu.pullers = make(map[uint64]*pullerStats)
	return s, nil
}

// Serve accepts links on ln until ln fails or Close is called (then it
// returns ErrServerClosed). Temporary accept errors are retried with
// backoff. With Options.TLS every connection is wrapped in TLS.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.mu.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("repl: accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("repl: accept: %w", err)
		}
		delay = 0
		if !s.track(c) {
			_ = c.Close()
			return ErrServerClosed
		}
		go s.serveConn(c)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.closed
}

// track registers a session of c; false after Close.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return false
	}
	s.mu.conns[c] = struct{}{}
	s.sessions.Add(1) // under mu: before Close's Wait
	return true
}

// Close stops every listener and closes every session, and waits for the
// session goroutines (each ends at once: its connection is closed).
func (s *Server) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.closed = true
	for ln := range s.mu.listeners {
		_ = ln.Close()
	}
	for c := range s.mu.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.sessions.Wait()
	return nil
}

// Refused counts connections closed before streaming began (bad frames,
// wrong secret, self links).
func (s *Server) Refused() uint64 { return s.refused.Load() }

func (s *Server) puller(id uint64) *pullerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mu.pullers[id]
	if p == nil {
		p = &pullerStats{}
		s.mu.pullers[id] = p
	}
	return p
}

// pullerSnapshot copies the per-puller counters, by node id.
func (s *Server) pullerSnapshot() map[uint64]servedStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint64]servedStats, len(s.mu.pullers))
	for id, p := range s.mu.pullers {
		out[id] = servedStats{
			acked: p.acked.Load(), bytesOut: p.bytesOut.Load(), bytesIn: p.bytesIn.Load(),
			resyncs: p.resyncs.Load(), active: p.active.Load() > 0, bufferMax: p.bufferMax.Load(),
		}
	}
	return out
}

type servedStats struct {
	acked, bytesOut, bytesIn, resyncs uint64
	active                            bool
	bufferMax                         int64
}

// srcSession is one connection of a puller.
type srcSession struct {
	s       *Server
	conn    net.Conn
	fr      *frameReader
	fb      frameBuf
	peer    uint64
	stats   *pullerStats
	hbDue   time.Time
	lastOut uint64        // the last seq shipped (ENTRY or PROGRESS)
	offset  int64         // the puller's HELLO time minus ours at receipt, ms
	done    chan struct{} // closed when the ACK reader ends
}

func (s *Server) serveConn(raw net.Conn) {
	defer s.sessions.Done()
	defer func() {
		s.mu.Lock()
		delete(s.mu.conns, raw)
		s.mu.Unlock()
		_ = raw.Close()
	}()
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			s.log.Error("repl: panic serving a link", "remote", raw.RemoteAddr().String(), "panic", r, "stack", string(debug.Stack()))
		}
	}()
	ss := &srcSession{s: s}
	err := ss.run(raw)
	remote := raw.RemoteAddr().String()
	switch {
	case ss.stats == nil || errors.Is(err, ErrAuth):
		s.refused.Add(1)
		if b := s.opts.MaxClockSkew; skewBeyond(ss.offset, b) {
			// The puller most likely closed the link for clock skew.
			s.log.Warn("repl: refused a link: the puller's clock is off by more than replication.max_clock_skew",
				"remote", remote, "peer_clock_offset_ms", ss.offset, "max_clock_skew", b.String(), "err", err)
			break
		}
		s.log.Warn("repl: refused a link", "remote", remote, "err", err)
	case err != nil && !s.isClosed():
		s.log.Info("repl: link to a puller ended", "remote", remote, "peer", fmt.Sprintf("%016x", ss.peer), "err", err)
	}
}

func (ss *srcSession) run(raw net.Conn) error {
	s := ss.s
	conn := raw
	if s.opts.TLS != nil {
		conn = tlsServer(raw, s.opts.TLS)
	}
	mc := &meteredConn{Conn: conn}
	ss.conn = mc
	ss.fr = newFrameReader(mc, s.opts.MaxRecordSize)
	if err := conn.SetDeadline(time.Now().Add(s.opts.Timeout)); err != nil {
		return err
	}
	var in helloMsg
	if err := ss.expect(frameHello, func(p []byte) error { return in.decode(p) }); err != nil {
		return err
	}
	haveSecret := len(s.opts.Secret) > 0
	hists := s.local.Histories()
	if len(hists) == 0 {
		return fmt.Errorf("%w: local store has no history", ErrProtocol)
	}
	// The puller judges the clock skew (it applies our records and it can
	// bound the delay by its round trip); we note the offset for the log.
	now := unixMillis(s.opts.Clock)
	ss.offset = int64(in.now) - now
	out := helloMsg{version: protocolVersion, node: s.local.NodeID(), history: hists[len(hists)-1].ID, lastSeq: s.local.LastSeq(), now: uint64(now)}
	if haveSecret {
		out.flags = helloFlagSecret
	}
	if _, err := rand.Read(out.nonce[:]); err != nil {
		return err
	}
	ss.fb.hello(&out)
	if err := ss.flush(); err != nil {
		return err
	}
	// Our HELLO went first so that the puller can tell what is wrong too.
	switch {
	case in.node == s.local.NodeID():
		return ErrSelfLink
	case (in.flags&helloFlagSecret != 0) != haveSecret:
		return fmt.Errorf("%w: puller secret configured %v, ours %v", ErrAuth, in.flags&helloFlagSecret != 0, haveSecret)
	}
	if haveSecret {
		var want, got [macLen]byte
		authMAC(want[:], s.opts.Secret, "pull", &in.nonce, &out.nonce, in.node, out.node)
		if err := ss.expect(frameAuth, func(p []byte) error {
			if len(p) != macLen {
				return fmt.Errorf("%w: AUTH of %d bytes", ErrProtocol, len(p))
			}
			copy(got[:], p)
			return nil
		}); err != nil {
			return err
		}
		if !hmac.Equal(want[:], got[:]) {
			return fmt.Errorf("%w: wrong proof from node %016x", ErrAuth, in.node)
		}
		ss.fb.auth(authMAC(want[:], s.opts.Secret, "serve", &in.nonce, &out.nonce, in.node, out.node))
		if err := ss.flush(); err != nil {
			return err
		}
	}
	var hist, from uint64
	if err := ss.expect(framePull, func(p []byte) error { return decodeU64s(framePull, p, &hist, &from) }); err != nil {
		return err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return err
	}
	ss.peer = in.node
	ss.stats = s.puller(in.node)
	ss.stats.sessions.Add(1)
	ss.stats.active.Add(1)
	defer ss.stats.active.Add(-1)
	mc.in, mc.out = &ss.stats.bytesIn, &ss.stats.bytesOut
	mc.in.Add(mc.early.in.Load())
	mc.out.Add(mc.early.out.Load())

	readerDone := make(chan error, 1)
	ss.done = make(chan struct{})
	go func() {
		err := ss.readAcks()
		close(ss.done)
		readerDone <- err
	}()
	err := ss.ship(hists, hist, from)
	_ = conn.Close()
	if rerr := <-readerDone; err == nil || errors.Is(err, net.ErrClosed) {
		err = rerr
	}
	return err
}

// expect reads one frame of type t and decodes it with dec.
func (ss *srcSession) expect(t frameType, dec func(p []byte) error) error {
	got, p, err := ss.fr.next()
	if err != nil {
		return err
	}
	if got != t {
		return fmt.Errorf("%w: got %s, want %s", ErrProtocol, got, t)
	}
	return dec(p)
}

// flush writes the frame buffer, bounded by Timeout, and resets it.
func (ss *srcSession) flush() error {
	if len(ss.fb.buf) == 0 {
		return nil
	}
	if ss.stats != nil {
		if n := int64(cap(ss.fb.buf)); n > ss.stats.bufferMax.Load() {
			ss.stats.bufferMax.Store(n)
		}
	}
	if err := ss.conn.SetWriteDeadline(time.Now().Add(ss.s.opts.Timeout)); err != nil {
		return err
	}
	_, err := ss.conn.Write(ss.fb.buf)
	ss.fb.reset()
	return err
}

// readAcks reads the puller's ACK and HEARTBEAT frames until the link
// fails or stays silent for Timeout; then it closes the connection.
func (ss *srcSession) readAcks() error {
	defer ss.conn.Close()
	for {
		if err := ss.conn.SetReadDeadline(time.Now().Add(ss.s.opts.Timeout)); err != nil {
			return err
		}
		t, p, err := ss.fr.next()
		if err != nil {
			return err
		}
		var seq, ms uint64
		switch t {
		case frameAck:
			err = decodeU64s(t, p, &seq)
		case frameHeartbeat:
			err = decodeU64s(t, p, &seq, &ms)
		default:
			err = fmt.Errorf("%w: %s from a puller", ErrProtocol, t)
		}
		if err != nil {
			return err
		}
		ss.stats.acked.Store(seq)
	}
}

// heartbeat appends a HEARTBEAT when one is due.
func (ss *srcSession) heartbeat(now time.Time) {
	if now.Before(ss.hbDue) {
		return
	}
	ss.hbDue = now.Add(ss.s.opts.HeartbeatInterval)
	ss.fb.u64s(frameHeartbeat, ss.s.local.LastSeq(), uint64(ss.s.opts.Clock.Now().UnixMilli()))
}

// ship answers the PULL and streams until the connection fails.
func (ss *srcSession) ship(hists []History, hist, from uint64) error {
	s := ss.s
	local := s.local
	d := decidePull(hists, local.LastSeq(), hist, from)
	if d.stream {
		// Read the first chunk before answering: a trimmed log turns the
		// answer into RESYNC.
		ss.fb.stream(from, local.LastSeq(), historiesFrom(hists, from))
		next, err := ss.readChunk(from)
		switch {
		case errors.Is(err, ErrLogTrimmed):
			ss.fb.reset()
			d = pullDecision{reason: err.Error()}
		case err != nil:
			return err
		default:
			s.log.Info("repl: streaming to a puller", "peer", fmt.Sprintf("%016x", ss.peer), "from", from)
			if err := ss.flush(); err != nil {
				return err
			}
			return ss.streamFrom(next)
		}
	}
	s.log.Info("repl: full resync of a puller", "peer", fmt.Sprintf("%016x", ss.peer), "pull_from", from, "reason", d.reason)
	ss.stats.resyncs.Add(1)
	ss.fb.u64s(frameResync, hists[len(hists)-1].ID, local.LastSeq())
	var count uint64
	h, seq, err := local.Snapshot(func(e Entry) error {
		if err := ss.checkSize(&e); err != nil {
			return err
		}
		e.Seq = 0
		ss.fb.entry(frameSnap, &e)
		count++
		ss.heartbeat(time.Now())
		if len(ss.fb.buf) >= s.opts.ChunkBytes {
			return ss.flush()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("repl: snapshot: %w", err)
	}
	ss.fb.u64s(frameSnapEnd, h.ID, seq, count)
	if err := ss.flush(); err != nil {
		return err
	}
	return ss.streamFrom(seq + 1)
}

func (ss *srcSession) checkSize(e *Entry) error {
	if len(e.Record) > ss.s.opts.MaxRecordSize || len(e.Key) > maxKeyLen {
		return fmt.Errorf("repl: record of key %q is %d bytes, above MaxRecordSize %d", e.Key, len(e.Record), ss.s.opts.MaxRecordSize)
	}
	return nil
}

// maxChunkEntries bounds the log entries one readChunk visits. Bytes alone
// are not a bound: an entry whose key was overwritten since ships nothing,
// yet costs a disk read to find that out, and after an outage most of a
// backlog can be such entries. Without this bound one chunk could walk the
// whole backlog, starving PROGRESS and heartbeats and holding up Close.
const maxChunkEntries = 4096

// readChunk appends the log from `from` on to the frame buffer, up to
// about ChunkBytes or maxChunkEntries entries, and returns the next seq to
// read. It stops early once the session is ending.
func (ss *srcSession) readChunk(from uint64) (uint64, error) {
	limit := ss.s.opts.ChunkBytes
	last := from - 1
	visited := 0
	var sizeErr error
	_, err := ss.s.local.ReadLog(from, func(e Entry) bool {
		select {
		case <-ss.done:
			return false
		default:
		}
		if e.Seq <= last {
			sizeErr = fmt.Errorf("%w: local log passed seq %d after %d", ErrProtocol, e.Seq, last)
			return false
		}
		if e.Record != nil {
			if sizeErr = ss.checkSize(&e); sizeErr != nil {
				return false
			}
			ss.fb.entry(frameEntry, &e)
			ss.lastOut = e.Seq
		}
		last = e.Seq
		visited++
		return len(ss.fb.buf) < limit && visited < maxChunkEntries
	})
	if err == nil {
		err = sizeErr
	}
	if err != nil {
		return from, err
	}
	if last > ss.lastOut {
		ss.fb.u64s(frameProgress, last)
		ss.lastOut = last
	}
	return last + 1, nil
}

// streamFrom ships the log from next on until the connection fails. When
// it has shipped everything it sleeps until the local log grows
// (Local.LogChanged), its next HEARTBEAT is due, or the session ends: an
// idle source wakes once per HeartbeatInterval, not on a poll timer. The
// heartbeat wake-up re-reads LastSeq too, so even a missed notification
// delays shipping by at most HeartbeatInterval.
func (ss *srcSession) streamFrom(next uint64) error {
	s := ss.s
	idle := time.NewTimer(s.opts.HeartbeatInterval)
	defer idle.Stop()
	for {
		ss.heartbeat(time.Now())
		before := next
		more := s.local.LastSeq() >= next
		if more {
			var err error
			if next, err = ss.readChunk(next); err != nil {
				return err
			}
		}
		if err := ss.flush(); err != nil {
			return err
		}
		if next != before {
			continue
		}
		// Nothing shipped. When the log had nothing new, wait for it to
		// grow: take the channel, then re-read LastSeq (an advance in
		// between closes the channel or shows here). When it had more but
		// ReadLog passed none (the session is ending, or LastSeq runs
		// ahead of what ReadLog returns), only the timer or the end of the
		// session wakes us: never spin.
		var changed <-chan struct{}
		if !more {
			changed = s.local.LogChanged()
			if s.local.LastSeq() >= next {
				continue
			}
		}
		idle.Reset(time.Until(ss.hbDue))
		select {
		case <-ss.done:
			return nil
		case <-changed:
		case <-idle.C:
		}
	}
}

// meteredConn counts the bytes of a connection.
type meteredConn struct {
	net.Conn
	in, out *atomic.Uint64 // nil until the peer is known
	early   struct{ in, out atomic.Uint64 }
}

func (c *meteredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.in != nil {
		c.in.Add(uint64(n))
	} else {
		c.early.in.Add(uint64(n))
	}
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.out != nil {
		c.out.Add(uint64(n))
	} else {
		c.early.out.Add(uint64(n))
	}
	return n, err
}

var _ io.ReadWriter = (*meteredConn)(nil)

func tlsServer(c net.Conn, cfg *tls.Config) net.Conn { return tls.Server(c, cfg) }
