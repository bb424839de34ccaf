package main

// End-to-end tests of replication (issue 6) with real tcache processes on
// 127.0.0.1: two or three nodes, each with its own data_dir, client port
// and replication port. Each test bounds its own running time (every wait
// polls with a deadline, every load loop is bounded in time and count).
// The numbered tests are the list 1–11, in order.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/testserver"
)

// replLag bounds how long a write takes to show on a peer in these tests
// (durability_interval 10ms, a shared 2-core machine, the race detector).
const replLag = 10 * time.Second

// replNode is one tcache of a replicated cluster under test.
type replNode struct {
	t     *testing.T
	name  string
	dir   string // data_dir, kept across restarts
	rport int    // replication port, kept across restarts
	peers []*replNode
	extra []string // more flags
	srv   *testserver.Server
}

// newCluster makes n nodes in a full mesh (not started).
func newCluster(t *testing.T, n int, extra ...string) []*replNode {
	nodes := make([]*replNode, n)
	for i := range nodes {
		nodes[i] = &replNode{t: t, name: string(rune('a' + i)), dir: t.TempDir(), rport: freeTCPPort(t), extra: extra}
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.peers = append(a.peers, b)
			}
		}
	}
	return nodes
}

// args are a node's flags. -m 64: the disk index's share (the keydir,
// docs/keydir.md) holds about 466 000 keys, more than the write loads of
// these tests leave on a node; at -m 32 (233 000) a node dropped its
// oldest epochs and the two nodes ended different.
func (n *replNode) args(peers bool) []string {
	args := []string{"--data-dir", n.dir, "-m", "64", "--durability-interval", "10ms",
		"--disk-maintenance-interval", "100ms", "--replication-listen", "127.0.0.1:" + strconv.Itoa(n.rport)}
	if peers {
		var ps []string
		for _, p := range n.peers {
			ps = append(ps, "127.0.0.1:"+strconv.Itoa(p.rport))
		}
		args = append(args, "-x", strings.Join(ps, ","))
	}
	return append(args, n.extra...)
}

// start runs the node with its peers.
func (n *replNode) start() *replNode {
	n.t.Helper()
	n.srv = testserver.Start(n.t, n.args(true)...)
	return n
}

// startIsolated runs the node with replication on (so its store stays
// replicated) but no peers and its replication port elsewhere: no link
// reaches it and it pulls nobody. This is the tests' partition.
func (n *replNode) startIsolated() *replNode {
	n.t.Helper()
	args := n.args(false)
	args[len(args)-len(n.extra)-1] = "127.0.0.1:" + strconv.Itoa(freeTCPPort(n.t))
	n.srv = testserver.Start(n.t, args...)
	return n
}

func (n *replNode) stop() {
	n.t.Helper()
	if code := n.srv.Stop(n.t); code != 0 {
		n.t.Fatalf("node %s exited %d\n%s", n.name, code, n.srv.Stderr())
	}
}

func (n *replNode) addr() string { return n.srv.Addr }

// cmd sends one request and returns the reply lines up to and including
// the first line that ends it (a line of ends, or any line when ends is
// empty).
func (n *replNode) cmd(req string, ends ...string) []string {
	n.t.Helper()
	c := dialText(n.t, n.addr())
	defer c.nc.Close()
	c.send(req)
	var out []string
	for {
		l := c.line()
		out = append(out, l)
		if len(ends) == 0 || slices.Contains(ends, l) {
			return out
		}
	}
}

// get returns the value and flags of key, ok false on a miss.
func (n *replNode) get(key string) (value string, flags int, ok bool) {
	n.t.Helper()
	c := dialText(n.t, n.addr())
	defer c.nc.Close()
	c.send("get " + key + "\r\n")
	l := c.line()
	if l == "END" {
		return "", 0, false
	}
	var k string
	var size int
	if _, err := fmt.Sscanf(l, "VALUE %s %d %d", &k, &flags, &size); err != nil {
		n.t.Fatalf("get %s: %q", key, l)
	}
	b := make([]byte, size+2)
	if _, err := io.ReadFull(c.r, b); err != nil {
		n.t.Fatal(err)
	}
	c.expect("END")
	return string(b[:size]), flags, true
}

