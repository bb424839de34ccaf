package repl

// Data-driven replication tests: every file under testdata/ is a script of
// directives run against in-memory nodes (memLocal) linked over an
// in-memory network (memNet). Regenerate expected output with
//
//	go test ./repl -run TestDataDriven -rewrite
//
// Directives:
//
//	node NAME [secret=S]           a new node (id 1, 2, 3… in order), started
//	link A B                       A pulls from B and B from A (restarts both)
//	write A key=K value=V [hlc=N]  a client write on A; the version's HLC is the
//	                               script's step counter unless hlc= is given
//	delete A key=K [hlc=N]         a client delete (a tombstone)
//	flush A [hlc=N]                a client flush_all
//	partition A B / heal A B       cut / restore the network between A and B
//	crash A lose=N                 A loses the last N log entries (and their
//	                               data) and reopens with a new history
//	trim A upto=N                  A's log drops the entries up to seq N
//	restart A                      close A's replication and start it again
//	stop A / start A               close A / start it again
//	wipe A                         A restarts empty with a new node id
//	converge                       wait (bounded) until every running link
//	                               has stored its peer's whole log
//	dump                           every node's live items (key=value@hlc+origin)
//	applies                        per node: entries applied (Seq > 0), and
//	                               how many of them were at or below the
//	                               stored offset (applied twice)
//	stats                          per link: state, applied, resyncs
//	                               (counters restart with the node)

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

type hnode struct {
	name    string
	local   *memLocal
	node    *Node
	peers   []string
	secret  string
	running bool
}

type harness struct {
	t     *testing.T
	net   *memNet
	nodes map[string]*hnode
	order []string
	names map[uint64]string // node id → name (with ' per wipe)
	tick  uint64
}

// testOptions are quick link timings for in-memory tests.
func testOptions() Options {
	return Options{
		HeartbeatInterval: 50 * time.Millisecond,
		Timeout:           2 * time.Second,
		BackoffMin:        5 * time.Millisecond,
		BackoffMax:        50 * time.Millisecond,
		AckInterval:       10 * time.Millisecond,
		ProgressInterval:  10 * time.Millisecond,
	}
}

func (h *harness) start(n *hnode) {
	h.t.Helper()
	o := testOptions()
	o.Listen = n.name + ":1"
	for _, p := range n.peers {
		o.Peers = append(o.Peers, p+":1")
	}
	if n.secret != "" {
		o.Secret = []byte(n.secret)
	}
	o.Dial = h.net.dialer(n.name)
	node, err := New(n.local, o)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := node.Start(h.net.listen(n.name)); err != nil {
		h.t.Fatal(err)
	}
	n.node, n.running = node, true
}

func (h *harness) stop(n *hnode) {
	if n.running {
		done := make(chan struct{})
		go func() { n.node.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			h.t.Fatalf("closing node %s took more than 10s", n.name)
		}
		n.running = false
	}
}

func (h *harness) get(d *datadriven.TestData, i int) *hnode {
	h.t.Helper()
	if len(d.CmdArgs) <= i {
		d.Fatalf(h.t, "%s: missing node name", d.Cmd)
	}
	n := h.nodes[d.CmdArgs[i].Key]
	if n == nil {
		d.Fatalf(h.t, "%s: unknown node %q", d.Cmd, d.CmdArgs[i].Key)
	}
	return n
}

func (h *harness) version(d *datadriven.TestData) uint64 {
	h.tick++
	if d.HasArg("hlc") {
		var v uint64
		d.ScanArgs(h.t, "hlc", &v)
		return v
	}
	return h.tick
}

func (h *harness) closeAll() {
	for _, name := range h.order {
		h.stop(h.nodes[name])
	}
}

func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		h := &harness{t: t, net: newMemNet(), nodes: map[string]*hnode{}, names: map[uint64]string{}}
		defer h.closeAll()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return h.run(d)
		})
	})
}

