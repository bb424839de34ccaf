package main

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// isolateEnv removes every TCACHE_* variable for the duration of the test
// (restored afterwards), so the developer's environment cannot leak in.
func isolateEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, envPrefix+"_") {
			t.Setenv(name, "") // registers the restore
			os.Unsetenv(name)
		}
	}
}

// load parses args as the serve flags and loads Options.
func load(t *testing.T, args ...string) (Options, error) {
	t.Helper()
	fs := pflag.NewFlagSet("tcache", pflag.ContinueOnError)
	addServeFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	return loadOptions(fs)
}

func mustLoad(t *testing.T, args ...string) Options {
	t.Helper()
	o, err := load(t, args...)
	if err != nil {
		t.Fatalf("load %q: %v", args, err)
	}
	return o
}

// writeConfig writes a YAML config file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tcache.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultsWithNothingConfigured(t *testing.T) {
	isolateEnv(t)
	if got, want := mustLoad(t), defaultOptions(); !equalOptions(got, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

// The shipped configs/tcache.yaml documents the defaults: loading it must
// change nothing.
func TestShippedConfigEqualsDefaults(t *testing.T) {
	isolateEnv(t)
	got := mustLoad(t, "--config", filepath.Join("..", "..", "configs", "tcache.yaml"))
	if want := defaultOptions(); !equalOptions(got, want) {
		t.Fatalf("configs/tcache.yaml:\n got %+v\nwant %+v", got, want)
	}
}

// Every key of the settings table is documented in configs/tcache.yaml
// (loading refuses unknown keys, so together these keep table and file in
// step).
func TestShippedConfigMentionsEveryKey(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "tcache.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings() {
		if s.hidden {
			continue
		}
		// A nested key (replication.tls.cert) is written as its last
		// part, indented under its section.
		parts := strings.Split(s.key, ".")
		want := "\n" + strings.Repeat("  ", len(parts)-1) + parts[len(parts)-1] + ":"
		if !strings.Contains(string(b), want) {
			t.Errorf("configs/tcache.yaml does not set %s", s.key)
		}
	}
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	file := writeConfig(t, "memory: 100\nport: 11300\nthreads: 3\nlog_format: json\n")
	for _, tc := range []struct {
		name       string
		env        string // TCACHE_MEMORY, "" = unset
		args       []string
		wantMemory int64
	}{
		{"default", "", nil, 64},
		{"file", "", []string{"--config", file}, 100},
		{"env over default", "200", nil, 200},
		{"env over file", "200", []string{"--config", file}, 200},
		{"flag over env and file", "200", []string{"--config", file, "-m", "300"}, 300},
		{"long flag", "", []string{"--memory=400"}, 400},
		{"memcached long flag", "", []string{"--memory-limit", "500"}, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolateEnv(t)
			if tc.env != "" {
				t.Setenv("TCACHE_MEMORY", tc.env)
			}
			if got := mustLoad(t, tc.args...).MemoryMB; got != tc.wantMemory {
				t.Fatalf("memory = %d, want %d", got, tc.wantMemory)
			}
		})
	}

	// Keys from different sources combine.
	isolateEnv(t)
	t.Setenv("TCACHE_PORT", "11400")
	t.Setenv("TCACHE_MAX_ITEM_SIZE", "2m")
	o := mustLoad(t, "--config", file, "-t", "2")
	if o.Port != 11400 || o.MaxItemSize != 2<<20 || o.Threads != 2 || o.LogFormat != "json" || o.MemoryMB != 100 {
		t.Fatalf("combined sources: %+v", o)
	}

	// TCACHE_CONFIG names the file when --config is absent.
	isolateEnv(t)
	t.Setenv("TCACHE_CONFIG", file)
	if o := mustLoad(t); o.MemoryMB != 100 {
		t.Fatalf("TCACHE_CONFIG: memory = %d, want 100", o.MemoryMB)
	}
}