func (n *replNode) stats() map[string]string { n.t.Helper(); return statsOf(n.t, n.addr()) }

// peerStat is stat repl_peer_<i>_<name> for the peer configured i-th.
func (n *replNode) peerStat(i int, name string) uint64 {
	n.t.Helper()
	return statU(n.t, n.stats(), "repl_peer_"+strconv.Itoa(i)+"_"+name)
}

// sumPeerStat adds stat name over the configured peers.
func (n *replNode) sumPeerStat(name string) uint64 {
	n.t.Helper()
	st := n.stats()
	var sum uint64
	for i := range n.peers {
		sum += statU(n.t, st, "repl_peer_"+strconv.Itoa(i)+"_"+name)
	}
	return sum
}

// dumpedItem is what two nodes must agree on for a key.
type dumpedItem struct {
	value string
	flags int
	exp   string // metadump's exp=: -1 or absolute unix seconds
}

// dump reads every item: keys and expiry from lru_crawler metadump, values
// and flags with multi-key gets.
func (n *replNode) dump() map[string]dumpedItem {
	n.t.Helper()
	c := dialText(n.t, n.addr())
	defer c.nc.Close()
	c.nc.SetDeadline(time.Now().Add(60 * time.Second))
	c.send("lru_crawler metadump all\r\n")
	items := map[string]dumpedItem{}
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			n.t.Fatalf("metadump: %v", err)
		}
		if l == "END\r\n" {
			break
		}
		var key, exp string
		for f := range strings.FieldsSeq(l) {
			if v, ok := strings.CutPrefix(f, "key="); ok {
				k, err := url.PathUnescape(v)
				if err != nil {
					n.t.Fatalf("metadump key %q: %v", v, err)
				}
				key = k
			} else if v, ok := strings.CutPrefix(f, "exp="); ok {
				exp = v
			}
		}
		items[key] = dumpedItem{exp: exp}
	}
	keys := slices.Sorted(maps.Keys(items))
	for i := 0; i < len(keys); i += 100 {
		batch := keys[i:min(i+100, len(keys))]
		c.send("get " + strings.Join(batch, " ") + "\r\n")
		for {
			l := c.line()
			if l == "END" {
				break
			}
			var k string
			var flags, size int
			if _, err := fmt.Sscanf(l, "VALUE %s %d %d", &k, &flags, &size); err != nil {
				n.t.Fatalf("get: %q", l)
			}
			b := make([]byte, size+2)
			if _, err := io.ReadFull(c.r, b); err != nil {
				n.t.Fatal(err)
			}
			it := items[k]
			it.value, it.flags = string(b[:size]), flags
			items[k] = it
		}
	}
	return items
}

// waitFor polls cond until it holds or d passes (then the test fails with
// what).
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitIdentical waits until every node holds the same items (keys, values,
// flags, expiry) and returns them.
func waitIdentical(t *testing.T, d time.Duration, nodes ...*replNode) map[string]dumpedItem {
	t.Helper()
	var first map[string]dumpedItem
	var diff string
	deadline := time.Now().Add(d)
	for {
		first, diff = nodes[0].dump(), ""
		for _, n := range nodes[1:] {
			if d := diffDumps(first, n.dump()); d != "" {
				diff = fmt.Sprintf("%s vs %s: %s", nodes[0].name, n.name, d)
				break
			}
		}
		if diff == "" {
			return first
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the nodes still differ: %s", d, diff)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func diffDumps(a, b map[string]dumpedItem) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d items vs %d", len(a), len(b))
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v != w {
			return fmt.Sprintf("key %q: %+v vs %+v (present %v)", k, v, w, ok)
		}
	}
	return ""
}

// noFullResyncs checks that no link of the nodes did a full resync.
func noFullResyncs(t *testing.T, nodes ...*replNode) {
	t.Helper()
	for _, n := range nodes {
		if r := n.sumPeerStat("full_resyncs"); r != 0 {
			t.Errorf("node %s: %d full resyncs, want 0", n.name, r)
		}
	}
}

// binReq is one binary-protocol request frame.
func binReq(op byte, key string, extras []byte, value string) []byte {
	b := make([]byte, 24, 24+len(extras)+len(key)+len(value))
	b[0], b[1] = 0x80, op
	binary.BigEndian.PutUint16(b[2:], uint16(len(key)))
	b[4] = byte(len(extras))
	binary.BigEndian.PutUint32(b[8:], uint32(len(extras)+len(key)+len(value)))
	b = append(b, extras...)
	b = append(b, key...)
	return append(b, value...)
}

// binDo sends one binary request and returns the response status.
func (n *replNode) binDo(req []byte) uint16 {
	n.t.Helper()
	c := dialText(n.t, n.addr())
	defer c.nc.Close()
	c.send(string(req))
	var h [24]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		n.t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, c.r, int64(binary.BigEndian.Uint32(h[8:]))); err != nil {
		n.t.Fatal(err)
	}
	return binary.BigEndian.Uint16(h[6:])
}

