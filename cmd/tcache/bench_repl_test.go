package main

// The replication figures of docs/benchmarks.md (issue 6): lag under a
// set-heavy load at about half of a node's maximum, catch-up speed after an
// outage under load, and the throughput cost of a live peer. It drives real
// processes with `tcache bench` and reads `stats`, and rewrites the section
// between the benchrepl markers of docs/benchmarks.md. It runs only when
// asked:
//
//	make bench-repl                      # 60 s outage, 10 s per run
//	TCACHE_BENCH_REPL=1 go test -run TestBenchReplication -v ./cmd/tcache
//
// TCACHE_BENCH_REPL_OUTAGE (default 15s) and TCACHE_BENCH_REPL_RUN (default
// 5s) bound it; TCACHE_BENCH_REPL_OUT is the file to rewrite (default
// docs/benchmarks.md; "-" writes nothing).

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/testserver"
)

func benchEnvDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// benchResult is what these figures read from `tcache bench --json-out-file`.
type benchResult struct {
	Runs []struct {
		Seconds float64 `json:"seconds"`
		Totals  struct {
			OpsPerSec   float64 `json:"ops_per_sec"`
			Percentiles []struct {
				P  float64 `json:"p"`
				Ms float64 `json:"ms"`
			} `json:"percentiles_ms"`
		} `json:"totals"`
	} `json:"runs"`
}

// runBench runs `tcache bench` against addr for d and returns ops/s and
// the p99 latency in ms.
func runReplBench(t *testing.T, addr string, d time.Duration, clients int, ratio string) (ops, p99 float64) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	out := filepath.Join(t.TempDir(), "bench.json")
	cmd := exec.Command(testserver.Binary(t), "bench", "-s", "127.0.0.1", "-p", port, "-t", "1", "-c", strconv.Itoa(clients),
		"--ratio", ratio, "--test-time", d.String(), "--key-maximum", "100000", "-d", "100",
		"--distinct-client-seed", "--hide-histogram", "--json-out-file", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tcache bench: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r benchResult
	if err := json.Unmarshal(b, &r); err != nil || len(r.Runs) == 0 {
		t.Fatalf("bench json: %v\n%s", err, b)
	}
	tot := r.Runs[0].Totals
	for _, p := range tot.Percentiles {
		if p.P == 99 {
			p99 = p.Ms
		}
	}
	return tot.OpsPerSec, p99
}

