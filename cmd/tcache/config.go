package main

// Configuration: the one place where tcache reads flags, the environment and
// the config file, and turns them into an Options value.
//
// Every setting is a key (the name in the config file). Each key has a
// default, an environment variable TCACHE_<KEY> (upper case, "." and "-"
// replaced by "_": max_item_size → TCACHE_MAX_ITEM_SIZE, a future nested
// disk.limit → TCACHE_DISK_LIMIT) and usually a command-line flag named after
// memcached's. Precedence, highest first:
//
//	flag > TCACHE_* environment > config file (--config or TCACHE_CONFIG) > default
//
// Values from every source are read as text and parsed by the same function,
// so "-m abc", TCACHE_MEMORY=abc and "memory: abc" are refused with the same
// message, naming the key, what it accepts and where the bad value came from.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// envPrefix is the prefix of every environment variable tcache reads.
const envPrefix = "TCACHE"

// Bounds of max_item_size, as memcached 1.6 enforces them for -I.
const (
	minItemSize = 1 << 10 // memcached: "Item max size cannot be less than 1024 bytes."
	maxItemSize = 1 << 30 // memcached: "Cannot set item size limit higher than 1024 mb."
)

// Options is everything `tcache serve` needs, decoded and validated. Each
// field names its config key; defaults are in defaultOptions.
type Options struct {
	// Listen is the list of addresses to accept connections on (key listen,
	// flag -l). An entry is a host or IP ("127.0.0.1", "::1", "0.0.0.0"),
	// optionally with its own port ("127.0.0.1:11212", "[::1]:11212").
	// Default ["127.0.0.1"].
	Listen []string
	// Port is the TCP port for Listen entries without their own (key port,
	// flag -p). Default 11211.
	Port int
	// MemoryMB bounds the RAM tier in megabytes (key memory, flag -m).
	// Default 64.
	MemoryMB int64
	// MaxConnections is the simultaneous client connection limit (key
	// max_connections, flag -c). Default 1024.
	MaxConnections int
	// Threads sets GOMAXPROCS (key threads, flag -t). Default 4.
	Threads int
	// MaxItemSize is the largest item in bytes (key max_item_size, flag -I).
	// Default 1 MiB.
	MaxItemSize int
	// UDPPort must be 0: tcache has no UDP listener (key udp_port, flag -U).
	UDPPort int
	// Verbosity is the -v count (key verbosity). Default 0.
	Verbosity int
	// IdleTimeout closes client connections idle this long; 0 = never (key
	// idle_timeout). Default 0.
	IdleTimeout time.Duration
	// DataDir is created at start and locked (key data_dir). Default
	// "./tcache-data".
	DataDir string
	// LogFormat is "text" or "json" (key log_format). Default "text".
	LogFormat string
	// ShutdownTimeout bounds the graceful drain on SIGTERM/SIGINT (key
	// shutdown_timeout). Default 10s.
	ShutdownTimeout time.Duration
	// Protocol is the client protocol: auto, ascii or binary (key protocol,
	// flag -B, as memcached's). Default "auto": each connection's first byte
	// decides.
	Protocol string

	// The disk tier (docs/disk-tier.md).

	// Mode is memory (RAM only, memcached's behaviour), cache (the RAM tier
	// over a disk tier bounded by DiskLimit: the oldest data is dropped
	// there) or persistent (nothing is dropped: writes fail at the limit)
	// (key mode). Default "cache".
	Mode string
	// DiskLimit bounds the disk tier's usage in bytes (key disk_limit).
	// Default 10 GiB.
	DiskLimit int64
	// Durability is sync, interval or none (key durability). Default
	// "interval".
	Durability string
	// DurabilityInterval is the WAL fsync period of interval durability
	// (key durability_interval). Default 100ms.
	DurabilityInterval time.Duration
	// Compression is the codec of values of at least CompressMin bytes:
	// none, s2 or zstd (key compression). Default "s2".
	Compression string
	// CompressMin is the smallest value compressed (key compress_min).
	// Default 256.
	CompressMin int
	// DiskDirectIO writes the journal with O_DIRECT while RAM holds every
	// item (key disk_direct_io). Default true.
	DiskDirectIO bool
	// LogRetentionBytes and LogRetentionAge bound this node's write-ahead
	// log (keys log_retention_bytes, log_retention_age). Defaults 1 GiB, 24h.
	LogRetentionBytes int64
	LogRetentionAge   time.Duration
	// DiskMaintenanceInterval is how often the disk tier's background pass
	// runs (expiry sweeper, drops, log trim, delayed flushes). Hidden key
	// disk_maintenance_interval, for tests; default 1s.
	DiskMaintenanceInterval time.Duration

	// Replication (docs/replication.md): on when ReplListen or ReplPeers is
	// set. It needs a disk tier (mode cache or persistent).

	// ReplListen is the replication address, host:port (key
	// replication.listen; repcached's -X sets its port). Default "" (off);
	// 127.0.0.1:11212 once peers are configured.
	ReplListen string
	// ReplPeers are the nodes this node pulls from, each host:port (key
	// replication.peers; repcached's -x, whose host alone means port 11212).
	// Default none.
	ReplPeers []string
	// ReplSecret, when set, must be the same on every node: links prove
	// they know it before any data flows (key replication.secret). Default
	// none.
	ReplSecret string
	// ReplTLSCert, ReplTLSKey and ReplTLSCA are PEM files: this node's
	// certificate and key (served, and presented to the peers it pulls)
	// and the CA that peers' certificates must chain to (keys
	// replication.tls.cert, .key, .ca). Default none: plain TCP.
	ReplTLSCert, ReplTLSKey, ReplTLSCA string
	// ReplServeWhileSyncing answers clients before every link has caught up
	// once (key replication.serve_while_syncing). Default true.
	ReplServeWhileSyncing bool
	// ReplSyncTimeout bounds the wait for the links to catch up when
	// ReplServeWhileSyncing is false (key replication.sync_timeout).
	// Default 30s.
	ReplSyncTimeout time.Duration
	// ReplMaxClockSkew is the largest offset between this node's wall
	// clock and a peer's that a link accepts (key
	// replication.max_clock_skew): a peer further off is refused (and
	// retried), so its versions neither win every conflict nor drag this
	// node's HLC. Default 500ms; 0 turns the check off.
	ReplMaxClockSkew time.Duration
}