// waitValue waits until key reads want on n ("" = a miss).
func waitValue(t *testing.T, n *replNode, key, want string) {
	t.Helper()
	waitUntil(t, replLag, fmt.Sprintf("%s on node %s: want %q", key, n.name, want), func() bool {
		v, _, ok := n.get(key)
		return (want == "" && !ok) || (ok && v == want)
	})
}

// Test 1: every command, text, meta and binary, made on either node, shows
// on the other within the lag bound.
func TestReplEveryCommand(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0].start(), nodes[1].start()
	start := time.Now()
	var worst time.Duration
	// on runs req on from (expecting its reply line) and waits until key
	// reads want on to.
	on := func(from, to *replNode, req, reply, key, want string) {
		t.Helper()
		if got := from.cmd(req)[0]; got != reply {
			t.Fatalf("%s on %s: got %q, want %q", strings.TrimSpace(req), from.name, got, reply)
		}
		t0 := time.Now()
		waitValue(t, to, key, want)
		worst = max(worst, time.Since(t0))
	}
	on(a, b, "set k1 7 0 2\r\nv1\r\n", "STORED", "k1", "v1")
	on(b, a, "set k2 0 0 2\r\nv2\r\n", "STORED", "k2", "v2")
	on(a, b, "add k3 0 0 2\r\nv3\r\n", "STORED", "k3", "v3")
	on(b, a, "replace k3 0 0 3\r\nv3r\r\n", "STORED", "k3", "v3r")
	on(a, b, "append k3 0 0 1\r\nA\r\n", "STORED", "k3", "v3rA")
	on(b, a, "prepend k3 0 0 1\r\nP\r\n", "STORED", "k3", "Pv3rA")
	gets := a.cmd("gets k1\r\n", "END")
	cas := strings.Fields(gets[0])[4]
	on(a, b, "cas k1 0 0 3 "+cas+"\r\ncas\r\n", "STORED", "k1", "cas")
	on(b, a, "set n 0 0 2\r\n10\r\n", "STORED", "n", "10")
	on(a, b, "incr n 5\r\n", "15", "n", "15")
	on(b, a, "decr n 3\r\n", "12", "n", "12")
	on(a, b, "touch k2 1000\r\n", "TOUCHED", "k2", "v2")
	on(b, a, "gat 2000 k3\r\n", "VALUE k3 0 5", "k3", "Pv3rA")
	on(a, b, "delete k2\r\n", "DELETED", "k2", "")
	// Meta commands.
	on(b, a, "ms m1 2 T0 F3\r\nmv\r\n", "HD", "m1", "mv")
	on(a, b, "ma n D8\r\n", "HD", "n", "20")
	on(b, a, "mg k1 T3000 v\r\n", "VA 3", "k1", "cas")
	on(a, b, "md m1\r\n", "HD", "m1", "")
	// Binary protocol: set (0x01), increment (0x05), delete (0x04).
	set := binReq(0x01, "bk", []byte{0, 0, 0, 9, 0, 0, 0, 0}, "bv")
	if st := a.binDo(set); st != 0 {
		t.Fatalf("binary set: status %d", st)
	}
	waitValue(t, b, "bk", "bv")
	incr := binReq(0x05, "n", append(binary.BigEndian.AppendUint64(make([]byte, 0, 20), 1), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), "")
	if st := b.binDo(incr); st != 0 {
		t.Fatalf("binary incr: status %d", st)
	}
	waitValue(t, a, "n", "21")
	if st := b.binDo(binReq(0x04, "bk", nil, "")); st != 0 {
		t.Fatalf("binary delete: status %d", st)
	}
	waitValue(t, a, "bk", "")
	// Expiry, flags and the touched times travel too.
	waitIdentical(t, replLag, a, b)
	if _, fl, _ := b.get("k1"); fl != 0 {
		t.Errorf("k1 flags on b: %d, want 0 (the cas stored flags 0)", fl)
	}

	// flush_all at once on a: every item goes on both; one written after
	// stays.
	if got := a.cmd("flush_all\r\n")[0]; got != "OK" {
		t.Fatalf("flush_all: %q", got)
	}
	waitValue(t, b, "k1", "")
	waitValue(t, b, "k3", "")
	on(b, a, "set after 0 0 1\r\nx\r\n", "STORED", "after", "x")
	// flush_all with a delay on b: items go on both once it passes.
	// (memcached's rule: items stored up to the second before now+delay
	// go once that second comes, so a delay of 3 keeps them at least 1s.)
	if got := b.cmd("flush_all 3\r\n")[0]; got != "OK" {
		t.Fatalf("flush_all 3: %q", got)
	}
	time.Sleep(300 * time.Millisecond)
	if _, _, ok := a.get("after"); !ok {
		t.Fatal("after: gone from a before the delayed flush took effect")
	}
	waitValue(t, a, "after", "")
	waitValue(t, b, "after", "")
	// memcached's rule again: what is stored within the second the flush
	// takes effect is flushed too.
	time.Sleep(1100 * time.Millisecond)
	on(a, b, "set later 0 0 1\r\ny\r\n", "STORED", "later", "y")
	items := waitIdentical(t, replLag, a, b)
	if len(items) != 1 {
		t.Errorf("after the flushes: %v, want only later", items)
	}
	noFullResyncs(t, a, b)
	t.Logf("worst lag of one command: %v; test %v", worst.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// writeLoad sets keys prefix<i> on n from several connections, pipelined,
// until stop is closed, d passes or max keys are written, and returns how
// many were acknowledged. It tolerates the node dying (kill -9).
func writeLoad(n *replNode, prefix string, stop <-chan struct{}, d time.Duration, max int) int {
	addr := n.addr()
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	acked := 0
	var wg sync.WaitGroup
	const conns, batch = 2, 50
	for w := range conns {
		wg.Go(func() {
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return
			}
			defer nc.Close()
			r := bufio.NewReader(nc)
			for i := w * batch; i < max; i += conns * batch {
				select {
				case <-stop:
					return
				default:
				}
				if time.Now().After(deadline) {
					return
				}
				var buf []byte
				end := min(i+batch, max)
				for k := i; k < end; k++ {
					v := fmt.Sprintf("%s-value-%d-%s", prefix, k, strings.Repeat("x", k%200))
					buf = fmt.Appendf(buf, "set %s%d %d 0 %d noreply\r\n%s\r\n", prefix, k, k%100, len(v), v)
				}
				buf = append(buf, "mn\r\n"...)
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := nc.Write(buf); err != nil {
					return
				}
				if l, err := r.ReadString('\n'); err != nil || l != "MN\r\n" {
					return
				}
				mu.Lock()
				acked += end - i
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return acked
}

// Test 2: kill -9 one node in the middle of a write load on both, restart
// it: every link resumes from its stored offset (no full resync) and both
// nodes end identical.
func TestReplKill9Resume(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0].start(), nodes[1].start()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var onA, onB int
	wg.Go(func() { onA = writeLoad(a, "a", stop, 20*time.Second, 1_000_000) })
	wg.Go(func() { onB = writeLoad(b, "b", stop, 20*time.Second, 1_000_000) })
	time.Sleep(1500 * time.Millisecond)
	a.srv.Kill(t)
	time.Sleep(300 * time.Millisecond) // b keeps writing while a is down
	close(stop)
	wg.Wait()
	a.start()
	// Writes on both after the restart.
	b.cmd("set after-b 0 0 1\r\nb\r\n")
	a.cmd("set after-a 0 0 1\r\na\r\n")
	items := waitIdentical(t, 3*replLag, a, b)
	noFullResyncs(t, a, b)
	t.Logf("acked writes: %d on a (killed), %d on b; %d items on both", onA, onB, len(items))
	if len(items) < onB {
		t.Errorf("%d items, fewer than the %d writes acknowledged by b", len(items), onB)
	}
}

// Test 3: a peer stopped (SIGSTOP) while the other takes many writes, then
// resumed, converges by streaming.
func TestReplStoppedPeerConverges(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0].start(), nodes[1].start()
	if err := b.srv.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			b.srv.Signal(syscall.SIGCONT)
		}
	}()
	t0 := time.Now()
	n := writeLoad(a, "s", nil, 6*time.Second, 20000)
	// Stopped longer than the link timeout (5s): a's side drops the link
	// and b's redials once it runs again.
	time.Sleep(time.Until(t0.Add(6 * time.Second)))
	if err := b.srv.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	t0 = time.Now()
	items := waitIdentical(t, 3*replLag, a, b)
	if len(items) != n {
		t.Errorf("%d items, want %d", len(items), n)
	}
	noFullResyncs(t, a, b)
	t.Logf("%d writes while b was stopped; converged %v after SIGCONT", n, time.Since(t0).Round(time.Millisecond))
}

// Test 4: the log retention is exceeded while a peer is down: the link
// detects it, does a full resync, and the nodes end identical.
func TestReplLogRetentionResync(t *testing.T) {
	nodes := newCluster(t, 2, "--log-retention-bytes", "1m", "--log-retention-age", "1s")
	a, b := nodes[0].start(), nodes[1].start()
	a.cmd("set before 0 0 1\r\nx\r\n")
	waitValue(t, b, "before", "x")
	b.stop()
	n := writeLoad(a, "r", nil, 5*time.Second, 5000)
	waitUntil(t, replLag, "a's log trimmed past what b applied", func() bool {
		return statU(t, a.stats(), "tcache_log_first_seq") > 2
	})
	b.start()
	items := waitIdentical(t, 3*replLag, a, b)
	if len(items) != n+1 {
		t.Errorf("%d items, want %d", len(items), n+1)
	}
	if r := b.peerStat(0, "full_resyncs"); r < 1 {
		t.Errorf("b did %d full resyncs from a, want at least 1", r)
	}
}

// partitionWrites isolates b, runs fn (writes on both sides), and heals.
func partitionWrites(t *testing.T, a, b *replNode, fn func()) {
	t.Helper()
	b.stop()
	b.startIsolated()
	fn()
	b.stop()
	b.start()
}

