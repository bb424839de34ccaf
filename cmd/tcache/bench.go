package main

// `tcache bench`: flags → bench.Options, then bench.Run; `tcache bench
// compare`: flags → bench.CompareOptions, then bench.Compare. The bench
// package never reads flags, the environment or files; this file does.

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tcache/tcache/bench"
)

func newBenchCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Load a memcached-compatible server (memtier_benchmark's flags)",
		Long: "tcache bench loads one or more memcached-compatible servers and reports throughput and\n" +
			"latency percentiles (HDR histograms), as memtier_benchmark does and with its flag names.\n" +
			"`tcache bench compare` runs named workloads against memcached and tcache side by side.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          runBench,
	}
	addBenchFlags(c.Flags())
	c.AddCommand(newBenchCompareCommand())
	return c
}

func addBenchFlags(f *pflag.FlagSet) {
	d := bench.DefaultOptions()
	f.StringP("server", "s", "127.0.0.1", "server `host` to load")
	f.IntP("port", "p", 11211, "server `port`")
	f.String("servers", "", "several servers `host:port,...` (keys placed with ketama consistent hashing); overrides -s/-p")
	f.StringP("protocol", "P", d.Protocol, "protocol: memcache_text, memcache_meta or memcache_binary")
	f.IntP("threads", "t", d.Threads, "threads (GOMAXPROCS of the load generator); clients = threads × clients")
	f.IntP("clients", "c", d.Clients, "connections per thread (and per server)")
	f.String("ratio", "1:10", "`SET:GET` ratio, scheduled exactly per connection")
	f.Int("pipeline", d.Pipeline, "requests in flight per connection")
	f.IntP("data-size", "d", d.DataSizeMin, "value size of sets in `bytes`")
	f.String("data-size-range", "", "value sizes `min-max`, uniform (overrides -d)")
	f.String("key-pattern", "R:R", "`SET:GET` key patterns: R random, S sequential, G gaussian, P parallel sequential, Z zipfian")
	f.Float64("key-median", 0, "median of the G pattern (default: middle of the key range)")
	f.Float64("key-stddev", 0, "standard deviation of the G pattern (default: a sixth of the key range)")
	f.Float64("key-zipf-exp", d.KeyZipfExp, "exponent of the Z pattern, 0 < exp <= 10")
	f.String("key-prefix", "memtier-", "prefix of every key")
	f.Uint64("key-minimum", 0, "smallest key number")
	f.Uint64("key-maximum", d.KeyMaximum, "largest key number")
	f.Int64P("requests", "n", 0, "requests per connection (default 10000 unless --test-time)")
	f.String("test-time", "", "run for this long instead (`seconds`, or a duration like 1m30s)")
	f.Int("multi-key-get", 0, "`N` keys per get command (0: single-key gets)")
	f.String("expiry-range", "0-0", "exptime of sets in seconds, `min-max`, uniform")
	f.Bool("distinct-client-seed", false, "give every connection its own random seed")
	f.Bool("compressible-data", false, "send one repeated byte pattern as values (default: random, incompressible bytes, so disk figures are honest)")
	f.Bool("randomize", false, "seed from the clock (different keys every run)")
	f.Uint64("seed", 1, "random seed (without --randomize)")
	f.IntP("run-count", "x", 1, "repeat the run this many times")
	f.String("json-out-file", "", "also write the results as JSON to this `file`")
	f.Bool("hide-histogram", false, "leave the latency distribution out of the report")
	f.String("print-percentiles", "50,99,99.9", "latency `percentiles` to report")
}

