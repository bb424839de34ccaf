package bench

import (
	"context"
	"testing"

	"github.com/tcache/tcache/internal/testserver"
)

// The restart workload against the real binary, at a small size: the
// graceful restart finds every item, and the restart after kill -9 answers
// after re-indexing the overwrites the kill left unindexed.
func TestRestartMeasurement(t *testing.T) {
	o := CompareOptions{TcacheBinary: testserver.Binary(t), TempDir: t.TempDir()}
	o.ensureDefaults()
	const size = 16 << 20
	row := &ComparisonRow{Workload: Workload{Name: "restart", RestartSizes: []int64{size}}}
	if err := measureRestarts(context.Background(), o, row, o.TempDir); err != nil {
		t.Fatal(err)
	}
	if row.Err != "" {
		t.Fatal(row.Err)
	}
	if len(row.Restarts) != 1 {
		t.Fatalf("%d measurements, want 1", len(row.Restarts))
	}
	r := row.Restarts[0]
	t.Logf("%+v", r)
	if r.Items != size/4096 || r.FirstReq <= 0 || r.AfterKill <= 0 || r.Reindexed == 0 || r.DiskBytes == 0 {
		t.Fatalf("restart of %d MiB: %+v; want %d items, both times, frames re-indexed and the disk usage", size>>20, r, size/4096)
	}
	if tab := (&Comparison{Rows: []ComparisonRow{*row}}).RestartTable(); tab == "" {
		t.Fatal("no restart table")
	}
}
