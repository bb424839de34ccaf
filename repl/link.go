package repl

import (
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcache/tcache/internal/clock"
)

// LinkState is where a Link stands.
type LinkState int32

const (
	StateConnecting LinkState = iota // dialling, or waiting to redial
	StateHandshake                   // HELLO, AUTH, PULL
	StateResyncing                   // receiving a snapshot
	StateStreaming                   // applying the peer's log
	StateStopped                     // the Node was closed
)

var stateNames = [...]string{"connecting", "handshake", "resyncing", "streaming", "stopped"}

func (s LinkState) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("LinkState(%d)", int32(s))
}

// Link pulls one configured peer's log into the local store. It dials,
// handshakes, pulls from the stored offset, applies, and redials with
// jittered exponential backoff whenever the connection ends. A Node owns
// its links; their methods are safe for concurrent use.
type Link struct {
	node *Node
	addr string
	log  *slog.Logger

	state        atomic.Int32
	peerID       atomic.Uint64 // learned in HELLO; keys the applied offsets
	applied      atomic.Uint64 // the peer's seq applied (in memory; stored at most ProgressInterval later)
	peerLast     atomic.Uint64 // the peer's last seq as last heard
	newestMillis atomic.Uint64 // version time of the newest entry applied
	bytesIn      atomic.Uint64
	bytesOut     atomic.Uint64
	resyncs      atomic.Uint64
	reconnects   atomic.Uint64
	clockOffset  atomic.Int64  // the peer's wall clock minus ours, ms, as last estimated
	skewRefused  atomic.Uint64 // sessions refused or closed for clock skew

	caughtUpOnce sync.Once
	caughtUp     chan struct{} // closed when applied first reached the peer's last seq at connect

	mu struct {
		sync.Mutex
		lastErr string // guarded by mu
	}
}

func newLink(n *Node, addr string) *Link {
	l := &Link{node: n, addr: addr, caughtUp: make(chan struct{})}
	l.log = n.log.With("peer_addr", addr)
	return l
}

// Addr is the configured peer address.
func (l *Link) Addr() string { return l.addr }

// CaughtUp is closed once the link has applied everything the peer had
// when the link first connected.
func (l *Link) CaughtUp() <-chan struct{} { return l.caughtUp }

func (l *Link) setState(s LinkState) { l.state.Store(int32(s)) }

func (l *Link) markCaughtUp(target uint64) {
	if l.applied.Load() >= target {
		l.caughtUpOnce.Do(func() { close(l.caughtUp) })
	}
}

// run is the link's loop: session, backoff, session… until ctx ends.
func (l *Link) run(ctx context.Context) {
	o := &l.node.opts
	backoff := o.BackoffMin
	wait := time.NewTimer(0)
	<-wait.C
	defer wait.Stop()
	for {
		l.setState(StateConnecting)
		streamed, err := l.session(ctx)
		if ctx.Err() != nil {
			l.setState(StateStopped)
			return
		}
		l.setState(StateConnecting)
		if err != nil {
			l.mu.Lock()
			l.mu.lastErr = err.Error()
			l.mu.Unlock()
			l.log.Warn("repl: link down", "peer", fmt.Sprintf("%016x", l.peerID.Load()), "err", err, "streamed", streamed)
		}
		if streamed {
			backoff = o.BackoffMin
		}
		l.reconnects.Add(1)
		wait.Reset(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			l.setState(StateStopped)
			return
		case <-wait.C:
		}
		backoff = min(2*backoff, o.BackoffMax)
	}
}

