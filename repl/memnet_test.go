package repl

import (
	"context"
	"errors"
	"net"
	"sync"
)

// memNet is an in-memory network of named nodes (address "name:1") over
// net.Pipe, with partitions: a partition closes the connections between two
// nodes and refuses new dials until healed.
type memNet struct {
	mu    sync.Mutex
	lns   map[string]*memListener // guarded by mu
	cut   map[[2]string]bool
	conns []memPair
}

type memPair struct {
	a, b   string
	c1, c2 net.Conn
}

func newMemNet() *memNet {
	return &memNet{lns: map[string]*memListener{}, cut: map[[2]string]bool{}}
}

func pairKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

var errUnreachable = errors.New("memnet: unreachable")

func (n *memNet) listen(name string) *memListener {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := &memListener{n: n, name: name, ch: make(chan net.Conn), done: make(chan struct{})}
	n.lns[name] = l
	return l
}

// dialer returns node from's Options.Dial.
func (n *memNet) dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		to, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		n.mu.Lock()
		l := n.lns[to]
		if l == nil || n.cut[pairKey(from, to)] {
			n.mu.Unlock()
			return nil, errUnreachable
		}
		c1, c2 := net.Pipe()
		n.conns = append(n.conns, memPair{from, to, c1, c2})
		n.mu.Unlock()
		select {
		case l.ch <- c2:
			return c1, nil
		case <-l.done:
		case <-ctx.Done():
		}
		c1.Close()
		c2.Close()
		return nil, errUnreachable
	}
}

func (n *memNet) partition(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[pairKey(a, b)] = true
	kept := n.conns[:0]
	for _, p := range n.conns {
		if pairKey(p.a, p.b) == pairKey(a, b) {
			p.c1.Close()
			p.c2.Close()
			continue
		}
		kept = append(kept, p)
	}
	n.conns = kept
}

func (n *memNet) heal(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.cut, pairKey(a, b))
}

func (n *memNet) partitioned(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[pairKey(a, b)]
}

type memListener struct {
	n    *memNet
	name string
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.n.mu.Lock()
		if l.n.lns[l.name] == l {
			delete(l.n.lns, l.name)
		}
		l.n.mu.Unlock()
	})
	return nil
}

func (l *memListener) Addr() net.Addr { return memAddr(l.name + ":1") }

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }
