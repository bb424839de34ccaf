package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Workload is a named load of the side-by-side comparison.
type Workload struct {
	// Name is how the issue and docs/benchmarks.md call it.
	Name string
	// Description is one line for the docs.
	Description string
	// Options is the load (Servers, TestTime and Progress are set by Compare).
	Options Options
	// Prefill stores every key once before the first measured round, so
	// that gets hit.
	Prefill bool
	// Warm, before the prefill, sends each server its -m in 4 KiB
	// overwrites of a thousand keys of its own (warmUp), so that both are
	// measured in their steady state: the RAM tier's memory is a log that
	// reuses pages only once -m bytes have been written, and until then
	// every new page costs a fault and, on a VM that hands freed memory
	// back to its host, the host's backing of the page (11% of memory
	// mode's CPU in mixed-1k). The keys are few so that the overwritten
	// copies are dead when the log wraps: nothing live is evicted (an
	// eviction would end the disk tier's journal page release).
	Warm bool
	// Unavailable, when not empty, is why the workload cannot run yet.
	Unavailable string

	// Dedicated workloads run on their own pair of servers, started for
	// them with MemoryMB (the shared servers' -m otherwise) and the extra
	// arguments below; the others share one memcached and one tcache.
	Dedicated bool
	MemoryMB  int
	// MemcachedArgs returns memcached's extra arguments, given a scratch
	// directory (extstore's file). Ignored when Baseline is set.
	MemcachedArgs func(dir string) []string
	// TcacheArgs are tcache's extra arguments.
	TcacheArgs []string
	// RestartSizes, when set, makes the workload a restart measurement:
	// for each size, tcache (-m 64, durability none) is filled with that
	// many bytes of 4 KiB values, stopped, and timed from exec to its first
	// answered request (ComparisonRow.Restarts).
	RestartSizes []int64
	// Baseline, when not nil, replaces memcached in the "memcached"
	// column by tcache with these arguments (durable: durability none).
	Baseline []string
	// Foundation replaces memcached in the "memcached" column by
	// CompareOptions.FoundationBinary, tcache as the foundation left it
	// (memory only, no extra arguments).
	Foundation bool
	// PrefillPipeline is the pipeline depth of the prefill (default 64).
	// The overflow prefill uses 1: at 64 memcached's extstore flusher
	// cannot keep up and memcached drops what it has not written yet.
	PrefillPipeline int
	// Retention makes a dedicated prefilled workload measure what each
	// server kept: the disk bytes after the prefill, and after the rounds
	// one get of every key of the range (ComparisonRow.Retention).
	Retention bool
}

// Key ranges of the disk workloads.
const (
	// overflowKeys × 2.5 KiB (mean of 1–4 KiB) ≈ 1 GiB.
	overflowKeys = 420_000
	durableKeys  = 1_000_000
)

// FoundationRev is the commit the -vs-foundation workloads' baseline is
// built from: the foundation (server, protocols, RAM tier, bench) as it
// stood before the disk tier's first commit. Issue 5 asks that the hot
// workloads lose no more than a few percent against it.
const FoundationRev = "2a3a647"

// hotKeys is the key range of the hot-tier workloads: 100 000 keys, so the
// data set fits in RAM on both servers.
const hotKeys = 100_000