// session runs one connection. streamed reports that it got as far as
// applying the peer's log (the backoff then starts over).
func (l *Link) session(ctx context.Context) (streamed bool, err error) {
	n := l.node
	o := &n.opts
	local := n.local
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	raw, err := o.Dial(dctx, l.addr)
	cancel()
	if err != nil {
		return false, fmt.Errorf("repl: dial %s: %w", l.addr, err)
	}
	conn := raw
	if o.TLS != nil {
		cfg := o.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(l.addr)
		}
		conn = tls.Client(raw, cfg)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	mc := &meteredConn{Conn: conn, in: &l.bytesIn, out: &l.bytesOut}
	fr := newFrameReader(mc, o.MaxRecordSize)
	var fb frameBuf
	write := func() error {
		if err := conn.SetWriteDeadline(time.Now().Add(o.Timeout)); err != nil {
			return err
		}
		_, err := mc.Write(fb.buf)
		fb.reset()
		return err
	}
	read := func(want frameType) ([]byte, error) {
		t, p, err := fr.next()
		if err == nil && t != want {
			err = fmt.Errorf("%w: got %s, want %s", ErrProtocol, t, want)
		}
		return p, err
	}

	l.setState(StateHandshake)
	if err := conn.SetDeadline(time.Now().Add(o.Timeout)); err != nil {
		return false, err
	}
	haveSecret := len(o.Secret) > 0
	out := helloMsg{version: protocolVersion, node: local.NodeID()}
	if haveSecret {
		out.flags = helloFlagSecret
	}
	if _, err := crand.Read(out.nonce[:]); err != nil {
		return false, err
	}
	sent := unixMillis(o.Clock)
	out.now = uint64(sent)
	fb.hello(&out)
	if err := write(); err != nil {
		return false, err
	}
	var in helloMsg
	p, err := read(frameHello)
	if err == nil {
		err = in.decode(p)
	}
	if err != nil {
		return false, err
	}
	offset := clockOffset(int64(in.now), sent, unixMillis(o.Clock))
	switch {
	case in.node == out.node:
		return false, ErrSelfLink
	case (in.flags&helloFlagSecret != 0) != haveSecret:
		return false, fmt.Errorf("%w: peer secret configured %v, ours %v", ErrAuth, in.flags&helloFlagSecret != 0, haveSecret)
	}
	if haveSecret {
		var mac [macLen]byte
		fb.auth(authMAC(mac[:], o.Secret, "pull", &out.nonce, &in.nonce, out.node, in.node))
		if err := write(); err != nil {
			return false, err
		}
		p, err := read(frameAuth)
		if err != nil {
			return false, fmt.Errorf("%w: the peer closed the link after our proof (wrong secret?): %w", ErrAuth, err)
		}
		authMAC(mac[:], o.Secret, "serve", &out.nonce, &in.nonce, out.node, in.node)
		if !hmac.Equal(mac[:], p) {
			return false, fmt.Errorf("%w: wrong proof from peer %016x", ErrAuth, in.node)
		}
	}
	l.clockOffset.Store(offset)
	if err := l.checkSkew(in.node, offset); err != nil {
		return false, err
	}
	id := in.node
	if old := l.peerID.Swap(id); old != id {
		if old != 0 {
			l.log.Warn("repl: peer has a new node id: pulling it as a new peer", "old", fmt.Sprintf("%016x", old), "new", fmt.Sprintf("%016x", id))
		}
		l.newestMillis.Store(0)
	}
	if !n.claim(id, l) {
		return false, fmt.Errorf("%w: %016x", ErrDuplicatePeer, id)
	}
	defer n.release(id, l)
	hist, seq, _ := local.Applied(id)
	l.applied.Store(seq)
	l.peerLast.Store(in.lastSeq)
	fb.u64s(framePull, hist, seq+1)
	if err := write(); err != nil {
		return false, err
	}
	t, p, err := fr.next()
	if err != nil {
		return false, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return false, err
	}

	// From here on a writer goroutine sends ACKs and heartbeats, and this
	// goroutine only reads.
	wstop, wdone := make(chan struct{}), make(chan struct{})
	kick := make(chan struct{}, 1)
	go l.writeAcks(conn, mc, wstop, wdone, kick)
	defer func() {
		close(wstop)
		_ = conn.Close()
		<-wdone
	}()

	ps := pullSession{l: l, conn: conn, fr: fr, peer: id, kick: kick}
	switch t {
	case frameStream:
		var sm streamMsg
		if err := sm.decode(p); err != nil {
			return false, err
		}
		if sm.from != seq+1 {
			return false, fmt.Errorf("%w: STREAM from %d, pulled from %d", ErrProtocol, sm.from, seq+1)
		}
		ps.hists = sm.histories
		ps.target = sm.lastSeq
		l.log.Info("repl: streaming", "peer", fmt.Sprintf("%016x", id), "from", sm.from, "peer_last", sm.lastSeq)
	case frameResync:
		var h, last uint64
		if err := decodeU64s(t, p, &h, &last); err != nil {
			return false, err
		}
		l.setState(StateResyncing)
		l.resyncs.Add(1)
		l.log.Info("repl: full resync", "peer", fmt.Sprintf("%016x", id), "applied", seq, "peer_last", last)
		if err := ps.resync(h); err != nil {
			return false, err
		}
	default:
		return false, fmt.Errorf("%w: %s in answer to PULL", ErrProtocol, t)
	}
	l.peerLast.Store(max(l.peerLast.Load(), ps.target))
	l.setState(StateStreaming)
	l.markCaughtUp(ps.target)
	return true, ps.stream()
}

