package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
	"github.com/tcache/tcache/protocol"
	"github.com/tcache/tcache/repl"
)

// serveDrainWait bounds how long serve waits for the Serve goroutines to
// return once Shutdown has closed their listeners.
const serveDrainWait = 2 * time.Second

// serve runs the server until SIGTERM or SIGINT (or ctx is cancelled), then
// drains it: stop accepting, let in-flight requests finish within
// o.ShutdownTimeout, close the engine, then the disk tier (which flushes
// its memtables), and release the data_dir lock.
//
// A second signal during the drain is not caught: it kills the process the
// default way, for an operator who does not want to wait.
func serve(ctx context.Context, o Options, stderr io.Writer) error {
	logger := newLogger(o, stderr)

	// GOMAXPROCS is memcached's -t: Go runs connection goroutines on at most
	// this many OS threads at once. Setting it also turns off Go's automatic
	// adjustment to the container CPU limit, which is what an explicit -t
	// asks for.
	runtime.GOMAXPROCS(o.Threads)

	// The last word of a shutdown is logged after every deferred close
	// below (replication, engine, disk, lock) has returned, so that
	// "tcache stopped" means stopped.
	var shutdownStart time.Time
	defer func() {
		if !shutdownStart.IsZero() {
			logger.Info("tcache stopped", "shutdown", time.Since(shutdownStart).Round(time.Millisecond).String())
		}
	}()

	lock, err := lockDataDir(o.DataDir)
	if err != nil {
		return fail(logger, "cannot lock data_dir", err)
	}
	defer func() {
		if err := lock.release(); err != nil {
			logger.Error("releasing data_dir lock", "err", err)
		}
	}()

	budget := o.memoryBudget()
	var disk *lsm.DB
	if o.Mode != modeMemory {
		if disk, err = openDisk(o, budget, logger); err != nil {
			return fail(logger, "cannot open the disk tier", err)
		}
		defer func() {
			if err := disk.Close(); err != nil {
				logger.Error("closing the disk tier", "err", err)
			}
		}()
	}

	eng, err := engine.New(engine.Options{
		MemoryLimit: budget.ramTier,
		MaxItemSize: o.MaxItemSize,
		Clock:       clock.Real{},
		Logger:      logger.With("component", "engine"),
		Disk:        disk,
		// Bounds how far a peer's versions move the HLC (docs/replication.md).
		MaxClockSkew: replClockSkew(o),
	})
	if err != nil {
		return fail(logger, "cannot start engine", err)
	}
	defer func() {
		if err := eng.Close(); err != nil {
			logger.Error("closing engine", "err", err)
		}
	}()

	// Replication serves and pulls before the client port opens, so that a
	// node told not to serve while syncing can wait for its links. Its
	// deferred Close runs after the client drain below and before the
	// engine and the disk close (the links apply through both).
	var node *repl.Node
	var extraStats func(protocol.StatWriter)
	if o.replicated() {
		if node, err = startReplication(o, eng, disk, logger); err != nil {
			return fail(logger, "cannot start replication", err)
		}
		defer func() {
			if err := node.Close(); err != nil {
				logger.Error("closing replication", "err", err)
			}
		}()
		extraStats = replicationStats(node, eng, disk)
	}

	// Catch the signals before serving (and before waiting for
	// replication), so that none arriving in between kills the process
	// without a drain.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)

	if node != nil && !o.ReplServeWhileSyncing {
		if stop := waitCaughtUp(ctx, o, node, sigc, logger); stop {
			return nil
		}
	}

	addrs := o.listenAddrs()
	srv, err := protocol.NewServer(protocol.Options{
		MaxConns:    o.MaxConnections,
		IdleTimeout: o.IdleTimeout,
		Protocol:    o.Protocol,
		Threads:     o.Threads,
		Verbosity:   o.Verbosity,
		TCPPort:     o.Port,
		ListenAddrs: addrs,
		Version:     version,
		Logger:      logger.With("component", "protocol"),
		Clock:       clock.Real{},
		Storage:     protocol.StorageSettings{Mode: o.Mode, Durability: o.Durability, DiskLimit: o.DiskLimit},
		ExtraStats:  extraStats,
	}, eng)
	if err != nil {
		return fail(logger, "cannot start server", err)
	}

	listeners := make([]net.Listener, 0, len(addrs))
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fail(logger, "cannot listen", err)
		}
		listeners = append(listeners, ln)
	}

	served := make(chan error, len(listeners))
	for _, ln := range listeners {
		logger.Info("listening", "addr", ln.Addr().String())
		go func() { served <- srv.Serve(ln) }()
	}
	logger.Info("tcache started",
		"version", version, "pid", os.Getpid(), "go", runtime.Version(),
		"memory_mb", o.MemoryMB, "max_item_size", o.MaxItemSize,
		"max_connections", o.MaxConnections, "threads", o.Threads,
		"idle_timeout", o.IdleTimeout.String(), "data_dir", o.DataDir,
		"mode", o.Mode, "ram_tier", formatSize(budget.ramTier))

	var runErr error
	pending := len(listeners)
	select {
	case sig := <-sigc:
		logger.Info("shutting down", "signal", sig.String(), "timeout", o.ShutdownTimeout.String())
	case <-ctx.Done():
		logger.Info("shutting down", "reason", context.Cause(ctx).Error(), "timeout", o.ShutdownTimeout.String())
	case err := <-served:
		pending--
		runErr = fmt.Errorf("serving: %w", err)
		logger.Error("listener failed, shutting down", "err", err)
	}
	signal.Stop(sigc) // from here on a second signal kills the process

	start := time.Now()
	shutdownStart = start
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	err = srv.Shutdown(sctx)
	cancel()
	if err != nil {
		logger.Error("drain incomplete: connections were still busy at shutdown_timeout", "err", err)
		runErr = errors.Join(runErr, fmt.Errorf("shutdown: %w", err))
	}
	wait := time.NewTimer(serveDrainWait)
	defer wait.Stop()
	for ; pending > 0; pending-- {
		select {
		case err := <-served:
			if err != nil && !errors.Is(err, protocol.ErrServerClosed) {
				logger.Error("serving", "err", err)
			}
		case <-wait.C:
			logger.Error("listeners did not stop after shutdown", "pending", pending)
			pending = 0
		}
	}
	logger.Info("clients drained, closing storage", "drain", time.Since(start).Round(time.Millisecond).String())
	if runErr != nil {
		return &exitError{code: exitRuntime, err: runErr, logged: true}
	}
	return nil
}