// Test 5: conflicting writes to the same keys on both nodes while the link
// is down; once it is back both hold the same value for every key, the
// later write's.
func TestReplConflictingWrites(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0].start(), nodes[1].start()
	const keys = 200
	last := map[string]string{}
	partitionWrites(t, a, b, func() {
		// Each key is written on both sides, alternately first on a and
		// first on b, a few milliseconds apart: the later one must win.
		for i := range keys {
			k := "c" + strconv.Itoa(i)
			first, second := a, b
			if i%2 == 1 {
				first, second = b, a
			}
			first.cmd(fmt.Sprintf("set %s 1 0 %d\r\n%s\r\n", k, len(first.name), first.name), "STORED")
			time.Sleep(2 * time.Millisecond)
			second.cmd(fmt.Sprintf("set %s 2 0 %d\r\n%s\r\n", k, len(second.name), second.name), "STORED")
			last[k] = second.name
		}
	})
	items := waitIdentical(t, 3*replLag, a, b)
	for k, want := range last {
		if items[k].value != want {
			t.Errorf("%s = %q on both, want the later write %q", k, items[k].value, want)
		}
	}
}

// Test 6: a delete on one side during a partition and sets of other keys
// on the other: the deleted keys stay deleted unless written later, also
// after a restart of both.
func TestReplDeleteDuringPartition(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0].start(), nodes[1].start()
	for i := range 100 {
		a.cmd(fmt.Sprintf("set d%d 0 0 1\r\nx\r\n", i), "STORED")
	}
	waitIdentical(t, replLag, a, b)
	partitionWrites(t, a, b, func() {
		for i := range 50 {
			a.cmd(fmt.Sprintf("delete d%d\r\n", i), "DELETED")
		}
		time.Sleep(5 * time.Millisecond)
		for i := range 100 {
			b.cmd(fmt.Sprintf("set o%d 0 0 1\r\ny\r\n", i), "STORED")
		}
		for i := 40; i < 50; i++ { // written after the delete: it comes back
			b.cmd(fmt.Sprintf("set d%d 0 0 5\r\nlater\r\n", i), "STORED")
		}
	})
	check := func(when string) {
		t.Helper()
		items := waitIdentical(t, 3*replLag, a, b)
		for i := range 100 {
			k := "d" + strconv.Itoa(i)
			it, ok := items[k]
			switch {
			case i < 40 && ok:
				t.Errorf("%s: deleted %s came back: %+v", when, k, it)
			case i >= 40 && i < 50 && (!ok || it.value != "later"):
				t.Errorf("%s: %s written after its delete: %+v, %v", when, k, it, ok)
			case i >= 50 && (!ok || it.value != "x"):
				t.Errorf("%s: %s lost: %+v, %v", when, k, it, ok)
			}
			if it, ok := items["o"+strconv.Itoa(i)]; !ok || it.value != "y" {
				t.Errorf("%s: o%d lost", when, i)
			}
		}
	}
	check("after healing")
	a.stop()
	b.stop()
	a.start()
	b.start()
	check("after restarting both")
}