// pullSession is the reading half of one connection.
type pullSession struct {
	l      *Link
	conn   net.Conn
	fr     *frameReader
	peer   uint64
	hists  []History // the peer's histories from the first streamed seq on
	target uint64    // the peer's last seq when the link connected
	kick   chan struct{}

	pending     bool // applied is ahead of the stored offset (PROGRESS)
	lastPersist time.Time
	sinceAck    int
}

func (ps *pullSession) next() (frameType, []byte, error) {
	if err := ps.conn.SetReadDeadline(time.Now().Add(ps.l.node.opts.Timeout)); err != nil {
		return 0, nil, err
	}
	return ps.fr.next()
}

// resync applies SNAP records up to SNAP_END and stores its offset.
func (ps *pullSession) resync(hist uint64) error {
	local := ps.l.node.local
	var em entryMsg
	var count uint64
	for {
		t, p, err := ps.next()
		if err != nil {
			return err
		}
		switch t {
		case frameSnap:
			if err := em.decode(t, p); err != nil {
				return err
			}
			if err := local.Apply(ps.peer, hist, em.Entry); err != nil {
				return fmt.Errorf("repl: apply snapshot record: %w", err)
			}
			count++
		case frameHeartbeat:
			var last, ms uint64
			if err := decodeU64s(t, p, &last, &ms); err != nil {
				return err
			}
			ps.l.peerLast.Store(last)
		case frameSnapEnd:
			var h, s, n uint64
			if err := decodeU64s(t, p, &h, &s, &n); err != nil {
				return err
			}
			if n != count {
				return fmt.Errorf("%w: SNAP_END counts %d records, got %d", ErrProtocol, n, count)
			}
			if h == 0 {
				return fmt.Errorf("%w: SNAP_END with history 0", ErrProtocol)
			}
			if err := local.SetApplied(ps.peer, h, s); err != nil {
				return fmt.Errorf("repl: store resync offset: %w", err)
			}
			ps.l.applied.Store(s)
			ps.hists = []History{{ID: h, FirstSeq: s + 1}}
			ps.target = s
			ps.l.log.Info("repl: resync done", "peer", fmt.Sprintf("%016x", ps.peer), "records", count, "seq", s)
			return nil
		default:
			return fmt.Errorf("%w: %s during a resync", ErrProtocol, t)
		}
	}
}

