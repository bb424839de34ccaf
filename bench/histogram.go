package bench

import (
	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to histMaxMicros, with
// three significant digits (a value is exact to 0.1%). Slower replies are
// recorded as histMaxMicros.
const (
	histMinMicros = 1
	histMaxMicros = 60_000_000 // one minute
	histSigFigs   = 3
)

// hdrHistogram is the library's histogram.
type hdrHistogram = hdrhistogram.Histogram

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs)
}

// recordMicros records a latency given in nanoseconds, rounded to the
// nearest microsecond and clamped to the histogram's range. It does not
// allocate.
func recordMicros(h *hdrhistogram.Histogram, nanos int64) {
	us := (nanos + 500) / 1000
	if us < histMinMicros {
		us = histMinMicros
	} else if us > histMaxMicros {
		us = histMaxMicros
	}
	_ = h.RecordValue(us) // cannot fail: us is within the range
}

// mergeHistograms returns a new histogram holding every value of hs (nil
// entries are skipped).
func mergeHistograms(hs ...*hdrhistogram.Histogram) *hdrhistogram.Histogram {
	out := newHistogram()
	for _, h := range hs {
		if h != nil {
			out.Merge(h) // same range: nothing is dropped
		}
	}
	return out
}