// Workloads returns the comparison's workloads in report order.
func Workloads() []Workload {
	hot := func(prefix string, set, get, size, pipeline, multi int) Options {
		return Options{
			Protocol: ProtocolText, Threads: 1, Clients: 50,
			SetRatio: set, GetRatio: get, Pipeline: pipeline,
			DataSizeMin: size, DataSizeMax: size,
			SetPattern: Random, GetPattern: Random,
			KeyPrefix: prefix, KeyMinimum: 0, KeyMaximum: hotKeys - 1,
			MultiKeyGet: multi, Seed: 1, DistinctClientSeed: true,
		}
	}
	// The foundation's figures: the hot workloads against tcache in memory
	// mode (the "memcached" column) and in its default disk mode.
	vsMemory := func(name, desc string, o Options) Workload {
		return Workload{Name: name, Description: desc + "; **the memcached column is tcache `--mode memory`** " +
			"(the foundation), the tcache column the default mode (cache, durability interval): the ratio is disk / memory; " +
			"before the prefill each server is sent `-m` bytes of 4 KiB overwrites of 1 000 keys of its own, so that both run in their steady state (their RAM log has wrapped, over dead copies only)",
			Options: o, Prefill: true, Warm: true, Dedicated: true, Baseline: []string{"--mode", "memory"}}
	}
	// The same against the foundation's own build (FoundationRev): what an
	// operator who upgrades from it to the disk tier sees.
	vsFoundation := func(name, desc string, o Options) Workload {
		return Workload{Name: name, Description: desc + "; **the memcached column is tcache built from the foundation** " +
			"(commit " + FoundationRev + ", the last before the disk tier: `make bench-compare` builds it), the tcache column " +
			"this tree's default mode (cache, durability interval): the ratio is disk / foundation; warmed up as the -vs-memory rows",
			Options: o, Prefill: true, Warm: true, Dedicated: true, Foundation: true}
	}
	overflow := Options{
		Protocol: ProtocolText, Threads: 1, Clients: 50,
		SetRatio: 1, GetRatio: 10, Pipeline: 1,
		DataSizeMin: 1024, DataSizeMax: 4096,
		SetPattern: Gaussian, GetPattern: Gaussian,
		KeyPrefix: "over:", KeyMinimum: 0, KeyMaximum: overflowKeys - 1,
		Seed: 1, DistinctClientSeed: true,
	}
	durable := Options{
		Protocol: ProtocolText, Threads: 1, Clients: 50,
		SetRatio: 1, GetRatio: 0, Pipeline: 1,
		DataSizeMin: 256, DataSizeMax: 256,
		SetPattern: Random, GetPattern: Random,
		KeyPrefix: "dur:", KeyMinimum: 0, KeyMaximum: durableKeys - 1,
		Seed: 1, DistinctClientSeed: true,
	}
	return []Workload{
		{Name: "hot-1-10", Description: "1:10 set:get, 100-byte values, 50 connections, pipeline 1",
			Options: hot("hot:", 1, 10, 100, 1, 0), Prefill: true},
		{Name: "hot-1-10-p16", Description: "1:10 set:get, 100-byte values, 50 connections, pipeline 16",
			Options: hot("hot:", 1, 10, 100, 16, 0), Prefill: true},
		{Name: "mixed-1k", Description: "1:1 set:get, 1 KiB values, 50 connections, pipeline 1",
			Options: hot("mixed:", 1, 1, 1024, 1, 0), Prefill: true},
		{Name: "multiget", Description: "1:10 set:get, gets of 10 keys, 100-byte values, 50 connections, pipeline 1",
			Options: hot("multi:", 1, 10, 100, 1, 10), Prefill: true},
		vsMemory("hot-1-10-vs-memory", "as hot-1-10", hot("hot:", 1, 10, 100, 1, 0)),
		vsMemory("hot-1-10-p16-vs-memory", "as hot-1-10-p16", hot("hot:", 1, 10, 100, 16, 0)),
		vsMemory("mixed-1k-vs-memory", "as mixed-1k", hot("mixed:", 1, 1, 1024, 1, 0)),
		vsMemory("multiget-vs-memory", "as multiget", hot("multi:", 1, 10, 100, 1, 10)),
		vsFoundation("hot-1-10-vs-foundation", "as hot-1-10", hot("hot:", 1, 10, 100, 1, 0)),
		vsFoundation("hot-1-10-p16-vs-foundation", "as hot-1-10-p16", hot("hot:", 1, 10, 100, 16, 0)),
		vsFoundation("mixed-1k-vs-foundation", "as mixed-1k", hot("mixed:", 1, 1, 1024, 1, 0)),
		vsFoundation("multiget-vs-foundation", "as multiget", hot("multi:", 1, 10, 100, 1, 10)),
		{Name: "overflow", Description: "both at `-m 64`: 420 000 keys of 1–4 KiB random values (~1 GiB, 16× memory) " +
			"stored once (50 connections, pipeline 1), then 1:10 set:get with gaussian keys, 50 connections; memcached " +
			"with extstore (`-o ext_path=FILE:4G,ext_item_age=0`), tcache with its disk tier (mode cache, durability " +
			"interval); afterwards one get of every key counts what each kept",
			Options: overflow, Prefill: true, Dedicated: true, MemoryMB: 64, PrefillPipeline: 1, Retention: true,
			MemcachedArgs: func(dir string) []string {
				// ext_item_age=0: the flusher writes every item that reaches
				// COLD at once instead of waiting for memory pressure; with the
				// default (no age limit) memcached writes too late at this
				// rate and evicts the item headers of most of what it wrote
				// (8.6% of the keys kept; docs/benchmarks.md).
				return []string{"-o", "ext_path=" + filepath.Join(dir, "extstore") + ":4G,ext_item_age=0"}
			}},
		{Name: "durable", Description: "sets only, 256-byte values, random keys of 1 000 000, 50 connections: " +
			"**the memcached column is tcache with `durability: none`**, the tcache column `durability: sync` " +
			"(the ratio is sync / none)",
			Options: durable, Dedicated: true,
			Baseline: []string{"--durability", "none"}, TcacheArgs: []string{"--durability", "sync"}},
		{Name: "restart", Description: "tcache only, `-m 64`: time from exec to the first answered request after a " +
			"graceful stop, with 256 MiB, 512 MiB and 1 GiB of 4 KiB random values on disk; then after a kill -9 " +
			"that followed 48 MiB of overwrites (durability interval), so that the restart re-indexes the journal",
			Dedicated: true, RestartSizes: []int64{256 << 20, 512 << 20, 1 << 30}},
	}
}

// CompareOptions configure Compare.
type CompareOptions struct {
	// MemcachedBinary is memcached's path. Default "/usr/bin/memcached".
	MemcachedBinary string
	// TcacheBinary is tcache's path (required: cmd/tcache builds it).
	TcacheBinary string
	// FoundationBinary is a tcache built from FoundationRev, the baseline
	// of the -vs-foundation workloads; without it they are left out of
	// the default list and refused by name.
	FoundationBinary string
	// MemoryMB is -m of both servers. Default 1024.
	MemoryMB int
	// ServerThreads is -t of both servers. Default 1.
	ServerThreads int
	// Rounds is how many times each workload runs on each server, A B A B.
	// Default 3; at least 1 (3 or more for a published table).
	Rounds int
	// Duration bounds each measured run. Default 10s.
	Duration time.Duration
	// Workloads are the names to run; default all of Workloads().
	Workloads []string
	// RunAsRoot adds "-u root" to memcached's arguments (it refuses to run
	// as root otherwise). cmd/tcache sets it when the effective uid is 0.
	RunAsRoot bool
	// TempDir holds tcache's data_dir. Default os.TempDir().
	TempDir string
	// Logger receives progress (one line per run). Default: discard.
	Logger *slog.Logger
}