// benchOptions turns the flags into bench.Options; errors are usage errors.
func benchOptions(f *pflag.FlagSet) (bench.Options, error) {
	var o bench.Options
	var err error
	get := func(name string) string { return f.Lookup(name).Value.String() }
	atoi := func(name string) int { n, _ := strconv.Atoi(get(name)); return n }

	if s := get("servers"); s != "" {
		for a := range strings.SplitSeq(s, ",") {
			o.Servers = append(o.Servers, strings.TrimSpace(a))
		}
	} else {
		o.Servers = []string{net.JoinHostPort(get("server"), get("port"))}
	}
	o.Protocol = get("protocol")
	o.Threads, o.Clients, o.Pipeline = atoi("threads"), atoi("clients"), atoi("pipeline")
	for name, v := range map[string]int{"threads": o.Threads, "clients": o.Clients, "pipeline": o.Pipeline} {
		if v < 1 { // zero would silently mean "default" in bench.Options
			return o, fmt.Errorf("--%s %d: want at least 1", name, v)
		}
	}
	if o.SetRatio, o.GetRatio, err = bench.ParseRatio(get("ratio")); err != nil {
		return o, err
	}
	if r := get("data-size-range"); r != "" {
		if o.DataSizeMin, o.DataSizeMax, err = bench.ParseRange(r); err != nil {
			return o, fmt.Errorf("--data-size-range: %w", err)
		}
		if o.DataSizeMin < 1 {
			return o, fmt.Errorf("--data-size-range %s: sizes start at 1", r)
		}
	} else {
		o.DataSizeMin = atoi("data-size")
		o.DataSizeMax = o.DataSizeMin
		if o.DataSizeMin < 1 {
			return o, fmt.Errorf("--data-size %d: want at least 1", o.DataSizeMin)
		}
	}
	if o.SetPattern, o.GetPattern, err = bench.ParsePatterns(get("key-pattern")); err != nil {
		return o, err
	}
	o.KeyMedian, _ = f.GetFloat64("key-median")
	o.KeyStddev, _ = f.GetFloat64("key-stddev")
	o.KeyZipfExp, _ = f.GetFloat64("key-zipf-exp")
	if o.KeyZipfExp <= 0 {
		return o, fmt.Errorf("--key-zipf-exp %v: want 0 < exp <= 10", o.KeyZipfExp)
	}
	o.KeyPrefix = get("key-prefix")
	o.KeyMinimum, _ = f.GetUint64("key-minimum")
	o.KeyMaximum, _ = f.GetUint64("key-maximum")
	if o.KeyMaximum < o.KeyMinimum {
		return o, fmt.Errorf("--key-maximum %d is below --key-minimum %d", o.KeyMaximum, o.KeyMinimum)
	}
	o.Requests, _ = f.GetInt64("requests")
	if o.Requests < 0 {
		return o, fmt.Errorf("--requests %d: want a positive count", o.Requests)
	}
	if s := get("test-time"); s != "" {
		if o.TestTime, err = parseSeconds(s); err != nil || o.TestTime <= 0 {
			return o, fmt.Errorf("--test-time %q: want seconds (10) or a duration (1m30s) above 0", s)
		}
	}
	o.MultiKeyGet = atoi("multi-key-get")
	if o.ExpiryMin, o.ExpiryMax, err = bench.ParseRange(get("expiry-range")); err != nil {
		return o, fmt.Errorf("--expiry-range: %w", err)
	}
	o.DistinctClientSeed, _ = f.GetBool("distinct-client-seed")
	o.CompressibleData, _ = f.GetBool("compressible-data")
	o.Seed, _ = f.GetUint64("seed")
	if r, _ := f.GetBool("randomize"); r {
		o.Seed = uint64(time.Now().UnixNano())
	}
	o.RunCount = atoi("run-count")
	if o.RunCount < 1 {
		return o, fmt.Errorf("--run-count %d: want at least 1", o.RunCount)
	}
	if o.Percentiles, err = bench.ParsePercentiles(get("print-percentiles")); err != nil {
		return o, err
	}
	o.HideHistogram, _ = f.GetBool("hide-histogram")
	o.EnsureDefaults()
	return o, o.Validate()
}

// parseSeconds accepts "10" (seconds, as memtier) or a Go duration.
func parseSeconds(s string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func runBench(c *cobra.Command, _ []string) error {
	o, err := benchOptions(c.Flags())
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	jsonPath, _ := c.Flags().GetString("json-out-file")
	// memtier's -t is OS threads; here it bounds the goroutines' threads.
	runtime.GOMAXPROCS(o.Threads)
	if isTerminal(c.ErrOrStderr()) {
		o.Progress = c.ErrOrStderr()
	}
	rep, err := bench.Run(c.Context(), o)
	if err != nil {
		return benchError(err)
	}
	if err := bench.WriteText(c.OutOrStdout(), rep, o.HideHistogram); err != nil {
		return &exitError{code: exitRuntime, err: err}
	}
	if jsonPath != "" {
		if err := writeJSONFile(jsonPath, rep); err != nil {
			return &exitError{code: exitRuntime, err: err}
		}
	}
	return nil
}

func writeJSONFile(path string, rep *bench.Report) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bench-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := bench.WriteJSON(tmp, rep); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func newBenchCompareCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "compare [flags]",
		Short: "Run the named workloads against memcached and tcache side by side",
		Long: "tcache bench compare starts memcached and tcache (built from ./cmd/tcache unless --tcache is given)\n" +
			"on free 127.0.0.1 ports with the same -m and -t, runs each workload A B A B … for --rounds rounds\n" +
			"of --duration, prints a markdown table and, with --out, regenerates its section of that file.\n" +
			"Run it from the repository root (make bench-compare).",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          runBenchCompare,
	}
	f := c.Flags()
	names := make([]string, 0, 8)
	for _, w := range bench.Workloads() {
		names = append(names, w.Name)
	}
	f.String("memcached", "/usr/bin/memcached", "memcached `binary`")
	f.String("tcache", "", "tcache `binary` (default: go build ./cmd/tcache into a temporary directory)")
	f.String("foundation", "", "tcache `binary` built from the foundation, commit "+bench.FoundationRev+" (make bench-compare builds it): the baseline of the -vs-foundation workloads, which run only with it")
	f.IntP("memory", "m", 1024, "-m (MB) of both servers")
	f.IntP("threads", "t", 1, "-t of both servers")
	f.Int("bench-threads", 1, "OS threads (GOMAXPROCS) of the load generator")
	f.Int("rounds", 3, "rounds per workload and server (A B A B …)")
	f.String("duration", "10s", "length of each measured run (seconds or a duration)")
	f.String("workloads", "", "comma-separated workloads to run (default: all of "+strings.Join(names, ",")+"; the -vs-foundation ones only with --foundation)")
	f.String("out", "", "markdown `file` whose bench compare section is regenerated (e.g. docs/benchmarks.md)")
	return c
}