// Test 7: flush_all on one side empties both of older items; items written
// after it survive on both.
func TestReplFlushAll(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0].start(), nodes[1].start()
	for i := range 50 {
		a.cmd(fmt.Sprintf("set old-a%d 0 0 1\r\nx\r\n", i), "STORED")
		b.cmd(fmt.Sprintf("set old-b%d 0 0 1\r\nx\r\n", i), "STORED")
	}
	waitIdentical(t, replLag, a, b)
	time.Sleep(1100 * time.Millisecond) // flush covers items stored before its second
	b.cmd("flush_all\r\n", "OK")
	time.Sleep(1100 * time.Millisecond)
	for i := range 20 {
		a.cmd(fmt.Sprintf("set new-a%d 0 0 1\r\ny\r\n", i), "STORED")
		b.cmd(fmt.Sprintf("set new-b%d 0 0 1\r\ny\r\n", i), "STORED")
	}
	items := waitIdentical(t, replLag, a, b)
	if len(items) != 40 {
		t.Errorf("%d items after the flush, want the 40 written after it", len(items))
	}
	for k := range items {
		if strings.HasPrefix(k, "old") {
			t.Errorf("%s survived the flush", k)
		}
	}
}

// Test 8: concurrent incr on both nodes: both end with the same value
// (last writer wins: each node replicates its result, so the two counts do
// not add up; docs/replication.md).
func TestReplConcurrentIncr(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0].start(), nodes[1].start()
	a.cmd("set ctr 0 0 1\r\n0\r\n", "STORED")
	waitValue(t, b, "ctr", "0")
	const each = 300
	var wg sync.WaitGroup
	for _, n := range []*replNode{a, b} {
		wg.Go(func() {
			c := dialText(t, n.addr())
			for range each {
				c.send("incr ctr 1\r\n")
				if l := c.line(); l == "NOT_FOUND" || strings.HasPrefix(l, "CLIENT_ERROR") {
					t.Errorf("incr on %s: %q", n.name, l)
					return
				}
			}
		})
	}
	wg.Wait()
	items := waitIdentical(t, replLag, a, b)
	v, _ := strconv.Atoi(items["ctr"].value)
	if v < each || v > 2*each {
		t.Errorf("ctr = %d on both, want between %d and %d", v, each, 2*each)
	}
	t.Logf("ctr = %d on both after %d increments on each node", v, each)
}