func (o *CompareOptions) ensureDefaults() {
	if o.MemcachedBinary == "" {
		o.MemcachedBinary = "/usr/bin/memcached"
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 1024
	}
	if o.ServerThreads == 0 {
		o.ServerThreads = 1
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if len(o.Workloads) == 0 {
		for _, w := range Workloads() {
			if !w.Foundation || o.FoundationBinary != "" {
				o.Workloads = append(o.Workloads, w.Name)
			}
		}
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

func (o *CompareOptions) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	switch {
	case o.TcacheBinary == "":
		return bad("no tcache binary")
	case o.MemoryMB < 1, o.ServerThreads < 1, o.Rounds < 1, o.Duration <= 0:
		return bad("memory, threads, rounds and duration must be positive")
	}
	byName := map[string]Workload{}
	for _, w := range Workloads() {
		byName[w.Name] = w
	}
	for _, n := range o.Workloads {
		w, ok := byName[n]
		if !ok {
			return bad("unknown workload %q", n)
		}
		if w.Foundation && o.FoundationBinary == "" {
			return bad("workload %q needs the foundation's binary (--foundation; make bench-compare builds it from %s)", n, FoundationRev)
		}
	}
	return nil
}

// Comparison is the outcome of Compare.
type Comparison struct {
	Options CompareOptions
	// Memcached and Tcache are the servers' `version` answers (tcache's
	// own version from its tcache_version stat).
	MemcachedVersion, TcacheVersion string
	Rows                            []ComparisonRow
	Started                         time.Time
	Elapsed                         time.Duration
	// LoadBefore and LoadAfter are the host's load averages (1, 5 and 15
	// minutes, /proc/loadavg) when the run started and ended: other work
	// on the host competes with both servers.
	LoadBefore, LoadAfter string
}

// ComparisonRow is one workload.
type ComparisonRow struct {
	Workload Workload
	// Memcached[i] and Tcache[i] are round i+1's results.
	Memcached, Tcache []RunResult
	// Err is why the workload has no figures (Unavailable, or a failure).
	Err string
	// Restarts are the measurements of a restart workload.
	Restarts []RestartResult
	// Retention is what each server kept (Workload.Retention).
	Retention *RetentionResult
}

// RetentionResult is what the servers of a Retention workload kept: every
// key of the range was stored at least once (the prefill), so a key that
// a server does not return is one it acknowledged and dropped.
type RetentionResult struct {
	Keys                                uint64 // keys in the range (one get each)
	MemcachedHits, TcacheHits           uint64 // gets that hit
	MemcachedDiskBytes, TcacheDiskBytes uint64 // extstore_bytes_used after the prefill
	MemcachedPrefill, TcachePrefill     time.Duration
}

// RestartResult is one restart measurement.
type RestartResult struct {
	DataBytes int64         // bytes of values written before the stop
	DiskBytes uint64        // extstore_bytes_used before the stop
	Items     uint64        // curr_items after the restart
	FirstReq  time.Duration // exec to the first answered request
	// AfterKill is FirstReq after a kill -9 that followed crashBytes of
	// overwrites, and Reindexed the journal frames that restart scanned
	// (from its log; 0 when it logged none).
	AfterKill time.Duration
	Reindexed uint64
}

// Compare starts memcached and tcache on free 127.0.0.1 ports with the same
// -m and -t, and runs each selected workload against each server in turn
// (memcached, tcache, memcached, tcache, …) for o.Rounds rounds of
// o.Duration. A failing workload is reported in its row; Compare fails only
// when a server cannot start.
func Compare(ctx context.Context, o CompareOptions) (*Comparison, error) {
	o.ensureDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	cmp := &Comparison{Options: o, Started: time.Now(), LoadBefore: loadAverage()}
	m, t := strconv.Itoa(o.MemoryMB), strconv.Itoa(o.ServerThreads)
	mcArgs := []string{"-U", "0", "-m", m, "-t", t, "-c", "4096"}
	if o.RunAsRoot {
		mcArgs = append(mcArgs, "-u", "root")
	}
	dataDir, err := os.MkdirTemp(o.TempDir, "tcache-bench-compare-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dataDir)
	tcArgs := []string{"-U", "0", "-m", m, "-t", t, "-c", "4096", "--data-dir", filepath.Join(dataDir, "data")}

	mc, err := startProcess(ctx, "memcached", o.MemcachedBinary, mcArgs, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer mc.stop()
	tc, err := startProcess(ctx, "tcache", o.TcacheBinary, tcArgs, 20*time.Second)
	if err != nil {
		return nil, err
	}
	defer tc.stop()
	if st, err := ServerStats(mc.addr); err == nil {
		cmp.MemcachedVersion = st["version"]
	}
	if st, err := ServerStats(tc.addr); err == nil {
		cmp.TcacheVersion = st["tcache_version"]
	}

	servers := []*process{mc, tc}
	var rows []*ComparisonRow
	for _, w := range Workloads() {
		if !slices.Contains(o.Workloads, w.Name) {
			continue
		}
		row := &ComparisonRow{Workload: w, Err: w.Unavailable}
		rows = append(rows, row)
		if row.Err != "" || !w.Prefill || w.Dedicated {
			continue
		}
		for _, p := range servers {
			if err := prefill(ctx, w.Options, p.addr, w.PrefillPipeline); err != nil {
				row.Err = fmt.Sprintf("prefill of %s failed: %v", p.name, err)
				o.Logger.Warn("prefill failed", "workload", w.Name, "server", p.name, "err", err)
				break
			}
		}
	}
	for round := 1; round <= o.Rounds; round++ {
		for _, row := range rows {
			if row.Err != "" || row.Workload.Dedicated {
				continue
			}
			if err := runRound(ctx, o, row, round, mc, tc); err != nil {
				return nil, err
			}
		}
	}
	mc.stop()
	tc.stop()
	for _, row := range rows {
		if row.Err != "" || !row.Workload.Dedicated {
			continue
		}
		if err := runDedicated(ctx, o, row, dataDir); err != nil {
			return nil, err
		}
	}
	for _, r := range rows {
		cmp.Rows = append(cmp.Rows, *r)
	}
	cmp.Elapsed = time.Since(cmp.Started)
	cmp.LoadAfter = loadAverage()
	return cmp, nil
}

// runRound runs one round of row against a (the "memcached" column) and b
// (tcache), each with the other stopped. A failed run is recorded in
// row.Err; only a cancelled context is returned.
func runRound(ctx context.Context, o CompareOptions, row *ComparisonRow, round int, a, b *process) error {
	defer func() { a.resume(); b.resume() }()
	pair := []*process{a, b}
	for i, p := range pair {
		pair[1-i].pause() // process.pause says why
		p.resume()
		lo := row.Workload.Options
		lo.Servers = []string{p.addr}
		lo.TestTime = o.Duration
		cpu0, cpuOK := processCPU(p.cmd.Process.Pid)
		r, err := Run(ctx, lo)
		cpu1, cpuOK1 := processCPU(p.cmd.Process.Pid)
		if err == nil && !p.alive() {
			err = errors.New("server exited")
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			row.Err = fmt.Sprintf("round %d on %s failed: %v", round, p.name, err)
			o.Logger.Warn("run failed", "workload", row.Workload.Name, "server", p.name, "round", round, "err", err)
			return nil
		}
		res := r.Runs[0]
		if n := res.Sets.Count + res.Gets.Count; cpuOK && cpuOK1 && n > 0 {
			res.ServerCPUSecondsPerMillion = (cpu1 - cpu0).Seconds() / float64(n) * 1e6
		}
		if p == a {
			row.Memcached = append(row.Memcached, res)
		} else {
			row.Tcache = append(row.Tcache, res)
		}
		o.Logger.Info("run", "workload", row.Workload.Name, "server", p.name, "round", round,
			"ops_per_sec", int64(res.Totals.OpsPerSec), "p99_ms", percentile(&res.Totals, 99),
			"bench_cpu_s_per_M", strconv.FormatFloat(res.CPUSecondsPerMillion, 'f', 2, 64),
			"server_cpu_s_per_M", strconv.FormatFloat(res.ServerCPUSecondsPerMillion, 'f', 2, 64))
	}
	return nil
}

// runDedicated starts the row's own pair of servers, prefills them, runs
// the rounds and stops them. After an overflow run it checks that tcache
// answered every get (every key it was given is on its disk).
func runDedicated(ctx context.Context, o CompareOptions, row *ComparisonRow, scratch string) error {
	w := row.Workload
	dir, err := os.MkdirTemp(scratch, w.Name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if len(w.RestartSizes) > 0 {
		return measureRestarts(ctx, o, row, dir)
	}
	memoryMB := o.MemoryMB
	if w.MemoryMB > 0 {
		memoryMB = w.MemoryMB
	}
	common := []string{"-U", "0", "-m", strconv.Itoa(memoryMB), "-t", strconv.Itoa(o.ServerThreads), "-c", "4096"}
	var a *process
	if w.Foundation {
		args := append(slices.Clone(common), "--data-dir", filepath.Join(dir, "foundation"))
		a, err = startProcess(ctx, "tcache (foundation)", o.FoundationBinary, args, 60*time.Second)
	} else if w.Baseline != nil {
		args := append(append(slices.Clone(common), "--data-dir", filepath.Join(dir, "baseline")), w.Baseline...)
		a, err = startProcess(ctx, "tcache "+strings.Join(w.Baseline, " "), o.TcacheBinary, args, 60*time.Second)
	} else {
		args := slices.Clone(common)
		if o.RunAsRoot {
			args = append(args, "-u", "root")
		}
		if w.MemcachedArgs != nil {
			args = append(args, w.MemcachedArgs(dir)...)
		}
		a, err = startProcess(ctx, "memcached", o.MemcachedBinary, args, 10*time.Second)
	}
	if err != nil {
		row.Err = fmt.Sprintf("starting the baseline failed: %v", err)
		return nil
	}
	defer a.stop()
	args := append(append(slices.Clone(common), "--data-dir", filepath.Join(dir, "tcache")), w.TcacheArgs...)
	b, err := startProcess(ctx, "tcache", o.TcacheBinary, args, 60*time.Second)
	if err != nil {
		row.Err = fmt.Sprintf("starting tcache failed: %v", err)
		return nil
	}
	defer b.stop()
	if w.Retention {
		row.Retention = &RetentionResult{Keys: w.Options.KeyMaximum - w.Options.KeyMinimum + 1}
	}
	if w.Warm {
		for _, p := range []*process{a, b} {
			start := time.Now()
			if err := warmUp(ctx, w.Options, p.addr, memoryMB); err != nil {
				row.Err = fmt.Sprintf("warm-up of %s failed: %v", p.name, err)
				return nil
			}
			o.Logger.Info("warmed up", "workload", w.Name, "server", p.name, "took", time.Since(start).Round(time.Millisecond).String())
		}
	}
	if w.Prefill {
		for _, p := range []*process{a, b} {
			start := time.Now()
			if err := prefill(ctx, w.Options, p.addr, w.PrefillPipeline); err != nil {
				row.Err = fmt.Sprintf("prefill of %s failed: %v", p.name, err)
				return nil
			}
			took := time.Since(start)
			o.Logger.Info("prefilled", "workload", w.Name, "server", p.name, "took", took.Round(time.Millisecond).String())
			if r := row.Retention; r != nil {
				var used uint64
				if st, err := ServerStats(p.addr); err == nil {
					used, _ = strconv.ParseUint(st["extstore_bytes_used"], 10, 64)
				}
				if p == a {
					r.MemcachedDiskBytes, r.MemcachedPrefill = used, took
				} else {
					r.TcacheDiskBytes, r.TcachePrefill = used, took
				}
			}
		}
	}
	for round := 1; round <= o.Rounds && row.Err == ""; round++ {
		if err := runRound(ctx, o, row, round, a, b); err != nil {
			return err
		}
	}
	if r := row.Retention; r != nil && row.Err == "" {
		for _, p := range []*process{a, b} {
			hits, err := getEveryKey(ctx, w.Options, p.addr)
			if err != nil {
				row.Err = fmt.Sprintf("reading back every key of %s failed: %v", p.name, err)
				return nil
			}
			if p == a {
				r.MemcachedHits = hits
			} else {
				r.TcacheHits = hits
			}
			o.Logger.Info("retention", "workload", w.Name, "server", p.name, "keys", r.Keys, "hits", hits)
		}
		if r.TcacheHits != r.Keys {
			row.Err = fmt.Sprintf("tcache returned %d of the %d keys it stored", r.TcacheHits, r.Keys)
		}
	}
	if row.Err == "" && w.Prefill {
		// Every key was stored before the gets: tcache must miss none.
		for _, r := range row.Tcache {
			if r.Gets.Misses > 0 {
				row.Err = fmt.Sprintf("tcache missed %d gets of stored keys", r.Gets.Misses)
			}
		}
	}
	return nil
}

// prefill stores every key of w once (sequentially, partitioned over the
// connections, pipelined).
func prefill(ctx context.Context, w Options, addr string, pipeline int) error {
	w.Servers = []string{addr}
	w.SetRatio, w.GetRatio = 1, 0
	w.SetPattern = Parallel
	w.Pipeline = pipeline
	if w.Pipeline == 0 {
		w.Pipeline = 64
	}
	w.TestTime = 0
	conns := w.Threads * w.Clients
	span := w.KeyMaximum - w.KeyMinimum + 1
	w.Requests = int64((span + uint64(conns) - 1) / uint64(conns))
	_, err := Run(ctx, w)
	return err
}

// warmUpValue and warmUpKeys are the value size and key count of
// warmUp's overwrites.
const (
	warmUpValue = 4096
	warmUpKeys  = 1000
)

// warmUp overwrites warmUpKeys keys of its own (w's prefix and "warm-")
// with warmUpValue-byte values, in sequential passes (each key once per
// pass, pipelined), until memoryMB MiB have been sent: the server's RAM
// tier has then written all of its memory, and what the log reclaimed
// were dead copies. w's own keys are not touched.
func warmUp(ctx context.Context, w Options, addr string, memoryMB int) error {
	w.DataSizeMin, w.DataSizeMax = warmUpValue, warmUpValue
	w.KeyPrefix += "warm-"
	w.KeyMinimum, w.KeyMaximum = 0, warmUpKeys-1
	w.Threads, w.Clients = 1, min(w.Threads*w.Clients, 10)
	for sent := int64(0); sent < int64(memoryMB)<<20; sent += warmUpKeys * warmUpValue {
		if err := prefill(ctx, w, addr, 0); err != nil {
			return err
		}
	}
	return nil
}

// getEveryKey gets every key of w's range once (partitioned over the
// connections, pipelined) and returns the hits.
func getEveryKey(ctx context.Context, w Options, addr string) (uint64, error) {
	w.Servers = []string{addr}
	w.SetRatio, w.GetRatio = 0, 1
	w.GetPattern = Parallel
	w.Pipeline = 16
	w.TestTime = 0
	w.MultiKeyGet = 0
	conns := w.Threads * w.Clients
	span := w.KeyMaximum - w.KeyMinimum + 1
	w.Requests = int64((span + uint64(conns) - 1) / uint64(conns))
	r, err := Run(ctx, w)
	if err != nil {
		return 0, err
	}
	return uint64(r.Runs[0].Gets.Hits), nil
}

// percentile returns the p percentile of op in ms, or NaN.
func percentile(op *OpResult, p float64) float64 {
	for _, x := range op.Percentiles {
		if x.P == p {
			return x.Ms
		}
	}
	return -1
}

// median of xs (xs is reordered).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// metric extracts one figure of a run.
type metric func(*RunResult) float64

var (
	opsPerSec = func(r *RunResult) float64 { return r.Totals.OpsPerSec }
	p50       = func(r *RunResult) float64 { return percentile(&r.Totals, 50) }
	p99       = func(r *RunResult) float64 { return percentile(&r.Totals, 99) }
	p999      = func(r *RunResult) float64 { return percentile(&r.Totals, 99.9) }
	cpuPerM   = func(r *RunResult) float64 { return r.CPUSecondsPerMillion }
	// serverCPUPerReq: CPU seconds per million requests = µs per request.
	serverCPUPerReq = func(r *RunResult) float64 { return r.ServerCPUSecondsPerMillion }
)

// medianOf is the median of f over runs.
func medianOf(runs []RunResult, f metric) float64 {
	xs := make([]float64, len(runs))
	for i := range runs {
		xs[i] = f(&runs[i])
	}
	return median(xs)
}

// ratioOf is the median over rounds of f(tcache)/f(memcached).
func (r *ComparisonRow) ratioOf(f metric) float64 { return median(r.ratios(f)) }

// ratioRange is the smallest and the largest per-round ratio of f: how
// far a single round can be from the median on a shared host.
func (r *ComparisonRow) ratioRange(f metric) (lo, hi float64) {
	xs := r.ratios(f)
	if len(xs) == 0 {
		return 0, 0
	}
	return slices.Min(xs), slices.Max(xs)
}

// ratios are the per-round ratios f(tcache)/f(memcached), in round order.
func (r *ComparisonRow) ratios(f metric) []float64 {
	var xs []float64
	for i := range min(len(r.Memcached), len(r.Tcache)) {
		if a := f(&r.Memcached[i]); a > 0 {
			xs = append(xs, f(&r.Tcache[i])/a)
		}
	}
	return xs
}

// MarkdownTable renders the comparison: per workload the median of rounds of
// ops/s and latency percentiles (ms) for both servers, the median of the
// per-round tcache/memcached ratios, and the range of the ops/s ratios.
func (c *Comparison) MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| workload | memcached ops/s | tcache ops/s | **ops/s ratio** | ops/s ratio, rounds | memcached p50 | tcache p50 | p50 ratio | memcached p99 | tcache p99 | **p99 ratio** | memcached p99.9 | tcache p99.9 | p99.9 ratio | memcached CPU µs/req | tcache CPU µs/req | CPU/req ratio |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	f0 := func(x float64) string { return strconv.FormatFloat(x, 'f', 0, 64) }
	f3 := func(x float64) string { return strconv.FormatFloat(x, 'f', 3, 64) }
	f2 := func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) }
	for i := range c.Rows {
		r := &c.Rows[i]
		if r.Err != "" {
			fmt.Fprintf(&b, "| %s | %s |  |  |  |  |  |  |  |  |  |  |  |  |  |  |  |\n", r.Workload.Name, r.Err)
			continue
		}
		if len(r.Workload.RestartSizes) > 0 {
			continue // its own table (RestartTable)
		}
		lo, hi := r.ratioRange(opsPerSec)
		fmt.Fprintf(&b, "| %s | %s | %s | **%s** | %s–%s | %s | %s | %s | %s | %s | **%s** | %s | %s | %s | %s | %s | %s |\n",
			r.Workload.Name,
			f0(medianOf(r.Memcached, opsPerSec)), f0(medianOf(r.Tcache, opsPerSec)), f2(r.ratioOf(opsPerSec)), f2(lo), f2(hi),
			f3(medianOf(r.Memcached, p50)), f3(medianOf(r.Tcache, p50)), f2(r.ratioOf(p50)),
			f3(medianOf(r.Memcached, p99)), f3(medianOf(r.Tcache, p99)), f2(r.ratioOf(p99)),
			f3(medianOf(r.Memcached, p999)), f3(medianOf(r.Tcache, p999)), f2(r.ratioOf(p999)),
			f2(medianOf(r.Memcached, serverCPUPerReq)), f2(medianOf(r.Tcache, serverCPUPerReq)), f2(r.ratioOf(serverCPUPerReq)))
	}
	return b.String()
}

// RoundsTable lists every round: ops/s, hit ratio, the servers' CPU
// seconds per million requests and the bench process's, for both servers.
func (c *Comparison) RoundsTable() string {
	var b strings.Builder
	b.WriteString("| workload | round | memcached ops/s | tcache ops/s | memcached hit ratio | tcache hit ratio | memcached CPU s / M req | tcache CPU s / M req | bench CPU s / M req (memcached run) | bench CPU s / M req (tcache run) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	hit := func(r *RunResult) string {
		n := r.Gets.Hits + r.Gets.Misses
		if n == 0 {
			return "-"
		}
		return strconv.FormatFloat(float64(r.Gets.Hits)/float64(n), 'f', 4, 64)
	}
	for i := range c.Rows {
		r := &c.Rows[i]
		for j := range min(len(r.Memcached), len(r.Tcache)) {
			m, t := &r.Memcached[j], &r.Tcache[j]
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %s | %s | %s | %s | %.2f | %.2f |\n", r.Workload.Name, j+1,
				m.Totals.OpsPerSec, t.Totals.OpsPerSec, hit(m), hit(t), serverCPU(m), serverCPU(t),
				m.CPUSecondsPerMillion, t.CPUSecondsPerMillion)
		}
	}
	return b.String()
}

// serverCPU formats a run's server CPU seconds per million requests, "-"
// when unknown.
func serverCPU(r *RunResult) string {
	if r.ServerCPUSecondsPerMillion == 0 {
		return "-"
	}
	return strconv.FormatFloat(r.ServerCPUSecondsPerMillion, 'f', 2, 64)
}

// Section markers of the comparison in docs/benchmarks.md.
const (
	CompareBegin = "<!-- benchcompare:begin -->"
	CompareEnd   = "<!-- benchcompare:end -->"
)

// Machine describes the host: cores, CPU model, memory, OS and Go version.
func Machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
				break
			}
		}
	}
	mem := "?"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
						mem = strconv.FormatFloat(kb/(1<<20), 'f', 1, 64) + " GiB"
					}
				}
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s RAM, %s/%s, %s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// loadAverage is the first three fields of /proc/loadavg, or "unknown".
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], ", ")
	}
	return "unknown"
}