// Replication defaults: the port of a listen address or peer given
// without one (repcached's default), and the address replication listens on
// when peers are configured without replication.listen.
const (
	defaultReplPort   = 11212
	defaultReplListen = "127.0.0.1:11212"
)

// replicated reports whether replication is configured.
func (o Options) replicated() bool { return o.ReplListen != "" || len(o.ReplPeers) > 0 }

// Storage modes (key mode).
const (
	modeMemory     = "memory"
	modeCache      = "cache"
	modePersistent = "persistent"
)

// defaultOptions returns the settings tcache runs with when nothing is
// configured. configs/tcache.yaml documents the same values (a test checks).
func defaultOptions() Options {
	return Options{
		Listen:          []string{"127.0.0.1"},
		Port:            11211,
		MemoryMB:        64,
		MaxConnections:  1024,
		Threads:         4,
		MaxItemSize:     1 << 20,
		UDPPort:         0,
		Verbosity:       0,
		IdleTimeout:     0,
		DataDir:         "./tcache-data",
		LogFormat:       "text",
		ShutdownTimeout: 10 * time.Second,
		Protocol:        "auto",

		Mode:                    modeCache,
		DiskLimit:               10 << 30,
		Durability:              "interval",
		DurabilityInterval:      100 * time.Millisecond,
		Compression:             "s2",
		CompressMin:             256,
		LogRetentionBytes:       1 << 30,
		LogRetentionAge:         24 * time.Hour,
		DiskMaintenanceInterval: time.Second,

		ReplServeWhileSyncing: true,
		DiskDirectIO:          true,
		ReplSyncTimeout:       30 * time.Second,
		ReplMaxClockSkew:      500 * time.Millisecond,
	}
}

// setting describes one config key: its default in config-file form, its
// flag, and how its text is parsed into Options.
type setting struct {
	key   string // config file key; the environment variable derives from it
	def   any    // default as it would be written in the config file
	flag  string // long flag name; "" = no flag
	short string // one-letter flag (memcached's), or ""
	usage string // flag help
	// hidden keys (tests, tuning) are accepted from every source but not
	// documented in configs/tcache.yaml or the flag help.
	hidden bool

	// parse decodes s (already trimmed) into o, or returns what the key
	// accepts (the message after "config: <key>: ").
	parse func(o *Options, s string) (accepts string, ok bool)
}