// Test 9: three nodes in a full mesh: a write anywhere reaches everywhere
// exactly once; a restarted node catches up.
func TestReplThreeNodeMesh(t *testing.T) {
	nodes := newCluster(t, 3)
	for _, n := range nodes {
		n.start()
	}
	const per = 300
	for _, n := range nodes {
		for i := range per {
			n.cmd(fmt.Sprintf("set %s%d 0 0 1\r\nv\r\n", n.name, i), "STORED")
		}
	}
	items := waitIdentical(t, replLag, nodes...)
	if len(items) != 3*per {
		t.Fatalf("%d items, want %d", len(items), 3*per)
	}
	// Exactly once: each node's own log holds only its own writes (nothing
	// applied is re-shipped), and every link applied exactly that log.
	exactlyOnce := func() {
		t.Helper()
		for _, n := range nodes {
			st := n.stats()
			if last := statU(t, st, "tcache_log_last_seq"); last != per {
				t.Errorf("node %s: log last seq %d, want its own %d writes", n.name, last, per)
			}
			for i := range n.peers {
				p := "repl_peer_" + strconv.Itoa(i) + "_"
				if got := statU(t, st, p+"applied_seq"); got != per {
					t.Errorf("node %s: applied %d of %s, want %d", n.name, got, st[p+"addr"], per)
				}
				// One host, one clock: no skew anywhere.
				if got := statU(t, st, p+"clock_skew_refusals"); got != 0 {
					t.Errorf("node %s: %d clock skew refusals of %s", n.name, got, st[p+"addr"])
				}
			}
			if got := statU(t, st, "repl_clock_ahead_versions"); got != 0 {
				t.Errorf("node %s: %d versions ahead of its clock", n.name, got)
			}
		}
	}
	waitUntil(t, replLag, "every link reports its applied seq", func() bool {
		for _, n := range nodes {
			if n.sumPeerStat("applied_seq") != 2*per {
				return false
			}
		}
		return true
	})
	exactlyOnce()

	c := nodes[2]
	c.stop()
	for i := range 100 {
		nodes[0].cmd(fmt.Sprintf("set late-a%d 0 0 1\r\nw\r\n", i), "STORED")
		nodes[1].cmd(fmt.Sprintf("delete b%d\r\n", i), "DELETED")
	}
	c.start()
	items = waitIdentical(t, replLag, nodes...)
	if len(items) != 3*per {
		t.Errorf("%d items after the restart, want %d", len(items), 3*per)
	}
	noFullResyncs(t, nodes...)
}