// Section renders the docs/benchmarks.md section, markers included.
// command is the exact command line that produced it.
func (c *Comparison) Section(command string) string {
	o := c.Options
	var b strings.Builder
	b.WriteString(CompareBegin + "\n")
	b.WriteString("## Throughput and latency: tcache vs memcached\n\n")
	b.WriteString("Generated by `tcache bench compare`; do not edit by hand.\n\n")
	fmt.Fprintf(&b, "Both servers run on 127.0.0.1 with `-m %d -t %d -U 0 -c 4096`: memcached %s (Debian's package) "+
		"and tcache %s (built from this tree). Each workload runs against memcached, then tcache, and again, "+
		"for %d rounds of %v each (A B A B …), the idle server of the pair stopped (SIGSTOP) while the other runs. Before the first round every key of the workload is stored "+
		"once in each server, so gets hit. Figures are the median of the rounds; **ratios are tcache / memcached**, "+
		"the median of the per-round ratios (ops/s: higher is better for tcache; latency: lower is better), and "+
		"\"ops/s ratio, rounds\" is the lowest and the highest of the per-round ops/s ratios.\n\n",
		o.MemoryMB, o.ServerThreads, c.MemcachedVersion, c.TcacheVersion, o.Rounds, o.Duration)
	b.WriteString("The load generator is `tcache bench` itself, in the same process for every run, with one OS thread " +
		"(GOMAXPROCS 1, like memtier's `-t 1`) driving 50 connections, text protocol, keys drawn uniformly from 100 000 " +
		"per workload, a distinct seed per connection. Latencies are per request, from writing it to reading its " +
		"reply, in milliseconds, from HDR histograms (all requests, sets and gets).\n\n")
	b.WriteString("**Caveat: this machine has " + strconv.Itoa(runtime.NumCPU()) + " cores, shared by the load generator " +
		"and the server under test** (server `-t " + strconv.Itoa(o.ServerThreads) + "`, generator one thread), so the " +
		"figures measure a server on roughly one core while the generator uses the other; absolute numbers are small " +
		"and the ratios are what to read. Other work on the host adds noise; the rounds table below shows the spread.\n\n")
	b.WriteString("| workload | what |\n|---|---|\n")
	for _, r := range c.Rows {
		fmt.Fprintf(&b, "| `%s` | %s |\n", r.Workload.Name, r.Workload.Description)
	}
	b.WriteString("\n### Results (latencies in ms)\n\n")
	b.WriteString(c.MarkdownTable())
	b.WriteString("\n### Every round\n\n")
	b.WriteString("CPU columns are CPU seconds per million requests (= µs per request), user + system: the servers' from " +
		"/proc/PID/stat over the run (all their threads), the bench process's own from getrusage (the cost of the " +
		"load generator, which must stay well below the server's).\n\n")
	b.WriteString(c.RoundsTable())
	if t := c.RetentionTable(); t != "" {
		b.WriteString("\n### What the overflow servers kept\n\n")
		b.WriteString("Every key of the range was stored once by the prefill (and some again by the rounds' sets), and " +
			"each server acknowledged every set. After the rounds one get of every key counts what each server still " +
			"returns; tcache must return all of them (the run fails otherwise). The disk figure is the server's " +
			"`extstore_bytes_used` right after the prefill (values are random bytes: nothing compresses).\n\n")
		b.WriteString(t)
	}
	if t := c.RestartTable(); t != "" {
		b.WriteString("\n### Restart time\n\n")
		b.WriteString("tcache stopped gracefully (SIGTERM) after writing the given amount of 4 KiB random (incompressible) values with " +
			"durability none, then started again on the same data_dir: the time from exec to the first answered " +
			"request (`version`). The RAM tier warms up lazily, so this is Pebble's open (WAL replay, manifest) and " +
			"the server start; it is measured once per size. Then tcache was started again with the default durability " +
			"(interval), overwrote part of the values, was killed with SIGKILL and started again: that restart first " +
			"re-indexes the journal frames no ingestion covered (the count is from its log).\n\n")
		b.WriteString(t)
	}
	fmt.Fprintf(&b, "\nMachine: %s. Run on %s, took %v. Load average (1, 5, 15 min) %s at the start, %s at the end.\n\n",
		Machine(), c.Started.UTC().Format("2006-01-02 15:04 MST"), c.Elapsed.Round(time.Second), c.LoadBefore, c.LoadAfter)
	b.WriteString("Command (from the repository root):\n\n```\n" + command + "\n```\n")
	b.WriteString(CompareEnd + "\n")
	return b.String()
}

