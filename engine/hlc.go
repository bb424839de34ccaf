package engine

import (
	"sync/atomic"
	"time"

	"github.com/tcache/tcache/internal/clock"
)

// hlc is a hybrid logical clock: each value is 48 bits of unix milliseconds
// and 16 bits of logical counter, and every value handed out is greater
// than the one before, whatever the wall clock does. When the clock stands
// still or goes backwards the counter advances (carrying into the
// millisecond field when it overflows), and the clock catches up once wall
// time passes the last value again.
//
// Versions of replicated writes (lsm.Version.HLC) come from it; New seeds it
// above the disk's high-water mark so that versions stay monotonic across a
// restart even if the wall clock was set back in between.
//
// A peer's version is observed with observeRemote, which never moves the
// clock beyond the wall clock plus maxAhead (the max clock skew, as
// CockroachDB bounds its clocks with its max offset): a peer whose clock
// runs far ahead cannot drag every node's versions along with it.
type hlc struct {
	clock    clock.Clock
	last     atomic.Uint64 // the last value handed out (or the seed)
	maxAhead uint64        // bound of observeRemote above physical(), in HLC units; 0: none
	ahead    atomic.Uint64 // remote values observed beyond that bound
}

const hlcLogicalBits = 16

// physical returns the wall clock as an HLC value with a zero counter.
func (c *hlc) physical() uint64 { return physicalOf(c.clock.Now()) }

// physicalOf is wall as an HLC value with a zero counter.
func physicalOf(wall time.Time) uint64 {
	ms := wall.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return uint64(ms) << hlcLogicalBits
}

// seed makes every later value greater than v.
func (c *hlc) seed(v uint64) { c.observe(v) }

// next returns a new value greater than every value before it.
func (c *hlc) next() uint64 {
	v, _ := c.nextAt()
	return v
}

// nextAt is next, with the wall clock reading it was made from.
func (c *hlc) nextAt() (uint64, time.Time) {
	wall := c.clock.Now()
	return c.nextFrom(physicalOf(wall)), wall
}

// nextFrom returns a new value greater than every value before it and
// at least p.
func (c *hlc) nextFrom(p uint64) uint64 {
	for {
		last := c.last.Load()
		v := max(p, last+1)
		if c.last.CompareAndSwap(last, v) {
			return v
		}
	}
}

// observe makes every later value greater than v (a value seen on disk or
// from a peer).
func (c *hlc) observe(v uint64) {
	for {
		last := c.last.Load()
		if v <= last || c.last.CompareAndSwap(last, v) {
			return
		}
	}
}

// observeRemote observes a peer's value v, but moves the clock at most to
// the wall clock plus maxAhead, and reports whether v was beyond that
// bound (counted). The record of v keeps its version (every node must
// order it alike); only this node's clock stops following it, so the
// caller must order this node's later writes of the same key after v
// itself (tier.ahead).
func (c *hlc) observeRemote(v uint64) (beyond bool) {
	if c.maxAhead != 0 {
		if limit := c.physical() + c.maxAhead; v > limit {
			c.ahead.Add(1)
			c.observe(limit)
			return true
		}
	}
	c.observe(v)
	return false
}