// Test 10: a node whose data directory was wiped rejoins by a full resync
// and does not wipe its peer.
func TestReplWipedNodeRejoins(t *testing.T) {
	nodes := newCluster(t, 2, "--log-retention-age", "1s")
	a, b := nodes[0].start(), nodes[1].start()
	n := writeLoad(a, "w", nil, 5*time.Second, 3000)
	waitIdentical(t, replLag, a, b)
	oldID := b.stats()["repl_node_id"]
	waitUntil(t, replLag, "a's log trimmed", func() bool { return statU(t, a.stats(), "tcache_log_first_seq") > 1 })
	b.stop()
	if err := os.RemoveAll(b.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b.start()
	if id := b.stats()["repl_node_id"]; id == oldID {
		t.Errorf("wiped b kept its node id %s", id)
	}
	items := waitIdentical(t, 3*replLag, a, b)
	if len(items) != n {
		t.Errorf("%d items on both, want a's %d", len(items), n)
	}
	if r := b.peerStat(0, "full_resyncs"); r < 1 {
		t.Errorf("wiped b did %d full resyncs, want at least 1", r)
	}
}

// Test 11: a wrong secret, garbage and a memcached client on the
// replication port are refused and the server is unaffected. The pair runs
// with a secret and TLS (a throwaway CA), which the good link passes.
func TestReplRefusesStrangers(t *testing.T) {
	dir := t.TempDir()
	ca := writeTestPKI(t, dir)
	tlsArgs := []string{"--replication-secret", "s3cret",
		"--replication-tls-cert", filepath.Join(dir, "node.pem"), "--replication-tls-key", filepath.Join(dir, "node-key.pem"),
		"--replication-tls-ca", ca}
	nodes := newCluster(t, 2, tlsArgs...)
	a, b := nodes[0].start(), nodes[1].start()
	a.cmd("set k 0 0 2\r\nok\r\n", "STORED")
	waitValue(t, b, "k", "ok")

	raddr := "127.0.0.1:" + strconv.Itoa(a.rport)
	for _, probe := range []string{"get k\r\n", "stats\r\n", "\x00\x00\x00\x05garbage-garbage", strings.Repeat("\xff", 4096)} {
		nc, err := net.DialTimeout("tcp", raddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(nc, probe)
		got, _ := io.ReadAll(nc) // returns when a closes it
		nc.Close()
		if strings.Contains(string(got), "VALUE") || strings.Contains(string(got), "STAT") {
			t.Errorf("probe %q got an answer: %q", probe, got)
		}
	}

	// A third node with the right TLS but a wrong secret pulls nothing.
	wrong := newCluster(t, 1, "--replication-secret", "wrong", "--replication-tls-cert", filepath.Join(dir, "node.pem"),
		"--replication-tls-key", filepath.Join(dir, "node-key.pem"), "--replication-tls-ca", ca)[0]
	wrong.peers = []*replNode{a}
	wrong.start()
	time.Sleep(2 * time.Second)
	if _, _, ok := wrong.get("k"); ok {
		t.Error("a node with a wrong secret received data")
	}
	if st := wrong.stats()["repl_peer_0_state"]; st == "streaming" {
		t.Errorf("wrong-secret link state %q", st)
	}
	// And one without TLS at all.
	plain := newCluster(t, 1, "--replication-secret", "s3cret")[0]
	plain.peers = []*replNode{a}
	plain.start()
	time.Sleep(time.Second)
	if _, _, ok := plain.get("k"); ok {
		t.Error("a node without TLS received data")
	}

	// a is unaffected: it serves clients and its link to b still works.
	b.cmd("set k2 0 0 2\r\nok\r\n", "STORED")
	waitValue(t, a, "k2", "ok")
	if v, _, ok := a.get("k"); !ok || v != "ok" {
		t.Errorf("k on a: %q %v", v, ok)
	}
	logs := a.srv.Stderr()
	if !strings.Contains(logs, "component=repl") {
		t.Errorf("no replication log line about the refused connections:\n%s", logs)
	}
	wrong.stop()
	plain.stop()
	a.stop()
	b.stop()
}

// writeTestPKI writes a throwaway CA and one node certificate for
// 127.0.0.1 (used as server and client certificate) into dir and returns
// the CA's path.
func writeTestPKI(t *testing.T, dir string) string {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tcache test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "tcache node"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write("node.pem", "CERTIFICATE", der)
	write("node-key.pem", "EC PRIVATE KEY", keyDER)
	return write("ca.pem", "CERTIFICATE", caDER)
}

// TestReplServeWhileSyncingFalse: a node told not to serve while syncing
// opens its client port only once its link has caught up, so its first
// client already sees everything the peer had (repcached's behaviour, made a
// choice); the default serves at once.
func TestReplServeWhileSyncingFalse(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0].start(), nodes[1]
	n := writeLoad(a, "s", nil, 5*time.Second, 3000)
	b.extra = append(b.extra, "--replication-serve-while-syncing=false")
	b.start() // returns once b's client port accepts
	if got := len(b.dump()); got != n {
		t.Fatalf("b answered its first client with %d items, want all %d of a's", got, n)
	}
	if !strings.Contains(b.srv.Stderr(), "replication caught up") {
		t.Errorf("b's log does not say it waited to catch up:\n%s", b.srv.Stderr())
	}
}
