// Command memreport measures the RAM each server needs per cached item: it
// starts Debian's memcached and tcache (built from ./cmd/tcache) with the same
// -m and -t on free 127.0.0.1 ports, loads the same items into each through a
// pipelined text-protocol loader, checks that nothing was evicted and that a
// sample of the items reads back intact, and reports bytes per item from the
// process RSS (/proc/PID/status VmRSS), from `stats bytes`, and for tcache from
// its Go heap stats when it reports them.
//
// Run it from the repository root (make bench-memory):
//
//	go run ./bench/memreport -out docs/benchmarks.md
//
// Without -out it prints the markdown table only. With -out it replaces the
// section between <!-- memreport:begin --> and <!-- memreport:end --> in that
// file (appending the section when the markers are absent) with the table, the
// machine and the command that produced it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tcache/tcache/bench"
)

// config is the command line.
type config struct {
	items       int    // items to load
	valueSize   int    // bytes per value
	memoryMB    int    // -m for both servers
	threads     int    // -t for both servers
	conns       int    // loader connections
	batch       int    // sets per pipelined batch
	sample      int    // random items read back and verified after the load
	memcached   string // memcached binary
	tcache      string // tcache binary; "" = build ./cmd/tcache
	out         string // markdown file to update; "" = stdout only
	note        string // paragraph added under the table in -out
	startupWait time.Duration
}

func main() {
	var c config
	flag.IntVar(&c.items, "items", 1_000_000, "items to load")
	flag.IntVar(&c.valueSize, "value", 100, "value size in bytes")
	flag.IntVar(&c.memoryMB, "m", 1024, "memory limit (-m, MB) of both servers; must hold every item")
	flag.IntVar(&c.threads, "t", 2, "threads (-t) of both servers")
	flag.IntVar(&c.conns, "conns", 2, "loader connections")
	flag.IntVar(&c.batch, "batch", 100, "sets per pipelined batch")
	flag.IntVar(&c.sample, "sample", 1000, "random items read back and verified after the load")
	flag.StringVar(&c.memcached, "memcached", "memcached", "memcached binary")
	flag.StringVar(&c.tcache, "tcache", "", "tcache binary (default: go build ./cmd/tcache into a temporary directory)")
	flag.StringVar(&c.out, "out", "", "markdown file whose memreport section is replaced (e.g. docs/benchmarks.md)")
	flag.StringVar(&c.note, "note", "", "a paragraph written under the table in -out (caveats of this run)")
	flag.DurationVar(&c.startupWait, "startup-wait", 10*time.Second, "how long a server may take to listen")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "memreport:", err)
		os.Exit(1)
	}
}

// result is one server's measurement.
type result struct {
	server      string
	version     string
	items       int   // curr_items after the load
	rssBefore   int64 // VmRSS after start, before the load
	rssAfter    int64 // VmRSS after the load and the read-back
	statsBytes  int64 // `stats` bytes
	heapInuse   int64 // tcache_go_heap_inuse; -1 = not reported
	heapObjects int64 // tcache_go_heap_objects; -1 = not reported
	loadTime    time.Duration
}

func run(ctx context.Context, c config) error {
	tmp, err := os.MkdirTemp("", "memreport-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	mcPath, err := exec.LookPath(c.memcached)
	if err != nil {
		return fmt.Errorf("memcached not installed (apt-get install memcached): %w", err)
	}
	tcPath := c.tcache
	if tcPath == "" {
		tcPath = filepath.Join(tmp, "tcache")
		fmt.Fprintln(os.Stderr, "building ./cmd/tcache ...")
		build := exec.CommandContext(ctx, "go", "build", "-o", tcPath, "./cmd/tcache")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/tcache (run memreport from the repository root): %w", err)
		}
	}

	m, t := strconv.Itoa(c.memoryMB), strconv.Itoa(c.threads)
	mcArgs := []string{"-U", "0", "-m", m, "-t", t}
	if os.Geteuid() == 0 { // memcached refuses to run as root without -u
		name := "root"
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		mcArgs = append(mcArgs, "-u", name)
	}
	servers := []struct {
		name string
		path string
		args []string
	}{
		{"memcached", mcPath, mcArgs},
		// The RAM tier alone, as memcached is RAM alone: with the disk tier
		// -m would also pay for Pebble's block cache and memtables.
		{"tcache", tcPath, []string{"-U", "0", "-m", m, "-t", t, "--mode", "memory", "--data-dir", filepath.Join(tmp, "tcache-data")}},
	}
	var results []result
	for _, s := range servers {
		fmt.Fprintf(os.Stderr, "%s: loading %d items of %d bytes ...\n", s.name, c.items, c.valueSize)
		r, err := measure(ctx, c, s.name, s.path, s.args)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(os.Stderr, "%s: loaded in %v\n", s.name, r.loadTime.Round(time.Millisecond))
		results = append(results, r)
	}

	table := formatTable(c, results)
	fmt.Print(table)
	if c.out == "" {
		return nil
	}
	section := formatSection(c, results, table)
	if err := replaceSection(c.out, section); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "updated", c.out)
	return nil
}

