package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ErrUnreachable is wrapped when a server cannot be connected to.
var ErrUnreachable = errors.New("bench: cannot connect")

// Report is the outcome of Run: one entry per run (Options.RunCount).
type Report struct {
	Runs []RunResult `json:"runs"`
}

// RunResult is one run's figures.
type RunResult struct {
	// Run counts from 1.
	Run int `json:"run"`
	// Seconds from the first request to the last reply.
	Seconds float64 `json:"seconds"`
	// Connections opened (threads × clients × servers).
	Connections int `json:"connections"`
	// Sets, Gets and Totals (both) are per command type. For gets, Count is
	// the number of get commands and Hits+Misses the number of keys asked.
	Sets   OpResult `json:"sets"`
	Gets   OpResult `json:"gets"`
	Totals OpResult `json:"totals"`
	// ServerErrors counts SERVER_ERROR / NOT_STORED (and binary error
	// status) replies; such requests are in the counts and histograms.
	ServerErrors int64 `json:"server_errors"`
	// CPUSeconds is the bench process's own user+system CPU time for the
	// run (getrusage RUSAGE_SELF), and CPUSecondsPerMillion that per
	// million requests (sets + get commands).
	CPUSeconds           float64 `json:"cpu_seconds"`
	CPUSecondsPerMillion float64 `json:"cpu_seconds_per_million_requests"`
	// ServerCPUSecondsPerMillion is the server process's user+system CPU
	// time per million requests over the run (/proc/PID/stat, all its
	// threads): set by bench compare, which starts the servers; 0 when
	// unknown.
	ServerCPUSecondsPerMillion float64 `json:"server_cpu_seconds_per_million_requests,omitempty"`
}

// OpResult is the figures of one command type.
type OpResult struct {
	Count        int64        `json:"count"`
	Hits         int64        `json:"hits"`
	Misses       int64        `json:"misses"`
	OpsPerSec    float64      `json:"ops_per_sec"`
	HitsPerSec   float64      `json:"hits_per_sec"`
	MissesPerSec float64      `json:"misses_per_sec"`
	AvgLatencyMs float64      `json:"avg_latency_ms"`
	Percentiles  []Percentile `json:"percentiles_ms"`
	KBPerSec     float64      `json:"kb_per_sec"`
	// Histogram holds every latency in microseconds (merged from the
	// connections' histograms).
	Histogram *hdrhistogram.Histogram `json:"-"`
}

// Percentile is one latency percentile in milliseconds.
type Percentile struct {
	P  float64 `json:"p"`
	Ms float64 `json:"ms"`
}

// Run loads the servers as o describes, o.RunCount times, and returns the
// figures. It writes nothing except progress lines to o.Progress. It returns
// an error wrapping ErrInvalidOptions for impossible options, ErrUnreachable
// when a server cannot be connected to, and ErrProtocol when a server
// answers something that is not a memcached reply; ctx cancels a run
// (the figures so far are then discarded).
func Run(ctx context.Context, o Options) (*Report, error) {
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	rep := &Report{}
	for i := range o.RunCount {
		r, err := runOnce(ctx, &o)
		if err != nil {
			return nil, err
		}
		r.Run = i + 1
		rep.Runs = append(rep.Runs, r)
	}
	return rep, nil
}

func runOnce(ctx context.Context, o *Options) (RunResult, error) {
	var ring *ketama
	if len(o.Servers) > 1 {
		ring = newKetama(o.Servers)
	}
	perServer := o.Threads * o.Clients
	conns := make([]net.Conn, 0, o.connections())
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	d := net.Dialer{Timeout: o.DialTimeout}
	if o.Protocol == ProtocolBinary {
		for _, addr := range o.Servers {
			if err := probeBinary(ctx, &d, addr); err != nil {
				return RunResult{}, err
			}
		}
	}
	for _, addr := range o.Servers {
		for range perServer {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return RunResult{}, fmt.Errorf("%w to %s: %w", ErrUnreachable, addr, unwrapOp(err))
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			conns = append(conns, c)
		}
	}

	clock := time.Now()
	clients := make([]*client, len(conns))
	values := randomValues(o)
	for i, c := range conns {
		server := i / perServer
		clients[i] = newClient(o, c, server, ring, i%perServer, perServer, clock, values)
	}

	var stop atomic.Bool
	var once sync.Once
	var firstErr error
	fail := func(err error) {
		once.Do(func() {
			firstErr = err
			stop.Store(true)
			for _, c := range conns { // unblock the others' reads
				_ = c.SetDeadline(time.Now())
			}
		})
	}
	if o.TestTime > 0 {
		t := time.AfterFunc(o.TestTime, func() { stop.Store(true) })
		defer t.Stop()
	}
	cancelDone := make(chan struct{})
	defer close(cancelDone)
	go func() {
		select {
		case <-ctx.Done():
			fail(ctx.Err())
		case <-cancelDone:
		}
	}()

	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			if err := c.run(&stop); err != nil {
				fail(fmt.Errorf("bench: %s: %w", o.Servers[i/perServer], err))
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if o.Progress != nil {
		progress(o.Progress, start, clients, done)
	} else {
		<-done
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	if firstErr != nil {
		return RunResult{}, firstErr
	}
	return summarize(o, clients, elapsed, cpu), nil
}

// ErrUnsupported is wrapped when a server does not speak the protocol.
var ErrUnsupported = errors.New("bench: protocol not supported by the server")

// probeBinary sends one binary NOOP to addr and expects a binary reply
// within the dial timeout: a server that does not speak the binary protocol
// would otherwise wait forever for a line ending.
func probeBinary(ctx context.Context, d *net.Dialer, addr string) error {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%w to %s: %w", ErrUnreachable, addr, unwrapOp(err))
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d.Timeout))
	if _, err := c.Write(appendBinHeader(nil, binOpNoop, 0, 0, 0)); err != nil {
		return fmt.Errorf("%w: %s: %s: %w", ErrUnsupported, addr, ProtocolBinary, unwrapOp(err))
	}
	var h [binHeaderLen]byte
	if _, err := io.ReadFull(c, h[:]); err != nil || h[0] != binResMagic || h[1] != binOpNoop {
		return fmt.Errorf("%w: %s does not answer a %s NOOP", ErrUnsupported, addr, ProtocolBinary)
	}
	return nil
}