// settings is the table of every key, in the order they are documented.
func settings() []setting {
	return []setting{
		{key: "listen", def: []string{"127.0.0.1"}, flag: "listen", short: "l",
			usage: "`addresses` to listen on, each host[:port]; repeatable and comma-separated (-l 127.0.0.1,::1)",
			parse: parseListen},
		{key: "port", def: 11211, flag: "port", short: "p",
			usage: "TCP `port` to listen on",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseInt(s, 1, 65535)
				o.Port = int(n)
				return "must be an integer 1..65535", ok
			}},
		{key: "memory", def: 64, flag: "memory", short: "m",
			usage: "RAM tier size in `megabytes`",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseInt(s, 1, math.MaxInt64>>20)
				o.MemoryMB = n
				return "must be an integer number of megabytes ≥ 1", ok
			}},
		{key: "max_connections", def: 1024, flag: "conn-limit", short: "c",
			usage: "serve at most `n` client connections at once",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseInt(s, 1, math.MaxInt32)
				o.MaxConnections = int(n)
				return "must be an integer ≥ 1", ok
			}},
		{key: "threads", def: 4, flag: "threads", short: "t",
			usage: "run Go code on at most `n` OS threads (GOMAXPROCS), like memcached's worker threads",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseInt(s, 1, 1024)
				o.Threads = int(n)
				return "must be an integer 1..1024", ok
			}},
		{key: "max_item_size", def: "1m", flag: "max-item-size", short: "I",
			usage: "largest item, a `size` in bytes or with a k/m suffix (512k, 1m); 1k..1024m",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseItemSize(s)
				o.MaxItemSize = int(n)
				return "must be a size from 1k to 1024m: bytes, or a number with suffix k or m (512k, 1m, 2097152)", ok
			}},
		{key: "udp_port", def: 0, flag: "udp-port", short: "U",
			usage: "UDP `port`; only 0 (UDP off) is accepted",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseInt(s, 0, 0)
				o.UDPPort = int(n)
				return "UDP is not supported; -U must be 0", ok
			}},
		{key: "verbosity", def: 0, flag: "verbose", short: "v",
			usage: "more logging; repeat for more (-vv debug, -vvv trace)",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseInt(s, 0, math.MaxInt32)
				o.Verbosity = int(n)
				return "must be an integer ≥ 0", ok
			}},
		{key: "protocol", def: "auto", flag: "protocol", short: "B",
			usage: "client `protocol`: auto (text or binary, by each connection's first byte), ascii or binary",
			parse: func(o *Options, s string) (string, bool) {
				o.Protocol = s
				return "must be one of auto, ascii, binary", s == "auto" || s == "ascii" || s == "binary"
			}},
		{key: "idle_timeout", def: "0s", flag: "idle-timeout",
			usage: "close client connections idle this long, a `duration` (30s, 5m, or seconds); 0 = never",
			parse: func(o *Options, s string) (string, bool) {
				d, ok := parseDuration(s)
				o.IdleTimeout = d
				return "must be a duration ≥ 0 (30s, 5m) or whole seconds; 0 disables", ok
			}},
		{key: "data_dir", def: "./tcache-data", flag: "data-dir",
			usage: "`directory` for tcache's files; created if missing, locked while tcache runs",
			parse: func(o *Options, s string) (string, bool) {
				o.DataDir = s
				return "must be a directory path, not empty", s != ""
			}},
		{key: "mode", def: "cache", flag: "mode",
			usage: "storage `mode`: memory (RAM only), cache (RAM over disk; oldest data dropped at disk_limit) or persistent (nothing dropped; writes refused at disk_limit)",
			parse: func(o *Options, s string) (string, bool) {
				o.Mode = s
				return "must be one of memory, cache, persistent", s == modeMemory || s == modeCache || s == modePersistent
			}},
		{key: "disk_limit", def: "10g", flag: "disk-limit",
			usage: "disk tier limit, a `size` in bytes or with a k/m/g/t suffix (512m, 10g)",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseSize(s)
				o.DiskLimit = n
				return "must be a size of at least 64m: bytes, or a number with suffix k, m, g or t (512m, 10g)", ok && n >= minDiskLimit
			}},
		{key: "durability", def: "interval", flag: "durability",
			usage: "when a write is acknowledged: sync (after fsync), interval (fsync every durability_interval) or none",
			parse: func(o *Options, s string) (string, bool) {
				o.Durability = s
				return "must be one of sync, interval, none", s == "sync" || s == "interval" || s == "none"
			}},
		{key: "durability_interval", def: "100ms", flag: "durability-interval",
			usage: "WAL fsync period of durability interval, a `duration` (100ms, 1s)",
			parse: func(o *Options, s string) (string, bool) {
				d, err := time.ParseDuration(s)
				o.DurabilityInterval = d
				return "must be a duration from 1ms to 1m (100ms, 1s)", err == nil && d >= time.Millisecond && d <= time.Minute
			}},
		{key: "compression", def: "s2", flag: "compression",
			usage: "`codec` for values of at least compress_min bytes on disk: none, s2 or zstd",
			parse: func(o *Options, s string) (string, bool) {
				o.Compression = s
				return "must be one of none, s2, zstd", s == "none" || s == "s2" || s == "zstd"
			}},
		{key: "compress_min", def: 256, flag: "compress-min",
			usage: "smallest value compressed on disk, in `bytes`",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseInt(s, 1, math.MaxInt32)
				o.CompressMin = int(n)
				return "must be an integer number of bytes ≥ 1", ok
			}},
		{key: "disk_direct_io", def: true, flag: "disk-direct-io",
			usage: "write the disk journal with O_DIRECT (past the page cache) while RAM holds every item (true or false)",
			parse: func(o *Options, s string) (string, bool) {
				b, err := strconv.ParseBool(s)
				o.DiskDirectIO = b
				return "must be true or false", err == nil
			}},
		{key: "log_retention_bytes", def: "1g", flag: "log-retention-bytes",
			usage: "keep at most this much write-ahead log, a `size` (512m, 1g)",
			parse: func(o *Options, s string) (string, bool) {
				n, ok := parseSize(s)
				o.LogRetentionBytes = n
				return "must be a size ≥ 1m: bytes, or a number with suffix k, m, g or t (512m, 1g)", ok && n >= 1<<20
			}},
		{key: "log_retention_age", def: "24h", flag: "log-retention-age",
			usage: "keep write-ahead log entries at most this long, a `duration` (24h, 30m)",
			parse: func(o *Options, s string) (string, bool) {
				d, err := time.ParseDuration(s)
				o.LogRetentionAge = d
				return "must be a duration ≥ 1s (24h, 30m)", err == nil && d >= time.Second
			}},
		{key: "disk_maintenance_interval", def: "1s", flag: "disk-maintenance-interval", hidden: true,
			usage: "period of the disk tier's maintenance pass (tests)",
			parse: func(o *Options, s string) (string, bool) {
				d, err := time.ParseDuration(s)
				o.DiskMaintenanceInterval = d
				return "must be a duration from 10ms to 1h", err == nil && d >= 10*time.Millisecond && d <= time.Hour
			}},
		{key: "replication.listen", def: "", flag: "replication-listen",
			usage: "replication `address` host:port (repcached -X sets its port); default 127.0.0.1:11212 when peers are set",
			parse: func(o *Options, s string) (string, bool) {
				o.ReplListen = s
				return "must be host:port (127.0.0.1:11212, [::1]:11212, :11212) or empty", s == "" || validHostPort(s, true)
			}},
		{key: "replication.peers", def: []string{}, flag: "replication-peers", short: "x",
			usage: "peer `addresses` to replicate with, each host[:port] (port 11212 when omitted); repeatable and comma-separated",
			parse: parsePeers},
		{key: "replication.secret", def: "", flag: "replication-secret",
			usage: "shared `secret` every node of the mesh must have (prefer TCACHE_REPLICATION_SECRET or the config file: flags show in ps)",
			parse: func(o *Options, s string) (string, bool) {
				o.ReplSecret = s
				return "", true
			}},
		{key: "replication.tls.cert", def: "", flag: "replication-tls-cert",
			usage: "PEM `file` of this node's replication certificate (with replication.tls.key)",
			parse: func(o *Options, s string) (string, bool) { o.ReplTLSCert = s; return "", true }},
		{key: "replication.tls.key", def: "", flag: "replication-tls-key",
			usage: "PEM `file` of the key of replication.tls.cert",
			parse: func(o *Options, s string) (string, bool) { o.ReplTLSKey = s; return "", true }},
		{key: "replication.tls.ca", def: "", flag: "replication-tls-ca",
			usage: "PEM `file` of the CA that peers' replication certificates must chain to",
			parse: func(o *Options, s string) (string, bool) { o.ReplTLSCA = s; return "", true }},
		{key: "replication.serve_while_syncing", def: true, flag: "replication-serve-while-syncing",
			usage: "answer clients before every replication link has caught up once (true or false)",
			parse: func(o *Options, s string) (string, bool) {
				b, err := strconv.ParseBool(s)
				o.ReplServeWhileSyncing = b
				return "must be true or false", err == nil
			}},
		{key: "replication.sync_timeout", def: "30s", flag: "replication-sync-timeout",
			usage: "with serve_while_syncing false, open the client port after this `duration` at most",
			parse: func(o *Options, s string) (string, bool) {
				d, err := time.ParseDuration(s)
				o.ReplSyncTimeout = d
				return "must be a duration > 0 (30s, 2m)", err == nil && d > 0
			}},
		{key: "replication.max_clock_skew", def: "500ms", flag: "replication-max-clock-skew",
			usage: "refuse replication links to a peer whose wall clock is off from ours by more than this `duration` (0: no check)",
			parse: func(o *Options, s string) (string, bool) {
				d, err := time.ParseDuration(s)
				o.ReplMaxClockSkew = d
				return "must be a duration >= 0 (500ms, 1s; 0 turns the check off)", err == nil && d >= 0
			}},
		{key: "log_format", def: "text", flag: "log-format",
			usage: "log `format` on stderr: text or json",
			parse: func(o *Options, s string) (string, bool) {
				o.LogFormat = s
				return "must be one of text, json", s == "text" || s == "json"
			}},
		{key: "shutdown_timeout", def: "10s", flag: "shutdown-timeout",
			usage: "on SIGTERM/SIGINT, wait at most this `duration` for in-flight requests",
			parse: func(o *Options, s string) (string, bool) {
				d, ok := parseDuration(s)
				o.ShutdownTimeout = d
				return "must be a duration > 0 (10s, 1m) or whole seconds", ok && d > 0
			}},
	}
}

