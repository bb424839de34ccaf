package bench

import (
	"math/rand/v2"
	"testing"
)

func TestHistogramMergeEqualsOneHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	all := newHistogram()
	parts := make([]*hdrHistogram, 8)
	for i := range parts {
		parts[i] = newHistogram()
	}
	for i := range 100_000 {
		// Latencies from 1 µs to ~2 s, heavy tailed; in nanoseconds.
		ns := int64(1000 * (1 + rng.ExpFloat64()*float64(1+i%7)*50))
		if i%1000 == 0 {
			ns = int64(rng.IntN(2e9))
		}
		recordMicros(all, ns)
		recordMicros(parts[i%len(parts)], ns)
	}
	merged := mergeHistograms(append(parts, nil)...)
	if merged.TotalCount() != 100_000 {
		t.Fatalf("merged count %d, want 100000", merged.TotalCount())
	}
	if !merged.Equals(all) {
		t.Error("merged histogram differs from the histogram of all values")
	}
	for _, p := range []float64{50, 90, 99, 99.9, 100} {
		if a, b := merged.ValueAtQuantile(p), all.ValueAtQuantile(p); a != b {
			t.Errorf("p%v: merged %d µs, all %d µs", p, a, b)
		}
	}
}

func TestRecordMicrosClampsAndRounds(t *testing.T) {
	h := newHistogram()
	recordMicros(h, 0)       // below 1 µs → 1 µs
	recordMicros(h, 1499)    // 1.499 µs → 1 µs
	recordMicros(h, 1500)    // → 2 µs
	recordMicros(h, 3_600e9) // an hour → the maximum
	recordMicros(h, -5)      // a clock step backwards → 1 µs
	if got := h.TotalCount(); got != 5 {
		t.Fatalf("count %d, want 5", got)
	}
	if h.Min() != 1 || !h.ValuesAreEquivalent(h.Max(), histMaxMicros) {
		t.Errorf("min %d max %d, want 1 and %d", h.Min(), h.Max(), histMaxMicros)
	}
	if h.ValueAtQuantile(60) != 1 || h.ValueAtQuantile(70) != 2 {
		t.Errorf("p60 %d p70 %d, want 1 and 2", h.ValueAtQuantile(60), h.ValueAtQuantile(70))
	}
}