// ReplaceSection returns doc with the text from begin to end (markers
// included) replaced by section, or section appended when the markers are
// absent. Other sections are left untouched.
func ReplaceSection(doc, section, begin, end string) (string, error) {
	if doc == "" {
		doc = "# tcache benchmarks\n"
	}
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	switch {
	case i >= 0 && j > i:
		rest := strings.TrimPrefix(doc[j+len(end):], "\n")
		return doc[:i] + section + rest, nil
	case i >= 0 || j >= 0:
		return "", fmt.Errorf("bench: only one of %s and %s is present", begin, end)
	default:
		return strings.TrimRight(doc, "\n") + "\n\n" + section, nil
	}
}

// measureRestarts fills a tcache data_dir step by step to each of the
// row's sizes and times a restart at each.
func measureRestarts(ctx context.Context, o CompareOptions, row *ComparisonRow, dir string) error {
	args := restartArgs(o, dir, "--durability", "none")
	var written int64
	for _, size := range row.Workload.RestartSizes {
		p, err := startProcess(ctx, "tcache", o.TcacheBinary, args, 120*time.Second)
		if err != nil {
			row.Err = fmt.Sprintf("starting tcache: %v", err)
			return nil
		}
		if err := restartFill(ctx, p.addr, written/restartValueSize, size/restartValueSize, 1); err != nil {
			p.stop()
			row.Err = fmt.Sprintf("filling tcache to %d MiB: %v", size>>20, err)
			return nil
		}
		written = size
		st, _ := ServerStats(p.addr)
		used, _ := strconv.ParseUint(st["extstore_bytes_used"], 10, 64)
		p.stop()
		res, err := timeFirstRequest(ctx, o.TcacheBinary, args, nil)
		if err != nil {
			row.Err = fmt.Sprintf("restart at %d MiB: %v", size>>20, err)
			return nil
		}
		res.DataBytes, res.DiskBytes = size, used
		crash, err := timeCrashRestart(ctx, o, dir, size/restartValueSize)
		if err != nil {
			row.Err = fmt.Sprintf("restart after kill -9 at %d MiB: %v", size>>20, err)
			return nil
		}
		res.AfterKill, res.Reindexed = crash.FirstReq, crash.Reindexed
		row.Restarts = append(row.Restarts, res)
		o.Logger.Info("restart", "data_mib", size>>20, "disk_mib", used>>20, "items", res.Items,
			"first_request", res.FirstReq.Round(time.Millisecond).String(),
			"after_kill", res.AfterKill.Round(time.Millisecond).String(), "reindexed_frames", res.Reindexed)
	}
	return nil
}