// addServeFlags defines the serve flags on fs. Both the root command and
// `tcache serve` carry them, so `tcache -p 11311` and `tcache serve -p 11311`
// are the same.
func addServeFlags(fs *pflag.FlagSet) {
	// memcached's long names (and snake_case spellings of ours) are accepted
	// as aliases of the canonical flag.
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		name = strings.ReplaceAll(name, "_", "-")
		switch name {
		case "memory-limit":
			name = "memory"
		case "max-connections":
			name = "conn-limit"
		}
		return pflag.NormalizedName(name)
	})
	for _, s := range settings() {
		switch s.key {
		case "listen":
			fs.StringSliceP(s.flag, s.short, []string{"127.0.0.1"}, s.usage)
		case "replication.peers":
			fs.StringSliceP(s.flag, s.short, nil, s.usage)
		case "verbosity":
			fs.CountP(s.flag, s.short, s.usage)
		default:
			// Every other flag is a string, parsed like the same key from the
			// environment or the file: one parser, one error message.
			fs.StringP(s.flag, s.short, fmt.Sprint(s.def), s.usage)
		}
		if s.hidden {
			_ = fs.MarkHidden(s.flag)
		}
	}
	// repcached's -X: the replication port, on replication.listen's host.
	fs.IntP("replication-port", "X", 0, "replication `port` (repcached -X): sets the port of replication.listen")
	fs.String("config", "", "YAML config `file` (default: none; env TCACHE_CONFIG)")
	fs.BoolP("daemon", "d", false, "not supported: run tcache in the foreground under a supervisor (configs/tcache.service)")
}

