package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// WriteText writes the report as memtier_benchmark lays it out: per run a
// table of Sets, Gets and Totals (ops/s, hits/s, misses/s, average and
// percentile latencies in milliseconds, KB/s), the bench process's CPU cost,
// and, unless hideHistogram, the latency distribution.
func WriteText(w io.Writer, rep *Report, hideHistogram bool) error {
	var b strings.Builder
	for _, r := range rep.Runs {
		if len(rep.Runs) > 1 {
			fmt.Fprintf(&b, "\nRUN #%d RESULTS\n", r.Run)
		}
		writeTable(&b, &r)
		if !hideHistogram {
			writeDistribution(&b, &r)
		}
	}
	if len(rep.Runs) > 1 {
		best, worst := 0, 0
		for i, r := range rep.Runs {
			if r.Totals.OpsPerSec > rep.Runs[best].Totals.OpsPerSec {
				best = i
			}
			if r.Totals.OpsPerSec < rep.Runs[worst].Totals.OpsPerSec {
				worst = i
			}
		}
		fmt.Fprintf(&b, "\nBEST RUN: #%d (%.2f ops/s), WORST RUN: #%d (%.2f ops/s)\n",
			rep.Runs[best].Run, rep.Runs[best].Totals.OpsPerSec, rep.Runs[worst].Run, rep.Runs[worst].Totals.OpsPerSec)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeTable(b *strings.Builder, r *RunResult) {
	cols := []string{"Type", "Ops/sec", "Hits/sec", "Misses/sec", "Avg. Latency"}
	for _, p := range r.Totals.Percentiles {
		cols = append(cols, "p"+formatP(p.P)+" Latency")
	}
	cols = append(cols, "KB/sec")
	width := 0
	for i, c := range cols {
		w := max(len(c), 12)
		if i == 0 {
			w = 6
		}
		width += w + 1
	}
	line := strings.Repeat("=", width)
	fmt.Fprintf(b, "%s\n", line)
	for i, c := range cols {
		if i == 0 {
			fmt.Fprintf(b, "%-6s", c)
		} else {
			fmt.Fprintf(b, " %*s", max(len(c), 12), c)
		}
	}
	fmt.Fprintf(b, "\n%s\n", strings.Repeat("-", width))
	row := func(name string, op *OpResult, hits bool) {
		fmt.Fprintf(b, "%-6s %*.2f", name, max(len(cols[1]), 12), op.OpsPerSec)
		if hits {
			fmt.Fprintf(b, " %*.2f %*.2f", 12, op.HitsPerSec, 12, op.MissesPerSec)
		} else {
			fmt.Fprintf(b, " %*s %*s", 12, "---", 12, "---")
		}
		fmt.Fprintf(b, " %*.5f", 12, op.AvgLatencyMs)
		for i, p := range op.Percentiles {
			fmt.Fprintf(b, " %*.5f", max(len(cols[5+i]), 12), p.Ms)
		}
		fmt.Fprintf(b, " %*.2f\n", 12, op.KBPerSec)
	}
	row("Sets", &r.Sets, false)
	row("Gets", &r.Gets, true)
	row("Totals", &r.Totals, true)
	fmt.Fprintf(b, "\n%d connections, %d requests in %.3f s; %d server error replies\n",
		r.Connections, r.Totals.Count, r.Seconds, r.ServerErrors)
	fmt.Fprintf(b, "bench CPU (getrusage self): %.3f s, %.3f s per million requests\n",
		r.CPUSeconds, r.CPUSecondsPerMillion)
}

// writeDistribution prints the cumulative latency distribution of sets and
// gets (HDR percentile iteration: 50%, 75%, 87.5%, …).
func writeDistribution(b *strings.Builder, r *RunResult) {
	fmt.Fprintf(b, "\nRequest Latency Distribution\n%-6s %12s %12s\n", "Type", "<= msec", "Percent")
	for _, t := range []struct {
		name string
		op   *OpResult
	}{{"SET", &r.Sets}, {"GET", &r.Gets}} {
		if t.op.Count == 0 {
			continue
		}
		fmt.Fprintln(b, strings.Repeat("-", 32))
		lastQ := -1.0
		for _, br := range t.op.Histogram.CumulativeDistribution() {
			if br.Quantile == lastQ {
				continue
			}
			lastQ = br.Quantile
			fmt.Fprintf(b, "%-6s %12.3f %12.3f\n", t.name, float64(br.ValueAt)/1000, br.Quantile)
			if br.Quantile >= 100 {
				break
			}
		}
	}
}

// formatP formats a percentile as memtier does: 50 → "50.00", 99.9 → "99.90".
func formatP(p float64) string { return strconv.FormatFloat(p, 'f', 2, 64) }

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