// unwrapOp drops the *net.OpError layers that repeat the address.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// progress writes a line once a second until done is closed.
func progress(w io.Writer, start time.Time, clients []*client, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastOps int64
	last := start
	for {
		select {
		case <-done:
			fmt.Fprint(w, "\r\033[K")
			return
		case now := <-t.C:
			var ops, hits, misses, lat int64
			for _, c := range clients {
				ops += c.counts.sets.Load() + c.counts.gets.Load()
				hits += c.counts.hits.Load()
				misses += c.counts.misses.Load()
				lat += c.counts.latencyNanos.Load()
			}
			rate := float64(ops-lastOps) / now.Sub(last).Seconds()
			hitRatio, avg := 0.0, 0.0
			if hits+misses > 0 {
				hitRatio = float64(hits) / float64(hits+misses)
			}
			if ops > 0 {
				avg = float64(lat) / float64(ops) / 1e6
			}
			fmt.Fprintf(w, "\r\033[K[%3ds] %.0f ops/s, %d ops, hit ratio %.3f, avg latency %.3f ms",
				int(now.Sub(start).Seconds()), rate, ops, hitRatio, avg)
			lastOps, last = ops, now
		}
	}
}

// summarize merges the clients' counters and histograms.
func summarize(o *Options, clients []*client, elapsed, cpu time.Duration) RunResult {
	r := RunResult{Seconds: elapsed.Seconds(), Connections: len(clients), CPUSeconds: cpu.Seconds()}
	var setH, getH []*hdrhistogram.Histogram
	var setBytes, getBytes int64
	for _, c := range clients {
		r.Sets.Count += c.counts.sets.Load()
		r.Gets.Count += c.counts.gets.Load()
		r.Gets.Hits += c.counts.hits.Load()
		r.Gets.Misses += c.counts.misses.Load()
		setBytes += c.counts.setBytes.Load()
		getBytes += c.counts.getBytes.Load()
		r.ServerErrors += c.counts.serverErrors.Load()
		setH = append(setH, c.setHist)
		getH = append(getH, c.getHist)
	}
	r.Sets.Histogram = mergeHistograms(setH...)
	r.Gets.Histogram = mergeHistograms(getH...)
	r.Totals.Histogram = mergeHistograms(r.Sets.Histogram, r.Gets.Histogram)
	r.Totals.Count = r.Sets.Count + r.Gets.Count
	r.Totals.Hits, r.Totals.Misses = r.Gets.Hits, r.Gets.Misses
	secs := elapsed.Seconds()
	fill := func(op *OpResult, bytes int64) {
		op.OpsPerSec = float64(op.Count) / secs
		op.HitsPerSec = float64(op.Hits) / secs
		op.MissesPerSec = float64(op.Misses) / secs
		op.KBPerSec = float64(bytes) / 1024 / secs
		op.AvgLatencyMs = op.Histogram.Mean() / 1000
		for _, p := range o.Percentiles {
			op.Percentiles = append(op.Percentiles, Percentile{P: p, Ms: float64(op.Histogram.ValueAtQuantile(p)) / 1000})
		}
	}
	fill(&r.Sets, setBytes)
	fill(&r.Gets, getBytes)
	fill(&r.Totals, setBytes+getBytes)
	if r.Totals.Count > 0 {
		r.CPUSecondsPerMillion = r.CPUSeconds / (float64(r.Totals.Count) / 1e6)
	}
	return r
}