func (h *harness) run(d *datadriven.TestData) string {
	t := h.t
	switch d.Cmd {
	case "node":
		name := d.CmdArgs[0].Key
		n := &hnode{name: name, local: newMemLocal(uint64(len(h.order) + 1))}
		if d.HasArg("secret") {
			d.ScanArgs(t, "secret", &n.secret)
		}
		h.nodes[name] = n
		h.order = append(h.order, name)
		h.names[n.local.node] = name
		h.start(n)
	case "link":
		a, b := h.get(d, 0), h.get(d, 1)
		a.peers = append(a.peers, b.name)
		b.peers = append(b.peers, a.name)
		for _, n := range []*hnode{a, b} {
			h.stop(n)
			h.start(n)
		}
	case "write", "delete":
		n := h.get(d, 0)
		var key, value string
		d.ScanArgs(t, "key", &key)
		op := OpDelete
		if d.Cmd == "write" {
			op = OpPut
			d.ScanArgs(t, "value", &value)
		}
		n.local.write(op, key, value, h.version(d))
	case "flush":
		h.get(d, 0).local.write(OpFlush, "", "", h.version(d))
	case "partition":
		h.net.partition(h.get(d, 0).name, h.get(d, 1).name)
	case "heal":
		h.net.heal(h.get(d, 0).name, h.get(d, 1).name)
	case "crash":
		n := h.get(d, 0)
		var lose int
		d.ScanArgs(t, "lose", &lose)
		h.stop(n)
		n.local.crash(lose)
		h.start(n)
	case "trim":
		var upto uint64
		d.ScanArgs(t, "upto", &upto)
		h.get(d, 0).local.trim(upto)
	case "restart":
		n := h.get(d, 0)
		h.stop(n)
		h.start(n)
	case "stop":
		h.stop(h.get(d, 0))
	case "start":
		if n := h.get(d, 0); !n.running {
			h.start(n)
		}
	case "wipe":
		n := h.get(d, 0)
		h.stop(n)
		id := n.local.node + 16
		n.local = newMemLocal(id)
		h.names[id] = h.names[id-16] + "'"
		h.start(n)
	case "converge":
		return h.converge(10 * time.Second)
	case "dump":
		var b strings.Builder
		for _, name := range h.order {
			n := h.nodes[name]
			n.local.mu.Lock()
			applies, dupes := n.local.applies, n.local.dupes
			n.local.mu.Unlock()
			fmt.Fprintf(&b, "%s:%s\n", name, n.local.dump(h.names))
			if dupes != 0 {
				fmt.Fprintf(&b, "%s: %d of %d entries applied twice\n", name, dupes, applies)
			}
		}
		return b.String()
	case "applies":
		var b strings.Builder
		for _, name := range h.order {
			m := h.nodes[name].local
			m.mu.Lock()
			fmt.Fprintf(&b, "%s: applied=%d twice=%d\n", name, m.applies, m.dupes)
			m.mu.Unlock()
		}
		return b.String()
	case "stats":
		var b strings.Builder
		for _, name := range h.order {
			n := h.nodes[name]
			if !n.running {
				continue
			}
			for _, st := range n.node.Stats() {
				if st.Addr == "" {
					continue
				}
				peer := strings.TrimSuffix(st.Addr, ":1")
				fmt.Fprintf(&b, "%s<-%s: state=%s applied=%d peer_last=%d lag=%d resyncs=%d\n",
					name, peer, st.State, st.AppliedSeq, st.PeerLastSeq, st.LagRecords, st.FullResyncs)
			}
		}
		return b.String()
	default:
		d.Fatalf(t, "unknown directive %q", d.Cmd)
	}
	return ""
}

// converge waits until every running node's every link to a running,
// reachable peer is streaming and has stored an offset that is a valid
// prefix of the peer's log and covers all of it.
func (h *harness) converge(limit time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		var behind []string
		for _, name := range h.order {
			n := h.nodes[name]
			if !n.running {
				continue
			}
			for i, l := range n.node.Links() {
				p := h.nodes[n.peers[i]]
				if !p.running || h.net.partitioned(n.name, p.name) {
					continue
				}
				hist, seq, _ := n.local.Applied(p.local.node)
				last := p.local.LastSeq()
				ok := l.peerID.Load() == p.local.node && LinkState(l.state.Load()) == StateStreaming &&
					seq >= last && decidePull(p.local.Histories(), last, hist, seq+1).stream
				if !ok {
					behind = append(behind, fmt.Sprintf("%s<-%s: state=%s stored=%d/%x peer_last=%d", n.name, p.name, LinkState(l.state.Load()), seq, hist, last))
				}
			}
		}
		if len(behind) == 0 {
			return ""
		}
		select {
		case <-ctx.Done():
			sort.Strings(behind)
			return "not converged:\n" + strings.Join(behind, "\n") + "\n"
		case <-time.After(5 * time.Millisecond):
		}
	}
}
