package bench

import (
	"math"
	"math/rand/v2"
)

// keyGen yields key numbers for one connection. Next never allocates.
type keyGen interface {
	Next() uint64
}

// newKeyGen returns the generator of pattern p for connection index conn of
// conns (Parallel uses both to pick the connection's part of the range).
func newKeyGen(p Pattern, o *Options, rng *rand.Rand, conn, conns int) keyGen {
	lo, hi := o.KeyMinimum, o.KeyMaximum
	switch p {
	case Sequential:
		return &seqGen{lo: lo, hi: hi, next: lo}
	case Parallel:
		// Part i of n is [lo + span*i/n, lo + span*(i+1)/n - 1] with span the
		// number of keys; parts differ in size by at most one key. A range
		// smaller than the connection count gives some connections an empty
		// part: they walk the whole range instead.
		span := hi - lo + 1
		if span == 0 || span < uint64(conns) { // span == 0: the full uint64 range
			return &seqGen{lo: lo, hi: hi, next: lo}
		}
		a := lo + mulDiv(span, uint64(conn), uint64(conns))
		b := lo + mulDiv(span, uint64(conn+1), uint64(conns)) - 1
		return &seqGen{lo: a, hi: b, next: a}
	case Gaussian:
		return &gaussGen{rng: rng, lo: lo, hi: hi, median: o.KeyMedian, stddev: o.KeyStddev}
	case Zipfian:
		return newZipfGen(rng, lo, hi, o.KeyZipfExp)
	default:
		return &uniformGen{rng: rng, lo: lo, span: hi - lo}
	}
}

// mulDiv is a*b/c without overflow for the sizes used here.
func mulDiv(a, b, c uint64) uint64 {
	if b == 0 {
		return 0
	}
	if a <= math.MaxUint64/b {
		return a * b / c
	}
	return uint64(float64(a) / float64(c) * float64(b))
}

// uniformGen is pattern R.
type uniformGen struct {
	rng      *rand.Rand
	lo, span uint64 // keys lo..lo+span
}

func (g *uniformGen) Next() uint64 {
	if g.span == math.MaxUint64 {
		return g.rng.Uint64()
	}
	return g.lo + g.rng.Uint64N(g.span+1)
}

// seqGen is patterns S and P: lo, lo+1, … hi, lo, …
type seqGen struct {
	lo, hi, next uint64
}

func (g *seqGen) Next() uint64 {
	k := g.next
	if k == g.hi {
		g.next = g.lo
	} else {
		g.next++
	}
	return k
}

// gaussGen is pattern G: normal around median, redrawn outside [lo, hi].
type gaussGen struct {
	rng            *rand.Rand
	lo, hi         uint64
	median, stddev float64
}

func (g *gaussGen) Next() uint64 {
	for range 64 {
		x := math.Round(g.median + g.rng.NormFloat64()*g.stddev)
		if x >= float64(g.lo) && x <= float64(g.hi) {
			return uint64(x)
		}
	}
	return uint64(g.median) // a stddev far wider than the range: give up redrawing
}

// zipfGen is pattern Z: rank r in 1..n has probability ∝ 1/r^s and maps to
// key lo+r-1. It samples by rejection-inversion (W. Hörmann, G. Derflinger,
// "Rejection-inversion to generate variates from monotone discrete
// distributions", 1996), which works for every exponent s > 0 — unlike
// math/rand's Zipf, which needs s > 1 — in O(1) time and memory.
type zipfGen struct {
	rng                *rand.Rand
	lo                 uint64
	n                  float64
	s                  float64
	hIntegralX1        float64
	hIntegralN         float64
	rejectionThreshold float64
}

func newZipfGen(rng *rand.Rand, lo, hi uint64, s float64) *zipfGen {
	g := &zipfGen{rng: rng, lo: lo, n: float64(hi-lo) + 1, s: s}
	g.hIntegralX1 = g.hIntegral(1.5) - 1
	g.hIntegralN = g.hIntegral(g.n + 0.5)
	g.rejectionThreshold = 2 - g.hIntegralInverse(g.hIntegral(2.5)-g.h(2))
	return g
}

func (g *zipfGen) Next() uint64 {
	for {
		u := g.hIntegralN + g.rng.Float64()*(g.hIntegralX1-g.hIntegralN)
		x := g.hIntegralInverse(u)
		k := math.Floor(x + 0.5)
		if k < 1 {
			k = 1
		} else if k > g.n {
			k = g.n
		}
		if k-x <= g.rejectionThreshold || u >= g.hIntegral(k+0.5)-g.h(k) {
			return g.lo + uint64(k) - 1
		}
	}
}

// h is the (unnormalised) density x^-s.
func (g *zipfGen) h(x float64) float64 { return math.Exp(-g.s * math.Log(x)) }

// hIntegral is the antiderivative of h: (x^(1-s) - 1) / (1-s), or log x.
func (g *zipfGen) hIntegral(x float64) float64 {
	lx := math.Log(x)
	return expm1OverX((1-g.s)*lx) * lx
}

// hIntegralInverse is the inverse of hIntegral.
func (g *zipfGen) hIntegralInverse(x float64) float64 {
	t := x * (1 - g.s)
	if t < -1 { // numerical guard: log1p is undefined below -1
		t = -1
	}
	return math.Exp(log1pOverX(t) * x)
}

// expm1OverX is (e^x - 1)/x, continuous at 0.
func expm1OverX(x float64) float64 {
	if math.Abs(x) > 1e-8 {
		return math.Expm1(x) / x
	}
	return 1 + x/2*(1+x/3*(1+x/4))
}

// log1pOverX is log(1+x)/x, continuous at 0.
func log1pOverX(x float64) float64 {
	if math.Abs(x) > 1e-8 {
		return math.Log1p(x) / x
	}
	return 1 - x*(1.0/2-x*(1.0/3-x/4))
}

// ratioSchedule decides, request by request, whether a connection sends a
// set or a get: of every sets+gets consecutive requests the first sets are
// sets. The mix is therefore exact over every window of that length, not
// only on average, and independent of timing.
type ratioSchedule struct {
	sets, period, i int
}

func newRatioSchedule(sets, gets int) ratioSchedule {
	return ratioSchedule{sets: sets, period: sets + gets}
}

// nextIsSet reports whether the next request is a set, and advances.
func (r *ratioSchedule) nextIsSet() bool {
	set := r.i < r.sets
	r.i++
	if r.i == r.period {
		r.i = 0
	}
	return set
}