// measure starts one server, loads it, verifies it and reads its figures.
func measure(ctx context.Context, c config, name, path string, args []string) (result, error) {
	r := result{server: name, heapInuse: -1, heapObjects: -1}
	proc, err := bench.StartServer(ctx, name, path, args, c.startupWait)
	if err != nil {
		return r, err
	}
	defer proc.Stop()
	addr := proc.Addr()

	// Baseline: one connection in, nothing stored.
	st, err := bench.ServerStats(addr)
	if err != nil {
		return r, err
	}
	r.version = st["version"]
	if v := st["tcache_version"]; v != "" {
		r.version = v + " (protocol " + st["version"] + ")"
	}
	if r.rssBefore, err = vmRSS(proc.Pid()); err != nil {
		return r, err
	}

	start := time.Now()
	if err := load(addr, c); err != nil {
		return r, fmt.Errorf("load: %w", err)
	}
	r.loadTime = time.Since(start)

	if st, err = bench.ServerStats(addr); err != nil {
		return r, err
	}
	if ev := st["evictions"]; ev != "0" {
		return r, fmt.Errorf("evictions = %s after the load (curr_items %s, bytes %s, limit_maxbytes %s): "+
			"raise -m so that every item fits", ev, st["curr_items"], st["bytes"], st["limit_maxbytes"])
	}
	if r.items, err = strconv.Atoi(st["curr_items"]); err != nil || r.items != c.items {
		return r, fmt.Errorf("curr_items = %q after loading %d items", st["curr_items"], c.items)
	}
	if err := verifySample(addr, c); err != nil {
		return r, err
	}
	r.statsBytes, _ = strconv.ParseInt(st["bytes"], 10, 64)
	if v, ok := st["tcache_go_heap_inuse"]; ok {
		r.heapInuse, _ = strconv.ParseInt(v, 10, 64)
	}
	if v, ok := st["tcache_go_heap_objects"]; ok {
		r.heapObjects, _ = strconv.ParseInt(v, 10, 64)
	}
	if r.rssAfter, err = vmRSS(proc.Pid()); err != nil {
		return r, err
	}
	return r, nil
}

// key and value are the loaded data: value(i) is derived from i so that
// any item can be verified without keeping the data set in memory.
func key(dst []byte, i int) []byte {
	dst = append(dst, "key:"...)
	s := strconv.Itoa(i)
	for range 7 - len(s) {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

func value(dst []byte, i, size int) []byte {
	for j := range size {
		dst = append(dst, 'a'+byte((i+j*7)%26))
	}
	return dst
}

// load stores items 0..c.items-1 over c.conns connections. Each connection
// writes batches of c.batch "set ... noreply" commands followed by
// "mn" (meta no-op), and reads the "MN" before the next batch, so errors
// surface early and the loader never runs far ahead of the server.
func load(addr string, c config) error {
	per := (c.items + c.conns - 1) / c.conns
	errs := make(chan error, c.conns)
	var wg sync.WaitGroup
	for w := range c.conns {
		lo, hi := w*per, min((w+1)*per, c.items)
		wg.Go(func() { errs <- loadRange(addr, c, lo, hi) })
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func loadRange(addr string, c config, lo, hi int) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	bw := bufio.NewWriterSize(conn, 64<<10)
	var buf []byte
	for i := lo; i < hi; {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		for end := min(i+c.batch, hi); i < end; i++ {
			buf = append(buf[:0], "set "...)
			buf = key(buf, i)
			buf = append(buf, " 0 0 "...)
			buf = strconv.AppendInt(buf, int64(c.valueSize), 10)
			buf = append(buf, " noreply\r\n"...)
			buf = value(buf, i, c.valueSize)
			buf = append(buf, "\r\n"...)
			bw.Write(buf)
		}
		bw.WriteString("mn\r\n")
		if err := bw.Flush(); err != nil {
			return err
		}
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if string(line) != "MN\r\n" {
			return fmt.Errorf("after set noreply batch ending at item %d: got %q, want \"MN\\r\\n\"", i, line)
		}
	}
	return nil
}

// verifySample reads c.sample random items (and the first and last) back
// with one multi-key get each batch and checks every value.
func verifySample(addr string, c config) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(conn)
	rng := rand.New(rand.NewPCG(1, 2))
	ids := []int{0, c.items - 1}
	for range c.sample {
		ids = append(ids, rng.IntN(c.items))
	}
	var want []byte
	for len(ids) > 0 {
		n := min(len(ids), 100)
		batch := ids[:n]
		ids = ids[n:]
		cmd := []byte("get")
		for _, i := range batch {
			cmd = key(append(cmd, ' '), i)
		}
		if _, err := conn.Write(append(cmd, "\r\n"...)); err != nil {
			return err
		}
		got := map[string][]byte{}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			if line == "END\r\n" {
				break
			}
			f := strings.Fields(line) // VALUE <key> <flags> <bytes>
			if len(f) != 4 || f[0] != "VALUE" {
				return fmt.Errorf("verify: unexpected line %q", line)
			}
			size, err := strconv.Atoi(f[3])
			if err != nil {
				return fmt.Errorf("verify: unexpected line %q", line)
			}
			data := make([]byte, size+2)
			if _, err := io.ReadFull(br, data); err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			got[f[1]] = data[:size]
		}
		for _, i := range batch {
			k := string(key(nil, i))
			want = value(want[:0], i, c.valueSize)
			if v, ok := got[k]; !ok {
				return fmt.Errorf("verify: %s is missing after the load", k)
			} else if !bytes.Equal(v, want) {
				return fmt.Errorf("verify: %s = %q, want %q", k, v, want)
			}
		}
	}
	return nil
}

// vmRSS reads the resident set size of pid in bytes.
func vmRSS(pid int) (int64, error) {
	return procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

// procField reads a "Name:   123 kB" line of a /proc file, in bytes.
func procField(path, name string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %w", path, name, err)
			}
			if len(f) > 1 && f[1] == "kB" {
				n <<= 10
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, name)
}

func perItem(total int64, items int) string {
	return strconv.FormatFloat(float64(total)/float64(items), 'f', 1, 64)
}

func mib(n int64) string {
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64)
}