func TestMemcachedFlags(t *testing.T) {
	isolateEnv(t)
	o := mustLoad(t, "-p", "11311", "-l", "127.0.0.1,::1", "-l", "[::1]:11999", "-m", "128",
		"-c", "77", "-t", "8", "-U", "0", "-I", "2m", "-vv", "--data-dir", "/tmp/x", "--idle-timeout", "30", "-B", "binary")
	want := defaultOptions()
	want.Listen, want.Port, want.MemoryMB, want.MaxConnections = []string{"127.0.0.1", "::1", "[::1]:11999"}, 11311, 128, 77
	want.Threads, want.MaxItemSize, want.Verbosity, want.IdleTimeout = 8, 2<<20, 2, 30*time.Second
	want.DataDir, want.Protocol = "/tmp/x", "binary"
	if !equalOptions(o, want) {
		t.Fatalf("got %+v\nwant %+v", o, want)
	}
	if got, want := o.listenAddrs(), []string{"127.0.0.1:11311", "[::1]:11311", "[::1]:11999"}; !slices.Equal(got, want) {
		t.Fatalf("listenAddrs = %q, want %q", got, want)
	}
	if got := mustLoad(t, "-l", "127.0.0.1", "-l", "127.0.0.1:11211").listenAddrs(); !slices.Equal(got, []string{"127.0.0.1:11211"}) {
		t.Fatalf("duplicate listen addresses not merged: %q", got)
	}
	if o := mustLoad(t, "-v", "-v", "-v"); o.Verbosity != 3 {
		t.Fatalf("-v -v -v: verbosity = %d", o.Verbosity)
	}
}

func TestListenFromEnvAndFile(t *testing.T) {
	isolateEnv(t)
	t.Setenv("TCACHE_LISTEN", "10.0.0.1, 10.0.0.2")
	if got := mustLoad(t).Listen; !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Fatalf("env listen = %q", got)
	}
	isolateEnv(t)
	file := writeConfig(t, "listen:\n  - 10.0.0.3\n  - \"[::1]:11300\"\n")
	if got := mustLoad(t, "--config", file).Listen; !slices.Equal(got, []string{"10.0.0.3", "[::1]:11300"}) {
		t.Fatalf("file listen = %q", got)
	}
}

func TestMaxItemSizeForms(t *testing.T) {
	isolateEnv(t)
	for in, want := range map[string]int{
		"1m": 1 << 20, "1M": 1 << 20, "512k": 512 << 10, "512K": 512 << 10, "2097152": 2097152,
		"1k": 1024, "1024": 1024, "32m": 32 << 20,
	} {
		// memcached's forms and bounds: memory mode (no disk tier's share).
		if got := mustLoad(t, "--mode", "memory", "-I", in).MaxItemSize; got != want {
			t.Errorf("-I %s = %d, want %d", in, got, want)
		}
	}
	if got := mustLoad(t, "--mode", "memory", "-m", "2048", "-I", "1024m").MaxItemSize; got != 1<<30 {
		t.Errorf("-I 1024m = %d", got)
	}
}