// restartValueSize is the size of the restart workload's values.
const restartValueSize = 4096

// restartArgs are tcache's arguments in the restart workload, on dir's
// data_dir, with extra at the end.
func restartArgs(o CompareOptions, dir string, extra ...string) []string {
	return append([]string{"-U", "0", "-m", "64", "-t", strconv.Itoa(o.ServerThreads),
		"--data-dir", filepath.Join(dir, "data")}, extra...)
}

// restartFill sets the keys [from, to) of the restart workload on addr to
// random values of restartValueSize (seed chooses them).
func restartFill(ctx context.Context, addr string, from, to int64, seed uint64) error {
	_, err := Run(ctx, Options{
		Servers: []string{addr}, Protocol: ProtocolText, Threads: 1, Clients: 8,
		SetRatio: 1, GetRatio: 0, Pipeline: 64, DataSizeMin: restartValueSize, DataSizeMax: restartValueSize,
		SetPattern: Parallel, GetPattern: Parallel, KeyPrefix: "restart:",
		KeyMinimum: uint64(from), KeyMaximum: uint64(to - 1), Seed: seed,
		Requests: (to - from + 7) / 8,
	})
	return err
}

// crashBytes is what timeCrashRestart overwrites before its kill -9: more
// than a journal segment (32 MiB), so that the restart has unindexed
// frames to scan.
const crashBytes = 48 << 20