// stream applies ENTRY and PROGRESS frames until the connection fails.
func (ps *pullSession) stream() (err error) {
	l := ps.l
	o := &l.node.opts
	local := l.node.local
	defer func() {
		if ps.pending {
			a := l.applied.Load()
			if serr := local.SetApplied(ps.peer, historyOf(ps.hists, a), a); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	var em entryMsg
	for {
		t, p, err := ps.next()
		if err != nil {
			return err
		}
		applied := l.applied.Load()
		switch t {
		case frameEntry:
			if err := em.decode(t, p); err != nil {
				return err
			}
			if em.Seq <= applied {
				return fmt.Errorf("%w: ENTRY %d after %d", ErrProtocol, em.Seq, applied)
			}
			if err := local.Apply(ps.peer, historyOf(ps.hists, em.Seq), em.Entry); err != nil {
				return fmt.Errorf("repl: apply entry %d: %w", em.Seq, err)
			}
			l.applied.Store(em.Seq)
			if em.Millis != 0 {
				l.newestMillis.Store(em.Millis)
			}
			if em.Seq > l.peerLast.Load() {
				l.peerLast.Store(em.Seq)
			}
			ps.pending = false
			if ps.sinceAck++; ps.sinceAck >= o.AckEntries {
				ps.sinceAck = 0
				select {
				case ps.kick <- struct{}{}:
				default:
				}
			}
		case frameProgress:
			var s uint64
			if err := decodeU64s(t, p, &s); err != nil {
				return err
			}
			if s > applied {
				l.applied.Store(s)
				ps.pending = true
				if s > l.peerLast.Load() {
					l.peerLast.Store(s)
				}
			}
		case frameHeartbeat:
			var last, ms uint64
			if err := decodeU64s(t, p, &last, &ms); err != nil {
				return err
			}
			l.peerLast.Store(max(last, l.applied.Load()))
			// Delays only make the peer's time look older, so a time
			// ahead of ours is at least that far ahead: its clock jumped
			// (or ours went back) since the handshake.
			if ahead := int64(ms) - unixMillis(o.Clock); ahead > 0 {
				l.clockOffset.Store(ahead)
				if err := l.checkSkew(ps.peer, ahead); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%w: %s while streaming", ErrProtocol, t)
		}
		if ps.pending {
			if now := time.Now(); now.Sub(ps.lastPersist) >= o.ProgressInterval {
				a := l.applied.Load()
				if err := local.SetApplied(ps.peer, historyOf(ps.hists, a), a); err != nil {
					return fmt.Errorf("repl: store progress: %w", err)
				}
				ps.pending, ps.lastPersist = false, now
			}
		}
		l.markCaughtUp(ps.target)
	}
}

// clockOffset estimates a peer's wall clock minus ours, in ms, from the
// time in its HELLO (remote) and ours when we sent our HELLO (sent) and
// received its (recv): the peer read its clock between the two, so only
// the part of the difference outside [sent, recv] is certain.
func clockOffset(remote, sent, recv int64) int64 {
	switch {
	case remote > recv:
		return remote - recv
	case remote < sent:
		return remote - sent
	}
	return 0
}

// checkSkew refuses a peer whose clock offset is beyond MaxClockSkew.
func (l *Link) checkSkew(peer uint64, offset int64) error {
	bound := l.node.opts.MaxClockSkew
	if !skewBeyond(offset, bound) {
		return nil
	}
	l.skewRefused.Add(1)
	dir := "ahead of"
	if offset < 0 {
		dir = "behind"
	}
	return fmt.Errorf("%w: peer %016x's wall clock is at least %v %s ours, above replication.max_clock_skew %v: fix the clocks (NTP); the link retries",
		ErrClockSkew, peer, offsetSize(offset), dir, bound)
}

// offsetSize is the size of a clock offset in ms, either way.
func offsetSize(ms int64) time.Duration { return time.Duration(max(ms, -ms)) * time.Millisecond }

// skewBeyond reports whether a clock offset in ms is beyond bound (a
// negative bound: no bound).
func skewBeyond(ms int64, bound time.Duration) bool { return bound >= 0 && offsetSize(ms) > bound }

func unixMillis(c clock.Clock) int64 { return c.Now().UnixMilli() }

// writeAcks sends an ACK when the applied seq moved (every AckInterval, or
// at once when kicked) and a HEARTBEAT every HeartbeatInterval, until stop
// is closed or a write fails (then it closes conn).
func (l *Link) writeAcks(conn net.Conn, w *meteredConn, stop <-chan struct{}, done chan<- struct{}, kick <-chan struct{}) {
	defer close(done)
	o := &l.node.opts
	tick := time.NewTicker(o.AckInterval)
	defer tick.Stop()
	var fb frameBuf
	lastAck := ^uint64(0)
	var hbDue time.Time
	for {
		now := time.Now()
		a := l.applied.Load()
		if a != lastAck {
			fb.u64s(frameAck, a)
			lastAck = a
		}
		if !now.Before(hbDue) {
			fb.u64s(frameHeartbeat, a, uint64(o.Clock.Now().UnixMilli()))
			hbDue = now.Add(o.HeartbeatInterval)
		}
		if len(fb.buf) > 0 {
			err := conn.SetWriteDeadline(now.Add(o.Timeout))
			if err == nil {
				_, err = w.Write(fb.buf)
			}
			fb.reset()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					l.log.Debug("repl: ack write failed", "err", err)
				}
				_ = conn.Close()
				return
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		case <-kick:
		}
	}
}

// stats reports the link's figures at now.
func (l *Link) stats(now time.Time) PeerStats {
	st := PeerStats{
		Addr:          l.addr,
		NodeID:        l.peerID.Load(),
		State:         LinkState(l.state.Load()),
		AppliedSeq:    l.applied.Load(),
		PeerLastSeq:   l.peerLast.Load(),
		BytesReceived: l.bytesIn.Load(),
		BytesSent:     l.bytesOut.Load(),
		FullResyncs:   l.resyncs.Load(),
		Reconnects:    l.reconnects.Load(),
		ClockOffset:   l.clockOffset.Load(),
		SkewRefusals:  l.skewRefused.Load(),
	}
	if st.PeerLastSeq > st.AppliedSeq {
		st.LagRecords = st.PeerLastSeq - st.AppliedSeq
		if ms := l.newestMillis.Load(); ms != 0 {
			st.LagMillis = max(now.UnixMilli()-int64(ms), 0)
		}
	}
	select {
	case <-l.caughtUp:
		st.CaughtUp = true
	default:
	}
	l.mu.Lock()
	st.LastError = l.mu.lastErr
	l.mu.Unlock()
	return st
}