// formatTable renders the results as a markdown table.
func formatTable(c config, rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| server | version | items | RSS before (MiB) | RSS after (MiB) | RSS delta B/item | RSS total B/item | Go heap in-use B/item | Go heap objects | stats bytes | stats bytes/item | load time |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		heap, objects := "n/a", "n/a"
		if r.heapInuse >= 0 {
			heap = perItem(r.heapInuse, r.items)
		}
		if r.heapObjects >= 0 {
			objects = strconv.FormatInt(r.heapObjects, 10)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %d | %s | %s |\n",
			r.server, r.version, r.items, mib(r.rssBefore), mib(r.rssAfter),
			perItem(r.rssAfter-r.rssBefore, r.items), perItem(r.rssAfter, r.items),
			heap, objects, r.statsBytes, perItem(r.statsBytes, r.items), r.loadTime.Round(time.Millisecond))
	}
	if len(rs) == 2 && rs[0].rssAfter > rs[0].rssBefore {
		d0 := float64(rs[0].rssAfter - rs[0].rssBefore)
		d1 := float64(rs[1].rssAfter - rs[1].rssBefore)
		fmt.Fprintf(&b, "\n%s / %s RSS delta per item: %.2f\n", rs[1].server, rs[0].server, d1/d0)
	}
	return b.String()
}

const (
	beginMarker = "<!-- memreport:begin -->"
	endMarker   = "<!-- memreport:end -->"
)

// formatSection is the docs section: what was measured, on what, how.
func formatSection(c config, rs []result, table string) string {
	var b strings.Builder
	b.WriteString(beginMarker + "\n")
	b.WriteString("## Memory: RAM bytes per item\n\n")
	fmt.Fprintf(&b, "%d items, keys `key:0000000`..`key:%07d` (11 bytes), %d-byte values, flags 0, no expiry, "+
		"loaded with pipelined `set ... noreply` (batches of %d, %d connections) into each server started with "+
		"`-m %d -t %d -U 0` on 127.0.0.1 (tcache with `--mode memory`: the RAM tier alone, as memcached is RAM alone). After the load %d random items (and the first and last) are read back "+
		"and compared, `curr_items` must equal the item count and `evictions` must be 0.\n\n",
		c.items, c.items-1, c.valueSize, c.batch, c.conns, c.memoryMB, c.threads, c.sample)
	b.WriteString("- **RSS** is `VmRSS` from `/proc/PID/status`: *before* is right after start, *after* is after the " +
		"load and the read-back. *delta B/item* = (after − before) / items; *total B/item* = after / items.\n")
	b.WriteString("- **Go heap** is tcache's `tcache_go_heap_inuse` / `tcache_go_heap_objects` stats (n/a when the " +
		"server does not report them; memcached has no Go heap). The in-use figure is mostly fixed-size tables " +
		"sized from `-m` (the S3-FIFO ghost table), not per-item data: the object count stays flat.\n")
	b.WriteString("- **stats bytes** is the server's own accounting of stored item bytes (`stats` → `bytes`).\n\n")
	b.WriteString(table)
	if c.note != "" {
		b.WriteString("\n**Note:** " + c.note + "\n")
	}
	b.WriteString("\nMachine: " + bench.Machine() + " (memreport and tcache built with it)\n\n")
	b.WriteString("Command (from the repository root):\n\n```\n" + commandLine() + "\n```\n")
	b.WriteString(endMarker + "\n")
	return b.String()
}

func commandLine() string {
	args := []string{"go run ./bench/memreport"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

// replaceSection writes section into the markdown file at path in place of
// the text between the markers, or appends it when there are none.
func replaceSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc := string(old)
	if doc == "" {
		doc = "# tcache benchmarks\n"
	}
	begin, end := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	switch {
	case begin >= 0 && end > begin:
		rest := doc[end+len(endMarker):]
		rest = strings.TrimPrefix(rest, "\n")
		doc = doc[:begin] + section + rest
	case begin >= 0 || end >= 0:
		return fmt.Errorf("%s: only one of %s and %s is present", path, beginMarker, endMarker)
	default:
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
