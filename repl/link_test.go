package repl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tcpNode starts a Node over local on 127.0.0.1 with peers.
func tcpNode(t *testing.T, local Local, o Options, peers ...string) *Node {
	t.Helper()
	o.Peers = peers
	n, err := New(local, o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBounded(t, n) })
	return n
}

func closeBounded(t *testing.T, n *Node) {
	done := make(chan struct{})
	go func() { n.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("Close took more than 10s")
	}
}

// waitFor polls cond for up to limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tcache-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      pool, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion: tls.VersionTLS13,
	}
}

// TestTCPSecretAndTLS: two nodes on 127.0.0.1 with a secret and mutual
// TLS stream both ways, and report their stats.
func TestTCPSecretAndTLS(t *testing.T) {
	a, b := newMemLocal(1), newMemLocal(2)
	o := testOptions()
	o.Secret = []byte("s3cret")
	o.TLS = testTLS(t)
	na := tcpNode(t, a, o)
	nb := tcpNode(t, b, o, na.Addr().String())
	// a pulls b too: restart a with b as its peer.
	closeBounded(t, na)
	ln, err := net.Listen("tcp", na.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	o2 := o
	o2.Peers = []string{nb.Addr().String()}
	na, err = New(a, o2)
	if err != nil {
		t.Fatal(err)
	}
	if err := na.Start(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBounded(t, na) })

	for i := range 100 {
		a.write(OpPut, fmt.Sprintf("a%d", i), "x", uint64(i+1))
		b.write(OpPut, fmt.Sprintf("b%d", i), "y", uint64(i+1))
	}
	waitFor(t, 10*time.Second, "both nodes to converge", func() bool {
		_, sa, _ := a.Applied(2)
		_, sb, _ := b.Applied(1)
		return sa == 100 && sb == 100
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := na.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := a.dump(nil), b.dump(nil); got != want {
		t.Fatalf("contents differ:\na:%s\nb:%s", got, want)
	}
	waitFor(t, 5*time.Second, "stats to settle", func() bool {
		st := nb.Stats()
		return len(st) == 1 && st[0].ServedAcked == 100 && st[0].LagRecords == 0
	})
	st := nb.Stats()[0]
	if st.NodeID != 1 || st.State != StateStreaming || st.AppliedSeq != 100 || st.BytesReceived == 0 || st.BytesSent == 0 || st.ServedBytes == 0 || !st.ServedActive || st.FullResyncs != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRefused: a wrong secret, a secret on one side only, garbage and a
// memcached client are closed, counted, and the server goes on serving.
func TestRefused(t *testing.T) {
	a := newMemLocal(1)
	a.write(OpPut, "k", "v", 1)
	o := testOptions()
	o.Secret = []byte("right")
	na := tcpNode(t, a, o)
	addr := na.Addr().String()

	for _, secret := range []string{"wrong", ""} {
		ob := testOptions()
		ob.Secret = []byte(secret)
		b := newMemLocal(2)
		nb := tcpNode(t, b, ob, addr)
		waitFor(t, 5*time.Second, "an authentication failure", func() bool {
			return strings.Contains(nb.Stats()[0].LastError, "authentication failed")
		})
		if st := nb.Stats()[0]; st.State == StateStreaming || st.AppliedSeq != 0 {
			t.Fatalf("secret %q: link got data: %+v", secret, st)
		}
		if _, _, ok := b.Applied(1); ok {
			t.Fatalf("secret %q: applied an offset", secret)
		}
		closeBounded(t, nb)
	}

	for _, junk := range [][]byte{
		[]byte("get foo\r\n"),
		[]byte("stats\r\n"),
		{0x80, 0x00, 0x00, 0x00}, // a binary-protocol magic
		bytes.Repeat([]byte{0xFF}, 100),
		{0, 0, 0, 5, 1, 'T', 'C', 'R', 'P', 0, 0, 0, 0}, // a HELLO with a bad CRC
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(junk)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.Copy(io.Discard, c); err != nil || n != 0 {
			t.Fatalf("junk %q: read %d bytes, %v (want a close with nothing sent)", junk, n, err)
		}
		c.Close()
	}
	waitFor(t, 5*time.Second, "refusals counted", func() bool { return na.Server().Refused() >= 7 })

	// The server still serves a good puller.
	ob := testOptions()
	ob.Secret = []byte("right")
	b := newMemLocal(3)
	tcpNode(t, b, ob, addr)
	waitFor(t, 5*time.Second, "the good puller", func() bool { _, s, _ := b.Applied(1); return s == 1 })
	if p := na.Server().panics.Load(); p != 0 {
		t.Fatalf("%d panics", p)
	}
}

// TestSlowPullerBounded stalls the puller's Apply while the source has far
// more log than TCP buffers hold: the source stops reading its log (TCP
// backpressure) and never buffers more than about a chunk; once released,
// the puller gets everything.
func TestSlowPullerBounded(t *testing.T) {
	const entries, size = 3000, 16 << 10 // 48 MiB of records
	a, b := newMemLocal(1), newMemLocal(2)
	value := strings.Repeat("v", size)
	for i := range entries {
		a.write(OpPut, fmt.Sprintf("k%05d", i), value, uint64(i+1))
	}
	gate := make(chan struct{})
	b.applyGate = gate
	o := testOptions()
	na := tcpNode(t, a, o)
	nb := tcpNode(t, b, o, na.Addr().String())
	time.Sleep(time.Second)
	a.mu.Lock()
	read := a.maxRead
	a.mu.Unlock()
	hi := na.Stats()[0].ServedBufferHi
	t.Logf("stalled: source read %d of %d entries (%d MiB), chunk buffer high-water %d KiB", read, entries, read*size>>20, hi>>10)
	if read*size > 24<<20 {
		t.Errorf("source read %d MiB of log for a stalled puller", read*size>>20)
	}
	if limit := int64(2 * (o.EnsureDefaults().ChunkBytes + size + frameOverhead)); hi > limit {
		t.Errorf("chunk buffer reached %d bytes, limit %d", hi, limit)
	}
	b.mu.Lock()
	b.applyGate = nil
	b.mu.Unlock()
	close(gate)
	waitFor(t, 20*time.Second, "the puller to catch up", func() bool { _, s, _ := b.Applied(1); return s == entries })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := nb.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWaitCaughtUpTimeout: an unreachable peer makes WaitCaughtUp return
// the context's error; a node without peers is caught up at once.
func TestWaitCaughtUpTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	n := tcpNode(t, newMemLocal(1), testOptions(), dead)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := n.WaitCaughtUp(ctx); err == nil {
		t.Fatal("caught up with an unreachable peer")
	}
	if st := n.Stats()[0]; st.State != StateConnecting || st.Reconnects == 0 {
		t.Fatalf("stats %+v", st)
	}
	alone := tcpNode(t, newMemLocal(2), testOptions())
	if err := alone.WaitCaughtUp(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, o := range map[string]Options{
		"bad peer":        {Peers: []string{"nohostport"}},
		"duplicate peer":  {Peers: []string{"a:1", "a:1"}},
		"timeout":         {Timeout: time.Second, HeartbeatInterval: 2 * time.Second},
		"backoff":         {BackoffMin: time.Second, BackoffMax: time.Millisecond},
		"chunk":           {ChunkBytes: 10},
		"tls without key": {TLS: &tls.Config{}},
	} {
		if err := o.EnsureDefaults().Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	var o Options
	if err := o.EnsureDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	if o.Listen != DefaultListen || o.Timeout != DefaultTimeout || o.BackoffMax != DefaultBackoffMax {
		t.Fatalf("defaults %+v", o)
	}
}

// FuzzLinkServer feeds arbitrary bytes to the source side of a link: it
// closes the connection with an error, never panics.
func FuzzLinkServer(f *testing.F) {
	var fb frameBuf
	fb.hello(&helloMsg{version: protocolVersion, node: 2})
	fb.u64s(framePull, 0, 1)
	fb.u64s(frameAck, 3)
	fb.u64s(frameHeartbeat, 3, 5)
	f.Add(bytes.Clone(fb.buf))
	f.Add(fb.buf[:20])
	f.Add([]byte("get foo\r\n"))
	f.Add(encodeAll())
	local := newMemLocal(1)
	for i := range 5 {
		local.write(OpPut, fmt.Sprint("k", i), "v", uint64(i+1))
	}
	o := testOptions()
	o.Timeout = time.Second
	o.HeartbeatInterval = 100 * time.Millisecond
	s, err := NewServer(local, o)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c1, c2 := net.Pipe()
		s.track(c2)
		done := make(chan struct{})
		go func() { s.serveConn(c2); close(done) }()
		go func() { _, _ = io.Copy(io.Discard, c1) }()
		_ = c1.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c1.Write(in)
		c1.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server session did not end")
		}
		if p := s.panics.Load(); p != 0 {
			t.Fatalf("server panicked")
		}
	})
}

// countingLocal records the most entries one ReadLog call passed.
type countingLocal struct {
	*memLocal
	mostPerCall atomic.Int64
}

func (c *countingLocal) ReadLog(from uint64, fn func(e Entry) bool) (uint64, error) {
	var n int64
	last, err := c.memLocal.ReadLog(from, func(e Entry) bool {
		n++
		return fn(e)
	})
	for {
		m := c.mostPerCall.Load()
		if n <= m || c.mostPerCall.CompareAndSwap(m, n) {
			break
		}
	}
	return last, err
}

// TestSupersededBacklogChunked: after an outage most of a backlog can be
// entries whose key was overwritten since. They ship nothing but each costs
// a lookup, so a chunk must be bounded in entries too, or one read walks the
// whole backlog (starving heartbeats, holding up Close: seen after a 60 s
// outage under a set-heavy load).
func TestSupersededBacklogChunked(t *testing.T) {
	const entries = 5 * maxChunkEntries
	a := &countingLocal{memLocal: newMemLocal(1)}
	for i := range entries {
		a.write(OpPut, "hot", fmt.Sprintf("v%d", i), uint64(i+1))
	}
	b := newMemLocal(2)
	na := tcpNode(t, a, testOptions())
	tcpNode(t, b, testOptions(), na.Addr().String())
	waitFor(t, 20*time.Second, "the puller to catch up", func() bool { _, s, _ := b.Applied(1); return s == entries })
	b.mu.Lock()
	got := b.data["hot"].value
	b.mu.Unlock()
	if got != fmt.Sprintf("v%d", entries-1) {
		t.Fatalf("puller holds %q", got)
	}
	if most := a.mostPerCall.Load(); most > maxChunkEntries {
		t.Fatalf("one ReadLog call passed %d entries, bound %d", most, maxChunkEntries)
	}
}
