package repl

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/clock"
)

func TestClockOffset(t *testing.T) {
	for _, c := range []struct{ remote, sent, recv, want int64 }{
		{1000, 1000, 1000, 0},
		{1005, 1000, 1010, 0},    // inside the round trip: nothing certain
		{1600, 1000, 1010, 590},  // ahead: measured against the receipt
		{400, 1000, 1010, -600},  // behind: measured against the send
		{1010, 1000, 1010, 0},    // at the edge
		{999, 1000, 1000, -1},    // just behind
		{0, 1000, 1010, -1000},   // a peer whose clock reads the epoch
		{5000, 1000, 4000, 1000}, // a slow handshake shrinks the estimate
	} {
		if got := clockOffset(c.remote, c.sent, c.recv); got != c.want {
			t.Errorf("clockOffset(%d, %d, %d) = %d, want %d", c.remote, c.sent, c.recv, got, c.want)
		}
	}
}

// A HELLO of protocol version 1 (before the clock field) is refused with
// an error that names both versions, not as garbage.
func TestHelloVersion1Refused(t *testing.T) {
	p := make([]byte, 0, helloLen-8)
	p = append(p, helloMagic[:]...)
	p = append(p, 1, 0)
	p = binary.BigEndian.AppendUint64(p, 7)
	p = append(p, make([]byte, nonceLen+16)...)
	var h helloMsg
	err := h.decode(p)
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "protocol version 1, want 2") {
		t.Fatalf("decode of a version 1 HELLO: %v", err)
	}
}

// skewPair starts nodes a and b, each pulling the other, with fake
// clocks; testOptions' 50 ms heartbeats.
func skewPair(t *testing.T, ca, cb *clock.Fake) (a, b *memLocal, na, nb *Node) {
	a, b = newMemLocal(1), newMemLocal(2)
	oa, ob := testOptions(), testOptions()
	oa.Clock, ob.Clock = ca, cb
	na = tcpNode(t, a, oa)
	nb = tcpNode(t, b, ob, na.Addr().String())
	// a pulls b too: restart a with b as its peer on the same address.
	closeBounded(t, na)
	na = tcpNodeAt(t, a, oa, na.Addr().String(), nb.Addr().String())
	return a, b, na, nb
}

// tcpNodeAt starts a Node over local listening on addr (a port a closed
// node just released).
func tcpNodeAt(t *testing.T, local Local, o Options, addr string, peers ...string) *Node {
	t.Helper()
	o.Peers = peers
	n, err := New(local, o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ln); err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBounded(t, n) })
	return n
}

// TestClockSkewRefusedAtHandshake: a peer whose wall clock is 2 s ahead
// (bound 500 ms) is refused by both links, counted and explained; nothing
// crosses. Once the clocks agree, the links retry and both nodes converge.
func TestClockSkewRefusedAtHandshake(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	ca, cb := clock.NewFake(start.Add(2*time.Second)), clock.NewFake(start)
	a, b, na, nb := skewPair(t, ca, cb)
	a.write(OpPut, "from-a", "1", 1)
	b.write(OpPut, "from-b", "2", 2)
	waitFor(t, 30*time.Second, "both links to refuse twice", func() bool {
		return na.Stats()[0].SkewRefusals >= 2 && nb.Stats()[0].SkewRefusals >= 2
	})
	sa, sb := na.Stats()[0], nb.Stats()[0]
	if sb.ClockOffset != 2000 || sa.ClockOffset != -2000 {
		t.Errorf("offsets: b sees a at %d ms, a sees b at %d ms; want 2000, -2000", sb.ClockOffset, sa.ClockOffset)
	}
	if !strings.Contains(sb.LastError, "max_clock_skew") || !strings.Contains(sb.LastError, "ahead") ||
		!strings.Contains(sa.LastError, "behind") {
		t.Errorf("errors: b %q, a %q", sb.LastError, sa.LastError)
	}
	if sa.State == StateStreaming || sb.State == StateStreaming || holds(b, "from-a", "1") || holds(a, "from-b", "2") {
		t.Fatalf("a skewed peer streamed: a %+v b %+v", sa, sb)
	}
	ca.Set(start.Add(400 * time.Millisecond)) // within the bound
	waitFor(t, 30*time.Second, "both nodes to converge", func() bool {
		return holds(b, "from-a", "1") && holds(a, "from-b", "2")
	})
	if o := nb.Stats()[0].ClockOffset; o != 400 {
		t.Errorf("b sees a at %d ms, want 400", o)
	}
}

// TestClockSkewWhileStreaming: a peer's clock that jumps ahead during a
// link shows in its next HEARTBEAT; the puller closes the link, and the
// redial is refused until the clocks agree again.
func TestClockSkewWhileStreaming(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	ca, cb := clock.NewFake(start), clock.NewFake(start)
	a, b, na, nb := skewPair(t, ca, cb)
	a.write(OpPut, "k", "1", 1)
	waitFor(t, 30*time.Second, "the first write", func() bool { return holds(b, "k", "1") })
	ca.Advance(time.Second)
	waitFor(t, 30*time.Second, "b to drop its link to a", func() bool { return nb.Stats()[0].SkewRefusals >= 2 })
	if st := nb.Stats()[0]; !strings.Contains(st.LastError, "max_clock_skew") {
		t.Fatalf("b's link: %+v", st)
	}
	cb.Advance(time.Second)
	a.write(OpPut, "k", "2", 2)
	waitFor(t, 30*time.Second, "the link to resume", func() bool { return holds(b, "k", "2") })
	_ = na
}

// A negative MaxClockSkew turns the check off.
func TestClockSkewCheckOff(t *testing.T) {
	a, b := newMemLocal(1), newMemLocal(2)
	oa, ob := testOptions(), testOptions()
	oa.Clock = clock.NewFake(time.Unix(1_700_000_000, 0).Add(time.Hour))
	ob.Clock = clock.NewFake(time.Unix(1_700_000_000, 0))
	ob.MaxClockSkew = -1
	na := tcpNode(t, a, oa)
	nb := tcpNode(t, b, ob, na.Addr().String())
	a.write(OpPut, "k", "1", 1)
	waitFor(t, 30*time.Second, "the write", func() bool { return holds(b, "k", "1") })
	if st := nb.Stats()[0]; st.SkewRefusals != 0 || st.ClockOffset != 3600_000 {
		t.Fatalf("b's link: %+v", st)
	}
}