// loadOptions fills Options from fs (already parsed), the environment and
// the config file, with the precedence documented at the top of this file.
// A configuration mistake returns an error whose every line starts with
// "config: " and names the key.
func loadOptions(fs *pflag.FlagSet) (Options, error) {
	if f := fs.Lookup("daemon"); f != nil && f.Changed {
		return Options{}, errors.New("config: -d (daemonize) is not supported: run tcache in the foreground " +
			"under systemd (configs/tcache.service) or another supervisor")
	}

	v := viper.New()
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	table := settings()
	for _, s := range table {
		v.SetDefault(s.key, s.def)
		if s.flag != "" {
			if err := v.BindPFlag(s.key, fs.Lookup(s.flag)); err != nil {
				return Options{}, fmt.Errorf("config: binding flag --%s: %w", s.flag, err)
			}
		}
	}

	path := configPath(fs)
	var file *viper.Viper
	if path != "" {
		var err error
		if file, err = readConfigFile(path, table); err != nil {
			return Options{}, err
		}
		if err := v.MergeConfigMap(file.AllSettings()); err != nil {
			return Options{}, fmt.Errorf("config: %s: %w", path, err)
		}
	}

	var o Options
	var errs []error
	for _, s := range table {
		raw := v.Get(s.key)
		text, ok := valueText(raw)
		if ok {
			var accepts string
			if accepts, ok = s.parse(&o, strings.TrimSpace(text)); !ok {
				errs = append(errs, fmt.Errorf("config: %s: %s, got %q%s", s.key, accepts, text, source(s, fs, file, path)))
			}
		} else {
			errs = append(errs, fmt.Errorf("config: %s: must be a single value, got %v%s", s.key, raw, source(s, fs, file, path)))
		}
	}
	byKey := func(key string) setting {
		return table[slices.IndexFunc(table, func(s setting) bool { return s.key == key })]
	}
	if f := fs.Lookup("replication-port"); f != nil && f.Changed {
		port, ok := parseInt(f.Value.String(), 1, 65535)
		if !ok {
			errs = append(errs, fmt.Errorf("config: replication.listen: -X/--replication-port must be an integer 1..65535, got %q", f.Value.String()))
		}
		host := "127.0.0.1"
		if h, _, err := net.SplitHostPort(o.ReplListen); err == nil {
			host = h
		}
		o.ReplListen = net.JoinHostPort(host, strconv.FormatInt(port, 10))
	}
	if len(o.ReplPeers) > 0 && o.ReplListen == "" {
		o.ReplListen = defaultReplListen
	}
	if len(errs) == 0 {
		errs = append(errs, o.validateReplication(func(key string) string { return source(byKey(key), fs, file, path) })...)
	}
	if len(errs) == 0 {
		b := o.memoryBudget()
		switch {
		case b.ramTier < minRAMTier:
			s := byKey("memory")
			errs = append(errs, fmt.Errorf("config: memory: %d megabytes is too small for mode %s: the disk tier's block cache (%s), "+
				"two memtables (%s each) and the disk index (%s) leave %s for the RAM tier, below its minimum of %s; use memory ≥ %d or mode memory%s",
				o.MemoryMB, o.Mode, formatSize(b.blockCache), formatSize(b.memTable), formatSize(b.index), formatSize(max(b.ramTier, 0)),
				formatSize(minRAMTier), minDiskMemoryMB, source(s, fs, file, path)))
		case int64(o.MaxItemSize) > b.ramTier/2:
			// memcached: "Cannot set item size limit higher than 1/2 of memory max."
			s := byKey("max_item_size")
			what := fmt.Sprintf("memory %d", o.MemoryMB)
			if o.Mode != modeMemory {
				what = fmt.Sprintf("a RAM tier of %s: memory %d less the disk tier's block cache, memtables and index", formatSize(b.ramTier), o.MemoryMB)
			}
			errs = append(errs, fmt.Errorf("config: max_item_size: must be at most half of the RAM tier (%s with %s), got %q%s",
				formatSize(b.ramTier/2), what, formatSize(int64(o.MaxItemSize)), source(s, fs, file, path)))
		}
	}
	return o, errors.Join(errs...)
}

