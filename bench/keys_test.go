package bench

import (
	"math"
	"math/rand/v2"
	"testing"
)

func testRNG() *rand.Rand { return rand.New(rand.NewPCG(7, 11)) }

func keyOptions(min, max uint64) *Options {
	o := Options{KeyMinimum: min, KeyMaximum: max}
	o.EnsureDefaults()
	return &o
}

func TestPatternRandomUniform(t *testing.T) {
	o := keyOptions(100, 199)
	g := newKeyGen(Random, o, testRNG(), 0, 1)
	var hist [100]int
	const n = 200_000
	for range n {
		k := g.Next()
		if k < 100 || k > 199 {
			t.Fatalf("key %d outside 100..199", k)
		}
		hist[k-100]++
	}
	// Each key expects 2000 draws; 5 standard deviations is ±224.
	for i, c := range hist {
		if c < 1776 || c > 2224 {
			t.Errorf("key %d drawn %d times, want about 2000", 100+i, c)
		}
	}
}

func TestPatternSequentialWraps(t *testing.T) {
	o := keyOptions(5, 8)
	g := newKeyGen(Sequential, o, testRNG(), 3, 10) // S ignores the connection index
	want := []uint64{5, 6, 7, 8, 5, 6, 7, 8, 5}
	for i, w := range want {
		if k := g.Next(); k != w {
			t.Fatalf("draw %d = %d, want %d", i, k, w)
		}
	}
}

func TestPatternParallelPartitions(t *testing.T) {
	// 10 connections over keys 0..102: every key belongs to exactly one
	// connection, parts are contiguous and differ in size by at most one,
	// and each connection walks its part in order and wraps.
	o := keyOptions(0, 102)
	const conns = 10
	owner := map[uint64]int{}
	minSize, maxSize := math.MaxInt, 0
	for c := range conns {
		g := newKeyGen(Parallel, o, testRNG(), c, conns)
		first := g.Next()
		size := 1
		prev := first
		for {
			k := g.Next()
			if k == first {
				break
			}
			if k != prev+1 {
				t.Fatalf("connection %d: %d after %d", c, k, prev)
			}
			prev = k
			size++
		}
		for k := first; k <= prev; k++ {
			if o, ok := owner[k]; ok {
				t.Fatalf("key %d in the parts of connections %d and %d", k, o, c)
			}
			owner[k] = c
		}
		minSize, maxSize = min(minSize, size), max(maxSize, size)
	}
	if len(owner) != 103 {
		t.Errorf("parts cover %d keys, want 103", len(owner))
	}
	if maxSize-minSize > 1 {
		t.Errorf("part sizes %d..%d, want a difference of at most 1", minSize, maxSize)
	}
	if owner[0] != 0 || owner[102] != conns-1 {
		t.Errorf("first key owned by %d, last by %d; want 0 and %d", owner[0], owner[102], conns-1)
	}
}

func TestPatternGaussian(t *testing.T) {
	o := keyOptions(0, 10_000)
	o.KeyMedian, o.KeyStddev = 3000, 500
	g := newKeyGen(Gaussian, o, testRNG(), 0, 1)
	const n = 100_000
	var sum, sumSq float64
	within1 := 0
	for range n {
		k := g.Next()
		if k > 10_000 {
			t.Fatalf("key %d outside the range", k)
		}
		x := float64(k)
		sum += x
		sumSq += x * x
		if math.Abs(x-3000) <= 500 {
			within1++
		}
	}
	mean := sum / n
	sd := math.Sqrt(sumSq/n - mean*mean)
	if math.Abs(mean-3000) > 10 {
		t.Errorf("mean %.1f, want 3000 ± 10", mean)
	}
	if math.Abs(sd-500) > 10 {
		t.Errorf("stddev %.1f, want 500 ± 10", sd)
	}
	if f := float64(within1) / n; math.Abs(f-0.6827) > 0.01 {
		t.Errorf("%.4f of keys within one stddev, want 0.683", f)
	}

	// A median at the edge: out-of-range draws are redrawn, not clamped,
	// so the edge key is not over-represented and the range is respected.
	o = keyOptions(0, 1000)
	o.KeyMedian, o.KeyStddev = 0, 100
	g = newKeyGen(Gaussian, o, testRNG(), 0, 1)
	zeros := 0
	for range n {
		k := g.Next()
		if k > 1000 {
			t.Fatalf("key %d outside 0..1000", k)
		}
		if k == 0 {
			zeros++
		}
	}
	// Half-normal: P(k=0) ≈ P(|x| < 0.5)/P(x >= -0.5) ≈ 0.004.
	if zeros > n/100 {
		t.Errorf("key 0 drawn %d times of %d: edge values are clamped, not redrawn", zeros, n)
	}
}

func TestPatternZipfSkewFollowsExponent(t *testing.T) {
	const n = 400_000
	for _, s := range []float64{0.5, 1, 1.5, 2} {
		o := keyOptions(1000, 1000+9999) // 10 000 ranks
		o.KeyZipfExp = s
		g := newKeyGen(Zipfian, o, testRNG(), 0, 1)
		counts := map[uint64]int{}
		for range n {
			k := g.Next()
			if k < 1000 || k > 10999 {
				t.Fatalf("s=%v: key %d outside the range", s, k)
			}
			counts[k]++
		}
		// P(rank r) = r^-s / H(N, s): check ranks 1, 2, 10 against it.
		h := 0.0
		for r := 1; r <= 10_000; r++ {
			h += math.Pow(float64(r), -s)
		}
		for _, r := range []int{1, 2, 10} {
			want := math.Pow(float64(r), -s) / h * n
			got := float64(counts[uint64(1000+r-1)])
			if math.Abs(got-want) > 5*math.Sqrt(want)+0.01*want {
				t.Errorf("s=%v: rank %d drawn %.0f times, want %.0f", s, r, got, want)
			}
		}
	}
}

func TestRatioScheduleIsExact(t *testing.T) {
	for _, tc := range []struct{ sets, gets int }{{1, 10}, {1, 1}, {3, 7}, {1, 0}, {0, 1}} {
		r := newRatioSchedule(tc.sets, tc.gets)
		period := tc.sets + tc.gets
		// Over every aligned window of one period, exactly tc.sets sets.
		for w := range 1000 {
			sets := 0
			for range period {
				if r.nextIsSet() {
					sets++
				}
			}
			if sets != tc.sets {
				t.Fatalf("%d:%d window %d: %d sets, want %d", tc.sets, tc.gets, w, sets, tc.sets)
			}
		}
	}
	// 1:10 over 11 000 requests: 1000 sets, and the first request is a set.
	r := newRatioSchedule(1, 10)
	if !r.nextIsSet() {
		t.Error("1:10: first request is not a set")
	}
	sets := 1
	for range 10_999 {
		if r.nextIsSet() {
			sets++
		}
	}
	if sets != 1000 {
		t.Errorf("1:10 over 11000 requests: %d sets, want 1000", sets)
	}
}
