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
		if !strings.Contains(string(b), "\n"+s.key+":") {
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
	want := Options{
		Listen: []string{"127.0.0.1", "::1", "[::1]:11999"}, Port: 11311, MemoryMB: 128, MaxConnections: 77,
		Threads: 8, MaxItemSize: 2 << 20, Verbosity: 2, IdleTimeout: 30 * time.Second, DataDir: "/tmp/x",
		LogFormat: "text", ShutdownTimeout: 10 * time.Second, Protocol: "binary",
	}
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
		if got := mustLoad(t, "-I", in).MaxItemSize; got != want {
			t.Errorf("-I %s = %d, want %d", in, got, want)
		}
	}
	if got := mustLoad(t, "-m", "2048", "-I", "1024m").MaxItemSize; got != 1<<30 {
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
		{args: []string{"-I", "64m"}, want: `config: max_item_size: must be at most half of memory (32m with memory 64), got "64m"`},
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