// validateReplication checks the replication keys against each other and
// the rest; src names where a key's value came from.
func (o Options) validateReplication(src func(key string) string) []error {
	if !o.replicated() {
		if o.ReplSecret != "" || o.ReplTLSCert != "" || o.ReplTLSKey != "" || o.ReplTLSCA != "" {
			return []error{errors.New("config: replication: secret or tls is set but replication is off: set replication.peers (-x) or replication.listen (-X)")}
		}
		return nil
	}
	var errs []error
	if o.Mode == modeMemory {
		errs = append(errs, fmt.Errorf("config: replication: needs a disk tier, but mode is memory%s: "+
			"replication ships the write-ahead log that only mode cache or persistent keeps; use one of them or turn replication off",
			src("mode")))
	}
	if slices.Contains(o.ReplPeers, o.ReplListen) {
		errs = append(errs, fmt.Errorf("config: replication.peers: lists this node's own replication.listen %s%s", o.ReplListen, src("replication.peers")))
	}
	tlsSet := o.ReplTLSCert != "" || o.ReplTLSKey != "" || o.ReplTLSCA != ""
	switch {
	case tlsSet && (o.ReplTLSCert == "" || o.ReplTLSKey == ""):
		errs = append(errs, errors.New("config: replication.tls: cert and key must both be set (every node serves its log and pulls its peers')"))
	case tlsSet:
		if _, err := tls.LoadX509KeyPair(o.ReplTLSCert, o.ReplTLSKey); err != nil {
			errs = append(errs, fmt.Errorf("config: replication.tls.cert/key: %w%s", err, src("replication.tls.cert")))
		}
		if o.ReplTLSCA != "" {
			if _, err := loadCAPool(o.ReplTLSCA); err != nil {
				errs = append(errs, fmt.Errorf("config: replication.tls.ca: %w%s", err, src("replication.tls.ca")))
			}
		}
	}
	return errs
}

