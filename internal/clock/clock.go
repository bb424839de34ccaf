// Package clock gives the engine and the protocol layer their notion of
// "now" through an interface, so that expiry, flush delays and idle timeouts
// are tested with a fake clock instead of sleeps.
//
// The real clock is time.Now, and its UnixSeconds a second kept by a
// timer, as memcached's current_time is (seconds.go). The fake clock only
// moves when Advance or Set is called; it is safe for concurrent use.
package clock

import (
	"sync"
	"time"
)

// Clock tells the current time.
type Clock interface {
	Now() time.Time
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Fake is a manually driven clock for tests.
type Fake struct {
	mu struct {
		sync.Mutex
		now time.Time // guarded by mu
	}
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake {
	f := &Fake{}
	f.mu.now = start
	return f
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.now
}

// Advance moves the fake time forward by d.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.mu.now = f.mu.now.Add(d)
	f.mu.Unlock()
}

// Set moves the fake time to t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	f.mu.now = t
	f.mu.Unlock()
}
