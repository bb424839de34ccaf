package clock

import (
	"testing"
	"time"
)

// TestRealUnixSeconds checks that the coarse second follows the wall
// clock across boundaries: it is never ahead of time.Now, and never
// behind by more than the second it may still be finishing (plus
// scheduling slack on a loaded machine).
func TestRealUnixSeconds(t *testing.T) {
	var r Real
	end := time.Now().Add(2500 * time.Millisecond)
	checks := 0
	for time.Now().Before(end) {
		before := time.Now().Unix()
		got := r.UnixSeconds()
		after := time.Now().Unix()
		if got > after {
			t.Fatalf("UnixSeconds %d is ahead of the wall clock %d", got, after)
		}
		if got < before-1 {
			t.Fatalf("UnixSeconds %d trails the wall clock %d by more than a second", got, before)
		}
		checks++
		time.Sleep(7 * time.Millisecond)
	}
	// It follows the wall clock: within a second of the last check it
	// reads the same second as time.Now (the tick's latency is far below
	// that, even on a loaded machine).
	for deadline := time.Now().Add(time.Second); r.UnixSeconds() != time.Now().Unix(); {
		if time.Now().After(deadline) {
			t.Fatalf("UnixSeconds %d did not catch up with the wall clock %d", r.UnixSeconds(), time.Now().Unix())
		}
		time.Sleep(time.Millisecond)
	}
	if checks == 0 {
		t.Fatal("no checks ran")
	}
}

// TestSecondsFallsBack checks that a clock without UnixSeconds (Fake) is
// read through Now, so tests that move it see the move at once.
func TestSecondsFallsBack(t *testing.T) {
	f := NewFake(time.Unix(1000, 0))
	sec := Seconds(f)
	if got := sec(); got != 1000 {
		t.Fatalf("Seconds(fake) = %d, want 1000", got)
	}
	f.Advance(3 * time.Second)
	if got := sec(); got != 1003 {
		t.Fatalf("Seconds(fake) after Advance = %d, want 1003", got)
	}
	if _, ok := Clock(Real{}).(Seconder); !ok {
		t.Fatal("Real does not implement Seconder")
	}
}
