package repl

import (
	"fmt"
	"testing"
	"time"
)

func holds(m *memLocal, key, value string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.data[key]
	return ok && !it.deleted && it.value == value
}

// waiting reports how many times a source asked for LogChanged.
func (m *memLocal) waiting() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.waits
}

// TestIdleSourceWakesOnWrite: a source that has shipped its whole log
// sleeps until the log grows. The fallback wake-up (the heartbeat) is an
// hour away here, so only the notification can ship the writes; and each
// write costs the idle source about one more wait, not a poll loop.
func TestIdleSourceWakesOnWrite(t *testing.T) {
	a, b := newMemLocal(1), newMemLocal(2)
	o := testOptions()
	o.HeartbeatInterval, o.Timeout = time.Hour, 2*time.Hour
	a.write(OpPut, "k0", "v0", 1)
	na := tcpNode(t, a, o)
	tcpNode(t, b, o, na.Addr().String())
	waitFor(t, 30*time.Second, "the first entry", func() bool { return holds(b, "k0", "v0") })
	waitFor(t, 30*time.Second, "the source to go idle", func() bool { return a.waiting() > 0 })
	const writes = 20
	w0 := a.waiting()
	for i := 1; i <= writes; i++ {
		key, value := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
		a.write(OpPut, key, value, uint64(i+1))
		waitFor(t, 30*time.Second, "write "+key+" on the peer", func() bool { return holds(b, key, value) })
		// The source ships, then waits again: at most a couple of waits
		// per write (the re-check after taking the channel may see the
		// next write), never one per poll tick.
		waitFor(t, 30*time.Second, "the source to wait again", func() bool { return a.waiting() > w0 })
		w0 = a.waiting()
	}
	if got := a.waiting(); got > 3*writes+1 {
		t.Fatalf("%d waits for %d writes: the idle source loops", got, writes)
	}
}

// TestIdleSourceFallback: a Local whose notifications are all missed still
// gets its writes shipped, at the source's heartbeat wake-up.
func TestIdleSourceFallback(t *testing.T) {
	a, b := newMemLocal(1), newMemLocal(2)
	a.deaf = true
	o := testOptions() // heartbeats every 50 ms
	na := tcpNode(t, a, o)
	nb := tcpNode(t, b, o, na.Addr().String())
	waitFor(t, 30*time.Second, "the source to go idle", func() bool { return a.waiting() > 0 })
	for i := 1; i <= 3; i++ {
		key, value := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
		a.write(OpPut, key, value, uint64(i))
		waitFor(t, 30*time.Second, "write "+key+" on the peer", func() bool { return holds(b, key, value) })
	}
	if st := nb.Stats()[0]; st.Reconnects != 0 || st.State != StateStreaming {
		t.Fatalf("link %+v: heartbeats of the idle source did not keep it up", st)
	}
}