// reindexedRE finds the frame count in lsm's re-index log line.
var reindexedRE = regexp.MustCompile(`journal re-indexed.* frames=(\d+)`)

// timeCrashRestart starts tcache on dir's data with the default durability
// (interval), overwrites crashBytes of 4 KiB values among keys [0, keys),
// kills it with SIGKILL, and times the restart (timeFirstRequest).
func timeCrashRestart(ctx context.Context, o CompareOptions, dir string, keys int64) (RestartResult, error) {
	args := restartArgs(o, dir, "--log-format", "text") // reindexedRE reads it
	p, err := startProcess(ctx, "tcache", o.TcacheBinary, args, 120*time.Second)
	if err != nil {
		return RestartResult{}, err
	}
	err = restartFill(ctx, p.addr, 0, min(crashBytes/restartValueSize, keys), 2)
	_ = p.cmd.Process.Kill()
	<-p.done
	if err != nil {
		return RestartResult{}, fmt.Errorf("overwriting: %w", err)
	}
	var out string
	res, err := timeFirstRequest(ctx, o.TcacheBinary, args, &out)
	if m := reindexedRE.FindStringSubmatch(out); m != nil {
		res.Reindexed, _ = strconv.ParseUint(m[1], 10, 64)
	}
	return res, err
}

