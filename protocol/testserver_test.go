package protocol

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcache/tcache/engine"
	"github.com/tcache/tcache/internal/clock"
	"github.com/tcache/tcache/lsm"
)

// newTestEngine returns a real engine (64 MiB, crawler off) on clk, closed
// when the test ends.
func newTestEngine(t testing.TB, clk clock.Clock) *engine.Engine {
	return newTestEngineDisk(t, clk, false)
}

// newTestEngineDisk is newTestEngine, with a disk tier in a temporary
// directory when disk is set (cache mode, durability none for speed, the
// same clock), closed after the engine.
func newTestEngineDisk(t testing.TB, clk clock.Clock, disk bool) *engine.Engine {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := engine.Options{
		MemoryLimit:     64 << 20,
		CrawlerInterval: -1,
		Clock:           clk,
		Logger:          logger,
	}
	if disk {
		db, err := lsm.Open(lsm.Options{
			Dir:        filepath.Join(t.TempDir(), "pebble"),
			Durability: lsm.DurabilityNone,
			DiskLimit:  1 << 30,
			Clock:      clk,
			Logger:     logger,
		})
		if err != nil {
			t.Fatalf("lsm.Open: %v", err)
		}
		t.Cleanup(func() {
			if err := db.Close(); err != nil {
				t.Errorf("lsm Close: %v", err)
			}
		})
		opts.Disk = db
	}
	eng, err := engine.New(opts)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

// startServer starts a tcache server over a real engine on a loopback port
// and returns it with its address; it is shut down when the test ends.
func startServer(t testing.TB, clk clock.Clock, opts Options) (*Server, string) {
	return startServerDisk(t, clk, opts, false)
}

// startServerDisk is startServer, over an engine with a disk tier when disk
// is set (newTestEngineDisk).
func startServerDisk(t testing.TB, clk clock.Clock, opts Options, disk bool) (*Server, string) {
	t.Helper()
	eng := newTestEngineDisk(t, clk, disk)
	opts.Clock = clk
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := NewServer(opts, eng)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv, ln.Addr().String()
}

// startTcache starts an in-process tcache server (real engine, the given fake
// clock) on a loopback port and returns its address.
func startTcache(t testing.TB, clk *clock.Fake) string {
	_, addr := startServer(t, clk, Options{})
	return addr
}

// startTcacheDisk is startTcache with the disk tier on (newTestEngineDisk).
func startTcacheDisk(t testing.TB, clk *clock.Fake) string {
	_, addr := startServerDisk(t, clk, Options{}, true)
	return addr
}