func runBenchCompare(c *cobra.Command, _ []string) error {
	f := c.Flags()
	var o bench.CompareOptions
	o.MemcachedBinary, _ = f.GetString("memcached")
	o.TcacheBinary, _ = f.GetString("tcache")
	o.FoundationBinary, _ = f.GetString("foundation")
	o.MemoryMB, _ = f.GetInt("memory")
	o.ServerThreads, _ = f.GetInt("threads")
	o.Rounds, _ = f.GetInt("rounds")
	benchThreads, _ := f.GetInt("bench-threads")
	if o.MemoryMB < 1 || o.ServerThreads < 1 || o.Rounds < 1 || benchThreads < 1 {
		return &exitError{code: exitUsage, err: errors.New("--memory, --threads, --bench-threads and --rounds must be at least 1")}
	}
	ds, _ := f.GetString("duration")
	var err error
	if o.Duration, err = parseSeconds(ds); err != nil || o.Duration <= 0 {
		return &exitError{code: exitUsage, err: fmt.Errorf("--duration %q: want seconds or a duration above 0", ds)}
	}
	if ws, _ := f.GetString("workloads"); ws != "" {
		for w := range strings.SplitSeq(ws, ",") {
			o.Workloads = append(o.Workloads, strings.TrimSpace(w))
		}
	}
	out, _ := f.GetString("out")
	o.RunAsRoot = os.Geteuid() == 0 // memcached refuses root without -u root
	stderr := c.ErrOrStderr()
	o.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	if _, err := os.Stat(o.MemcachedBinary); err != nil {
		return &exitError{code: exitRuntime, err: fmt.Errorf("bench compare: memcached not found (apt-get install memcached): %w", err)}
	}
	if o.FoundationBinary != "" {
		if _, err := os.Stat(o.FoundationBinary); err != nil {
			return &exitError{code: exitRuntime, err: fmt.Errorf("bench compare: the foundation's binary (scripts/build-foundation.sh builds it): %w", err)}
		}
	}
	if o.TcacheBinary == "" {
		dir, err := os.MkdirTemp("", "tcache-bench-")
		if err != nil {
			return &exitError{code: exitRuntime, err: err}
		}
		defer os.RemoveAll(dir)
		o.TcacheBinary = filepath.Join(dir, "tcache")
		fmt.Fprintln(stderr, "building ./cmd/tcache ...")
		build := exec.CommandContext(c.Context(), "go", "build", "-o", o.TcacheBinary, "./cmd/tcache")
		build.Stdout, build.Stderr = stderr, stderr
		if err := build.Run(); err != nil {
			return &exitError{code: exitRuntime, err: fmt.Errorf("bench compare: go build ./cmd/tcache (run from the repository root): %w", err)}
		}
	}
	runtime.GOMAXPROCS(benchThreads)
	cmp, err := bench.Compare(c.Context(), o)
	if err != nil {
		return benchError(err)
	}
	fmt.Fprint(c.OutOrStdout(), cmp.MarkdownTable())
	if out == "" {
		return nil
	}
	old, err := os.ReadFile(out)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return &exitError{code: exitRuntime, err: err}
	}
	doc, err := bench.ReplaceSection(string(old), cmp.Section(commandLine()), bench.CompareBegin, bench.CompareEnd)
	if err != nil {
		return &exitError{code: exitRuntime, err: err}
	}
	if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
		return &exitError{code: exitRuntime, err: err}
	}
	fmt.Fprintln(stderr, "updated", out)
	return nil
}

// commandLine is how this process was started, for the docs. A `go run`
// binary is named by its package, so the line can be pasted.
func commandLine() string {
	args := []string{"tcache"}
	if strings.Contains(os.Args[0], "go-build") { // started by `go run`
		args = []string{"go run ./cmd/tcache"}
	}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

// benchError maps an error of bench.Run or bench.Compare to an exit code:
// refused options are a usage error, anything else a runtime one.
func benchError(err error) error {
	code := exitRuntime
	if errors.Is(err, bench.ErrInvalidOptions) {
		code = exitUsage
	}
	return &exitError{code: code, err: err}
}