// timeFirstRequest starts tcache and measures the time from exec until a
// "version" request is answered, then reads curr_items and stops it; out,
// when not nil, receives the server's output up to the stop.
func timeFirstRequest(ctx context.Context, bin string, args []string, out *string) (RestartResult, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return RestartResult{}, err
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	addr := net.JoinHostPort("127.0.0.1", port)
	p := &process{name: "tcache", addr: addr, out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"-l", "127.0.0.1", "-p", port}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		return RestartResult{}, err
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	defer func() {
		p.stop()
		if out != nil {
			*out = p.out.String()
		}
	}()
	deadline := start.Add(120 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			_, werr := c.Write([]byte("version\r\n"))
			n, rerr := c.Read(buf)
			c.Close()
			if werr == nil && rerr == nil && strings.HasPrefix(string(buf[:n]), "VERSION ") {
				res := RestartResult{FirstReq: time.Since(start)}
				if st, err := ServerStats(addr); err == nil {
					res.Items, _ = strconv.ParseUint(st["curr_items"], 10, 64)
				}
				return res, nil
			}
		}
		if !p.alive() || time.Now().After(deadline) || ctx.Err() != nil {
			return RestartResult{}, fmt.Errorf("no answer; output: %s", strings.TrimSpace(p.out.String()))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// RetentionTable renders what the servers of Retention workloads kept, or
// "" without any.
func (c *Comparison) RetentionTable() string {
	var b strings.Builder
	for _, r := range c.Rows {
		x := r.Retention
		if x == nil || x.Keys == 0 {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("| workload | server | prefill took | extstore_bytes_used after the prefill | keys returned after the rounds | of keys stored |\n|---|---|---:|---:|---:|---:|\n")
		}
		for _, s := range []struct {
			name       string
			took       time.Duration
			disk, hits uint64
		}{{"memcached", x.MemcachedPrefill, x.MemcachedDiskBytes, x.MemcachedHits}, {"tcache", x.TcachePrefill, x.TcacheDiskBytes, x.TcacheHits}} {
			fmt.Fprintf(&b, "| %s | %s | %v | %d MiB | %d | %.4f |\n", r.Workload.Name, s.name, s.took.Round(100*time.Millisecond),
				s.disk>>20, s.hits, float64(s.hits)/float64(x.Keys))
		}
	}
	return b.String()
}

// RestartTable renders the restart measurements, or "" without any.
func (c *Comparison) RestartTable() string {
	var b strings.Builder
	for _, r := range c.Rows {
		for _, x := range r.Restarts {
			if b.Len() == 0 {
				fmt.Fprintf(&b, "| values written | disk usage | items after restart | exec → first answered request | the same after %d MiB of overwrites and kill -9 | journal frames re-indexed |\n|---|---|---|---|---|---|\n", crashBytes>>20)
			}
			fmt.Fprintf(&b, "| %d MiB | %d MiB | %d | %v | %v | %d |\n", x.DataBytes>>20, x.DiskBytes>>20, x.Items,
				x.FirstReq.Round(time.Millisecond), x.AfterKill.Round(time.Millisecond), x.Reindexed)
		}
	}
	return b.String()
}
