package bench

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcache/tcache/internal/testserver"
)

// The -vs-foundation workloads run only with a foundation binary: left out
// of the default list without one, refused by name, and kept with one.
func TestFoundationWorkloadsNeedTheBinary(t *testing.T) {
	var foundation []string
	for _, w := range Workloads() {
		if w.Foundation {
			foundation = append(foundation, w.Name)
		}
	}
	if len(foundation) != 4 {
		t.Fatalf("foundation workloads %v, want the four hot ones", foundation)
	}
	o := CompareOptions{TcacheBinary: "/bin/true"}
	o.ensureDefaults()
	for _, n := range foundation {
		if slices.Contains(o.Workloads, n) {
			t.Errorf("default workloads hold %s without a foundation binary", n)
		}
	}
	o.Workloads = []string{foundation[0]}
	if err := o.validate(); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "--foundation") {
		t.Errorf("validate(%s without --foundation) = %v, want ErrInvalidOptions naming --foundation", foundation[0], err)
	}
	o = CompareOptions{TcacheBinary: "/bin/true", FoundationBinary: "/bin/true"}
	o.ensureDefaults()
	for _, n := range foundation {
		if !slices.Contains(o.Workloads, n) {
			t.Errorf("default workloads lack %s with a foundation binary", n)
		}
	}
	if err := o.validate(); err != nil {
		t.Errorf("validate with a foundation binary: %v", err)
	}
}

// A -vs-foundation row runs end to end against real processes: the
// foundation binary is started with the arguments it knows (memcached's
// and --data-dir), both servers are warmed and prefilled, and each round
// has figures for both. This tree's binary stands in for the foundation's.
func TestFoundationBaselineRuns(t *testing.T) {
	bin := testserver.Binary(t)
	o := CompareOptions{TcacheBinary: bin, FoundationBinary: bin, TempDir: t.TempDir(),
		MemoryMB: 8, Rounds: 1, Duration: 500 * time.Millisecond}
	o.ensureDefaults()
	w := Workload{Name: "tiny-vs-foundation", Prefill: true, Warm: true, Dedicated: true, Foundation: true,
		Options: Options{Protocol: ProtocolText, Threads: 1, Clients: 4, SetRatio: 1, GetRatio: 10, Pipeline: 1,
			DataSizeMin: 100, DataSizeMax: 100, SetPattern: Random, GetPattern: Random,
			KeyPrefix: "f:", KeyMinimum: 0, KeyMaximum: 999, Seed: 1, DistinctClientSeed: true}}
	row := &ComparisonRow{Workload: w}
	if err := runDedicated(context.Background(), o, row, o.TempDir); err != nil {
		t.Fatal(err)
	}
	if row.Err != "" {
		t.Fatalf("row failed: %s", row.Err)
	}
	if len(row.Memcached) != 1 || len(row.Tcache) != 1 {
		t.Fatalf("rounds: %d foundation, %d tcache; want 1 each", len(row.Memcached), len(row.Tcache))
	}
	for name, r := range map[string]RunResult{"foundation": row.Memcached[0], "tcache": row.Tcache[0]} {
		if r.Totals.OpsPerSec <= 0 || r.Gets.Hits == 0 || r.Gets.Misses != 0 {
			t.Errorf("%s: %+v; want gets that all hit (the prefill stored every key)", name, r)
		}
	}
}