// Every bad value is refused with a message naming the key, what it
// accepts, the bad value and where it came from.
func TestBadValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  [2]string
		file string
		want string
	}{
		{args: []string{"-m", "abc"}, want: `config: memory: must be an integer number of megabytes ≥ 1, got "abc" (from flag -m/--memory)`},
		{env: [2]string{"TCACHE_MEMORY", "abc"}, want: `config: memory: must be an integer number of megabytes ≥ 1, got "abc" (from TCACHE_MEMORY)`},
		{file: "memory: abc\n", want: `config: memory: must be an integer number of megabytes ≥ 1, got "abc" (from `},
		{args: []string{"-m", "0"}, want: `config: memory: must be an integer number of megabytes ≥ 1, got "0"`},
		{args: []string{"-m", "1.5"}, want: `config: memory: must be an integer number of megabytes ≥ 1, got "1.5"`},
		{args: []string{"--log-format", "xml"}, want: `config: log_format: must be one of text, json, got "xml"`},
		{args: []string{"-p", "0"}, want: `config: port: must be an integer 1..65535, got "0"`},
		{args: []string{"-p", "65536"}, want: `config: port: must be an integer 1..65535, got "65536"`},
		{args: []string{"-c", "0"}, want: `config: max_connections: must be an integer ≥ 1, got "0"`},
		{args: []string{"-t", "0"}, want: `config: threads: must be an integer 1..1024, got "0"`},
		{args: []string{"-I", "1023"}, want: `config: max_item_size: must be a size from 1k to 1024m`},
		{args: []string{"-I", "1025m"}, want: `config: max_item_size: must be a size from 1k to 1024m`},
		{args: []string{"-I", "1g"}, want: `config: max_item_size: must be a size from 1k to 1024m`},
		{args: []string{"-I", "64m", "--mode", "memory"}, want: `config: max_item_size: must be at most half of the RAM tier (32m with memory 64), got "64m"`},
		{args: []string{"-I", "64m"}, want: `config: max_item_size: must be at most half of the RAM tier (14m with a RAM tier of 28m: memory 64 less the disk tier's block cache, memtables and index), got "64m"`},
		{args: []string{"-m", "4"}, want: `config: memory: 4 megabytes is too small for mode cache: the disk tier's block cache (1m), two memtables (1m each) and the disk index (1536k) leave 0 for the RAM tier, below its minimum of 2m; use memory ≥ 8 or mode memory (from flag -m/--memory)`},
		{args: []string{"--mode", "disk"}, want: `config: mode: must be one of memory, cache, persistent, got "disk" (from flag --mode)`},
		{env: [2]string{"TCACHE_DISK_LIMIT", "10x"}, want: `config: disk_limit: must be a size of at least 64m: bytes, or a number with suffix k, m, g or t (512m, 10g), got "10x" (from TCACHE_DISK_LIMIT)`},
		{file: "disk_limit: 1m\n", want: `config: disk_limit: must be a size of at least 64m`},
		{args: []string{"--durability", "fsync"}, want: `config: durability: must be one of sync, interval, none, got "fsync"`},
		{args: []string{"--durability-interval", "0s"}, want: `config: durability_interval: must be a duration from 1ms to 1m`},
		{args: []string{"--compression", "lz4"}, want: `config: compression: must be one of none, s2, zstd, got "lz4"`},
		{args: []string{"--compress-min", "0"}, want: `config: compress_min: must be an integer number of bytes ≥ 1`},
		{args: []string{"--log-retention-bytes", "1k"}, want: `config: log_retention_bytes: must be a size ≥ 1m`},
		{args: []string{"--log-retention-age", "1ms"}, want: `config: log_retention_age: must be a duration ≥ 1s`},
		{args: []string{"-U", "1"}, want: `config: udp_port: UDP is not supported; -U must be 0, got "1" (from flag -U/--udp-port)`},
		{args: []string{"-U", "11211"}, want: `UDP is not supported; -U must be 0`},
		{env: [2]string{"TCACHE_VERBOSITY", "-1"}, want: `config: verbosity: must be an integer ≥ 0, got "-1"`},
		{args: []string{"--idle-timeout", "-5s"}, want: `config: idle_timeout: must be a duration ≥ 0`},
		{args: []string{"--idle-timeout", "soon"}, want: `config: idle_timeout: must be a duration ≥ 0`},
		{args: []string{"--shutdown-timeout", "0"}, want: `config: shutdown_timeout: must be a duration > 0`},
		{args: []string{"--data-dir", ""}, want: `config: data_dir: must be a directory path, not empty`},
		{args: []string{"-l", "bad host"}, want: `config: listen: must be one or more addresses`},
		{args: []string{"-l", "127.0.0.1:0"}, want: `config: listen: must be one or more addresses`},
		{args: []string{"-l", ","}, want: `config: listen: must be one or more addresses`},
		{file: "port:\n  tcp: 1\n", want: `config: unknown key "port.tcp"`},
		{file: "prot: 11211\n", want: `config: unknown key "prot" in `},
		{args: []string{"-d"}, want: `config: -d (daemonize) is not supported`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			isolateEnv(t)
			if tc.env[0] != "" {
				t.Setenv(tc.env[0], tc.env[1])
			}
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeConfig(t, tc.file))
			}
			_, err := load(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("args %q: got error %v, want one containing %q", args, err, tc.want)
			}
		})
	}
}

// All bad values are reported at once, one line each.
func TestBadValuesReportedTogether(t *testing.T) {
	isolateEnv(t)
	_, err := load(t, "-m", "x", "-p", "y")
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "config: port:") || !strings.HasPrefix(lines[1], "config: memory:") {
		t.Fatalf("got %q", lines)
	}
}

func TestMissingConfigFileRefused(t *testing.T) {
	isolateEnv(t)
	_, err := load(t, "--config", filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "config: reading ") {
		t.Fatalf("got %v", err)
	}
}