// loadCAPool reads a PEM file of one or more CA certificates.
func loadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// parsePeers reads replication.peers: host[:port] entries, comma-separated
// (repcached's -x host means port 11212), without duplicates.
func parsePeers(o *Options, s string) (string, bool) {
	const accepts = "must be one or more peers, each host or host:port ([::1]:11212 for IPv6), listed once"
	o.ReplPeers = nil
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(part); err != nil {
			part = net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(part, "["), "]"), strconv.Itoa(defaultReplPort))
		}
		if !validHostPort(part, false) || slices.Contains(o.ReplPeers, part) {
			return accepts, false
		}
		o.ReplPeers = append(o.ReplPeers, part)
	}
	return accepts, true
}

// validHostPort checks a host:port; emptyHost allows ":port" (every
// interface).
func validHostPort(a string, emptyHost bool) bool {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	if _, ok := parseInt(port, 1, 65535); !ok {
		return false
	}
	if host == "" {
		return emptyHost
	}
	return net.ParseIP(host) != nil || !strings.ContainsAny(host, " /[]:")
}

// Bounds of the memory split with a disk tier (docs/disk-tier.md).
const (
	minDiskLimit    = 64 << 20 // the disk limit must be well above 2 memtables
	minRAMTier      = 2 << 20  // smallest RAM tier accepted with a disk tier
	minDiskPart     = 1 << 20  // smallest block cache and memtable
	minDiskMemoryMB = 8        // 1 MiB block cache + 2 × 1 MiB memtables + 3 MiB index + 2 MiB RAM tier
)

// memoryBudget is how memory (-m) is split. In memory mode the RAM tier has
// it all. With a disk tier, the index of what is on disk takes 3/8,
// Pebble's block cache 1/8 and each of its two memtables 1/32 (each at
// least 1 MiB), and the RAM tier the rest (7/16), so that together they
// stay within memory.
//
// The index is what a disk read needs most. In cache mode it is the
// keydir (docs/keydir.md): the frame of every key on disk, 24 bytes a key
// in tables kept at most 7/8 full; its share bounds the keys on disk as
// disk_limit bounds their bytes (at most share/54 keys: 466 000 at -m 64,
// enough for the overflow workload's 420 000). memcached's extstore makes
// the same trade: the headers of the items on flash stay in its RAM.
// With records in Pebble (persistent mode) it is the
// table of location hints, about 21 bytes a key, lossy: a read with a
// hint skips Pebble's key index.
type memoryBudget struct {
	ramTier, blockCache, memTable, index int64
}

func (o Options) memoryBudget() memoryBudget {
	total := o.MemoryMB << 20
	if o.Mode == modeMemory {
		return memoryBudget{ramTier: total}
	}
	b := memoryBudget{
		blockCache: max(total/8, minDiskPart),
		memTable:   max(total/32, minDiskPart),
		index:      max(total/8*3, minDiskPart),
	}
	b.ramTier = total - b.blockCache - 2*b.memTable - b.index
	return b
}

// configPath is --config, else TCACHE_CONFIG, else "" (no file).
func configPath(fs *pflag.FlagSet) string {
	if f := fs.Lookup("config"); f != nil && f.Changed {
		return f.Value.String()
	}
	return os.Getenv(envPrefix + "_CONFIG")
}

// readConfigFile reads the YAML file at path (whatever its extension) and
// refuses keys tcache does not know: a typo in an ops config must not
// silently fall back to a default.
func readConfigFile(path string, table []setting) (*viper.Viper, error) {
	f := viper.New()
	f.SetConfigFile(path)
	f.SetConfigType("yaml")
	if err := f.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	known := make([]string, len(table))
	for i, s := range table {
		known[i] = s.key
	}
	var errs []error
	for _, k := range f.AllKeys() {
		if !slices.Contains(known, k) {
			errs = append(errs, fmt.Errorf("config: unknown key %q in %s (known keys: %s)", k, path, strings.Join(known, ", ")))
		}
	}
	return f, errors.Join(errs...)
}

