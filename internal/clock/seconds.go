package clock

import (
	"sync"
	"sync/atomic"
	"time"
)

// Every request needs the current second (memcached's current_time: item
// times, expiry, the connection's last command), and time.Now costs about
// 50 ns on the VMs tcache was measured on: 6% of a pipelined request for
// two reads (docs/benchmarks.md). memcached reads the clock once a second
// in a timer; Real does the same (UnixSeconds), waking at each second's
// boundary, so the value trails the wall clock by the timer's latency
// only (memcached's by up to a second).

// Seconder is a Clock that tells the unix second more cheaply than
// Now().Unix().
type Seconder interface {
	UnixSeconds() int64
}

// Seconds returns c's cheapest way to tell the unix second: UnixSeconds
// when c has it, Now().Unix() otherwise (Fake: tests move it by hand).
func Seconds(c Clock) func() int64 {
	if s, ok := c.(Seconder); ok {
		return s.UnixSeconds
	}
	return func() int64 { return c.Now().Unix() }
}

// coarse is the unix second, kept by tickSeconds from the first call of
// Real.UnixSeconds on.
var (
	coarse     atomic.Int64
	coarseOnce sync.Once
)

// UnixSeconds returns the unix second, updated at each second's boundary
// by one goroutine for the process, started on first use.
func (Real) UnixSeconds() int64 {
	if s := coarse.Load(); s != 0 {
		return s
	}
	coarseOnce.Do(func() {
		coarse.Store(time.Now().Unix())
		go tickSeconds()
	})
	return coarse.Load()
}

// tickSeconds stores the unix second, then sleeps until the next one
// begins. time.Sleep runs on the monotonic clock and a wall-clock step is
// picked up at the next boundary.
func tickSeconds() {
	for {
		now := time.Now()
		coarse.Store(now.Unix())
		time.Sleep(time.Second - time.Duration(now.Nanosecond()))
	}
}
