package repl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
)

// Node is this node's replication: a Server of its own log and one Link
// per configured peer, pulling that peer's log. Create it with New, start
// it with Start, stop it with Close.
type Node struct {
	local  Local
	opts   Options
	log    *slog.Logger
	server *Server
	links  []*Link

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // link goroutines and Serve

	mu struct {
		sync.Mutex
		started bool
		ln      net.Listener
		active  map[uint64]*Link // peer node id → the link with a live session
	}
}

// New returns a Node over local. opts gets its defaults and is validated.
func New(local Local, opts Options) (*Node, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if local.NodeID() == 0 {
		return nil, fmt.Errorf("%w: local node id is 0", ErrInvalidOptions)
	}
	srv, err := NewServer(local, opts)
	if err != nil {
		return nil, err
	}
	n := &Node{local: local, opts: opts, log: opts.Logger, server: srv}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.mu.active = make(map[uint64]*Link)
	for _, addr := range opts.Peers {
		n.links = append(n.links, newLink(n, addr))
	}
	return n, nil
}

// Start serves this node's log on ln (or, when ln is nil, on a new TCP
// listener on Options.Listen) and starts every link. It returns at once.
func (n *Node) Start(ln net.Listener) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.started {
		return errors.New("repl: node already started")
	}
	if n.ctx.Err() != nil {
		return ErrClosed
	}
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", n.opts.Listen); err != nil {
			return fmt.Errorf("repl: listen: %w", err)
		}
	}
	n.mu.started, n.mu.ln = true, ln
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.server.Serve(ln); err != nil && !errors.Is(err, ErrServerClosed) {
			n.log.Error("repl: serving stopped", "err", err)
		}
	}()
	for _, l := range n.links {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			l.run(n.ctx)
		}()
	}
	return nil
}

// Addr is the replication listener's address (nil before Start).
func (n *Node) Addr() net.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.ln == nil {
		return nil
	}
	return n.mu.ln.Addr()
}

// Links are the node's links, one per configured peer, in Options.Peers
// order.
func (n *Node) Links() []*Link { return n.links }

// Server is the node's source side.
func (n *Node) Server() *Server { return n.server }

// Close stops the links and the server and waits for their goroutines:
// every connection is closed, so it returns within about Timeout (the
// bound of a Local call in progress aside).
func (n *Node) Close() error {
	n.cancel()
	err := n.server.Close()
	n.wg.Wait()
	for _, l := range n.links {
		l.setState(StateStopped)
	}
	return err
}

// WaitCaughtUp returns nil once every link has caught up once (applied
// everything its peer had when the link first connected), or ctx's error.
// A node with no peers is caught up at once. This is what
// serve_while_syncing=false waits for.
func (n *Node) WaitCaughtUp(ctx context.Context) error {
	for _, l := range n.links {
		select {
		case <-l.caughtUp:
		case <-ctx.Done():
			return fmt.Errorf("repl: waiting for %s to catch up: %w", l.addr, ctx.Err())
		}
	}
	return nil
}

// claim records l as the live link to peer id; false when another link
// holds it (two addresses of one node).
func (n *Node) claim(id uint64, l *Link) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if cur, ok := n.mu.active[id]; ok && cur != l {
		return false
	}
	n.mu.active[id] = l
	return true
}

func (n *Node) release(id uint64, l *Link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.active[id] == l {
		delete(n.mu.active, id)
	}
}

// PeerStats are one peer's replication figures, for stats
// (repl_peer_<n>_*) and metrics. The link fields describe this node
// pulling the peer; the Served fields the peer pulling this node.
type PeerStats struct {
	Addr        string    // configured address; "" for a peer that only pulls from us
	NodeID      uint64    // learned in HELLO; 0 before the first handshake
	State       LinkState // of the link pulling this peer; stopped when there is none
	CaughtUp    bool      // the link has caught up once (WaitCaughtUp)
	AppliedSeq  uint64    // the peer's seq applied here
	PeerLastSeq uint64    // the peer's last seq as last heard (HEARTBEAT, PROGRESS, ENTRY)
	LagRecords  uint64    // PeerLastSeq - AppliedSeq
	// LagMillis is now minus the version time of the newest entry applied,
	// when behind (LagRecords > 0); 0 when caught up or not known.
	LagMillis     int64
	BytesReceived uint64 // by the link, frames included
	BytesSent     uint64
	FullResyncs   uint64 // resyncs this link did
	Reconnects    uint64 // times the link redialled
	LastError     string // why the link last went down
	// ClockOffset is the peer's wall clock minus ours in milliseconds, as
	// last estimated (HELLO; a HEARTBEAT when it shows the peer ahead).
	ClockOffset int64
	// SkewRefusals counts sessions this link refused or closed because
	// the offset was beyond MaxClockSkew.
	SkewRefusals uint64

	ServedActive   bool   // the peer is pulling our log now
	ServedAcked    uint64 // our seq the peer reported applied (ACK)
	ServedLag      uint64 // our last seq minus ServedAcked
	ServedBytes    uint64 // bytes sent to the peer's pulls
	ServedResyncs  uint64 // full resyncs we served to the peer
	ServedBufferHi int64  // high-water mark of a serving chunk buffer, bytes
}

// Stats returns one entry per configured peer (in Options.Peers order),
// then one per node that pulled from us without being configured, sorted
// by node id.
func (n *Node) Stats() []PeerStats {
	now := n.opts.Clock.Now()
	served := n.server.pullerSnapshot()
	last := n.local.LastSeq()
	fill := func(st *PeerStats, s servedStats) {
		st.ServedActive, st.ServedAcked, st.ServedBytes = s.active, s.acked, s.bytesOut
		st.ServedResyncs, st.ServedBufferHi = s.resyncs, s.bufferMax
		if last > s.acked {
			st.ServedLag = last - s.acked
		}
	}
	out := make([]PeerStats, 0, len(n.links)+len(served))
	for _, l := range n.links {
		st := l.stats(now)
		if s, ok := served[st.NodeID]; ok && st.NodeID != 0 {
			fill(&st, s)
			delete(served, st.NodeID)
		}
		out = append(out, st)
	}
	ids := make([]uint64, 0, len(served))
	for id := range served {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		st := PeerStats{NodeID: id, State: StateStopped}
		fill(&st, served[id])
		out = append(out, st)
	}
	return out
}