// source tells where the value of s came from, for error messages.
func source(s setting, fs *pflag.FlagSet, file *viper.Viper, path string) string {
	if s.flag != "" {
		if f := fs.Lookup(s.flag); f != nil && f.Changed {
			if s.short != "" {
				return fmt.Sprintf(" (from flag -%s/--%s)", s.short, s.flag)
			}
			return fmt.Sprintf(" (from flag --%s)", s.flag)
		}
	}
	env := envPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(s.key))
	if val, ok := os.LookupEnv(env); ok && val != "" {
		return " (from " + env + ")"
	}
	if file != nil && file.IsSet(s.key) {
		return " (from " + path + ")"
	}
	return ""
}

// valueText renders a raw value from any source as the text its parser
// reads. Lists (YAML sequences, repeated -l) are joined with commas; only
// listen accepts more than one element.
func valueText(raw any) (string, bool) {
	switch x := raw.(type) {
	case nil:
		return "", true
	case string:
		return x, true
	case []string:
		return strings.Join(x, ","), true
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			s, ok := valueText(e)
			if !ok {
				return "", false
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), true
	case map[string]any:
		return "", false
	default:
		return fmt.Sprint(x), true
	}
}

func parseInt(s string, lo, hi int64) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= lo && n <= hi
}

// parseItemSize reads memcached's -I forms: plain bytes, or an integer with
// a k/K (KiB) or m/M (MiB) suffix, within memcached's 1k..1024m bounds.
func parseItemSize(s string) (int64, bool) {
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult, s = 1<<10, s[:len(s)-1]
		case 'm', 'M':
			mult, s = 1<<20, s[:len(s)-1]
		}
	}
	n, ok := parseInt(s, 0, maxItemSize)
	n *= mult
	return n, ok && n >= minItemSize && n <= maxItemSize
}

// parseSize reads a size: plain bytes, or a number with a k, m, g or t
// suffix (powers of 1024, either case, an optional trailing "b": 10g, 512MB).
func parseSize(s string) (int64, bool) {
	t := strings.TrimSuffix(strings.TrimSuffix(s, "b"), "B")
	shift := 0
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		case 't', 'T':
			shift = 40
		}
		if shift > 0 {
			t = t[:len(t)-1]
		} else if t != s {
			return 0, false // "12b" alone is not a size
		}
	}
	n, ok := parseInt(t, 0, math.MaxInt64>>shift)
	return n << shift, ok
}

// formatSize writes n bytes the way -I accepts them, in the largest exact
// unit.
func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "g"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "m"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}

// parseDuration reads a Go duration ("30s", "1m30s") or whole seconds
// ("30"), memcached's unit for idle_timeout. Negative values are refused.
func parseDuration(s string) (time.Duration, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Duration(n) * time.Second, n >= 0 && n <= math.MaxInt64/int64(time.Second)
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d >= 0
}

// parseListen splits the listen list (comma-separated within each entry,
// like memcached's -l a,b) and checks each address.
func parseListen(o *Options, s string) (string, bool) {
	const accepts = "must be one or more addresses: host or IP, optionally with :port ([::1]:11211 for IPv6)"
	o.Listen = nil
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !validListenAddr(part) {
			return accepts, false
		}
		o.Listen = append(o.Listen, part)
	}
	return accepts, len(o.Listen) > 0
}

func validListenAddr(a string) bool {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		// No port: a bare host, IPv4, IPv6 (with or without brackets).
		host, port = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]"), ""
	} else if _, ok := parseInt(port, 1, 65535); !ok {
		return false
	}
	if net.ParseIP(host) != nil {
		return true
	}
	if host == "" || strings.ContainsAny(host, " /[]:") {
		return false
	}
	return true
}

// listenAddrs resolves Listen entries to "host:port" dial strings, using
// Port for entries without their own, without duplicates.
func (o Options) listenAddrs() []string {
	addrs := make([]string, 0, len(o.Listen))
	for _, a := range o.Listen {
		if _, _, err := net.SplitHostPort(a); err != nil {
			host := strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
			a = net.JoinHostPort(host, strconv.Itoa(o.Port))
		}
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}
