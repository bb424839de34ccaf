package bench

import (
	"strings"
	"testing"
)

// The summary table gives each ratio as the median of the per-round
// ratios, and the ops/s ratios' range beside it.
func TestMarkdownTableRatios(t *testing.T) {
	run := func(ops, cpu float64) RunResult {
		return RunResult{Totals: OpResult{OpsPerSec: ops}, ServerCPUSecondsPerMillion: cpu}
	}
	c := Comparison{Rows: []ComparisonRow{{
		Workload:  Workload{Name: "w"},
		Memcached: []RunResult{run(100, 10), run(200, 10), run(100, 10)},
		Tcache:    []RunResult{run(90, 11), run(100, 9), run(120, 10)},
	}, {
		Workload: Workload{Name: "broken"},
		Err:      "prefill failed",
	}}}
	table := c.MarkdownTable()
	var row, broken []string
	for line := range strings.Lines(table) {
		cells := strings.Split(strings.TrimSpace(line), " | ")
		switch {
		case strings.HasPrefix(line, "| w |"):
			row = cells
		case strings.HasPrefix(line, "| broken |"):
			broken = cells
		}
	}
	header := strings.Split(strings.TrimSpace(strings.SplitN(table, "\n", 2)[0]), " | ")
	if len(row) != len(header) || len(broken) != len(header) {
		t.Fatalf("rows of %d and %d cells under a header of %d:\n%s", len(row), len(broken), len(header), table)
	}
	want := map[string]string{
		"memcached ops/s":     "100",
		"tcache ops/s":        "100",
		"**ops/s ratio**":     "**0.90**", // rounds 0.90, 0.50, 1.20
		"ops/s ratio, rounds": "0.50–1.20",
		"CPU/req ratio |":     "1.00 |", // 1.10, 0.90, 1.00
	}
	for i, h := range header {
		if w, ok := want[h]; ok {
			if row[i] != w {
				t.Errorf("%s: %q, want %q", h, row[i], w)
			}
			delete(want, h)
		}
	}
	if len(want) != 0 {
		t.Errorf("columns missing from the header: %v", want)
	}
}