// probeLag writes a fresh key on from every interval until stop and
// measures how long each takes to be readable on to (polled every
// millisecond, each probe bounded by 10 s).
func probeLag(t *testing.T, from, to *replNode, stop <-chan struct{}, interval time.Duration) []time.Duration {
	w := dialText(t, from.addr())
	r := dialText(t, to.addr())
	w.nc.SetDeadline(time.Now().Add(time.Hour))
	r.nc.SetDeadline(time.Now().Add(time.Hour))
	var lags []time.Duration
	for i := 0; ; i++ {
		select {
		case <-stop:
			return lags
		case <-time.After(interval):
		}
		key := "probe-" + strconv.Itoa(i)
		w.send("set " + key + " 0 0 1\r\nx\r\n")
		w.expect("STORED")
		t0 := time.Now()
		for {
			r.send("mg " + key + "\r\n")
			if l := r.line(); l == "HD" {
				lags = append(lags, time.Since(t0))
				break
			}
			if time.Since(t0) > 10*time.Second {
				lags = append(lags, time.Since(t0))
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

func TestBenchReplication(t *testing.T) {
	if os.Getenv("TCACHE_BENCH_REPL") == "" {
		t.Skip("set TCACHE_BENCH_REPL=1 (make bench-repl) to measure replication")
	}
	outage := benchEnvDuration(t, "TCACHE_BENCH_REPL_OUTAGE", 15*time.Second)
	run := benchEnvDuration(t, "TCACHE_BENCH_REPL_RUN", 5*time.Second)
	var report strings.Builder
	started := time.Now()

	// Throughput cost: one node without replication, then the same node
	// with a live peer (the load on one node, the peer pulling it).
	type cost struct {
		name                string
		ratio               string
		alone, paired       float64
		aloneP99, pairedP99 float64
	}
	costs := []cost{{name: "sets only (1:0)", ratio: "1:0"}, {name: "mixed (1:10)", ratio: "1:10"}}
	for i := range costs {
		c := &costs[i]
		solo := &replNode{t: t, name: "solo", dir: t.TempDir()}
		solo.srv = testserver.Start(t, append([]string{"--data-dir", solo.dir}, benchNodeArgs...)...)
		c.alone, c.aloneP99 = runReplBench(t, solo.addr(), run, 50, c.ratio)
		solo.stop()
		nodes := newCluster(t, 2)
		for _, n := range nodes {
			n.extra = benchNodeArgs
			n.start()
		}
		c.paired, c.pairedP99 = runReplBench(t, nodes[0].addr(), run, 50, c.ratio)
		for _, n := range nodes {
			n.stop()
		}
	}
	maxSets := costs[0].paired

	// Lag at about half of the node's maximum set throughput: tcache bench
	// has no rate limit, so a paced loader of this test writes the load
	// (pipelined noreply sets of 100-byte values, 2 connections), while
	// probes measure the lag.
	nodes := newCluster(t, 2)
	for _, n := range nodes {
		n.extra = benchNodeArgs
		n.start()
	}
	a, b := nodes[0], nodes[1]
	rate := maxSets / 2
	stop := make(chan struct{})
	var lags []time.Duration
	var statLags []int64
	var wg sync.WaitGroup
	wg.Go(func() { lags = probeLag(t, a, b, stop, 20*time.Millisecond) })
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			st := statsOf(t, b.addr())
			v, _ := strconv.ParseInt(st["repl_peer_0_lag_ms"], 10, 64)
			statLags = append(statLags, v)
		}
	})
	lagOps := pacedSets(t, a.addr(), rate, run)
	close(stop)
	wg.Wait()
	slices.Sort(statLags)

	// Catch-up: b down for the outage while a takes the same load, then b
	// restarts (the load goes on) and pulls a's log from its offset.
	b.stop()
	loadDone := make(chan float64, 1)
	go func() {
		loadDone <- pacedSets(t, a.addr(), rate, outage+catchupLoad)
	}()
	time.Sleep(outage)
	target := statU(t, a.stats(), "tcache_log_last_seq")
	appliedBefore := uint64(0)
	t0 := time.Now()
	b.start()
	if st := b.stats(); st["repl_peer_0_applied_seq"] != "" {
		appliedBefore, _ = strconv.ParseUint(st["repl_peer_0_applied_seq"], 10, 64)
	}
	var caughtUp time.Duration
	for deadline := time.Now().Add(catchupLoad); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b.peerStat(0, "applied_seq") >= target {
			caughtUp = time.Since(t0)
			break
		}
	}
	resyncs := b.peerStat(0, "full_resyncs")
	outageOps := <-loadDone
	behind := target - appliedBefore

	fmt.Fprintf(&report, "Generated by `make bench-repl` (TestBenchReplication in cmd/tcache/bench_repl_test.go) on %s, "+
		"%d CPUs, %s; run %v per measurement, outage %v. Nodes on 127.0.0.1 with `-m 256`, mode cache, durability "+
		"interval (100 ms: a peer pulls only fsynced log entries, so this bounds the lag from below), replicating over TCP "+
		"without TLS; load generator and both nodes share the machine's CPUs. The throughput rows are "+
		"`tcache bench -t 1 -c 50 -d 100 --key-maximum 100000` on node a; the lag and catch-up loads are paced "+
		"pipelined sets from the test. The machine is shared and noisy: treat the figures as orders of magnitude.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, run, outage)
	report.WriteString("| throughput cost | alone ops/s | with a live peer ops/s | ratio | p99 ms alone / paired |\n|---|---:|---:|---:|---:|\n")
	for _, c := range costs {
		fmt.Fprintf(&report, "| %s, 50 conns | %.0f | %.0f | %.2f | %.2f / %.2f |\n", c.name, c.alone, c.paired, c.paired/c.alone, c.aloneP99, c.pairedP99)
	}
	fmt.Fprintf(&report, "\n**Lag** at %.0f sets/s (paced, 2 pipelined connections; %.0f%% of the paired maximum %.0f sets/s): "+
		"a probe key written on a every 20 ms is readable on b after p50 **%v**, p99 **%v**, max %v (%d probes; polled every 1 ms). "+
		"`repl_peer_0_lag_ms` sampled on b every 100 ms: p50 %d ms, p99 %d ms.\n\n",
		lagOps, 100*lagOps/maxSets, maxSets, pct(lags, 50).Round(100*time.Microsecond), pct(lags, 99).Round(100*time.Microsecond),
		pct(lags, 100).Round(100*time.Microsecond), len(lags), pctI(statLags, 50), pctI(statLags, 99))
	if caughtUp > 0 {
		fmt.Fprintf(&report, "**Catch-up** after a %v outage of b under the same load (%.0f sets/s on a): b restarted %d records behind "+
			"and applied them in %v, **%.0f records/s** while a kept taking writes (full resyncs: %d; the time includes b's start).\n",
			outage, outageOps, behind, caughtUp.Round(time.Millisecond), float64(behind)/caughtUp.Seconds(), resyncs)
	} else {
		fmt.Fprintf(&report, "**Catch-up** after a %v outage: b did not reach a's log position of the restart within 30 s (%d records behind at restart).\n", outage, behind)
	}
	t.Logf("replication figures (%v):\n%s", time.Since(started).Round(time.Second), report.String())

	out := os.Getenv("TCACHE_BENCH_REPL_OUT")
	if out == "" {
		out = filepath.Join("..", "..", "docs", "benchmarks.md")
	}
	if out != "-" {
		if err := replaceSection(out, "benchrepl", report.String()); err != nil {
			t.Fatal(err)
		}
	}
	// Stopped after the report is written: a slow stop (the pair has just
	// caught up a large backlog) fails the test without losing the figures.
	for _, n := range nodes {
		n.stop()
	}
}

// benchNodeArgs are the flags of every node of these measurements.
var benchNodeArgs = []string{"-m", "256", "--durability-interval", "100ms"}

// catchupLoad bounds the wait for the catch-up (the load goes on as long).
const catchupLoad = 30 * time.Second

// pacedSets writes about rate sets per second to addr for d (batches of 50
// pipelined noreply sets of 100-byte values on 2 connections, paced by the
// clock) and returns the rate achieved.
func pacedSets(t *testing.T, addr string, rate float64, d time.Duration) float64 {
	const conns, batch = 2, 50
	interval := time.Duration(float64(time.Second) * batch * conns / rate)
	var mu sync.Mutex
	total := 0
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			r := bufio.NewReader(nc)
			value := strings.Repeat("v", 100)
			next := time.Now()
			for i := 0; time.Since(start) < d; i++ {
				var buf []byte
				for k := range batch {
					buf = fmt.Appendf(buf, "set paced-%d-%d 0 0 100 noreply\r\n%s\r\n", w, (i*batch+k)%100000, value)
				}
				buf = append(buf, "mn\r\n"...)
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := nc.Write(buf); err != nil {
					t.Error(err)
					return
				}
				if l, err := r.ReadString('\n'); err != nil || l != "MN\r\n" {
					t.Errorf("paced sets: %q %v", l, err)
					return
				}
				mu.Lock()
				total += batch
				mu.Unlock()
				next = next.Add(interval)
				time.Sleep(time.Until(next))
			}
		})
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds()
}

func pctI(s []int64, p float64) int64 {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

// replaceSection rewrites the text between <!-- name:begin --> and
// <!-- name:end --> in path, appending a "## Replication" section with the
// markers when the file has none.
func replaceSection(path, name, body string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n") + "\n\n## Replication\n\n" + begin + "\n" + end + "\n"
		i, j = strings.Index(s, begin), strings.Index(s, end)
	}
	s = s[:i+len(begin)] + "\n" + body + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