func TestExitCodes(t *testing.T) {
	isolateEnv(t)
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{args: []string{"version"}, code: 0, stdout: "tcache " + version + " ("},
		{args: []string{"--version"}, code: 0, stdout: "tcache " + version + "\n"},
		{args: []string{"-V"}, code: 0, stdout: "tcache " + version + "\n"},
		{args: []string{"-U", "1"}, code: 2, stderr: "tcache: config: udp_port: UDP is not supported; -U must be 0"},
		{args: []string{"serve", "-m", "abc"}, code: 2, stderr: `tcache: config: memory: must be an integer number of megabytes ≥ 1, got "abc"`},
		{args: []string{"--no-such-flag"}, code: 2, stderr: "unknown flag: --no-such-flag"},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"-d"}, code: 2, stderr: "not supported"},
	} {
		var stdout, stderr strings.Builder
		code := run(t.Context(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("tcache %q: exit %d, stdout %q, stderr %q; want exit %d, stdout ~%q, stderr ~%q",
				tc.args, code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
		}
	}
}

func TestDataDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := lockDataDir(dir) // creates dir
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDataDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another tcache") ||
		!strings.Contains(err.Error(), "pid ") {
		t.Fatalf("second lock: %v", err)
	}
	if err := l.release(); err != nil {
		t.Fatal(err)
	}
	l2, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.release()
}

// equalOptions compares every field, new ones included.
func equalOptions(a, b Options) bool { return reflect.DeepEqual(a, b) }

// The disk tier's keys: sizes with suffixes, and every source.
func TestDiskKeys(t *testing.T) {
	isolateEnv(t)
	t.Setenv("TCACHE_DURABILITY", "sync")
	file := writeConfig(t, "mode: persistent\ndisk_limit: 512m\ncompression: zstd\nlog_retention_age: 1h\n")
	o := mustLoad(t, "--config", file, "--disk-limit", "2g", "--compress-min", "1024", "--durability-interval", "50ms")
	if o.Mode != "persistent" || o.DiskLimit != 2<<30 || o.Durability != "sync" || o.Compression != "zstd" ||
		o.CompressMin != 1024 || o.DurabilityInterval != 50*time.Millisecond || o.LogRetentionAge != time.Hour ||
		o.LogRetentionBytes != 1<<30 {
		t.Fatalf("disk keys: %+v", o)
	}
	for in, want := range map[string]int64{"67108864": 64 << 20, "512m": 512 << 20, "512MB": 512 << 20, "10g": 10 << 30, "1T": 1 << 40, "65536k": 64 << 20} {
		if n, ok := parseSize(in); !ok || n != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, n, ok, want)
		}
	}
	for _, in := range []string{"", "g", "1.5g", "-1m", "12b", "10x", "99999999999t"} {
		if n, ok := parseSize(in); ok {
			t.Errorf("parseSize(%q) = %d, accepted", in, n)
		}
	}
}

// The memory split with a disk tier (docs/disk-tier.md): the disk index
// 3/8, block cache 1/8, two memtables of 1/32, the RAM tier the rest;
// memory mode keeps it all.
func TestMemoryBudget(t *testing.T) {
	for _, tc := range []struct {
		mode                                 string
		mb                                   int64
		ramTier, blockCache, memTable, index int64
	}{
		{"memory", 64, 64 << 20, 0, 0, 0},
		{"cache", 64, 28 << 20, 8 << 20, 2 << 20, 24 << 20},
		{"persistent", 1024, 448 << 20, 128 << 20, 32 << 20, 384 << 20},
		{"cache", 16, 6 << 20, 2 << 20, 1 << 20, 6 << 20},
		{"cache", 8, 2 << 20, 1 << 20, 1 << 20, 3 << 20},
	} {
		b := Options{Mode: tc.mode, MemoryMB: tc.mb}.memoryBudget()
		if b.ramTier != tc.ramTier || b.blockCache != tc.blockCache || b.memTable != tc.memTable || b.index != tc.index {
			t.Errorf("%s -m %d: %+v", tc.mode, tc.mb, b)
		}
		if b.ramTier+b.blockCache+2*b.memTable+b.index != tc.mb<<20 {
			t.Errorf("%s -m %d: the parts do not add up to memory", tc.mode, tc.mb)
		}
	}
}