// pebbleDirName is the disk tier's directory inside data_dir.
const pebbleDirName = "pebble"

// openDisk opens the disk tier at data_dir/pebble (data_dir is locked) and
// logs what it found. lsm refuses a directory it cannot read or that an
// incompatible format wrote, before writing anything.
func openDisk(o Options, b memoryBudget, logger *slog.Logger) (*lsm.DB, error) {
	dir := filepath.Join(o.DataDir, pebbleDirName)
	opts := lsm.Options{
		Dir:                 dir,
		Mode:                lsm.ModeCache,
		DiskLimit:           o.DiskLimit,
		DurabilityInterval:  o.DurabilityInterval,
		BlockCacheSize:      b.blockCache,
		MemTableSize:        b.memTable,
		IndexMemory:         b.index,
		CompressMin:         o.CompressMin,
		BufferedJournal:     !o.DiskDirectIO,
		LogRetentionBytes:   o.LogRetentionBytes,
		LogRetentionAge:     o.LogRetentionAge,
		MaintenanceInterval: o.DiskMaintenanceInterval,
		Replicated:          o.replicated(),
		Clock:               clock.Real{},
		Logger:              logger,
	}
	if o.Mode == modePersistent {
		opts.Mode = lsm.ModePersistent
	}
	switch o.Durability {
	case "sync":
		opts.Durability = lsm.DurabilitySync
	case "none":
		opts.Durability = lsm.DurabilityNone
	default:
		opts.Durability = lsm.DurabilityInterval
	}
	switch o.Compression {
	case "none":
		opts.CompressMin = -1
	case "zstd":
		opts.Codec = lsm.CodecZstd
	default:
		opts.Codec = lsm.CodecS2
	}
	start := time.Now()
	db, err := lsm.Open(opts)
	if err != nil {
		if errors.Is(err, lsm.ErrIncompatible) {
			return nil, fmt.Errorf("%s: %w (nothing was modified; use the tcache release that wrote it, or another data_dir)", dir, err)
		}
		return nil, fmt.Errorf("%s: %w (nothing was modified)", dir, err)
	}
	st := db.Stats()
	logger.Info("disk tier open",
		"dir", dir, "mode", o.Mode, "durability", o.Durability, "disk_limit", formatSize(o.DiskLimit),
		"items", st.Items, "item_bytes", st.ItemBytes, "recounting", st.Recounting == 1,
		"bytes_used", st.BytesUsed, "log_last_seq", st.LogLast,
		"block_cache", formatSize(b.blockCache), "memtable", formatSize(b.memTable), "index", formatSize(b.index),
		"open_time", time.Since(start).Round(time.Millisecond).String())
	return db, nil
}

// fail logs a fatal start-up error and returns it as a runtime failure.
func fail(logger *slog.Logger, msg string, err error) error {
	logger.Error(msg, "err", err)
	return &exitError{code: exitRuntime, err: fmt.Errorf("%s: %w", msg, err), logged: true}
}

// newLogger builds the stderr logger: text or JSON, level from the -v count.
// 0 and -v log at info (start-up, shutdown, errors; -v also lets the
// protocol layer report client errors, as memcached -v does), -vv at debug,
// -vvv and more below debug (per-command tracing where components offer it).
func newLogger(o Options, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch {
	case o.Verbosity >= 3:
		level = slog.LevelDebug - 4
	case o.Verbosity == 2:
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if o.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