// The replication keys: repcached's -x and -X, every source, nested keys in
// the file, and the refusals (memory mode, half a TLS pair, a bad peer).
func TestReplicationKeys(t *testing.T) {
	isolateEnv(t)
	if o := mustLoad(t); o.replicated() {
		t.Fatalf("replication on by default: %+v", o)
	}
	o := mustLoad(t, "-x", "10.0.0.2")
	if !slices.Equal(o.ReplPeers, []string{"10.0.0.2:11212"}) || o.ReplListen != "127.0.0.1:11212" {
		t.Fatalf("-x host: peers %q listen %q", o.ReplPeers, o.ReplListen)
	}
	if o.ReplMaxClockSkew != 500*time.Millisecond || replClockSkew(o) != 500*time.Millisecond {
		t.Fatalf("default max_clock_skew %v", o.ReplMaxClockSkew)
	}
	if o := mustLoad(t, "-x", "b", "--replication-max-clock-skew", "0"); replClockSkew(o) >= 0 {
		t.Fatalf("max_clock_skew 0 maps to %v, want no bound", replClockSkew(o))
	}
	o = mustLoad(t, "-x", "10.0.0.2:11300", "-X", "11400")
	if !slices.Equal(o.ReplPeers, []string{"10.0.0.2:11300"}) || o.ReplListen != "127.0.0.1:11400" {
		t.Fatalf("-x host:port -X: peers %q listen %q", o.ReplPeers, o.ReplListen)
	}

	file := writeConfig(t, "replication:\n  listen: 0.0.0.0:12000\n  peers: [a:1, b]\n  secret: s3\n"+
		"  serve_while_syncing: false\n  sync_timeout: 5s\n  max_clock_skew: 250ms\n")
	t.Setenv("TCACHE_REPLICATION_SECRET", "from-env")
	o = mustLoad(t, "--config", file)
	if o.ReplListen != "0.0.0.0:12000" || !slices.Equal(o.ReplPeers, []string{"a:1", "b:11212"}) ||
		o.ReplSecret != "from-env" || o.ReplServeWhileSyncing || o.ReplSyncTimeout != 5*time.Second ||
		o.ReplMaxClockSkew != 250*time.Millisecond {
		t.Fatalf("file + env: %+v", o)
	}
	o = mustLoad(t, "--config", file, "-X", "12001", "--replication-peers", "c:2,d:3")
	if o.ReplListen != "0.0.0.0:12001" || !slices.Equal(o.ReplPeers, []string{"c:2", "d:3"}) {
		t.Fatalf("flags over the file: %+v", o)
	}
	t.Setenv("TCACHE_REPLICATION_SECRET", "")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "memory", "-x", "b"}, "config: replication: needs a disk tier, but mode is memory (from flag --mode)"},
		{[]string{"-x", "b", "--replication-tls-cert", "c.pem"}, "config: replication.tls: cert and key must both be set"},
		{[]string{"-x", "b:0"}, "config: replication.peers: must be one or more peers"},
		{[]string{"-x", "b:1,b:1"}, "listed once"},
		{[]string{"--replication-listen", "nohost"}, "config: replication.listen: must be host:port"},
		{[]string{"-X", "70000"}, "config: replication.listen: -X/--replication-port must be an integer 1..65535"},
		{[]string{"--replication-secret", "x"}, "but replication is off"},
		{[]string{"-x", "b", "--replication-sync-timeout", "0s"}, "config: replication.sync_timeout: must be a duration > 0"},
		{[]string{"-x", "b", "--replication-serve-while-syncing", "maybe"}, "config: replication.serve_while_syncing: must be true or false"},
		{[]string{"-x", "b", "--replication-max-clock-skew", "-1s"}, "config: replication.max_clock_skew: must be a duration >= 0"},
		{[]string{"-x", "127.0.0.1:11212"}, "lists this node's own replication.listen"},
	} {
		_, err := load(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.args, err, c.want)
		}
	}
	if _, err := load(t, "--config", writeConfig(t, "replication:\n  peer: [a]\n")); err == nil ||
		!strings.Contains(err.Error(), `unknown key "replication.peer"`) {
		t.Errorf("misspelt nested key: %v", err)
	}
}
